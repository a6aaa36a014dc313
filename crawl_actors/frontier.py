"""The crawl frontier: every task once (dedupe), leased to workers, done only after its rows are on disk.

Two backends with one async interface:
- `RedisFrontier`: state in Redis (atomic Lua), shared by all actors and nodes, survives anything.
- `FrontierActor` + `ActorFrontier`: state in a Ray actor, checkpointed to an append-only journal on
  disk (`<output>/_frontier/journal.jsonl`) that is replayed on start.

A task leased but never completed (its worker died, or the crawl was interrupted before its rows
were flushed) returns to the queue when its lease expires, or at once when a new crawl recovers.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cluster.parquet import fsync_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    kind: str  # search | ai_search | profile | details | timeline | long_text | region
    key: str  # unique within its kind: a re-discovered task has the same key and is dropped
    params: dict[str, Any] = field(default_factory=dict)
    attempts: int = 0  # failures that were the page's fault (bad body, network, unexpected status)
    deferrals: int = 0  # retries that were not: throttled, 5xx, its cookie died, no cookie free
    lease: int = 0  # which lease of the task this copy was handed out under (0: not a leased copy)

    @property
    def id(self) -> str:
        return f"{self.kind}|{self.key}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Task:
        return cls(**json.loads(text))

    def retried(self, counted: bool = True) -> Task:
        """The task again, one more attempt counted (or, when not counted, one more deferral)."""
        if counted:
            return Task(self.kind, self.key, self.params, self.attempts + 1, self.deferrals)
        return Task(self.kind, self.key, self.params, self.attempts, self.deferrals + 1)

    def leased_as(self, lease: int) -> Task:
        return Task(self.kind, self.key, self.params, self.attempts, self.deferrals, lease)


@dataclass(frozen=True)
class FrontierCounts:
    seen: int
    pending: int
    leased: int
    done: int

    @property
    def drained(self) -> bool:
        return self.pending == 0 and self.leased == 0


class FrontierState:
    """The in-memory state machine of the actor backend; every change is journaled first."""

    def __init__(self, journal: Path | None) -> None:
        self.journal = journal
        self.tasks: dict[str, Task] = {}
        self.pending: OrderedDict[str, None] = OrderedDict()
        self.leased: dict[str, float] = {}
        self.leases: dict[str, int] = {}  # how often each task was leased: a lease's number tells its holder
        self.done: set[str] = set()
        self._file = None
        if journal is not None:
            self._replay(journal)
            journal.parent.mkdir(parents=True, exist_ok=True)
            created = not journal.exists()
            self._file = open(journal, "a", encoding="utf-8")  # noqa: SIM115 - held for the actor's life
            if created:
                fsync_dir(journal.parent)  # the new file's name must survive a crash as well as its lines

    def add(self, tasks: Iterable[Task]) -> int:
        new = [task for task in tasks if task.id not in self.tasks]
        unique = list({task.id: task for task in new}.values())
        self._log([{"op": "add", "task": json.loads(task.to_json())} for task in unique])
        for task in unique:
            self.tasks[task.id] = task
            self.pending[task.id] = None
        return len(unique)

    def lease(self, count: int, lease_s: float, now: float) -> list[Task]:
        self.requeue_expired(now)
        taken: list[Task] = []
        while self.pending and len(taken) < count:
            task_id, _ = self.pending.popitem(last=False)
            self.leased[task_id] = now + lease_s
            self.leases[task_id] = self.leases.get(task_id, 0) + 1
            taken.append(self.tasks[task_id].leased_as(self.leases[task_id]))
        return taken

    def renew(self, task_id: str, lease: int, lease_s: float, now: float) -> bool:
        """Extend lease number `lease` of a task if it is still held under it (also past its deadline
        while nobody took it); False when the task went back to the queue, was leased again (to another
        worker) or is done: then the holder of that old lease must leave the task alone."""
        if task_id not in self.leased or self.leases.get(task_id) != lease:
            return False
        self.leased[task_id] = now + lease_s
        return True

    def complete(self, task_ids: Iterable[str]) -> None:
        ids = [task_id for task_id in task_ids if task_id in self.tasks and task_id not in self.done]
        self._log([{"op": "done", "id": task_id} for task_id in ids])
        for task_id in ids:
            self.leased.pop(task_id, None)
            self.pending.pop(task_id, None)
            self.done.add(task_id)

    def retry(self, task: Task, counted: bool = True) -> None:
        """Back to the end of the queue with one more attempt (or deferral, when not counted)."""
        again = task.retried(counted)
        self._log([{"op": "retry", "task": json.loads(again.to_json())}])
        self.tasks[again.id] = again
        self.leased.pop(again.id, None)
        if again.id not in self.done:
            self.pending[again.id] = None

    def requeue_expired(self, now: float) -> int:
        expired = [task_id for task_id, deadline in self.leased.items() if deadline <= now]
        for task_id in expired:
            del self.leased[task_id]
            self.pending[task_id] = None
        return len(expired)

    def recover(self) -> int:
        """A new crawl over the same frontier: whatever was leased is pending again."""
        return self.requeue_expired(float("inf"))

    def counts(self) -> FrontierCounts:
        return FrontierCounts(len(self.tasks), len(self.pending), len(self.leased), len(self.done))

    def _log(self, entries: list[dict[str, Any]]) -> None:
        if self._file is None or not entries:
            return
        self._file.write("".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries))
        self._file.flush()
        os.fsync(self._file.fileno())

    def _replay(self, journal: Path) -> None:
        if not journal.exists():
            return
        data = journal.read_bytes()
        complete = data.rfind(b"\n") + 1
        if complete < len(data):
            # A crash mid-write leaves a cut-off last line. Cut the file back to its last complete line
            # before appending: an entry written after the broken one would be glued onto it, and the
            # next restart would find a corrupt line in the middle (and lose that entry).
            log.warning("%s: dropping a cut-off last journal line (%d bytes) left by a crash mid-write",
                        journal, len(data) - complete)
            with open(journal, "r+b") as handle:
                handle.truncate(complete)
                handle.flush()
                os.fsync(handle.fileno())
        lines = data[:complete].decode("utf-8", "replace").splitlines()
        for number, line in enumerate(lines, start=1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{journal}:{number}: corrupt frontier journal line") from None
            if entry["op"] in ("add", "retry"):
                task = Task(**entry["task"])
                self.tasks[task.id] = task
                if task.id not in self.done:
                    self.pending[task.id] = None
            elif entry["op"] == "done":
                self.done.add(entry["id"])
                self.pending.pop(entry["id"], None)
        log.info("frontier journal replayed: %s", self.counts())


@functools.cache
def _remote_frontier_actor() -> Any:
    import ray

    @ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
    class FrontierActor:
        """Holds the frontier for all workers of one crawl; its journal makes it restartable."""

        def __init__(self, journal: str | None) -> None:
            self.state = FrontierState(Path(journal) if journal else None)

        def add(self, tasks: list[str]) -> int:
            return self.state.add(Task.from_json(t) for t in tasks)

        def lease(self, count: int, lease_s: float) -> list[str]:
            return [t.to_json() for t in self.state.lease(count, lease_s, time.monotonic())]

        def renew(self, task_id: str, lease: int, lease_s: float) -> bool:
            return self.state.renew(task_id, lease, lease_s, time.monotonic())

        def complete(self, task_ids: list[str]) -> None:
            self.state.complete(task_ids)

        def retry(self, task: str, counted: bool = True) -> None:
            self.state.retry(Task.from_json(task), counted)

        def recover(self) -> int:
            return self.state.recover()

        def counts(self) -> FrontierCounts:
            return self.state.counts()

    return FrontierActor


class ActorFrontier:
    """Client of a FrontierActor; picklable, so workers receive it as an argument."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle

    async def add(self, tasks: list[Task]) -> int:
        return await self.handle.add.remote([t.to_json() for t in tasks]) if tasks else 0

    async def lease(self, count: int, lease_s: float) -> list[Task]:
        return [Task.from_json(t) for t in await self.handle.lease.remote(count, lease_s)]

    async def renew(self, task: Task, lease_s: float) -> bool:
        return await self.handle.renew.remote(task.id, task.lease, lease_s)

    async def complete(self, task_ids: list[str]) -> None:
        if task_ids:
            await self.handle.complete.remote(task_ids)

    async def retry(self, task: Task, counted: bool = True) -> None:
        await self.handle.retry.remote(task.to_json(), counted)

    async def recover(self) -> int:
        return await self.handle.recover.remote()

    async def counts(self) -> FrontierCounts:
        return await self.handle.counts.remote()


