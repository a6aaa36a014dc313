"""The crawl frontier on both backends: dedupe, leases, retries, completion, recovery, the journal."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from pathlib import Path

import pytest

from crawl_actors.frontier import FrontierState, RedisFrontier, Task, create_frontier


def tasks(*keys: str, kind: str = "profile") -> list[Task]:
    return [Task(kind, key, {"uid": key}) for key in keys]


@pytest.fixture(params=["actor", "redis"])
def frontier(request, tmp_path: Path):
    namespace = f"test:frontier:{secrets.token_hex(4)}"
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        yield RedisFrontier(url, namespace)
    else:
        request.getfixturevalue("ray_local")
        made = create_frontier(tmp_path, None, namespace)
        yield made
        import ray

        ray.kill(made.handle)


def run(coro):
    return asyncio.run(coro)


async def _close(frontier) -> None:
    if hasattr(frontier, "close"):
        await frontier.close()


def test_a_task_is_queued_once_however_often_it_is_found(frontier) -> None:
    async def scenario():
        assert await frontier.add(tasks("1", "2", "1")) == 2
        assert await frontier.add(tasks("2", "3")) == 1
        leased = await frontier.lease(10, 60)
        await frontier.complete([t.id for t in leased])
        assert await frontier.add(tasks("1")) == 0  # done tasks are not found again either
        counts = await frontier.counts()
        await _close(frontier)
        return leased, counts

    leased, counts = run(scenario())
    assert [t.key for t in leased] == ["1", "2", "3"]
    assert (counts.seen, counts.pending, counts.leased, counts.done, counts.drained) == (3, 0, 0, 3, True)


def test_leases_expire_back_into_the_queue(frontier) -> None:
    async def scenario():
        await frontier.add(tasks("a", "b"))
        first = await frontier.lease(1, 0.3)
        assert (await frontier.counts()).leased == 1
        await asyncio.sleep(0.5)
        again = await frontier.lease(5, 60)
        await _close(frontier)
        return first, again

    first, again = run(scenario())
    assert [t.key for t in first] == ["a"]
    assert sorted(t.key for t in again) == ["a", "b"]


def test_retry_counts_attempts_and_requeues_at_the_end(frontier) -> None:
    async def scenario():
        await frontier.add(tasks("x", "y"))
        x = (await frontier.lease(1, 60))[0]
        await frontier.retry(x)
        order = await frontier.lease(2, 60)
        await _close(frontier)
        return order

    order = run(scenario())
    assert [(t.key, t.attempts) for t in order] == [("y", 0), ("x", 1)]


def test_a_retry_that_is_not_the_pages_fault_counts_a_deferral_not_an_attempt(frontier) -> None:
    async def scenario():
        await frontier.add(tasks("x"))
        x = (await frontier.lease(1, 60))[0]
        await frontier.retry(x, counted=False)
        x = (await frontier.lease(1, 60))[0]
        await frontier.retry(x, counted=False)
        x = (await frontier.lease(1, 60))[0]
        await frontier.retry(x)
        again = await frontier.lease(1, 60)
        await _close(frontier)
        return again

    again = run(scenario())
    assert [(t.key, t.attempts, t.deferrals) for t in again] == [("x", 1, 2)]


def test_a_journal_written_before_deferrals_existed_still_replays(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    old_entry = {"op": "add", "task": {"kind": "profile", "key": "1", "params": {"uid": "1"}, "attempts": 2}}
    journal.write_text(json.dumps(old_entry) + "\n")
    state = FrontierState(journal)
    (task,) = state.lease(1, 60, time.monotonic())
    assert (task.attempts, task.deferrals) == (2, 0)


def test_a_completed_task_is_never_handed_out_again(frontier) -> None:
    async def scenario():
        await frontier.add(tasks("slow"))
        slow = await frontier.lease(1, 0.2)
        await asyncio.sleep(0.4)  # its lease expires while its worker is still on it
        await frontier.complete([slow[0].id])
        again = await frontier.lease(5, 60)
        counts = await frontier.counts()
        await _close(frontier)
        return again, counts

    again, counts = run(scenario())
    assert again == []
    assert counts.done == 1 and counts.leased == 0


def test_recover_returns_every_lease_at_once(frontier) -> None:
    async def scenario():
        await frontier.add(tasks("1", "2", "3"))
        await frontier.lease(2, 3600)
        recovered = await frontier.recover()
        counts = await frontier.counts()
        await _close(frontier)
        return recovered, counts

    recovered, counts = run(scenario())
    assert recovered == 2
    assert (counts.pending, counts.leased) == (3, 0)


def test_redis_state_outlives_the_client(redis_url: str) -> None:
    namespace = f"test:frontier:{secrets.token_hex(4)}"

    async def first_run():
        frontier = RedisFrontier(redis_url, namespace)
        await frontier.add(tasks("1", "2"))
        done = await frontier.lease(1, 60)
        await frontier.complete([done[0].id])
        await frontier.close()

    async def second_run():
        frontier = RedisFrontier(redis_url, namespace)
        counts = await frontier.counts()
        left = await frontier.lease(5, 60)
        await frontier.close()
        return counts, left

    run(first_run())
    counts, left = run(second_run())
    assert (counts.seen, counts.done) == (2, 1)
    assert [t.key for t in left] == ["2"]
    assert "redis://" not in repr(RedisFrontier(redis_url, namespace))


def test_journal_replay_keeps_done_and_requeues_the_rest(tmp_path: Path) -> None:
    journal = tmp_path / "_frontier" / "journal.jsonl"
    state = FrontierState(journal)
    state.add(tasks("1", "2", "3", "4"))
    leased = state.lease(3, 60, now=time.monotonic())
    state.complete([leased[0].id])
    state.retry(leased[1])
    replayed = FrontierState(journal)
    counts = replayed.counts()
    assert (counts.seen, counts.done, counts.leased, counts.pending) == (4, 1, 0, 3)
    order = replayed.lease(10, 60, now=time.monotonic())
    assert {t.key: t.attempts for t in order} == {"2": 1, "3": 0, "4": 0}


def test_a_cut_off_last_journal_line_is_ignored_but_corruption_is_not(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    state = FrontierState(journal)
    state.add(tasks("1", "2"))
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write('{"op": "done", "id": "prof')  # a crash mid-write
    assert FrontierState(journal).counts().pending == 2
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match=r"journal.jsonl:2: corrupt frontier journal line"):
        FrontierState(journal)


def test_only_the_holder_of_a_lease_can_renew_it(frontier) -> None:
    async def scenario():
        await frontier.add(tasks("held", "lost"))
        held, lost = await frontier.lease(2, 0.3)
        for _ in range(3):  # a worker waiting for a cookie renews every lease_s / 3
            await asyncio.sleep(0.15)
            assert await frontier.renew(held, 0.3)
        await asyncio.sleep(0.2)
        others = await frontier.lease(5, 60)  # 'lost' expired and goes to another worker; 'held' does not
        old_holder = await frontier.renew(lost, 60)  # the first holder, back from a stall: not its lease now
        new_holder = await frontier.renew(others[0], 60)
        await frontier.complete([held.id, others[0].id])
        after_done = [await frontier.renew(task, 60) for task in (held, others[0])]
        await _close(frontier)
        return others, old_holder, new_holder, after_done

    others, old_holder, new_holder, after_done = run(scenario())
    assert [(t.key, t.lease) for t in others] == [("lost", 2)]
    assert (old_holder, new_holder, after_done) == (False, True, [False, False])


def test_a_crash_mid_write_can_be_resumed_again_and_again(tmp_path: Path) -> None:
    journal = tmp_path / "_frontier" / "journal.jsonl"
    state = FrontierState(journal)
    state.add(tasks("1", "2", "3"))
    first = state.lease(1, 60, time.monotonic())
    with open(journal, "a", encoding="utf-8") as handle:
        handle.write('{"op": "done", "id": "prof')  # the crash: half a line, no newline
    for _ in range(2):  # resumed twice: each restart finishes one task, then "crashes" again
        state = FrontierState(journal)
        (task,) = state.lease(1, 60, time.monotonic())
        state.complete([task.id])
        with open(journal, "a", encoding="utf-8") as handle:
            handle.write('{"op": "add", "task": {"kind": "pro')
    final = FrontierState(journal)
    counts = final.counts()
    assert (counts.seen, counts.done, counts.pending) == (3, 2, 1)
    assert [t.key for t in final.lease(5, 60, time.monotonic())] == ["3"] and first[0].key == "1"
    lines = journal.read_text(encoding="utf-8").splitlines()
    assert all(json.loads(line) for line in lines)  # every line whole: nothing glued onto a broken one
    assert sum('"done"' in line for line in lines) == 2
