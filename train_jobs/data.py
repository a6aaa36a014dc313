"""The SFT set as Ray Data: one split and prompt variant, encoded once, collated on the workers.

The driver reads `<sft_path>/<split>/*.parquet` (the `cluster.schemas.SFT` table), keeps the rows
of the configured prompt variant and encodes them with `pac_lora.build_prompt` in Ray Data tasks
(token ids, response-only labels, user and news spans). A row that cannot be trained on (its
prompt alone exceeds max_length, or no response token fits) is counted and left out, never a
crash. The encoded rows are shuffled once (seeded) and materialised so their number can size the
schedule; Ray Train then streams equal shards of them to the workers. Each worker reshuffles its
shard every epoch (`epoch_micro_batches`, seeded by seed, epoch and rank, so a restarted worker
replays the same order), and `CollateRows` pads each micro-batch.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from ray.data.collate_fn import NumpyBatchCollateFn
from ray.data.expressions import col

from cluster.config import ConfigError

log = logging.getLogger(__name__)

SFT_COLUMNS = ["id", "variant", "user_part", "news_part", "instruction_part", "output"]
ENCODED = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("input_ids", pa.list_(pa.int32())),
        pa.field("labels", pa.list_(pa.int32())),
        pa.field("user_start", pa.int32()),
        pa.field("user_end", pa.int32()),
        pa.field("news_start", pa.int32()),
        pa.field("news_end", pa.int32()),
        pa.field("prompt_length", pa.int32()),
        pa.field("num_tokens", pa.int32()),
        pa.field("skip_reason", pa.string()),  # "" for rows to train on
    ]
)
TRAIN_COLUMNS = [name for name in ENCODED.names if name not in ("id", "num_tokens", "skip_reason")]
# A worker reshuffles its shard within windows of this many rows (all of it when smaller): the
# window is all it holds in memory, and the order stays independent of Ray's block boundaries.
SHUFFLE_WINDOW_ROWS = 4096


@dataclass(frozen=True)
class PreparedData:
    dataset: Any  # ray.data.Dataset of usable encoded rows, materialised
    rows: int
    tokens: int
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows


def prepare_sft(
    sft_path: str | Path, split: str, variant: str, base_model: str | Path, routing: str, max_length: int, seed: int
) -> PreparedData:
    """Read, filter, encode and shuffle (seeded) one split of the SFT set."""
    import ray

    directory = Path(sft_path) / split
    if not directory.is_dir() or not any(directory.rglob("*.parquet")):
        raise ConfigError(
            f"sft_path: no Parquet files under {directory} (expected <sft_path>/{split}/*.parquet from "
            "`socialalign build-dataset`)"
        )
    raw = ray.data.read_parquet(str(directory)).select_columns(SFT_COLUMNS)
    encoded = raw.map_batches(
        encode_batch,
        batch_format="pyarrow",
        fn_kwargs={
            "base_model": str(base_model),
            "variant": variant,
            "routing": routing,
            "max_length": max_length,
        },
    ).materialize()
    stats = _Stats.of(encoded)
    if stats.total == 0:
        raise ConfigError(f"prompt_variant: no rows with variant={variant!r} under {directory}")
    if stats.skipped:
        log.warning(
            "skipped %d of %d %s rows: %s (e.g. %s: %s)",
            sum(stats.skipped.values()), stats.total, variant,
            ", ".join(f"{count} {reason}" for reason, count in stats.skipped.items()), *stats.example,
        )
    if stats.rows == 0:
        raise ConfigError(
            f"max_length: none of the {stats.total} {variant} rows fits in max_length={max_length} tokens"
        )
    usable = encoded.filter(expr=col("skip_reason") == "").random_shuffle(seed=seed)
    usable = usable.select_columns(TRAIN_COLUMNS).materialize()
    return PreparedData(dataset=usable, rows=stats.rows, tokens=stats.tokens, skipped=stats.skipped)


def encode_batch(
    batch: pa.Table, base_model: str, variant: str, routing: str, max_length: int
) -> pa.Table:
    """Rows of `variant` -> token ids, response-only labels and spans (a reason instead when unusable)."""
    from pac_lora import PromptTooLong, build_prompt

    tokenizer = load_tokenizer(base_model)
    out: dict[str, list[Any]] = {name: [] for name in ENCODED.names}
    for row in batch.filter(pc.equal(batch["variant"], variant)).to_pylist():
        reason = ""
        try:
            enc = build_prompt(
                tokenizer, row["user_part"], row["news_part"], row["instruction_part"],
                response=row["output"], routing=routing, max_length=max_length,
            )
            if enc.prompt_length >= len(enc.input_ids):
                reason = f"no response token fits in max_length={max_length}"
        except PromptTooLong as error:
            enc, reason = None, f"prompt too long: {error}"
        out["id"].append(row["id"])
        out["skip_reason"].append(reason)
        if reason:
            for name in ("input_ids", "labels"):
                out[name].append([])
            for name in ("user_start", "user_end", "news_start", "news_end", "prompt_length", "num_tokens"):
                out[name].append(0)
            continue
        out["input_ids"].append(enc.input_ids)
        out["labels"].append(enc.labels)
        out["user_start"].append(enc.user_span[0])
        out["user_end"].append(enc.user_span[1])
        out["news_start"].append(enc.news_span[0])
        out["news_end"].append(enc.news_span[1])
        out["prompt_length"].append(enc.prompt_length)
        out["num_tokens"].append(len(enc.input_ids))
    return pa.Table.from_pydict(out, schema=ENCODED)


def epoch_order(rows: int, seed: int, epoch: int, rank: int, window: int = 0) -> np.ndarray:
    """A permutation of `rows` for one window of a worker's shard in one epoch, fixed by its arguments."""
    return np.random.default_rng([seed % 2**64, epoch, rank, window]).permutation(rows)


