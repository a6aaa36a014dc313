"""`socialalign predict`: predicted posts for the SFT test rows, one Parquet row per (topic, user,
sample), with a given adapter or the base model zero-shot.

Two ways, same rows: in-process (Ray Data actors that each hold the model and run one left-padded
batched `generate` per batch, as the serve app does), or through a running serve app
(`POST /v1/predict/micro`, which rebuilds the very same research prompt from the row's parts).
With `return_gates` each row also carries its prompt's expert gate weights (the `gates` column).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cluster.config import ConfigError
from cluster.parquet import atomic_write_parquet, read_table_dir
from cluster.ray_connect import ray_session
from cluster.retry import Backoff, retrying
from cluster.schemas import PREDICTIONS, SFT
from serve.config import PredictConfig
from serve.schemas import Decoding

log = logging.getLogger(__name__)

SKIPPED_STATUSES = (413, 422)  # the app refuses the row itself (too long, invalid): asking again cannot help
MAX_ATTEMPTS = 6  # per row while the app answers 503 (overloaded)
BACKOFF_S = 0.5  # the first wait, doubling up to BACKOFF_CAP_S (with jitter), unless the app says Retry-After
BACKOFF_CAP_S = 8.0


def run(config: PredictConfig) -> int:
    """Predict the test rows and write them; ConfigError, before Ray starts, for no rows or no model."""
    rows = load_rows(config)
    if rows.num_rows == 0:
        raise ConfigError(f"test_path: no {config.variant} rows in {config.test_path} (run socialalign build-dataset)")
    if not config.endpoint and not (Path(config.base_model) / "config.json").is_file():
        raise ConfigError(f"base_model: {config.base_model} is not a local Hugging Face model directory")
    if config.return_gates and not config.endpoint and not _is_pac_lora(config.adapter):
        raise ConfigError(f"return_gates: only a PAC-LoRA adapter has expert gates; adapter={config.adapter} "
                          f"is {'the base model' if not config.adapter else 'not one'}")
    if config.endpoint:
        predicted = asyncio.run(predict_via_endpoint(config, rows.to_pylist()))
    else:
        with ray_session(config.ray):
            predicted = predict_in_process(config, rows)
    table = pa.Table.from_pylist(predicted, schema=PREDICTIONS)
    config.output_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_parquet(table, config.output_path)
    skipped = rows.num_rows * config.samples_per_user - table.num_rows
    why = "refused by the endpoint (413/422), see the log" if config.endpoint else "prompt too long"
    print(f"predicted {table.num_rows} posts for {rows.num_rows} rows ({config.method})"
          + (f", {skipped} skipped ({why})" if skipped else "") + f": {config.output_path}")
    return 0


def _is_pac_lora(adapter: str | None) -> bool:
    from pac_lora import PAC_LORA, adapter_format

    return adapter is not None and adapter_format(adapter) == PAC_LORA


def load_rows(config: PredictConfig) -> pa.Table:
    table = read_table_dir(config.test_path, SFT)
    table = table.filter(pc.equal(table["variant"], config.variant)) if table.num_rows else table
    return table.slice(0, config.max_rows) if config.max_rows else table


def predict_in_process(config: PredictConfig, rows: pa.Table) -> list[dict[str, Any]]:
    import ray
    from ray.data import ActorPoolStrategy

    # Half a CPU on CPU-only machines: Ray Data's own read and collect tasks need the rest.
    resources = {"num_gpus": 1} if config.use_gpu else {"num_cpus": 0.5}
    return (
        ray.data.from_arrow(rows)
        .map_batches(Predictor, batch_format="pyarrow", batch_size=config.batch_size,
                     compute=ActorPoolStrategy(size=config.num_workers), fn_constructor_kwargs={"config": config},
                     **resources)
        .take_all()
    )


class Predictor:
    """Holds the base model (and adapter) once; each batch is one batched generate per sample round."""

    def __init__(self, config: PredictConfig) -> None:
        from serve.engine import LoadedModel, load_any_adapter, load_base

        self.config = config
        base, self.tokenizer = load_base(config.base_model)
        if config.adapter:
            self.model = load_any_adapter(base, config.method, config.adapter)
        else:
            self.model = LoadedModel(config.method, base, routing="sequence", takes_spans=False)
        self.sampling = config.decoding.sampling()

    def __call__(self, batch: pa.Table) -> pa.Table:
        from pac_lora import PromptTooLong, build_prompt
        from serve.engine import Row, generate_rows

        config = self.config
        gates = config.gate_detail if config.return_gates else None
        items, rows = [], []
        for item in batch.to_pylist():
            try:
                encoding = build_prompt(self.tokenizer, item["user_part"], item["news_part"], item["instruction_part"],
                                        routing=self.model.routing, max_length=config.max_length,
                                        strip_prompt_end=config.decoding.strip_prompt_end)
            except PromptTooLong as error:
                log.warning("skipped %s: %s", item["id"], error)
                continue
            items.append(item)
            rows.append(Row(self.model, encoding, self.sampling, gates))
        out = []
        for sample in range(config.samples_per_user):
            done = generate_rows(rows, self.tokenizer, stop_tokens=config.decoding.stop_tokens) if rows else []
            for item, completion in zip(items, done, strict=True):
                out.append(_prediction(config, item, sample, completion.text, completion.prompt_tokens,
                                       completion.completion_tokens, completion.gates))
        return pa.Table.from_pylist(out, schema=PREDICTIONS)


async def predict_via_endpoint(config: PredictConfig, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predictions through a running serve app. A busy app (503) is asked again with backoff; a row it
    refuses (413 too long, 422 invalid) is skipped and counted, as predicting in-process skips a
    prompt that is too long; any other answer stops the run."""
    import aiohttp

    headers = {"Authorization": f"Bearer {config.auth_token.get_secret_value()}"} if config.auth_token else {}
    gate = asyncio.Semaphore(config.batch_size)
    url = config.endpoint.rstrip("/") + "/v1/predict/micro"
    tally: Counter = Counter()
    async with aiohttp.ClientSession(headers=headers, timeout=aiohttp.ClientTimeout(total=600)) as session:

        async def one(item: dict[str, Any]) -> list[dict[str, Any]]:
            async with gate:
                body = await _post(session, url, _micro_request(config, item), item["id"], tally)
            if body is None:
                return []
            return [_prediction(config, item, sample, p["text"], body["prompt_tokens"], p["completion_tokens"],
                                body.get("gates"))
                    for sample, p in enumerate(body["predictions"])]

        results = await asyncio.gather(*(one(item) for item in rows))
    skipped = {status: tally[status] for status in SKIPPED_STATUSES if tally[status]}
    log.info("%s: %d of %d rows predicted, %d skipped (%s), %d retries after 503", url,
             len(rows) - sum(skipped.values()), len(rows), sum(skipped.values()),
             ", ".join(f"{status}: {n}" for status, n in skipped.items()) or "none", tally["retries"])
    return [row for rows_of_item in results for row in rows_of_item]


