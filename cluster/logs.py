"""Logging for every stage: one format, and secrets scrubbed from every record before it is written.

Config loading registers each secret value it sees (cookies, API keys, tokens, Redis URLs); the
redaction then replaces those values wherever they would appear in a log line, so a secret that
leaks into an exception message or a URL still never reaches a log file.

A Ray worker is a process of its own: it never loaded the config, so it knows no secret until it
reads one. Secrets reach workers through their environment (never task or actor arguments), and a
worker that reads them calls `setup_logging()` and `register_secrets_from_env()`: from then on
every record the process makes is redacted when it is made, whichever handler writes it (ours,
Ray's own, or Python's last-resort one), so what Ray copies from the worker's stderr into its log
files and forwards to the driver is already clean.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
REDACTED = "***"
# Shorter values would mask ordinary words; real cookies, keys and tokens are much longer.
_MIN_SECRET_LENGTH = 6

# Every environment variable that carries a secret: the `secret(...)` fields of the stages' config
# models (a test keeps this list complete) and Ray's own token. The foundation knows no stage, so
# the names are listed here rather than read from the models.
SECRET_ENV_NAMES = (
    "SOCIALALIGN_WEIBO_COOKIES",
    "SOCIALALIGN_REDIS_URL",
    "SOCIALALIGN_LLM_API_KEY",
    "OPENAI_API_KEY",
    "SOCIALALIGN_SERVE_TOKEN",
    "RAY_AUTH_TOKEN",
)

_secrets: set[str] = set()
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Remember `value` so that the redaction filter masks it from now on."""
    if value and len(value) >= _MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def register_secrets_from_env(
    names: Iterable[str] = SECRET_ENV_NAMES, environ: Mapping[str, str] | None = None
) -> list[str]:
    """Register the value of each of `names` that is set in `environ` (default: os.environ), each of
    its lines too (a cookie set is one cookie per line, and one cookie alone must be masked) and the
    password of a URL (redis://:password@host). Returns the names that were set, never their values.
    Call it, after `setup_logging`, in every worker process that reads a secret from its environment."""
    environ = os.environ if environ is None else environ
    found = []
    for name in names:
        value = environ.get(name, "")
        if not value.strip():
            continue
        found.append(name)
        for part in (value, value.strip(), *value.splitlines()):
            register_secret(part.strip())
            register_secret(_url_password(part.strip()))
    return found


def _url_password(text: str) -> str | None:
    if "://" not in text or "@" not in text:
        return None
    try:
        return urlsplit(text).password
    except ValueError:
        return None


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


def _redact_record(record: logging.LogRecord) -> None:
    """Mask secrets in `record` in place: its message (arguments merged in), traceback and stack."""
    if not _secrets:
        return
    try:
        message = record.getMessage()
    except Exception:  # bad arguments: logging reports them when the record is written
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and not record.exc_text:
        text = logging.Formatter().formatException(record.exc_info)
        if redact(text) != text:
            # Only the masked text stays: a formatter that reads exc_info itself finds none.
            record.exc_text, record.exc_info = redact(text), None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _install_record_redaction() -> None:
    """Every record this process makes is redacted when it is made (once per process)."""
    current = logging.getLogRecordFactory()
    if getattr(current, "_socialalign_redacts", False):
        return

    def make_record(*args: object, **kwargs: object) -> logging.LogRecord:
        record = current(*args, **kwargs)
        _redact_record(record)
        return record

    make_record._socialalign_redacts = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(make_record)


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
    """Configure the root logger once per process: level from the argument or SOCIALALIGN_LOG_LEVEL;
    every record made in this process from now on is redacted, whichever handler writes it."""
    _install_record_redaction()
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
