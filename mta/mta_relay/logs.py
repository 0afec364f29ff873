"""JSON logs, one object per line, on stderr.

Callers pass structured fields with ``extra={"fields": {...}}``; only those, plus the time, level, logger
and message, are written. Nothing here ever receives a password, an AUTH blob or a message body: callers
log addresses, usernames of existing credentials, queue ids and reasons. aiosmtpd's own logger logs every
command line (AUTH blobs included) at INFO and DEBUG, so it is held at ERROR whatever our level is.

Every accepted message gets a line, so the line's cost is per-message cost: the encoder is made once,
the time's seconds are formatted once per second, and ``setup`` turns off what ``logging`` gathers for
every record and the line never shows (caller's file and line, thread, process: the logging HOWTO's
"Optimization" switches).
"""

from __future__ import annotations

import json
import logging
import sys
import time

_ENCODER = json.JSONEncoder(default=str)  # json.dumps(..., default=str) builds one per call


class JsonFormatter(logging.Formatter):
    # (second, its text), replaced whole: threads log too (the event writer), each sees one pair
    _second: tuple[int, str] = (-1, "")

    def __init__(self, static: dict[str, object] | None = None) -> None:
        """``static``: fields on every line of the process (an extra SMTP serving process: its number)."""
        super().__init__()
        self.static = static or {}

    def _time(self, created: float, msecs: float) -> str:
        second, text = self._second
        if int(created) != second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            self._second = (int(created), text)
        return f"{text}.{int(msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self._time(record.created, record.msecs),
                 "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
                 **self.static}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            # the type and where, not str(exc): exception texts can quote client input
            entry["error"] = record.exc_info[0].__name__
            entry["trace"] = self.formatStack(self.formatException(record.exc_info)).splitlines()[-3:]
        return _ENCODER.encode(entry)


def setup(level: str = "INFO", static: dict[str, object] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd logs raw command lines at INFO/DEBUG and the verb of unknown commands at WARNING (a
    # mis-sequenced AUTH blob would be one); its errors go through our handle_exception anyway.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
    # Not in our lines, so not worth gathering per record: the caller's frame (a stack walk), the
    # thread, the process and its multiprocessing name.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
