"""What a service manager sees of the daemon: its log lines on stderr and its readiness.

Three forms of log line (configure_logging):
- text, on a terminal or into a file: `lclusterd: LEVEL message` (as the tests and the
  operator's eye expect it);
- text under systemd, when stderr is the journal (JOURNAL_STREAM names it): `<N>LEVEL message`,
  N the syslog priority the journal files the line under (sd-daemon(3)); no time stamp and
  no name, which the journal adds itself; every line of a traceback carries the prefix;
- json (`--log-format json`): one object per line with time (RFC 3339, UTC), level, logger,
  message, the structured fields a call passed as `extra={...}`, and exception when there is
  a traceback; under the journal with the same priority prefix.

notify_systemd sends an sd_notify(3) message (READY=1) when NOTIFY_SOCKET is set (a
Type=notify unit): `systemctl start` returns once the node serves.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from typing import Any, TextIO

# syslog priorities by logging level (sd-daemon(3): SD_ERR is 3, SD_INFO 6, ...)
_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}
# what every LogRecord has; anything else on a record came from `extra=` and is a structured field
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "taskName"}


def priority(levelno: int) -> int:
    return next((p for level, p in sorted(_PRIORITY.items(), reverse=True) if levelno >= level), 7)


def to_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """Whether `stream` is connected to the journal: JOURNAL_STREAM holds the device and inode
    of the stream systemd connected (it stays set in children whose stderr is elsewhere)."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return device.isdigit() and inode.isdigit() and (st.st_dev, st.st_ino) == (int(device), int(inode))


class TextFormatter(logging.Formatter):
    def __init__(self, journal: bool = False):
        super().__init__("%(levelname)s %(message)s" if journal else "lclusterd: %(levelname)s %(message)s")
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return _prefixed(text, record) if self.journal else text


class JsonFormatter(logging.Formatter):
    def __init__(self, journal: bool = False):
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        text = json.dumps(data, default=str, ensure_ascii=False)
        return f"<{priority(record.levelno)}>{text}" if self.journal else text


def _prefixed(text: str, record: logging.LogRecord) -> str:
    prefix = f"<{priority(record.levelno)}>"
    return "\n".join(prefix + line for line in text.split("\n"))


def formatter(fmt: str, journal: bool) -> logging.Formatter:
    return JsonFormatter(journal) if fmt == "json" else TextFormatter(journal)


def configure_logging(level: str, fmt: str = "text", stream: TextIO | None = None, quiet: tuple[str, ...] = ()) -> None:
    """The root logger: `level` and up, in `fmt` (text or json), to `stream` (stderr); the
    loggers named in `quiet` (a library that logs what the caller reports itself) say nothing."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, to_journal(stream)))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in quiet:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def notify_systemd(state: str) -> None:
    """Send `state` (e.g. READY=1) to the service manager, if it asked for it; never raises."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        pass
