"""End-to-end training runs through Ray Train + DeepSpeed on 2 CPU workers (gloo), tiny Qwen2
(briefly pretrained, see `base_model`), adapters on the default target modules (no lm_head).

Three runs, shared by the tests of this module (each costs ~20-40 s):
- PAC-LoRA (sequence routing), ZeRO-3, where one worker dies right after the checkpoint of step 12
  (mid-epoch) and Ray Train restarts the group from that checkpoint (FailureConfig);
- the peft LoRA baseline, ZeRO-2, through the same code path, then started again as a new run;
- PAC-LoRA with `preset=research` (token routing, the loss averaged over every response token of
  a step on both workers), ZeRO-2.
Each adapter is then served by the serve stage's engine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cluster.reports import read_report
from pac_lora import PROBE_FILE, PACLoraConfig, build_prompt, verify_adapter
from pac_lora.config import DEFAULT_TARGETS
from train_jobs.checkpoint import STATE_FILE, adapter_weights_from_zero
from train_jobs.data import load_tokenizer
from train_jobs.job import run, train
from train_jobs.summary import TrainSummary

from .conftest import train_config

pytestmark = pytest.mark.usefixtures("ray_local", "train_env")
FAIL_AFTER = 12  # checkpoints every 4 steps: at 4, 8, 12, 16 and 20 (the end)


@pytest.fixture(scope="module")
def pac_run(base_model: Path, sft_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainSummary:
    # 4 rows per forward pass (no accumulation): ZeRO-3 gathers parameters per module call, on CPU.
    config = train_config(
        base_model, sft_dir, tmp_path_factory.mktemp("pac"), zero_stage=3, micro_batch_size=4,
        checkpoint_every_steps=4, max_failures=1,
    )
    return train(config, progress=False, fail_after_step=FAIL_AFTER)


@pytest.fixture(scope="module")
def lora_run(base_model: Path, sft_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainSummary:
    config = train_config(base_model, sft_dir, tmp_path_factory.mktemp("lora"), method="lora", zero_stage=2)
    return train(config, progress=False)


@pytest.fixture(scope="module")
def research_run(base_model: Path, sft_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainSummary:
    # bf16 on the CPU workers too, so that the preset's bf16 master weights take effect.
    config = train_config(base_model, sft_dir, tmp_path_factory.mktemp("research"), preset="research", zero_stage=2,
                          epochs=2, precision="bf16")
    assert (config.adapter.routing, config.loss_weighting, config.master_weights) == ("token", "token", "bf16")
    return train(config, progress=False)


def test_pac_lora_loss_falls_clearly(pac_run: TrainSummary) -> None:
    """Only the routed experts on q, k, v, o, gate, up and down train here, so they learn."""
    assert pac_run.steps == 20 and pac_run.metrics["epoch"] == 4
    assert pac_run.final_loss < 0.6 * pac_run.first_loss, (pac_run.first_loss, pac_run.final_loss)


def test_the_deepspeed_engine_trains_with_the_configured_zero_stage(
    pac_run: TrainSummary, lora_run: TrainSummary
) -> None:
    expected = ((pac_run, 3, "DeepSpeedZeroOptimizer_Stage3"), (lora_run, 2, "DeepSpeedZeroOptimizer"))
    for summary, stage, optimizer in expected:
        assert summary.metrics["engine"] == "deepspeed.runtime.engine.DeepSpeedEngine"
        assert summary.metrics["zero_stage"] == stage
        assert summary.metrics["optimizer"].rsplit(".", 1)[1] == optimizer


def test_a_killed_worker_restarts_from_the_last_checkpoint_not_from_zero(
    pac_run: TrainSummary, base_model: Path, sft_rows: list[dict]
) -> None:
    assert pac_run.resumed_from_step == FAIL_AFTER
    state = json.loads((Path(pac_run.checkpoint) / STATE_FILE).read_text())
    assert (state["step"], state["total_steps"]) == (20, 20)
    # The LR schedule came back too: the last step's rate is the cosine's at step 20 of 20 (2 warmup).
    expected_lr = 1e-2 * 0.5 * (1 + math.cos(math.pi * (19 - 2) / (20 - 2)))
    assert pac_run.metrics["learning_rate"] == pytest.approx(expected_lr, rel=1e-6)
    # Tokens carry over the restart: 4 epochs of the 40 usable rows, each counted once.
    tokenizer = load_tokenizer(str(base_model))
    usable = [r for r in sft_rows if r["split"] == "train" and r["variant"] == "full" and not r["id"].startswith("too")]
    per_epoch = sum(
        len(build_prompt(tokenizer, r["user_part"], r["news_part"], r["instruction_part"], r["output"], max_length=512))
        for r in usable
    )
    assert pac_run.tokens == 4 * per_epoch


def test_rows_whose_prompt_is_too_long_are_skipped_and_counted(pac_run: TrainSummary) -> None:
    assert pac_run.rows == 40
    assert pac_run.skipped == {"prompt too long": 1}


def test_the_final_pac_lora_adapter_reloads_and_reproduces_the_trained_logits(
    pac_run: TrainSummary, base_model: Path
) -> None:
    files = sorted(path.name for path in pac_run.adapter_dir.iterdir())
    assert files == ["adapter_model.safetensors", "pac_lora_config.json", PROBE_FILE]
    assert PACLoraConfig.load(pac_run.adapter_dir).target_modules == DEFAULT_TARGETS  # no lm_head
    assert verify_adapter(base_model, pac_run.adapter_dir) < 1e-4


def test_the_lora_baseline_trains_through_the_same_path(lora_run: TrainSummary, base_model: Path) -> None:
    assert lora_run.method == "lora" and lora_run.steps == 20
    assert lora_run.final_loss < 0.6 * lora_run.first_loss, (lora_run.first_loss, lora_run.final_loss)
    config = json.loads((lora_run.adapter_dir / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["lora_alpha"]) == ("LORA", 8, 16)
    assert set(config["target_modules"]) == set(DEFAULT_TARGETS)
    assert verify_adapter(base_model, lora_run.adapter_dir) < 1e-4


@pytest.mark.parametrize("which", ["pac", "lora"])
def test_zero_checkpoints_hold_the_adapter_weights(which: str, request: pytest.FixtureRequest) -> None:
    run: TrainSummary = request.getfixturevalue(f"{which}_run")
    recovered = adapter_weights_from_zero(run.checkpoint)
    saved = load_file(str(run.adapter_dir / "adapter_model.safetensors"))
    assert len(recovered) == len(saved) > 0
    if which == "pac":  # PAC-LoRA names are relative to the base model
        recovered = {name.removeprefix("base_model."): tensor for name, tensor in recovered.items()}
    else:  # peft drops its adapter name from saved keys
        recovered = {name.replace(".default", ""): tensor for name, tensor in recovered.items()}
    for name, tensor in saved.items():
        assert (recovered[name] - tensor).abs().max() < 1e-6, name


def test_a_new_run_with_the_same_name_resumes_its_latest_checkpoint(
    lora_run: TrainSummary, base_model: Path, sft_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole job stopped (or finished): starting the stage again continues from the latest
    checkpoint, and the stage's report says how the run ended."""
    output = lora_run.adapter_dir.parents[1]
    config = train_config(base_model, sft_dir, output, method="lora", zero_stage=2)
    assert run(config) == 0
    assert f"train: lora run {lora_run.run_name}: 20 steps (resumed from step 20)" in capsys.readouterr().out
    again = read_report(output / lora_run.run_name)
    assert (again["resumed_from_step"], again["steps"]) == (20, 20)  # loaded, and nothing left to train
    assert again["tokens"] == lora_run.tokens
    assert again["adapter_dir"] == str(lora_run.adapter_dir) and again["method"] == "lora"
    assert set(again) >= {"rows", "skipped", "first_loss", "final_loss", "seconds", "train_seconds", "checkpoint"}
    assert verify_adapter(base_model, again["adapter_dir"]) < 1e-4


