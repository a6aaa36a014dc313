"""Serving an aiohttp application from a background thread with its own event loop.

The local Weibo simulator and the local OpenAI-compatible server run this way inside tests, the
demo and benchmarks: `with serve_in_thread(app, "127.0.0.1", 0) as url: ...` binds (port 0: a
free one), yields the base URL once the server listens, and stops it when the block ends.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web


@contextmanager
def serve_in_thread(app: web.Application, host: str, port: int, name: str = "http-server") -> Iterator[str]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    state: dict[str, object] = {}
    thread = threading.Thread(target=_serve, args=(app, host, port, loop, ready, state), name=name, daemon=True)
    thread.start()
    ready.wait()
    try:
        if "error" in state:
            error = state["error"]
            raise RuntimeError(f"{name} could not start on {host}:{port}: {error}") from error  # type: ignore[misc]
        yield str(state["url"])
    finally:
        if loop.is_running():
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)


def _serve(app: web.Application, host: str, port: int, loop: asyncio.AbstractEventLoop, ready: threading.Event,
           state: dict[str, object]) -> None:
    asyncio.set_event_loop(loop)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    try:
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, host, port).start())
        bound_host, bound_port = runner.addresses[0][:2]
        state["url"] = f"http://[{bound_host}]:{bound_port}" if ":" in bound_host else f"http://{bound_host}:{bound_port}"
    except BaseException as error:  # handed to the caller's thread
        state["error"] = error
        loop.run_until_complete(runner.cleanup())
        loop.close()
        ready.set()
        return
    ready.set()
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(runner.cleanup())
        loop.close()
