"""The GPU bench, one prepared run for a lent GPU: what PAC-LoRA costs against the peft LoRA
baseline (and the base model) to train and to serve, on a Qwen2.5-7B-Instruct-shaped model.

    .venv/bin/python bench/gpu.py             # one NVIDIA GPU (sized for < 8 min on an H100/H200; not yet run)
    .venv/bin/python bench/gpu.py --dry-run   # the same code, a tiny model, on the CPU

The model is a transformers Qwen2 built from Qwen2.5-7B-Instruct's config (hidden 3584,
intermediate 18944, 28 layers, 28 heads, 4 KV heads, vocab 152064, untied embeddings) with random
bf16 weights, initialised on the GPU and written once to a scratch directory (15 GB), so that
training and serving load it through their own loaders: nothing is downloaded, and time and
memory do not depend on the weights' values. The tokenizer is `pac_lora.train_tokenizer()`, a
byte-level BPE trained here; its ids are a small corner of the vocabulary, while the embedding and
the logits keep all 152,064 rows.

Training, DeepSpeed ZeRO-2 on one GPU, bf16, micro-batch 1, every row exactly 1,024 tokens (the
research's max_length, to which it pads every row), activation checkpointing on (the train stage's
`gradient_checkpointing`; --gradient-checkpointing off: without): PAC-LoRA with sequence routing (the
default), PAC-LoRA with token routing, and peft LoRA, each through the train stage's own functions:
TrainConfig, `data.encode_batch` and `CollateRows`, `plan.plan_steps`, `model.build_model`,
`plan.deepspeed_config` and `cosine_with_warmup`, `model.model_inputs`, and at the end
`model.full_trainable_fp32` with `pac_lora.export_adapter`, as a checkpoint writes the adapter.
Ray Train is skipped: for one worker it sets up the process group (done here the same way, nccl)
and streams the rows. The micro-step is train_jobs.loop's three lines (forward, `engine.backward`,
`engine.step`); `build_model` turns checkpointing on as in the stage (PAC-LoRA's routing spans come
back for each recomputation: `PACLoraModel.activation_checkpointing_enable`). Figures per case:
median step time after warm-up steps, tokens/s, peak GPU memory.

Serving through `serve.engine` (`load_base`, `load_any_adapter`, `generate_rows`; prompts through
`serve.prompts.encode`, as the Generator encodes a request): the base model, the trained LoRA and
the trained PAC-LoRA (sequence routing) adapters on the shared base weights, at batch sizes 32, 8
and 1, greedy, 256 new tokens per request (the model has no end-of-sequence id, so every row
decodes all of them). Prompts: the research prompt (5 history posts, persona, news, rules) of
every row of the synthetic SFT set's full variant (`train_jobs.synthetic`), 434-604 tokens under
the bench tokenizer (median 510); the real SFT set's lengths are not known here. Figures per case:
decode tokens/s (generated tokens over the generate call's wall time, prefill included), request
latency p50/p95, time to first token, inter-token latency p50/p95 (a clock on lm_head), peak GPU
memory.

Cases run in priority order (training, then serving at batch 32, 8, 1); one that would start after
--budget-s seconds is skipped and named, and one that fails (out of memory, say) is named with its
error while the others still run (the exit status is then 1, after the JSON line).

--dry-run: a tiny Qwen2 (hidden 64, 2 layers, vocab 2,048) on the CPU, in fp32 instead of bf16 (the
train stage's `precision: auto`), gloo instead of nccl, 1 timed training step per case, 4 new tokens
and one call per serving case; peak memory is then the process's peak RSS. Without a CUDA device
and without --dry-run (`make bench` on a CPU machine) it says it was skipped and exits 0.

Last line: one JSON object, ratios first. `pac_vs_lora_train_step` is a ratio of step times (1.2:
PAC-LoRA's step takes 20% longer); `*_decode_b<N>` are ratios of decode tokens/s (0.8: 20% fewer
tokens per second).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import resource
import shutil
import socket
import statistics
import sys
import tempfile
import time
import traceback
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Qwen/Qwen2.5-7B-Instruct's config.json (architecture fields; the weights are random here).
QWEN25_7B_INSTRUCT = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
# --dry-run: the same architecture, tiny. Its vocabulary is larger than the tokenizer's, as the 7B
# one is, so generated ids the tokenizer does not know go through the same decode path.
DRY_RUN_SHAPE = {
    **QWEN25_7B_INSTRUCT,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 2048,
}
SEQUENCE_TOKENS = 1024  # every training row: the research's max_length (it pads every row to it)
TRAIN_CASES = (("pac_lora", "sequence"), ("pac_lora", "token"), ("lora", "sequence"))
SERVED = ("base", "lora", "pac_lora")
BATCH_SIZES = (32, 8, 1)  # in this order, so that the batch-32 ratios come first on a short budget
HISTORY_POSTS = 5  # the research prompt's history posts (retrieval's top 5)


@dataclass(frozen=True)
class Sizes:
    shape: dict[str, Any]
    warmup_steps: int
    train_steps: int
    new_tokens: int
    calls: int  # generate calls per serving case (after one warm-up call per model)
    budget_s: float


@dataclass
class Run:
    """What the run has measured so far, and what it had to skip or saw fail."""

    budget_s: float = math.inf
    began: float = field(default_factory=time.monotonic)
    train: dict[str, dict[str, Any]] = field(default_factory=dict)
    serve: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    prompt_tokens: list[int] = field(default_factory=list)  # the serving prompts' lengths
    adapter_dtypes: dict[str, str] = field(default_factory=dict)  # served adapters' parameter dtypes

    def elapsed(self) -> float:
        return time.monotonic() - self.began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="a tiny model on the CPU, seconds (fp32, gloo)")
    parser.add_argument("--steps", type=int, default=None, help="timed training steps per case (GPU 10, dry run 1)")
    parser.add_argument("--calls", type=int, default=None, help="generate calls per serving case (GPU 2, dry run 1)")
    parser.add_argument("--new-tokens", type=int, default=None, help="new tokens per request (GPU 256, dry run 4)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="cases that would start after this many seconds are skipped (GPU 400, dry run none)")
    parser.add_argument("--gradient-checkpointing", choices=("on", "off"), default="on",
                        help="in training (default on; the train stage itself has no such switch yet)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch directory (the 7B model takes 15 GB)")
    args = parser.parse_args(argv)

    import torch

    gpu = torch.cuda.is_available() and not args.dry_run
    if not gpu and not args.dry_run:
        reason = "no CUDA device visible to torch (a CPU-only build, or no GPU): run it on a GPU node, or --dry-run"
        print(f"bench/gpu.py: skipped: {reason}", file=sys.stderr)
        print(json.dumps({"skipped": reason, "dry_run": False, "torch": torch.__version__}))
        return 0
    sizes = Sizes(
        shape=QWEN25_7B_INSTRUCT if gpu else DRY_RUN_SHAPE,
        warmup_steps=3 if gpu else 1,
        train_steps=args.steps or (10 if gpu else 1),
        new_tokens=args.new_tokens or (256 if gpu else 4),
        calls=args.calls or (2 if gpu else 1),
        budget_s=args.budget_s if args.budget_s is not None else (400.0 if gpu else math.inf),
    )
    if not gpu:  # name DeepSpeed's accelerator instead of letting it guess (and warn) on a CPU machine
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
    quiet()
    device = torch.device("cuda", 0) if gpu else torch.device("cpu")
    run = Run(budget_s=sizes.budget_s)
    build_s = 0.0
    with scratch(args.workdir) as work, process_group(gpu):
        built = run_case(run, "build", lambda: build_checkpoint(work / "model", sizes.shape, device, args.workdir))
        if built is not None:
            checkpoint, build_s = Path(built["checkpoint"]), built["build_s"]
            table = sft_rows()
            adapters: dict[str, Path] = {}
            for method, routing in TRAIN_CASES:
                name = train_case_name(method, routing)
                figures = run_case(run, name, lambda m=method, r=routing, n=name: train_case(
                    checkpoint, table, m, r, sizes, device, args.gradient_checkpointing == "on",
                    work / "adapters" / n))
                if figures is not None:
                    run.train[name] = figures
                    adapters[name] = Path(figures.pop("adapter_dir"))
            serve_all(run, checkpoint, table, adapters, sizes, device)
    result = report(run, sizes, gpu, args.gradient_checkpointing == "on", build_s)
    print(json.dumps(rounded(result), ensure_ascii=False))
    return 1 if run.failed else 0  # the figures of the cases that ran are printed all the same


# ---------------------------------------------------------------------------------------------- set-up


def quiet() -> None:
    """Our WARNING log, and the train stage's own quieting of DeepSpeed, torch and transformers."""
    from cluster.logs import setup_logging
    from train_jobs.quiet import quiet_worker_logs

    setup_logging("WARNING")
    quiet_worker_logs("WARNING")


