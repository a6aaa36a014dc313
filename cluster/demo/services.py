"""The two long-running services of the demo, each a process of its own started by module name, as
a user would start them: the local Weibo simulator and the Serve application; and the simulator's
command once more, to write the truth of the world it served (`simulator_truth`).

Each prints one line that says where it listens (the simulator a JSON object, Serve its
"serving ... at URL" line); everything else they write goes to the demo's log file. Leaving the
`with` block stops the process (SIGTERM, then SIGKILL), and the Serve app deletes itself on SIGTERM.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import requests

STARTUP_TIMEOUT_S = 300.0
_SERVING = re.compile(r"^serving .* at (https?://\S+)")


@dataclass(frozen=True)
class Topic:
    name: str
    query: str
    start: str  # Weibo hour, YYYY-MM-DD-H (Beijing)
    end: str
    hot: bool


@dataclass(frozen=True)
class Simulator:
    base_url: str
    topics: list[Topic]
    cookies: list[str]

    def violations(self) -> int:
        """Requests that broke the simulated rate limits (0 for a polite crawler)."""
        return int(requests.get(f"{self.base_url}/_sim/stats", timeout=30).json()["violations"])


@contextmanager
def simulator(arguments: list[str], log: IO[str]) -> Iterator[Simulator]:
    """`python -m crawl_actors.simulator --json ...arguments`, until the block ends."""
    command = [sys.executable, "-m", "crawl_actors.simulator", "--port", "0", "--json", *arguments]
    with _process(command, log) as (process, first_line):
        info = json.loads(_wait_for(process, first_line, lambda line: line.startswith("{")))
        topics = [Topic(**topic) for topic in info["topics"]]
        yield Simulator(info["base_url"], topics, info["cookies"])


def simulator_truth(arguments: list[str], log: IO[str]) -> dict[str, Any]:
    """`python -m crawl_actors.simulator ...arguments` with `--write-truth DIR` among them: the world
    those arguments build (the one crawled, given the crawl's world arguments) has its truth (and
    its oracle's predictions) written to DIR; returns the JSON line it prints. Its output goes to
    the log; a failure is a RuntimeError with its last error line."""
    command = [sys.executable, "-m", "crawl_actors.simulator", *arguments]
    result = subprocess.run(command, capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.write(result.stdout + result.stderr)
    log.flush()
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"`python -m crawl_actors.simulator --write-truth` exited with code {result.returncode}: "
                           f"{last}")
    return json.loads(result.stdout.strip().splitlines()[-1])


@contextmanager
def serve_app(config_file: Path, ray_address: str, log: IO[str]) -> Iterator[str]:
    """`python -m serve --config config_file` joined to the demo's Ray; yields the app's base URL."""
    command = [sys.executable, "-m", "serve", "--config", str(config_file), f"ray.address={ray_address}"]
    with _process(command, log) as (process, first_line):
        line = _wait_for(process, first_line, lambda text: bool(_SERVING.match(text)))
        yield _SERVING.match(line).group(1)  # type: ignore[union-attr]


@contextmanager
def _process(command: list[str], log: IO[str]) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    lines: list[str] = []
    threading.Thread(target=_pump, args=(process.stdout, log, lines), daemon=True).start()
    try:
        yield process, lines
    finally:
        _stop(process)


def _pump(stream: IO[str], log: IO[str], lines: list[str]) -> None:
    """Every stdout line into the log file, and the lines kept for `_wait_for`."""
    for line in stream:
        lines.append(line.rstrip("\n"))
        log.write(line)
        log.flush()


def _wait_for(process: subprocess.Popen[str], lines: list[str], wanted: Any) -> str:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        found = next((line for line in list(lines) if wanted(line)), None)
        if found is not None:
            return found
        if process.poll() is not None:
            raise RuntimeError(f"`{' '.join(process.args[1:4])}` exited with code {process.returncode} before it "
                               "was ready (its output is in the demo's log file)")
        time.sleep(0.1)
    raise TimeoutError(f"`{' '.join(process.args[1:4])}` was not ready after {STARTUP_TIMEOUT_S:.0f}s")


def _stop(process: subprocess.Popen[str], grace_s: float = 60.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
