"""The pieces around the loop, without Ray Train: step plan, DeepSpeed config, encoding, collation."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
import torch.nn.functional as F

from cluster.cli import main
from cluster.config import ConfigError, describe_fields, load_config
from cluster.schemas import SFT
from pac_lora import IGNORE_INDEX, PACLoraConfig, build_prompt
from tests.conftest import REPO
from train_jobs.config import TrainConfig
from train_jobs.data import CollateRows, encode_batch, epoch_micro_batches, load_tokenizer, prepare_sft
from train_jobs.job import run
from train_jobs.loop import loss_weights
from train_jobs.plan import deepspeed_config, plan_steps

from .conftest import TOO_LONG_ID


def test_config_defaults_are_the_research_recipe() -> None:
    config = TrainConfig()
    assert (config.learning_rate, config.epochs, config.effective_batch_size) == (2e-5, 2, 16)
    assert (config.warmup_ratio, config.weight_decay, config.max_grad_norm, config.max_length) == (0.1, 0.01, 1.0, 1024)
    assert (config.method, config.zero_stage, config.precision) == ("pac_lora", 2, "auto")


# -- preset: research (one test per field it sets; docs/presets.md lists them) ----------------------


def research(*overrides: str) -> TrainConfig:
    return load_config(TrainConfig, overrides=["preset=research", *overrides], environ={})


def test_the_research_preset_sets_exactly_the_fields_it_lists() -> None:
    default, preset = TrainConfig().model_dump(), research().model_dump()
    changed = {name for name in default if default[name] != preset[name]} - {"preset", "adapter"}
    changed |= {f"adapter.{name}" for name in default["adapter"] if default["adapter"][name] != preset["adapter"][name]}
    assert changed == set(TrainConfig.PRESETS["research"])


def test_research_routes_per_token_and_encodes_spans_for_it(tiny_model: Path, sft_rows: list[dict]) -> None:
    assert (TrainConfig().adapter.routing, research().adapter.routing) == ("sequence", "token")
    assert research("adapter.routing=sequence").adapter.routing == "sequence"  # what you set wins
    table = pa.Table.from_pylist(sft_rows[:1], schema=SFT)
    spans = {routing: encode_batch(table, str(tiny_model), sft_rows[0]["variant"], routing, 512).to_pylist()[0]
             for routing in ("sequence", "token")}
    assert spans["token"]["user_start"] == 0 < spans["sequence"]["user_start"]


def test_research_trains_the_lora_baseline_at_5e_6_and_pac_lora_at_2e_5() -> None:
    assert research("method=lora").peak_learning_rate == 5e-6
    assert research("method=pac_lora").peak_learning_rate == 2e-5
    assert TrainConfig(method="lora").peak_learning_rate == 2e-5  # ours: one learning rate for both
    assert research("method=lora", "learning_rate=1e-4").peak_learning_rate == 1e-4  # explicit learning_rate wins
    assert research("method=lora", "learning_rate=1e-4", "lora_learning_rate=3e-6").peak_learning_rate == 3e-6
    assert TrainConfig(method="lora", lora_learning_rate=1e-6).peak_learning_rate == 1e-6
    # The config travels to the workers as JSON and must come back the same.
    config = research("method=lora")
    assert TrainConfig.model_validate(config.model_dump(mode="json")) == config


def test_research_weights_the_loss_by_token_and_trains_bf16_in_place() -> None:
    assert (TrainConfig().loss_weighting, research().loss_weighting) == ("micro_batch", "token")
    assert (TrainConfig().master_weights, research().master_weights) == ("fp32", "bf16")
    gpu = research("use_gpu=true")
    assert deepspeed_config(gpu, plan_steps(gpu, rows=64))["bf16"] == {
        "enabled": True, "bf16_master_weights_and_grads": True, "bf16_optimizer_states": True,
    }
    assert deepspeed_config(research(), plan_steps(research(), rows=64))["bf16"] == {"enabled": False}  # fp32: no-op


def test_token_weighting_gives_the_gradient_of_the_mean_over_every_token_of_the_step() -> None:
    """Weighted as loss_weights says, then averaged over accumulation steps and workers as DeepSpeed
    does, the gradient is that of one mean over every response token of the step (transformers'
    Trainer with num_items_in_batch); unweighted, each micro-batch's mean counts the same."""
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(8, 5, generator=generator, requires_grad=True)
    # 2 workers x 2 micro-batches of 2 rows; very different numbers of response tokens each.
    workers = []
    for lengths in (((1, 6), (2, 2)), ((7, 7), (1, 0))):
        batches = []
        for row_lengths in lengths:
            inputs = torch.randn(2, 9, 8, generator=generator)
            labels = torch.full((2, 9), IGNORE_INDEX)
            for row, n in enumerate(row_lengths):
                labels[row, 9 - n:] = torch.randint(0, 5, (n,), generator=generator)
            batches.append((inputs, labels))
        workers.append(batches)

    def token_losses(inputs, labels):  # the model's shifted cross-entropy, per valid token
        logits = (inputs @ weight)[:, :-1].reshape(-1, 5)
        return F.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX, reduction="none")

    def gradient(weighting: str) -> torch.Tensor:
        everything = sum(int((labels[:, 1:] != IGNORE_INDEX).sum()) for batches in workers for _, labels in batches)
        total = torch.zeros(8, 5)
        for batches in workers:
            weights = loss_weights(weighting, [labels for _, labels in batches], len(workers),
                                   lambda _local: torch.tensor([float(everything)]))
            for (inputs, labels), w in zip(batches, weights, strict=True):
                mask = labels[:, 1:].reshape(-1) != IGNORE_INDEX
                loss = token_losses(inputs, labels)[mask].mean()  # the micro-batch's mean, as the model returns it
                (grad,) = torch.autograd.grad(loss if w is None else loss * w, weight)
                total += grad / len(batches) / len(workers)  # DeepSpeed: / accumulation steps, averaged over workers
        return total

    all_tokens = torch.cat([token_losses(i, lab)[(lab[:, 1:] != IGNORE_INDEX).reshape(-1)]
                            for batches in workers for i, lab in batches])
    (expected,) = torch.autograd.grad(all_tokens.mean(), weight)
    torch.testing.assert_close(gradient("token"), expected)
    assert not torch.allclose(gradient("micro_batch"), expected, atol=1e-4)