def test_the_research_preset_trains_token_routed_pac_lora(research_run: TrainSummary, base_model: Path) -> None:
    assert research_run.method == "pac_lora" and research_run.steps == 10
    assert research_run.final_loss < 0.8 * research_run.first_loss, (research_run.first_loss, research_run.final_loss)
    assert PACLoraConfig.load(research_run.adapter_dir).routing == "token"
    assert verify_adapter(base_model, research_run.adapter_dir) < 1e-4
    # bf16 master weights: what the optimizer updated, and what is saved, are bf16 values (an fp32
    # master copy would almost never land on them).
    saved = load_file(str(research_run.adapter_dir / "adapter_model.safetensors"))
    assert all(torch.equal(t, t.to(torch.bfloat16).to(t.dtype)) for t in saved.values())


@pytest.mark.parametrize(("which", "routing", "spans"), [("pac", "sequence", True), ("research", "token", True),
                                                          ("lora", "sequence", False)])
def test_every_trained_adapter_serves(which: str, routing: str, spans: bool, base_model: Path,
                                      request: pytest.FixtureRequest) -> None:
    """The three kinds train (above) and serve: the serve engine loads each and generates with it."""
    from serve.engine import LoadedModel, Row, generate_rows, load_any_adapter, load_base
    from serve.prompts import encode
    from serve.protocol import ResearchPrompt, Sampling, UserProfile

    trained: TrainSummary = request.getfixturevalue(f"{which}_run")
    base, tokenizer = load_base(str(base_model), device="cpu")
    loaded = load_any_adapter(base, which, trained.adapter_dir)
    assert (loaded.routing, loaded.takes_spans) == (routing, spans)
    user = UserProfile("用户1", (("支持", None),), "积极")
    prompt = ResearchPrompt("北京发布了新的交通政策。", "北京交通新政", "full", user=user)
    sampling = Sampling(temperature=0, top_p=0.9, top_k=20, repetition_penalty=1.2, max_new_tokens=8,
                        repetition_penalty_scope="output")
    row = Row(loaded, encode(tokenizer, prompt, loaded.routing, 1024), sampling)
    [served] = generate_rows([row], tokenizer)
    [zero_shot] = generate_rows([Row(LoadedModel("base", base, "sequence", False), row.encoding, sampling)], tokenizer)
    assert served.completion_tokens > 0 and served.text != zero_shot.text
