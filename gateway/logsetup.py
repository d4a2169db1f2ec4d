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

import asyncio
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
        second_text = self._second_text_of(int(record.created))
        msec_format = self.default_msec_format
        return msec_format % (second_text, record.msecs) if msec_format else second_text

    def line(self, created: float, level_name: str, name: str, message: str) -> str:
        """What format() makes of a record without arguments, traceback or stack, not made into one."""
        second = int(created)
        msecs = int((created - second) * 1000)  # as LogRecord computes its msecs
        return f"{self._second_text_of(second)},{msecs:03d} {level_name} {name}: {message}"

    def _second_text_of(self, second: int) -> str:
        if second != self._second:  # logging's default: "%Y-%m-%d %H:%M:%S" of the local time
            self._second_text, self._second = time.strftime(self.default_time_format, self.converter(second)), second
        return self._second_text


class LineWriter(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr's handler. Lines made in the event loop's thread wait for the end of the loop's turn, then
    leave in one write: a busy gateway finishes many requests a turn, each with its line. Lines from other
    threads, or made with no loop running, are written at once, after any that wait. What waits is
    written by flush(), which logging calls at exit: only a process killed outright loses it."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting: list[str] = []
        self._flush_due_on: asyncio.AbstractEventLoop | None = None  # the loop whose turn's end writes them

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging's own way: report, never raise into the caller
            self.handleError(record)

    def write_line(self, line: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        self._waiting.append(line)
        if loop is None:
            self.flush()
        elif self._flush_due_on is not loop:  # (a flush due on a loop that stopped first never comes)
            self._flush_due_on = loop
            loop.call_soon(self.flush)

    def flush(self) -> None:
        self.acquire()
        try:
            self._flush_due_on = None
            waiting, self._waiting = self._waiting, []
            if waiting and self.stream is not None:
                self.stream.write("\n".join(waiting) + "\n")
            super().flush()
        finally:
            self.release()


def formatter(form: str) -> logging.Formatter:
    return JsonFormatter() if form == "json" else TextFormatter()


class _Setup:
    """What `gateway serve` installed: the handler whose formatter a reload swaps, and the command line's level."""

    handler: LineWriter | None = None
    pinned_level: str | None = None


def configure(level: str, form: str = "text", *, pinned_level: str | None = None) -> None:
    """The root logger writes to stderr at `pinned_level` (the command line's) or else `level`, in `form`
    (text or json)."""
    handler = LineWriter()
    handler.setFormatter(formatter(form))
    # Neither format shows a thread or a process: records need not look them up (logging's own advice)
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(pinned_level or level)
    _Setup.handler, _Setup.pinned_level = handler, pinned_level


def plain_text_handler(logger: logging.Logger, level: int) -> tuple[LineWriter, TextFormatter] | None:
    """The handler and formatter of a record `logger` makes at `level`, when they are the only ones and
    write text: that record's line can then be written without being made (access_log's per-request path).
    None when anything else would see the record (a handler or filter added anywhere on its way, a JSON
    format, a test's capture)."""
    handler = _Setup.handler
    if handler is None or handler.filters or level < handler.level:
        return None
    formatter = handler.formatter
    if not isinstance(formatter, TextFormatter):
        return None
    if logger.filters or logger.disabled:  # a logger's own filters see what it makes; its parents' do not
        return None
    found = False
    node: logging.Logger | None = logger
    while node is not None:  # the loggers whose handlers get the record (Logger.callHandlers' walk)
        if node.handlers:
            if found or node.handlers != [handler]:
                return None
            found = True
        node = node.parent if node.propagate else None
    return (handler, formatter) if found else None


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