def test_batch_sizes_that_do_not_divide_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"effective_batch_size 16 must be a multiple of .* \(3 x 2\)"):
        load_config(TrainConfig, overrides=["num_workers=2", "micro_batch_size=3"])


def test_step_plan_follows_rows_workers_and_accumulation() -> None:
    config = TrainConfig(num_workers=2, micro_batch_size=2, effective_batch_size=8, epochs=4)
    plan = plan_steps(config, rows=41)  # equal shards: 20 rows per worker, one row left out
    assert (plan.accumulation, plan.micro_batches_per_epoch) == (2, 10)
    assert (plan.total_steps, plan.warmup_steps, plan.effective_batch_size) == (20, 2, 8)
    assert plan.position(12) == (2, 4)  # 24 micro-batches: two epochs and 4 into the third
    assert plan_steps(config.model_copy(update={"max_steps": 7}), rows=41).total_steps == 7
    research = plan_steps(TrainConfig(epochs=2), rows=1000)
    assert (research.accumulation, research.total_steps, research.warmup_steps) == (16, 125, math.ceil(12.5))
    with pytest.raises(ConfigError, match="only 1 usable"):
        plan_steps(config, rows=1)


def test_deepspeed_config_zero_stage_and_precision() -> None:
    cpu = TrainConfig(zero_stage=3, num_workers=2, micro_batch_size=2, effective_batch_size=8)
    ds = deepspeed_config(cpu, plan_steps(cpu, rows=40))
    assert ds["zero_optimization"]["stage"] == 3 and ds["bf16"] == {"enabled": False}
    assert (ds["train_batch_size"], ds["gradient_accumulation_steps"], ds["gradient_clipping"]) == (8, 2, 1.0)
    assert "optimizer" not in ds and ds["zero_allow_untested_optimizer"]
    gpu = TrainConfig(use_gpu=True)
    assert deepspeed_config(gpu, plan_steps(gpu, rows=64))["bf16"] == {"enabled": True}


def test_encoding_keeps_one_variant_and_skips_prompts_that_do_not_fit(tiny_model: Path, sft_rows: list[dict]) -> None:
    table = pa.Table.from_pylist([row for row in sft_rows if row["split"] == "train"], schema=SFT)
    encoded = encode_batch(table, str(tiny_model), "full", "sequence", max_length=512).to_pylist()
    assert len(encoded) == 41  # 5 topics x 8 users, plus the long row; other variants dropped
    skipped = {row["id"]: row["skip_reason"] for row in encoded if row["skip_reason"]}
    assert list(skipped) == [TOO_LONG_ID] and skipped[TOO_LONG_ID].startswith("prompt too long: prompt is ")
    row = next(row for row in encoded if not row["skip_reason"])
    source = next(r for r in sft_rows if r["id"] == row["id"])
    expected = build_prompt(load_tokenizer(str(tiny_model)), source["user_part"], source["news_part"],
                            source["instruction_part"], source["output"], max_length=512)
    assert row["input_ids"] == expected.input_ids and row["labels"] == expected.labels
    assert all(label == -100 for label in row["labels"][: row["prompt_length"]])
    assert 0 < row["user_start"] < row["user_end"] <= row["news_start"] < row["news_end"] <= row["prompt_length"]


