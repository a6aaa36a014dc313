"""Logging for every stage: one format, and secrets scrubbed from every record before it is written.

Config loading registers each secret value it sees (cookies, API keys, tokens, Redis URLs); the
redaction filter then replaces those values wherever they would appear in a log line, so a secret
that leaks into an exception message or a URL still never reaches a log file.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REDACTED = "***"
# Shorter values would mask ordinary words; real cookies, keys and tokens are much longer.
_MIN_SECRET_LENGTH = 6

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember `value` so that the redaction filter masks it from now on."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """`text` with every registered secret replaced by ***."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for value in secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


class RedactSecrets(logging.Filter):
    """Formats the record's message once, masks secrets in it and in the traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (progress bars and test capture swap it)."""

    def __init__(self) -> None:
        super().__init__()

    @property  # type: ignore[override]
    def stream(self):  # noqa: ANN201
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass


def setup_logging(level: str | int | None = None) -> None:
    """Configure the root logger once per process: level from the argument or SOCIALALIGN_LOG_LEVEL."""
    level = level or os.environ.get("SOCIALALIGN_LOG_LEVEL", "INFO")
    root = logging.getLogger()
    root.setLevel(level if isinstance(level, int) else level.upper())
    handler = next((h for h in root.handlers if getattr(h, "_socialalign", False)), None)
    if handler is None:
        handler = _StderrHandler()
        handler._socialalign = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handler.addFilter(RedactSecrets())
        root.addHandler(handler)
    for noisy in ("urllib3", "filelock", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
