"""The demo's screen: one line per stage, progress bars on a terminal, and the summary.

Everything else the process writes goes to the demo's log file: our INFO logs, the Python logs of
Ray and the libraries, and what Ray's C++ core or DeepSpeed write straight to file descriptors 1
and 2. Our own warnings and errors show on the screen too. Ray's workers keep their logs in Ray's
log folder (the summary names it).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cluster.logs import LOG_FORMAT, RedactSecrets

LIBRARY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.serve", "ray.tune", "deepspeed", "DeepSpeed")


@dataclass
class Console:
    screen: IO[str]
    log: IO[str]
    log_path: Path
    lines: list[str] = field(default_factory=list)

    def stage(self, name: str, text: str) -> None:
        line = f"[{name:<13}] {text}"
        self.lines.append(line)
        self.say(line)

    def say(self, text: str = "") -> None:
        print(text, file=self.screen, flush=True)
        print(text, file=self.log, flush=True)


@contextmanager
def demo_console(log_path: Path) -> Iterator[Console]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if not os.isatty(2):
        os.environ.setdefault("TQDM_DISABLE", "1")  # read when tqdm is imported: no bars in a log or a pipe
    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    screen = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8")
    terminal = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8")
    with open(log_path, "a", buffering=1, encoding="utf-8") as log:
        for fd in (1, 2):
            os.dup2(log.fileno(), fd)
        previous_stderr, sys.stderr = sys.stderr, terminal  # progress bars and our warnings
        undo_logging = _log_to(log)
        try:
            yield Console(screen, log, log_path)
        finally:
            undo_logging()
            sys.stderr = previous_stderr
            sys.stdout.flush()
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            screen.close()
            terminal.close()


def quiet_libraries(log: IO[str]) -> None:
    """Send the Python logs of Ray and the libraries to the log file: their handlers were made on
    import, bound to the stream sys.stderr was then (the screen, here)."""
    for name in LIBRARY_LOGGERS:
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setStream(log)


def _log_to(log: IO[str]) -> Callable[[], None]:
    """Our log records at INFO into the file; the screen handler keeps WARNING and above. Returns the undo."""
    handler = logging.StreamHandler(log)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    screen = [h for h in root.handlers if getattr(h, "_socialalign", False)]
    levels = [h.level for h in screen]
    for existing in screen:
        existing.setLevel(logging.WARNING)
    root.addHandler(handler)

    def undo() -> None:
        root.removeHandler(handler)
        for existing, level in zip(screen, levels):
            existing.setLevel(level)

    return undo
