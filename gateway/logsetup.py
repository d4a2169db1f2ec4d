"""How log lines look: `logging.format: text` (one line per record) or `json` (one object per line).

Every JSON line has `ts` (ISO 8601, UTC, milliseconds), `level`, `logger` and `message`; a traceback adds
`exc`. An access-log record (gateway/access_log.py) carries its fields instead of a message: `event:
"request"` and the fields listed there, with their raw values (capped, never escaped: JSON escapes them
once). A reload (SIGHUP) applies the new `logging` section to the running process (reconfigure); a level
given on the command line (`--log-level`) stays over the file's. Secrets are out of every record before it
reaches a formatter: gateway/redaction.py's record factory cleans the message and traceback, and access
fields are redacted when they are built.
"""

from __future__ import annotations

import logging
import time

import orjson

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ACCESS_ATTRIBUTE = "access_fields"  # the LogRecord attribute an access-log record carries its fields in


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
        }
        access = getattr(record, ACCESS_ATTRIBUTE, None)  # an access line: its fields, made on demand
        if access is not None:
            line["event"] = "request"
            line.update(access())
        else:
            line["message"] = record.getMessage()
        if record.exc_info and record.exc_info[0] is not None:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:  # the redacted traceback (gateway/redaction.py drops exc_info when it cleans one)
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """logging's own text lines, the date and time of each second made once: every request writes a line,
    and localtime() and strftime() cost more than the rest of its formatting."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._second_text = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        if second != self._second:  # logging's default: "%Y-%m-%d %H:%M:%S" of the local time, then ",msecs"
            self._second_text, self._second = time.strftime(self.default_time_format, self.converter(second)), second
        msec_format = self.default_msec_format
        return msec_format % (self._second_text, record.msecs) if msec_format else self._second_text


def formatter(form: str) -> logging.Formatter:
    return JsonFormatter() if form == "json" else TextFormatter()


class _Setup:
    """What `gateway serve` installed: the handler whose formatter a reload swaps, and the command line's level."""

    handler: logging.Handler | None = None
    pinned_level: str | None = None


def configure(level: str, form: str = "text", *, pinned_level: str | None = None) -> None:
    """The root logger writes to stderr at `pinned_level` (the command line's) or else `level`, in `form`
    (text or json)."""
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(form))
    # Neither format shows a thread or a process: records need not look them up (logging's own advice)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(pinned_level or level)
    _Setup.handler, _Setup.pinned_level = handler, pinned_level


def reconfigure(level: str, form: str) -> list[str]:
    """A reloaded `logging` section applied to the running process: what changed, in words. Nothing when
    the process did not configure its logging here (an app embedded in tests or another program)."""
    handler = _Setup.handler
    if handler is None:
        return []
    changed = []
    root = logging.getLogger()
    wanted = _Setup.pinned_level or level
    if logging.getLevelName(root.level) != wanted:
        changed.append(f"level {wanted}")
        root.setLevel(wanted)
    if isinstance(handler.formatter, JsonFormatter) != (form == "json"):
        changed.append(f"format {form}")
        handler.setFormatter(formatter(form))
    return changed
