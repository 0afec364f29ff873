"""JSON logs, one object per line, on stderr.

Callers pass structured fields with ``extra={"fields": {...}}``; only those, plus the time, level, logger
and message, are written. Nothing here ever receives a password, an AUTH blob or a message body: callers
log addresses, usernames of existing credentials, queue ids and reasons. aiosmtpd's own logger logs every
command line (AUTH blobs included) at INFO and DEBUG, so it is held at ERROR whatever our level is.
"""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    def __init__(self, static: dict[str, object] | None = None) -> None:
        """``static``: fields on every line of the process (an extra SMTP serving process: its number)."""
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                 + f".{int(record.msecs):03d}Z",
                 "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage(),
                 **self.static}
        entry.update(getattr(record, "fields", {}))
        if record.exc_info and record.exc_info[0] is not None:
            # the type and where, not str(exc): exception texts can quote client input
            entry["error"] = record.exc_info[0].__name__
            entry["trace"] = self.formatStack(self.formatException(record.exc_info)).splitlines()[-3:]
        return json.dumps(entry, default=str)


def setup(level: str = "INFO", static: dict[str, object] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(static))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiosmtpd logs raw command lines at INFO/DEBUG and the verb of unknown commands at WARNING (a
    # mis-sequenced AUTH blob would be one); its errors go through our handle_exception anyway.
    logging.getLogger("mail.log").setLevel(logging.ERROR)