# KEYS: seen, tasks, pending; ARGV: id1, json1, id2, json2, ...
_LUA_ADD = """
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('RPUSH', KEYS[3], ARGV[i])
    added = added + 1
  end
end
return added
"""
# KEYS: tasks, pending, leased, done, leases; ARGV: count, lease_s. Clock: Redis TIME, shared by all
# nodes. Returns task json, lease number, task json, lease number, ...
# An id can sit in pending after it was completed (its lease expired while its worker finished it):
# such ids are skipped here instead of being searched for on every completion.
_LUA_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)
for _, id in ipairs(expired) do
  redis.call('ZREM', KEYS[3], id)
  redis.call('RPUSH', KEYS[2], id)
end
local out = {}
while #out < 2 * tonumber(ARGV[1]) do
  local id = redis.call('LPOP', KEYS[2])
  if not id then break end
  local task = redis.call('HGET', KEYS[1], id)
  if task and redis.call('SISMEMBER', KEYS[4], id) == 0 then
    redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), id)
    table.insert(out, task)
    table.insert(out, redis.call('HINCRBY', KEYS[5], id, 1))
  end
end
return out
"""
# KEYS: leased, leases; ARGV: id, lease number, lease_s. Only a lease still held under that number is
# extended (ZADD XX); the Redis clock.
_LUA_RENEW = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
# KEYS: leased, done, tasks; ARGV: ids
_LUA_COMPLETE = """
for _, id in ipairs(ARGV) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('SADD', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
end
return #ARGV
"""
# KEYS: leased, done, tasks, pending; ARGV: id, task json
_LUA_RETRY = """
redis.call('ZREM', KEYS[1], ARGV[1])
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 0 then
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
  redis.call('RPUSH', KEYS[4], ARGV[1])
end
return 1
"""
# KEYS: leased, pending
_LUA_RECOVER = """
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, id in ipairs(ids) do redis.call('RPUSH', KEYS[2], id) end
redis.call('DEL', KEYS[1])
return #ids
"""


class RedisFrontier:
    """The frontier in Redis under `namespace`; picklable (it reconnects in each process)."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url = url
        self.namespace = namespace
        self._client: Any = None
        self._scripts: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "namespace": self.namespace}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["namespace"])

    def __repr__(self) -> str:
        return f"RedisFrontier(namespace={self.namespace!r})"  # the URL may carry a password

    def _keys(self, *names: str) -> list[str]:
        return [f"{self.namespace}:{name}" for name in names]

    def _redis(self) -> Any:
        if self._client is None:
            import redis.asyncio as aioredis

            self._client = aioredis.Redis.from_url(self.url, decode_responses=True)
        return self._client

    def _script(self, name: str, source: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self._redis().register_script(source)
        return self._scripts[name]

    async def add(self, tasks: list[Task]) -> int:
        if not tasks:
            return 0
        unique = list({t.id: t for t in tasks}.values())
        args = [item for t in unique for item in (t.id, t.to_json())]
        return int(await self._script("add", _LUA_ADD)(keys=self._keys("seen", "tasks", "pending"), args=args))

    async def lease(self, count: int, lease_s: float) -> list[Task]:
        raw = await self._script("lease", _LUA_LEASE)(
            keys=self._keys("tasks", "pending", "leased", "done", "leases"), args=[count, lease_s]
        )
        return [Task.from_json(raw[i]).leased_as(int(raw[i + 1])) for i in range(0, len(raw), 2)]

    async def renew(self, task: Task, lease_s: float) -> bool:
        keys, args = self._keys("leased", "leases"), [task.id, str(task.lease), lease_s]
        return bool(await self._script("renew", _LUA_RENEW)(keys=keys, args=args))

    async def complete(self, task_ids: list[str]) -> None:
        if task_ids:
            await self._script("complete", _LUA_COMPLETE)(keys=self._keys("leased", "done", "tasks"), args=task_ids)

    async def retry(self, task: Task, counted: bool = True) -> None:
        again = task.retried(counted)
        await self._script("retry", _LUA_RETRY)(
            keys=self._keys("leased", "done", "tasks", "pending"), args=[again.id, again.to_json()]
        )

    async def recover(self) -> int:
        return int(await self._script("recover", _LUA_RECOVER)(keys=self._keys("leased", "pending")))

    async def counts(self) -> FrontierCounts:
        pipe = self._redis().pipeline()
        pipe.scard(f"{self.namespace}:seen").llen(f"{self.namespace}:pending")
        pipe.zcard(f"{self.namespace}:leased").scard(f"{self.namespace}:done")
        seen, pending, leased, done = await pipe.execute()
        return FrontierCounts(seen, pending, leased, done)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
            self._scripts.clear()


def create_frontier(output_dir: Path, redis_url: str | None, namespace: str) -> RedisFrontier | ActorFrontier:
    """Redis when a URL is configured, else a Ray actor journaling under `output_dir/_frontier`."""
    if redis_url:
        return RedisFrontier(redis_url, namespace)
    journal = Path(output_dir).resolve() / "_frontier" / "journal.jsonl"
    actor = _remote_frontier_actor().options(name=_actor_name(namespace), get_if_exists=True).remote(str(journal))
    return ActorFrontier(actor)


def find_frontier(redis_url: str | None, namespace: str) -> RedisFrontier | ActorFrontier:
    """The frontier that `create_frontier` made with the same namespace (a crawl actor's way to it)."""
    if redis_url:
        return RedisFrontier(redis_url, namespace)
    import ray

    return ActorFrontier(ray.get_actor(_actor_name(namespace)))


def _actor_name(namespace: str) -> str:
    return f"{namespace}:frontier"