async def _post(session: Any, url: str, request: dict[str, Any], row_id: str, tally: Counter) -> dict | None:
    """The 200 answer's body; None for a refused row (counted by status in `tally`). A 503 is asked
    again by the shared retry policy (its Retry-After honoured), MAX_ATTEMPTS tries at most."""
    policy = Backoff(attempts=MAX_ATTEMPTS, initial_s=BACKOFF_S, max_s=BACKOFF_CAP_S)
    tries = 0
    try:
        async for attempt in retrying(policy, lambda error: getattr(error, "status", None) == 503,
                                      lambda error: getattr(error, "retry_after", None)):
            with attempt:
                tries += 1
                tally["retries"] += tries > 1
                return await _post_once(session, url, request, row_id, tally)
    except Answered as answer:
        after = f" after {tries} tries" if tries > 1 else ""
        raise RuntimeError(f"{url} answered {answer.status} for {row_id}{after}: {answer.text[:300]}") from None
    raise AssertionError("unreachable: retrying() raises the last failure")


class Answered(Exception):
    """The app answered neither 200 nor a refusal of the row: 503 (busy, worth asking again) or worse."""

    def __init__(self, status: int, text: str, retry_after: str | None) -> None:
        super().__init__(status, text, retry_after)
        self.status, self.text, self.retry_after = status, text, retry_after


async def _post_once(session: Any, url: str, request: dict[str, Any], row_id: str, tally: Counter) -> dict | None:
    async with session.post(url, json=request) as response:
        status, text = response.status, await response.text()
        retry_after = response.headers.get("Retry-After")
    if status == 200:
        return json.loads(text)
    if status in SKIPPED_STATUSES:
        tally[status] += 1
        log.warning("skipped %s: %s answered %d: %s", row_id, url, status, text[:300])
        return None
    raise Answered(status, text, retry_after)


def _micro_request(config: PredictConfig, item: dict[str, Any]) -> dict[str, Any]:
    request = {
        "user": {"name": item["user_name"] or "用户", "history": list(item["history_texts"] or []),
                 "persona": item["persona"]},
        "news": item["news"], "topic": item["topic"], "variant": item["variant"], "n": config.samples_per_user,
        "decoding": {name: getattr(config.decoding, name) for name in Decoding.model_fields},
    }
    if config.model:
        request["model"] = config.model
    if config.return_gates:
        request.update(return_gates=True, gate_detail=config.gate_detail)
    return request


def _prediction(config: PredictConfig, item: dict[str, Any], sample: int, text: str, prompt_tokens: int,
                completion_tokens: int, gates: dict[str, dict[str, list[float]]] | None = None) -> dict[str, Any]:
    return {
        "method": config.method, "topic": item["topic"], "user_id": item["user_id"], "mid": item["mid"],
        "sample": sample, "variant": item["variant"], "prediction": text, "real": item["output"],
        "adapter": config.adapter or config.model, "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens, "gates": gate_entries(gates),
    }


def gate_entries(gates: dict[str, dict[str, list[float]]] | None) -> list[dict[str, Any]] | None:
    """Gates by name (as the engine and the micro API give them) as the predictions table stores them."""
    if gates is None:
        return None
    return [{"name": name, "analyze": entry["analyze"], "compose": entry["compose"]} for name, entry in gates.items()]


if __name__ == "__main__":
    from cluster.cli import module_main

    module_main("serve.predict")