@contextlib.contextmanager
def scratch(workdir: Path | None) -> Iterator[Path]:
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-", dir=workdir) as directory:
        yield Path(directory)


@contextlib.contextmanager
def process_group(gpu: bool) -> Iterator[None]:
    """A one-process group, as Ray Train's TorchConfig makes for one worker (nccl on GPU, gloo on CPU);
    DeepSpeed then joins it (`dist_init_required=False`, as in train_jobs.loop)."""
    import torch
    import torch.distributed as dist

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(key, value)
    if gpu:
        torch.cuda.set_device(0)
    dist.init_process_group("nccl" if gpu else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def build_checkpoint(directory: Path, shape: dict[str, Any], device: Any, workdir: Path | None) -> dict[str, Any]:
    """A Qwen2 of `shape` with random bf16 weights (initialised on `device`) and the local tokenizer,
    in the Hugging Face layout that `pac_lora.load_base_model` reads."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from pac_lora import train_tokenizer

    began = time.monotonic()
    tokenizer = train_tokenizer()
    # No end-of-sequence id: random weights would end rows at random, and every request should
    # cost what a reply of new_tokens costs.
    config = Qwen2Config(**shape, bos_token_id=None, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    size_gb = sum(param.numel() * param.element_size() for param in model.parameters()) / 2**30
    free_gb = shutil.disk_usage(directory.parent).free / 2**30
    if free_gb < 1.05 * size_gb:
        raise RuntimeError(f"the model takes {size_gb:.1f} GB on disk and {directory.parent} has {free_gb:.1f} GB "
                           f"free: give --workdir a larger disk (now {workdir or 'the temp directory'})")
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    del model
    release_memory()
    say(f"model: {describe_shape(shape)}, {size_gb:.1f} GB in bf16")
    return {"checkpoint": str(directory), "build_s": time.monotonic() - began, "size_gb": size_gb}


def sft_rows() -> Any:
    """The synthetic SFT set in the SFT table's columns (full variant, 5 history posts), each row's
    response long enough to fill a 1,024-token training row once truncated."""
    import pyarrow as pa

    from train_jobs.synthetic import synthetic_sft_rows

    rows = [row for row in synthetic_sft_rows(history_posts=HISTORY_POSTS) if row["variant"] == "full"]
    for row in rows:
        row["output"] = (row["output"] + "\n") * 200
    return pa.Table.from_pylist(rows)


def describe_shape(shape: dict[str, Any]) -> str:
    return (f"Qwen2 hidden {shape['hidden_size']}, intermediate {shape['intermediate_size']}, "
            f"{shape['num_hidden_layers']} layers, {shape['num_attention_heads']}/{shape['num_key_value_heads']} "
            f"heads, vocab {shape['vocab_size']}")


# ------------------------------------------------------------------------------------------- training


def train_case_name(method: str, routing: str) -> str:
    return f"pac_lora_{routing}" if method == "pac_lora" else method


def train_case(
    checkpoint: Path, table: Any, method: str, routing: str, sizes: Sizes, device: Any, checkpointing: bool,
    adapter_dir: Path,
) -> dict[str, Any]:
    import deepspeed
    import torch

    from pac_lora import PACLoraConfig, export_adapter
    from train_jobs.config import TrainConfig
    from train_jobs.data import TRAIN_COLUMNS, CollateRows, encode_batch, load_tokenizer
    from train_jobs.model import build_model, full_trainable_fp32, model_inputs
    from train_jobs.plan import cosine_with_warmup, deepspeed_config, plan_steps
    from train_jobs.quiet import prints_logged_at_debug

    gpu = device.type == "cuda"
    config = TrainConfig(
        base_model=str(checkpoint), method=method, adapter=PACLoraConfig(routing=routing),
        use_gpu=gpu, zero_stage=2, micro_batch_size=1, effective_batch_size=1,
        max_steps=sizes.warmup_steps + sizes.train_steps, max_length=SEQUENCE_TOKENS,
        learning_rate=1e-4, log_level="WARNING", gradient_checkpointing=checkpointing,
    )
    batches = training_batches(table, config, encode_batch, TRAIN_COLUMNS,
                               CollateRows(load_tokenizer(str(checkpoint)).pad_token_id))
    plan = plan_steps(config, len(batches))
    reset_peak_memory(gpu)
    torch.manual_seed(config.seed)
    model = build_model(config, torch.bfloat16 if plan.bf16 else torch.float32).to(device)
    trainable = [param for param in model.parameters() if param.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    with prints_logged_at_debug("deepspeed.initialize"):
        engine, optimizer, _, _ = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=cosine_with_warmup(optimizer, plan),
            config=deepspeed_config(config, plan), dist_init_required=False,
        )
    engine.train()
    resident_gb = allocated_gb(gpu)
    seconds, tokens, losses = [], [], []
    for step in range(plan.total_steps):
        batch = {key: value.to(device) for key, value in batches[step % len(batches)].items()}
        synchronize(gpu)
        began = time.perf_counter()
        loss = engine(**model_inputs(method, batch)).loss  # the micro-step of train_jobs.loop.train_loop
        engine.backward(loss)
        engine.step()
        synchronize(gpu)
        seconds.append(time.perf_counter() - began)
        tokens.append(int(batch["attention_mask"].sum()))
        losses.append(float(loss.detach().float()))
    peak_gb = peak_memory_gb(gpu)
    export_adapter(engine.module, full_trainable_fp32(engine.module), adapter_dir)  # as a checkpoint does
    timed = seconds[sizes.warmup_steps:]
    step_s = statistics.median(timed)
    figures = {
        "step_s": step_s,
        "tokens_per_s": statistics.median(tokens[sizes.warmup_steps:]) / step_s,
        "peak_mem_gb": peak_gb,
        "resident_gb": resident_gb,  # weights, adapter and optimizer state before the first step
        "first_step_s": seconds[0],
        "step_s_min": min(timed),
        "step_s_max": max(timed),
        "tokens_per_step": statistics.median(tokens),
        "trainable_params": sum(param.numel() for param in trainable),
        "trainable_dtype": str(trainable[0].dtype).removeprefix("torch."),  # after DeepSpeed's cast
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "adapter_dir": str(adapter_dir),
    }
    # Drop this case's model and engine before the next case loads its own; "freed" says that nothing
    # kept the model alive (else the next case's peak memory would include it).
    gone = weakref.ref(model)
    engine.destroy()
    del engine, optimizer, model, trainable, batch, batches, loss
    release_memory()
    figures["freed"] = gone() is None
    return figures


def training_batches(table: Any, config: Any, encode_batch: Callable, columns: list[str], collate: Any) -> list:
    """The rows encoded by the train stage's Ray Data function and collated as its workers do, one
    micro-batch each (every one exactly `max_length` tokens)."""
    routing = config.adapter.routing if config.method == "pac_lora" else "sequence"  # as train_jobs.job
    encoded = encode_batch(table, base_model=config.base_model, variant=config.prompt_variant, routing=routing,
                           max_length=config.max_length)
    usable = encoded.filter([reason == "" for reason in encoded["skip_reason"].to_pylist()]).select(columns)
    if usable.num_rows == 0:
        raise RuntimeError("no SFT row could be encoded for training")
    arrays = {name: usable[name].to_numpy(zero_copy_only=False) for name in columns}
    return [collate({name: values[i : i + 1] for name, values in arrays.items()}) for i in range(usable.num_rows)]


# -------------------------------------------------------------------------------------------- serving


@dataclass
class StepClock:
    """Time of every forward of one model during a generate (a hook on its lm_head): the first is
    the prefill, each later one a decoding step."""

    gpu: bool
    stamps: list[float] = field(default_factory=list)

    def __call__(self, _module: Any, _args: Any, _output: Any) -> None:
        synchronize(self.gpu)
        self.stamps.append(time.perf_counter())


def serve_all(
    run: Run, checkpoint: Path, table: Any, adapters: dict[str, Path], sizes: Sizes, device: Any
) -> None:
    gpu = device.type == "cuda"
    loaded: dict[str, Any] = {}
    if run_case(run, "serve setup", lambda: load_served(run, checkpoint, table, adapters, device, loaded)) is None:
        return
    served, prompts, tokenizer = loaded["served"], loaded["prompts"], loaded["tokenizer"]
    clocks = {name: StepClock(gpu) for name in served}
    hooks = [lm_head(model.model).register_forward_hook(clocks[name]) for name, model in served.items()]
    try:
        for name, model in served.items():  # warm-up: kernels, allocator, the adapter's first call
            run_case(run, f"warm-up {name}", lambda m=model, n=name: generate_calls(
                m, prompts[n], tokenizer, max(BATCH_SIZES), 2, 1, gpu, clocks[n]))
        for batch_size in BATCH_SIZES:
            for name, model in served.items():
                case = f"{name}_b{batch_size}"
                figures = run_case(run, f"serve_{case}", lambda m=model, n=name, b=batch_size: generate_calls(
                    m, prompts[n], tokenizer, b, sizes.new_tokens, sizes.calls, gpu, clocks[n]))
                if figures is not None:
                    run.serve[case] = figures
    finally:
        for hook in hooks:
            hook.remove()
        loaded.clear()
        del served
        release_memory()


def load_served(
    run: Run, checkpoint: Path, table: Any, adapters: dict[str, Path], device: Any, loaded: dict[str, Any]
) -> dict[str, Any]:
    """The base model and both trained adapters on its shared weights, as a Generator replica holds
    them, and every served model's prompts (into `loaded`)."""
    from serve.engine import LoadedModel, load_any_adapter, load_base

    base, tokenizer = load_base(str(checkpoint), device=device.type, dtype="auto")
    served = {"base": LoadedModel("base", base, routing="sequence", takes_spans=False)}
    for name, trained in (("lora", "lora"), ("pac_lora", "pac_lora_sequence")):
        if trained in adapters:
            served[name] = load_any_adapter(base, name, adapters[trained])
        else:
            run.failed.setdefault(f"serve_{name}", f"no adapter: training case {trained} did not finish")
    prompts = {name: serving_prompts(table, tokenizer, model.routing) for name, model in served.items()}
    run.prompt_tokens = [len(encoding.input_ids) for encoding in prompts["base"]]
    shared = {id(param) for param in base.parameters()}
    for name, model in served.items():  # both adapters in the base's dtype (pac_lora.load_lora_adapter)
        own = [param.dtype for param in model.model.parameters() if id(param) not in shared]
        run.adapter_dtypes[name] = str(own[0]).removeprefix("torch.") if own else "none"
    loaded.update(served=served, prompts=prompts, tokenizer=tokenizer)
    return {"models": float(len(served)), "resident_gb": allocated_gb(device.type == "cuda")}


def serving_prompts(table: Any, tokenizer: Any, routing: str) -> list[Any]:
    """Every SFT row's research prompt, encoded as the Generator encodes a request."""
    from serve.config import ServeConfig
    from serve.prompts import encode
    from serve.protocol import ResearchPrompt

    limit = ServeConfig.model_fields["max_prompt_tokens"].default
    return [
        encode(tokenizer, ResearchPrompt(news=row["news"], topic=row["topic"], variant=row["variant"],
                                         user_part=row["user_part"]), routing, limit)
        for row in table.to_pylist()
    ]


def lm_head(model: Any) -> Any:
    """The output projection under any wrapper (a PAC-LoRA or peft model, or the base model itself)."""
    heads = [module for name, module in model.named_modules() if name.rpartition(".")[2] == "lm_head"]
    if len(heads) != 1:
        raise RuntimeError(f"expected one lm_head in the served model, found {len(heads)}")
    return heads[0]


def generate_calls(
    model: Any, prompts: list[Any], tokenizer: Any, batch_size: int, new_tokens: int, calls: int, gpu: bool,
    clock: StepClock,
) -> dict[str, Any]:
    from serve.engine import Row, generate_rows
    from serve.protocol import Sampling

    sampling = Sampling(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, max_new_tokens=new_tokens,
                        repetition_penalty_scope="output")
    reset_peak_memory(gpu)
    latencies, first_token, steps, generated, prompt_tokens = [], [], [], 0, []
    for call in range(calls):
        picked = [prompts[(call * batch_size + i) % len(prompts)] for i in range(batch_size)]
        rows = [Row(model, encoding, sampling) for encoding in picked]
        clock.stamps.clear()
        synchronize(gpu)
        began = time.perf_counter()
        completions = generate_rows(rows, tokenizer)
        synchronize(gpu)
        latencies.append(time.perf_counter() - began)
        if not clock.stamps:
            raise RuntimeError("the step clock saw no forward pass")
        first_token.append(clock.stamps[0] - began)
        steps += [later - earlier for earlier, later in zip(clock.stamps, clock.stamps[1:])]
        generated += batch_size * len(clock.stamps)  # one token per row per forward
        prompt_tokens += [completion.prompt_tokens for completion in completions]
        if len(clock.stamps) != new_tokens:
            raise RuntimeError(f"generate ran {len(clock.stamps)} forwards for {new_tokens} new tokens")
    requests = [latency for latency in latencies for _ in range(batch_size)]  # a call answers all its rows
    return {
        "decode_tokens_per_s": generated / sum(latencies),
        "latency_p50_s": percentile(requests, 0.5),
        "latency_p95_s": percentile(requests, 0.95),
        "first_token_p50_s": percentile(first_token, 0.5),
        "inter_token_p50_ms": 1000 * percentile(steps, 0.5) if steps else 0.0,
        "inter_token_p95_ms": 1000 * percentile(steps, 0.95) if steps else 0.0,
        "peak_mem_gb": peak_memory_gb(gpu),
        "requests": len(requests),
        "prompt_tokens_mean": statistics.mean(prompt_tokens),
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ----------------------------------------------------------------------------------- cases and memory


def run_case(run: Run, name: str, case: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
    """The case's figures; None when it was skipped (out of time) or failed (named in the report)."""
    if run.elapsed() > run.budget_s:
        run.skipped.append(name)
        say(f"{name}: skipped, {run.elapsed():.0f}s past the start (budget {run.budget_s:.0f}s)")
        return None
    began = time.monotonic()
    try:
        figures = case()
    except Exception as error:  # one failed case (out of memory, say) must not lose the others
        run.failed[name] = f"{type(error).__name__}: {error}"[:500]
        say(f"{name}: FAILED after {time.monotonic() - began:.1f}s: {run.failed[name]}")
        traceback.print_exc(file=sys.stderr)
        release_memory()
        return None
    say(f"{name}: {time.monotonic() - began:.1f}s  " + ", ".join(
        f"{key} {value:.4g}" for key, value in figures.items() if isinstance(value, float)))
    return figures


def release_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


def synchronize(gpu: bool) -> None:
    if gpu:
        import torch

        torch.cuda.synchronize()


def reset_peak_memory(gpu: bool) -> None:
    if gpu:
        import torch

        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(gpu: bool) -> float:
    """Peak GPU memory allocated by torch since the case began; on the CPU, the process's peak RSS."""
    import torch

    if gpu:
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def allocated_gb(gpu: bool) -> float:
    import torch

    return torch.cuda.memory_allocated() / 2**30 if gpu else 0.0


# --------------------------------------------------------------------------------------------- report


def report(run: Run, sizes: Sizes, gpu: bool, checkpointing: bool, build_s: float) -> dict[str, Any]:
    import torch

    def ratio(numerator: float | None, denominator: float | None) -> float | None:
        return numerator / denominator if numerator is not None and denominator else None

    def train(case: str, key: str) -> float | None:
        return run.train.get(case, {}).get(key)

    def decode(name: str, batch_size: int) -> float | None:
        return run.serve.get(f"{name}_b{batch_size}", {}).get("decode_tokens_per_s")

    result: dict[str, Any] = {
        "pac_vs_lora_train_step": ratio(train("pac_lora_sequence", "step_s"), train("lora", "step_s")),
        "pac_token_vs_lora_train_step": ratio(train("pac_lora_token", "step_s"), train("lora", "step_s")),
        "pac_vs_lora_train_peak_mem": ratio(train("pac_lora_sequence", "peak_mem_gb"), train("lora", "peak_mem_gb")),
        "pac_token_vs_lora_train_peak_mem": ratio(train("pac_lora_token", "peak_mem_gb"),
                                                  train("lora", "peak_mem_gb")),
    }
    for batch_size in BATCH_SIZES:
        result[f"pac_vs_lora_decode_b{batch_size}"] = ratio(decode("pac_lora", batch_size), decode("lora", batch_size))
    for batch_size in BATCH_SIZES:
        result[f"lora_vs_base_decode_b{batch_size}"] = ratio(decode("lora", batch_size), decode("base", batch_size))
    for batch_size in BATCH_SIZES:
        result[f"pac_vs_base_decode_b{batch_size}"] = ratio(decode("pac_lora", batch_size), decode("base", batch_size))
    result["peak_mem_gb"] = {
        **{f"train_{case}": figures["peak_mem_gb"] for case, figures in run.train.items()},
        **{f"serve_{case}": figures["peak_mem_gb"] for case, figures in run.serve.items()},
    }
    result["train"] = run.train
    result["serve"] = run.serve
    lengths = sorted(run.prompt_tokens)
    result["setup"] = {
        "dry_run": not gpu,
        "model": describe_shape(sizes.shape) + (", bf16" if gpu else ", fp32 (dry run on the CPU)"),
        "train": f"DeepSpeed ZeRO-2 on 1 {'GPU (nccl)' if gpu else 'CPU process (gloo)'}, micro-batch 1, "
                 f"{SEQUENCE_TOKENS} tokens per row, gradient checkpointing {'on' if checkpointing else 'off'}, "
                 f"{sizes.warmup_steps} warm-up + {sizes.train_steps} timed steps per case, Ray Train skipped",
        "serve": f"serve.engine.generate_rows, greedy, {sizes.new_tokens} new tokens, batch sizes "
                 f"{list(BATCH_SIZES)}, {sizes.calls} call(s) per case after a warm-up call per model; "
                 f"PAC-LoRA routing sequence",
        "prompts": f"synthetic SFT set, full variant, {HISTORY_POSTS} history posts, bench tokenizer",
        "prompt_tokens_min": lengths[0] if lengths else None,
        "prompt_tokens_p50": statistics.median(lengths) if lengths else None,
        "prompt_tokens_max": lengths[-1] if lengths else None,
        "served_adapter_dtypes": run.adapter_dtypes,
        "peak_mem": "torch.cuda.max_memory_allocated per case" if gpu else "process peak RSS (CPU dry run)",
    }
    result["env"] = {
        "gpu": torch.cuda.get_device_name(0) if gpu else "none (cpu)",
        "gpu_memory_gb": torch.cuda.get_device_properties(0).total_memory / 2**30 if gpu else 0.0,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        **versions("transformers", "deepspeed", "peft"),
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    result["skipped_cases"] = run.skipped
    result["failed_cases"] = run.failed
    result["build_s"] = build_s
    result["wall_s"] = run.elapsed()
    return result


def versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def rounded(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.4g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [rounded(item) for item in value]
    return value


def say(message: str) -> None:
    print(f"bench/gpu.py: {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
