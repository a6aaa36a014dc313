"""The model deployment: the base model, adapters (PAC-LoRA or peft LoRA) multiplexed per replica, dynamic batching.

A call is a list of jobs (a prompt and a number of samples) for one model id, the multiplexed
model id the ingress routes on, so calls for an adapter go to replicas that hold it. Each sample
becomes one row in the replica's `@serve.batch` queue (max_batch_size, batch_wait_timeout_s from
the config; Serve splits batches by model id).

Serve forms the next batch while one is still generating, from whatever arrives in its wait
window, so under load its batches would stay as small as that window. Batches therefore go to
one generation loop: when the model is free it takes every batch waiting for the same model, whole
and up to max_batch_size rows, and runs them as one left-padded `generate` per decoding group
(`engine.generate_rows`) in a worker thread. A batch is never split; the event loop stays free to
accept and queue requests meanwhile; one generate runs at a time, so an adapter's routing state is
never shared by two.

Adapters are loaded on demand (LRU, `max_adapters_per_replica`) onto a copy of the base model
that shares every base weight, so an adapter costs only its own parameters. The base model alone
(`base_model_id`) is always there: the zero-shot baseline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

from ray import serve as ray_serve

from cluster.logs import setup_logging
from cluster.metrics import count, metric
from serve.config import ServeConfig
from serve.protocol import Completion, Job, UnknownModel

log = logging.getLogger(__name__)


@ray_serve.deployment(name="Generator")
class Generator:
    def __init__(self, config: ServeConfig) -> None:
        from serve.engine import LoadedModel, load_base

        setup_logging(config.log_level)
        self.config = config
        began = time.monotonic()
        self.base, self.tokenizer = load_base(config.base_model, config.device, config.dtype)
        self.base_entry = LoadedModel(config.base_model_id, self.base, routing="sequence", takes_spans=False)
        self.batches: deque[tuple[int, float]] = deque(maxlen=10_000)  # (rows, seconds) per generate
        self.adapter_loads: list[str] = []
        self.waiting: deque[tuple[list[Any], list[asyncio.Future]]] = deque()  # batches for the loop
        self.wakeup: asyncio.Event | None = None
        self.loop_task: asyncio.Task | None = None
        self.last_generate_s = 0.0

        async def load_model(model_id: str) -> Any:
            return await self._load(model_id)

        # Both built here rather than as decorators, so that their sizes come from the config.
        self.load_model = ray_serve.multiplexed(max_num_models_per_replica=config.max_adapters_per_replica)(load_model)
        # Batches Serve may hand over at once (one generating, the others waiting to join the next
        # generate); Serve warns unless max_ongoing_requests >= max_batch_size * this.
        handed_over = max(1, config.max_ongoing_requests // config.max_batch_size)
        self.batched = ray_serve.batch(
            max_batch_size=config.max_batch_size,
            batch_wait_timeout_s=config.batch_wait_timeout_s,
            max_concurrent_batches=handed_over,
        )(self._batch)
        log.info(
            "Generator ready in %.1fs: %s on %s, adapters %s, batches of up to %d rows",
            time.monotonic() - began, config.base_model, self.base.device, sorted(config.adapters),
            config.max_batch_size,
        )

    async def generate(self, jobs: list[Job]) -> list[list[Completion]]:
        """Completions for every job (n each), in order; all jobs use the call's model id."""
        from serve.engine import Row

        model_id = ray_serve.get_multiplexed_model_id() or self.config.base_model_id
        loaded = self.base_entry if model_id == self.config.base_model_id else await self.load_model(model_id)
        encodings = await encode_jobs(self.tokenizer, jobs, loaded.routing, self.config.max_prompt_tokens,
                                      self.config.decoding.strip_prompt_end)
        rows = [Row(loaded, encoding, job.sampling, job.gates) for job, encoding in zip(jobs, encodings, strict=True)
                for _ in range(job.n)]
        done = iter(await asyncio.gather(*(self.batched(row) for row in rows)))
        return [[next(done) for _ in range(job.n)] for job in jobs]

    def stats(self) -> dict[str, Any]:
        """Generates so far (oldest first: rows and seconds each) and adapters loaded: for tests and benchmarks."""
        return {
            "batch_sizes": [size for size, _ in self.batches],
            "batch_seconds": [seconds for _, seconds in self.batches],
            "adapter_loads": list(self.adapter_loads),
        }

    async def _batch(self, rows: list[Any]) -> list[Completion]:
        """The @serve.batch handler: queue the batch for the generation loop and wait for its rows."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in rows]
        self.waiting.append((rows, futures))
        if self.loop_task is None or self.loop_task.done():
            self.wakeup = asyncio.Event()
            self.loop_task = loop.create_task(self._generation_loop())
        assert self.wakeup is not None
        self.wakeup.set()
        return list(await asyncio.gather(*futures))

    async def _generation_loop(self) -> None:
        from serve.engine import generate_rows

        assert self.wakeup is not None
        while True:
            if not self.waiting:  # idle: the next batch starts at once (its @serve.batch window has passed)
                self.wakeup.clear()
                await self.wakeup.wait()
                continue
            rows, futures = self._take()
            began = time.monotonic()
            try:
                completions = await asyncio.to_thread(
                    generate_rows, rows, self.tokenizer, self._record, self.config.decoding.stop_tokens
                )
            except Exception as error:  # the callers get it; the loop goes on
                log.exception("generate failed for %d rows", len(rows))
                for future in futures:
                    if not future.done():
                        future.set_exception(error)
            else:
                for future, completion in zip(futures, completions, strict=True):
                    if not future.done():  # a caller that went away has cancelled its future
                        future.set_result(completion)
                count("serve_generated_tokens", sum(c.completion_tokens for c in completions),
                      model=rows[0].model.model_id)
            self.last_generate_s = time.monotonic() - began
            await self._linger()

    async def _linger(self) -> None:
        """After a generate, wait a little while less than a full batch waits.

        The callers just answered send their next requests only now; without this wait the next
        generate takes just the batch that queued meanwhile, and concurrent clients split into
        cohorts that alternate for good. The wait is a quarter of the last generate (so it costs
        at most a fifth of the throughput it can double), within one to four @serve.batch
        windows (so a lone caller waits at most 4 x batch_wait_timeout_s more).
        """
        window = self.config.batch_wait_timeout_s
        linger_s = min(max(self.last_generate_s / 4, window), 4 * window)
        deadline = time.monotonic() + linger_s
        while self._waiting_rows() < self.config.max_batch_size:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            assert self.wakeup is not None
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), left)
            except asyncio.TimeoutError:
                return

    def _waiting_rows(self) -> int:
        return sum(len(rows) for rows, _ in self.waiting)

    def _take(self) -> tuple[list[Any], list[asyncio.Future]]:
        """The oldest waiting batch, and the batches behind it for the same model while they fit, whole."""
        rows, futures = self.waiting.popleft()
        rows, futures = list(rows), list(futures)
        model = rows[0].model
        kept: deque[tuple[list[Any], list[asyncio.Future]]] = deque()
        while self.waiting:
            more_rows, more_futures = self.waiting.popleft()
            if more_rows[0].model is model and len(rows) + len(more_rows) <= self.config.max_batch_size:
                rows += more_rows
                futures += more_futures
            else:
                kept.append((more_rows, more_futures))
        self.waiting = kept
        return rows, futures

    def _record(self, rows: int, seconds: float, model_id: str) -> None:
        self.batches.append((rows, seconds))
        try:
            metric("serve_batch_size").observe(rows, tags={"model": model_id})
        except Exception as error:  # metrics must never break the work they describe
            log.warning("metric serve_batch_size not recorded: %s", error)

    async def _load(self, model_id: str) -> Any:
        from serve.engine import load_any_adapter

        directory = self.config.adapters.get(model_id)
        if directory is None:
            raise UnknownModel(model_id, [self.config.base_model_id, *self.config.adapters])
        began = time.monotonic()
        loaded = await asyncio.to_thread(load_any_adapter, self.base, model_id, directory)
        count("serve_adapter_loads", model=model_id)
        self.adapter_loads.append(model_id)
        log.info("adapter %s loaded from %s in %.2fs", model_id, directory, time.monotonic() - began)
        return loaded


async def encode_jobs(
    tokenizer: Any, jobs: list[Job], routing: str, max_tokens: int, strip_prompt_end: bool = False
) -> list[Any]:
    """Every job's prompt encoding, tokenised in a worker thread: a chat of megabytes takes the
    tokenizer a while, and on the event loop it would hold up every other request meanwhile.
    (Tokenizing and decoding only read the fast tokenizer, so threads may share it.)"""
    from serve.prompts import encode

    return await asyncio.to_thread(
        lambda: [encode(tokenizer, job.prompt, routing, max_tokens, strip_prompt_end) for job in jobs]
    )