def test_collate_pads_right_and_keeps_spans() -> None:
    batch = {
        "input_ids": [[5, 6, 7, 8], [5, 6]],
        "labels": [[-100, -100, 7, 8], [-100, 6]],
        "user_start": [0, 0], "user_end": [1, 1], "news_start": [1, 1], "news_end": [2, 2],
        "prompt_length": [2, 1],
    }
    batch = {key: pa.array(value).to_numpy(zero_copy_only=False) for key, value in batch.items()}
    out = CollateRows(pad_token_id=0)(batch)
    assert out["input_ids"].tolist() == [[5, 6, 7, 8], [5, 6, 0, 0]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert out["labels"].tolist() == [[-100, -100, 7, 8], [-100, 6, -100, -100]]
    assert torch.equal(out["news_spans"], torch.tensor([[1, 2], [1, 2]]))


def test_missing_sft_split_is_a_config_error(tmp_path: Path, tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match=r"no Parquet files under .*/train"):
        prepare_sft(tmp_path, "train", "full", tiny_model, "sequence", 512, 0)


def test_stage_refuses_a_base_model_that_is_not_a_local_directory(capsys: pytest.CaptureFixture[str]) -> None:
    message = "base_model: Qwen/Qwen2.5-7B-Instruct is not a local Hugging Face model directory"
    with pytest.raises(ConfigError, match=message):
        run(TrainConfig(base_model="Qwen/Qwen2.5-7B-Instruct"))
    assert capsys.readouterr().err == ""  # the runner raises; the CLI prints, once
    assert main(["train", "base_model=Qwen/Qwen2.5-7B-Instruct"]) == 2
    assert message in capsys.readouterr().err


def test_adapter_settings_are_typed_and_checked_when_the_config_loads() -> None:
    overrides = ["adapter.r=4", "adapter.routing=token", "adapter.target_modules=[q_proj]"]
    config = load_config(TrainConfig, overrides=overrides)
    assert isinstance(config.adapter, PACLoraConfig)
    assert (config.adapter.r, config.adapter.routing, config.adapter.target_modules) == (4, "token", ("q_proj",))
    assert TrainConfig().adapter == PACLoraConfig()
    with pytest.raises(ConfigError, match=r"argument 'adapter.rnak=8': adapter.rnak: unknown field"):
        load_config(TrainConfig, overrides=["adapter.rnak=8"])
    with pytest.raises(ConfigError, match=r"adapter.r: expected a positive integer \(got 0\)"):
        load_config(TrainConfig, overrides=["adapter.r=0"])
    with pytest.raises(ConfigError, match=r"adapter.routing: expected one of \('sequence', 'token'\)"):
        load_config(TrainConfig, overrides=["adapter.routing=tokens"])


def test_help_lists_each_adapter_field_once() -> None:
    fields = [name for name, _default, _text in describe_fields(TrainConfig) if name.startswith("adapter.")]
    assert fields == [f"adapter.{name}" for name in PACLoraConfig.model_fields]
    assert ("adapter.r", "8") in [(name, default) for name, default, _text in describe_fields(TrainConfig)]


def test_the_config_and_help_never_import_torch_or_ray() -> None:
    code = (
        "import sys, train_jobs.config, pac_lora.config, pac_lora\n"
        "pac_lora.PACLoraConfig, pac_lora.model_dir\n"
        "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert done.stdout.strip() == "[]"


class FixedShard:
    """Stands in for a worker's Ray DataIterator: the same rows in the same order on every read."""

    def __init__(self, rows: int) -> None:
        self.ids = np.arange(rows)
        self.reads = 0

    def iter_batches(self, batch_size: int, batch_format: str, prefetch_batches: int):
        assert batch_format == "numpy"
        self.reads += 1
        for start in range(0, len(self.ids), batch_size):
            yield {"row": self.ids[start : start + batch_size], "twice": 2 * self.ids[start : start + batch_size]}


def epoch_rows(shard: FixedShard, epoch: int, skip: int = 0, window_rows: int = 4096, seed: int = 42, rank: int = 0):
    batches = list(epoch_micro_batches(shard, 4, lambda b: b, seed, epoch, rank, skip=skip, window_rows=window_rows))
    assert all((batch["twice"] == 2 * batch["row"]).all() for batch in batches)  # columns stay row-aligned
    return [batch["row"].tolist() for batch in batches]


@pytest.mark.parametrize("window_rows", [4096, 9])  # the whole shard at once, or windows of 8 rows
def test_every_epoch_reshuffles_the_shard_and_a_resume_replays_it(window_rows: int) -> None:
    shard = FixedShard(rows=22)
    epochs = [epoch_rows(shard, epoch, window_rows=window_rows) for epoch in range(3)]
    for batches in epochs:
        assert [len(b) for b in batches] == [4, 4, 4, 4, 4, 2]  # ceil(22 / 4) micro-batches, as planned
        assert sorted(row for b in batches for row in b) == list(range(22))  # every row once
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]  # a new order (and new batches) each epoch
    assert epochs[1] == epoch_rows(shard, 1, window_rows=window_rows)  # seeded by (seed, epoch): repeatable
    assert epochs[1] != epoch_rows(shard, 1, window_rows=window_rows, seed=7)
    assert epochs[1] != epoch_rows(shard, 1, window_rows=window_rows, rank=1)
    for skip in range(6):  # a run resumed `skip` micro-batches into epoch 1 trains exactly the rest of it
        assert epoch_rows(shard, 1, skip=skip, window_rows=window_rows) == epochs[1][skip:]
    if window_rows == 9:  # windows hold whole micro-batches (8 rows): no row leaves its window
        assert all(min(b) // 8 == max(b) // 8 for b in epochs[0])
