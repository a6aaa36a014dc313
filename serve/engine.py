"""Batched generation: one left-padded `generate` per (model, decoding) group, with per-row spans.

Servable adapters: PAC-LoRA (reads the user and news spans) and the plain peft LoRA baseline
(`socialalign train method=lora`; no spans); `pac_lora` knows their files.

Rows of one group share a model and the decoding parameters that `generate` takes once per call;
max_new_tokens may differ per row: the group runs to the largest and each row is cut to its own
(a greedy row's first k tokens do not depend on how long the call runs). Left padding keeps
every row's last prompt token at the end, and `collate` shifts the spans with the padding, so a
row's greedy output is the same alone or in a batch.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

from pac_lora import PACLoraModel, PromptEncoding, collate, load_base_model
from pac_lora import load_any_adapter as load_adapter_files
from serve.protocol import Completion, Sampling

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A servable model: an adapter on the shared base weights, or the base model alone."""

    model_id: str
    model: Any
    routing: str  # how its prompts' spans are computed ("sequence" or "token")
    takes_spans: bool  # PAC-LoRA: generate reads user_spans and news_spans


@dataclass(frozen=True)
class Row:
    model: LoadedModel
    encoding: PromptEncoding
    sampling: Sampling
    gates: str | None = None  # "module" | "layer": report this row's expert gates (PAC-LoRA only)


def load_base(path: str, device: str = "auto", dtype: str = "auto") -> tuple[Any, Any]:
    """(base model in eval mode, tokenizer) on the device and dtype the config asks for."""
    resolved = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    if dtype == "auto":
        dtype = "bfloat16" if resolved == "cuda" else "float32"
    model, tokenizer = load_base_model(path, dtype=getattr(torch, dtype), device=resolved)
    return model.eval(), tokenizer


def load_any_adapter(base: Any, model_id: str, directory: str | Path) -> LoadedModel:
    """The adapter in `directory`, PAC-LoRA or peft LoRA, on a copy of `base` that shares every base
    weight (only the adapter is new)."""
    wrapped = load_adapter_files(_shared_copy(base), directory).eval()
    if isinstance(wrapped, PACLoraModel):
        return LoadedModel(model_id=model_id, model=wrapped, routing=wrapped.pac_config.routing, takes_spans=True)
    return LoadedModel(model_id=model_id, model=wrapped, routing="sequence", takes_spans=False)


def _shared_copy(base: Any) -> Any:
    """A deep copy of `base` whose parameters and buffers are the very tensors of `base`."""
    shared = {id(tensor): tensor for tensor in itertools.chain(base.parameters(), base.buffers())}
    return copy.deepcopy(base, shared)


def generate_rows(
    rows: list[Row], tokenizer: Any, record: Callable[[int, float, str], None] | None = None,
    stop_tokens: str = "model",
) -> list[Completion]:
    """Completions for `rows`, in order; one `generate` per group of rows that can share it.

    `record(rows, seconds, model_id)` is told about each generate (for batch-size metrics).
    `stop_tokens`: "model" stops at the end tokens of the model's generation config; "eos_and_pad"
    at the tokenizer's eos and pad tokens, as the research inference's generate call does.
    A row with `gates` gets its prompt's expert gates (pac_lora.gates) when its model routes; the
    gates are recorded only for a group that has such a row.
    """
    groups: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        groups.setdefault((id(row.model), row.sampling.group_key()), []).append(index)
    results: list[Completion | None] = [None] * len(rows)
    for indices in groups.values():
        began = time.perf_counter()
        group = [rows[i] for i in indices]
        for index, completion in zip(indices, list(_generate_group(group, tokenizer, stop_tokens)), strict=True):
            results[index] = completion
        if record is not None:
            record(len(group), time.perf_counter() - began, group[0].model.model_id)
    return results  # type: ignore[return-value]


def decoding_kwargs(sampling: Sampling, max_new_tokens: int, prompt_length: int) -> dict[str, Any]:
    """`generate`'s arguments; `prompt_length`: the (left-padded) prompt's length, all rows alike."""
    output_only = sampling.repetition_penalty_scope == "output" and sampling.repetition_penalty != 1.0
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "repetition_penalty": None if output_only else sampling.repetition_penalty,
        "do_sample": not sampling.greedy,
    }
    if output_only:  # generate runs custom processors before temperature, top-k and top-p, as its own penalty
        kwargs["logits_processor"] = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(
            float(sampling.repetition_penalty), prompt_ignore_length=prompt_length)])
    if sampling.greedy:  # unset, so a checkpoint's own sampling defaults cannot leak in
        kwargs.update(temperature=None, top_p=None, top_k=None)
    else:
        kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k or None)
    return kwargs


def _generate_group(rows: list[Row], tokenizer: Any, stop_tokens: str = "model") -> Iterator[Completion]:
    loaded = rows[0].model
    device = next(loaded.model.parameters()).device
    batch = collate([row.encoding for row in rows], tokenizer.pad_token_id, padding_side="left")
    inputs = {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}
    if loaded.takes_spans:
        inputs.update(user_spans=batch["user_spans"], news_spans=batch["news_spans"])
    longest = max(row.sampling.max_new_tokens for row in rows)
    kwargs = {**decoding_kwargs(rows[0].sampling, longest, inputs["input_ids"].shape[1]),
              "pad_token_id": tokenizer.pad_token_id}
    if stop_tokens == "eos_and_pad":
        kwargs["eos_token_id"] = [tokenizer.eos_token_id, tokenizer.pad_token_id]
    details = {row.gates for row in rows if row.gates} if loaded.takes_spans else set()
    recording = loaded.model.record_gates() if details else contextlib.nullcontext()
    with torch.no_grad(), recording as gate_record:
        sequences = loaded.model.generate(**inputs, **kwargs)
    gates = {detail: gate_record.rows(detail) for detail in details}
    stops = _stop_ids(loaded.model, tokenizer, stop_tokens)
    for index, (row, tokens) in enumerate(zip(rows, sequences[:, inputs["input_ids"].shape[1]:].tolist(),
                                              strict=True)):
        tokens = tokens[: row.sampling.max_new_tokens]
        stop = next((k for k, token in enumerate(tokens) if token in stops), None)
        kept = tokens if stop is None else tokens[:stop]
        yield Completion(
            text=tokenizer.decode(kept, skip_special_tokens=True).strip(),
            prompt_tokens=len(row.encoding.input_ids),
            completion_tokens=len(kept) + (stop is not None),
            finish_reason="length" if stop is None else "stop",
            gates=gates[row.gates][index] if row.gates in gates else None,
        )


def _stop_ids(model: Any, tokenizer: Any, stop_tokens: str = "model") -> set[int]:
    """The token ids generation stops at (as `generate` was told), to cut each row at the first."""
    if stop_tokens == "eos_and_pad":
        return {int(i) for i in (tokenizer.eos_token_id, tokenizer.pad_token_id) if i is not None}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = configured if isinstance(configured, list) else [configured]
    return {int(i) for i in [*ids, tokenizer.eos_token_id] if i is not None}