def epoch_micro_batches(
    shard: Any,
    micro_batch_size: int,
    collate: Callable[[dict[str, np.ndarray]], Any],
    seed: int,
    epoch: int,
    rank: int,
    skip: int = 0,
    window_rows: int = SHUFFLE_WINDOW_ROWS,
) -> Iterator[Any]:
    """One epoch of this worker's shard (a Ray DataIterator), reshuffled for the epoch, as collated
    micro-batches; the first `skip` (trained on before the checkpoint a run resumed from) are passed
    over without collating them.

    The shard arrives in the same order every epoch and after every restart (the trainer's
    `preserve_order`); it is read in windows of whole micro-batches, so an epoch has
    ceil(rows / micro_batch_size) micro-batches as the step plan counts, and each window is
    permuted by `epoch_order`.
    """
    window_rows = max(micro_batch_size, window_rows // micro_batch_size * micro_batch_size)
    index = 0
    windows = shard.iter_batches(batch_size=window_rows, batch_format="numpy", prefetch_batches=1)
    for window, columns in enumerate(windows):
        rows = len(next(iter(columns.values())))
        if index + math.ceil(rows / micro_batch_size) <= skip:  # a whole window already trained on
            index += math.ceil(rows / micro_batch_size)
            continue
        order = epoch_order(rows, seed, epoch, rank, window)
        for start in range(0, rows, micro_batch_size):
            if index >= skip:
                picked = order[start : start + micro_batch_size]
                yield collate({name: values[picked] for name, values in columns.items()})
            index += 1


@functools.lru_cache(maxsize=4)
def load_tokenizer(base_model: str) -> Any:
    """The base model's tokenizer, once per process (Ray Data reuses its worker processes)."""
    import pac_lora

    return pac_lora.load_tokenizer(base_model)


class CollateRows(NumpyBatchCollateFn):
    """Encoded rows -> a right-padded micro-batch (`pac_lora.collate`): ids, mask, labels, spans."""

    def __init__(self, pad_token_id: int) -> None:
        super().__init__()
        self.pad_token_id = pad_token_id

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, Any]:
        from pac_lora import PromptEncoding, collate

        encodings = []
        for i in range(len(batch["input_ids"])):
            ids = [int(t) for t in batch["input_ids"][i]]
            encodings.append(
                PromptEncoding(
                    input_ids=ids,
                    attention_mask=[1] * len(ids),
                    labels=[int(t) for t in batch["labels"][i]],
                    user_span=(int(batch["user_start"][i]), int(batch["user_end"][i])),
                    news_span=(int(batch["news_start"][i]), int(batch["news_end"][i])),
                    prompt_length=int(batch["prompt_length"][i]),
                )
            )
        return collate(encodings, self.pad_token_id, padding_side="right")


@dataclass
class _Stats:
    """Counts over the encoded rows, read in one pass on the driver (ids, reasons and lengths only)."""

    total: int = 0
    rows: int = 0
    tokens: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason, up to its first ':' -> rows
    example: tuple[str, str] = ("", "")  # the first skipped row: id, full reason

    @classmethod
    def of(cls, encoded: Any) -> _Stats:
        stats = cls()
        columns = ["id", "skip_reason", "num_tokens"]
        for batch in encoded.select_columns(columns).iter_batches(batch_format="pyarrow", batch_size=65536):
            for row_id, reason, tokens in zip(*(batch[name].to_pylist() for name in columns), strict=True):
                stats.total += 1
                if not reason:
                    stats.rows += 1
                    stats.tokens += tokens
                    continue
                kind = reason.split(":", 1)[0]
                stats.skipped[kind] = stats.skipped.get(kind, 0) + 1
                if not stats.example[0]:
                    stats.example = (row_id, reason)
        return stats
