"""The Redis key layout of resumable streams and the Lua scripts that change it atomically.

Per stream (the {hash tag} keeps a stream's keys in one Redis Cluster slot, as a script needs):
    gateway:resume:{<id>}:meta     hash: key_id (absent on open access), token_sha256, owner, created,
                                   state (live | finished | dropped), bytes (stored), cancel (0 | 1); it outlives
                                   the events by a tombstone's time, so that a late client is told 410
    gateway:resume:{<id>}:events   stream: event <seq> is entry `<seq>-0` with field `e` (the bytes sent);
                                   the last entry of a finished or dropped stream has field `end`
                                   (finished | dropped) and an id from `*`, larger than every seq
    gateway:resume:{<id>}:owner    string: the owning instance's id, expiring unless it keeps refreshing it
    gateway:resume:{<id>}:readers  sorted set: one member per resumed reader, scored by when it expires
Per instance:
    gateway:resume:cancel:<instance id>   pub/sub channel: the ids of the streams it owns to cancel
"""

from __future__ import annotations


def valid_id(stream_id: str) -> bool:
    """Whether it can be a stream id (url-safe, bounded): anything else is unknown, and names no key."""
    return 0 < len(stream_id) <= 128 and stream_id.isascii() and stream_id.replace("-", "").replace("_", "").isalnum()


def stream_keys(stream_id: str) -> tuple[str, str, str, str]:
    """meta, events, owner, readers."""
    prefix = f"gateway:resume:{{{stream_id}}}"
    return f"{prefix}:meta", f"{prefix}:events", f"{prefix}:owner", f"{prefix}:readers"


def cancel_channel(instance_id: str) -> str:
    return f"gateway:resume:cancel:{instance_id}"


CANCEL_CHANNEL_PREFIX = cancel_channel("")

# KEYS: meta, events, owner, readers; ARGV: max_bytes, live ttl (ms), finish ttl (ms; 0: not the end yet),
# tombstone ttl (ms), then seq, event, seq, event... Appends the events and, when finish ttl is set, finishes
# the stream, at once: its events are kept for the finish ttl, its meta a tombstone ttl longer (a late
# client is told 410, not 404). Returns 1 done, 0 not live (finished, dropped, expired, unknown), -1 over
# the byte cap (nothing stored).
WRITE = """
if redis.call('HGET', KEYS[1], 'state') ~= 'live' then return 0 end
local max, size = tonumber(ARGV[1]), 0
for i = 6, #ARGV, 2 do size = size + string.len(ARGV[i]) end
if redis.call('HINCRBY', KEYS[1], 'bytes', size) > max then return -1 end
for i = 5, #ARGV, 2 do
  -- an event is at least a byte: MAXLEN max_bytes never trims a stream within its byte cap, it bounds it
  redis.call('XADD', KEYS[2], 'MAXLEN', max, ARGV[i] .. '-0', 'e', ARGV[i + 1])
end
local ttl, meta_ttl = ARGV[2], ARGV[2]
if ARGV[3] ~= '0' then
  ttl = ARGV[3]
  meta_ttl = tonumber(ARGV[3]) + tonumber(ARGV[4])
  redis.call('HSET', KEYS[1], 'state', 'finished')
  redis.call('XADD', KEYS[2], '*', 'end', 'finished')
  redis.call('DEL', KEYS[3])
  redis.call('PEXPIRE', KEYS[4], ttl)
end
redis.call('PEXPIRE', KEYS[1], meta_ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
return 1
"""

# KEYS: meta, events, owner, readers; ARGV: ttl (ms) of the `end` entry, ttl (ms) of the meta (the
# tombstone). The events are deleted; the `end` entry that replaces them wakes the readers blocked on the
# stream, which then raise StreamExpired; the meta, state dropped, tells a late client 410.
DROP = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'dropped')
redis.call('DEL', KEYS[2], KEYS[3], KEYS[4])
redis.call('XADD', KEYS[2], '*', 'end', 'dropped')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""

# KEYS: meta, events; ARGV: cancel channel prefix, stream id. Returns 1 (the owner is told), 0 when unknown,
# dropped, or finished so long ago that its events are gone (the tombstone of its meta is all that is left).
CANCEL = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'dropped' then return 0 end
if state == 'finished' and redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'cancel', '1')
redis.call('PUBLISH', ARGV[1] .. redis.call('HGET', KEYS[1], 'owner'), ARGV[2])
return 1
"""

_NOW = """
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
"""

# KEYS: readers; ARGV: ttl (ms), then the reader ids. Scores come from Redis's clock, as instances' differ.
READING = _NOW + """
local ttl = tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], now + ttl, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS: readers. Returns how many readers have not expired.
READERS = _NOW + """
return redis.call('ZCOUNT', KEYS[1], now, '+inf')
"""
