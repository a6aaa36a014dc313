"""The demo's base model: nothing can be downloaded, so a tiny Qwen2 with a tokenizer trained on the
crawled posts is built and pretrained on them, as a web-trained base would have read such text."""

from __future__ import annotations

import json
import random
import shutil
import time
from pathlib import Path

from cluster.demo.config import DemoSize
from cluster.parquet import read_table_dir
from cluster.schemas import CLEAN_HISTORY, SFT

RECIPE = 6  # bump when the pretraining below changes, so a rerun rebuilds the model


def build_base_model(out: Path, size: DemoSize) -> str:
    """Build and pretrain `out/model` unless it is there with these settings; the stage line's text."""
    directory, marker = out / "model", out / "model" / "pretrained.json"
    wanted = {"hidden": size.hidden, "steps": size.pretrain_steps, "recipe": RECIPE}
    if marker.is_file() and json.loads(marker.read_text()).get("settings") == wanted:
        first, last = json.loads(marker.read_text())["loss"]
        return f"reused {directory} (pretrained, loss {first:.2f} -> {last:.2f})"
    posts, prompts = _texts(out)
    began = time.monotonic()
    shutil.rmtree(out / "train", ignore_errors=True)  # checkpoints of another base model cannot resume here
    first, last = _pretrain(directory, size, posts, prompts)
    marker.write_text(json.dumps({"settings": wanted, "loss": [first, last]}))
    return (f"ok: a tiny Qwen2 (hidden {size.hidden}) pretrained on {len(posts)} crawled posts and {len(prompts)} "
            f"training prompts, loss {first:.2f} -> {last:.2f} in {time.monotonic() - began:.1f}s")


def _texts(out: Path) -> tuple[list[str], list[str]]:
    """Users' history plus the training topics' posts as plain text (the language a base model would
    have read on the web, no prompt, no author), and the training prompts. Nothing of the held-out topic.

    In a fixed order, each user's posts together as the dataset groups them: Ray Data names its part
    files at random, so read as found the rows came in another order on every build, and the tokenizer,
    the pretraining stream and each prompt's random answer changed with them."""
    history = read_table_dir(out / "dataset" / "clean" / "history", CLEAN_HISTORY).sort_by(
        [("user_id", "ascending"), ("created_at", "ascending"), ("mid", "ascending")])
    train_rows = read_table_dir(out / "dataset" / "sft" / "train", SFT).sort_by(
        [("user_id", "ascending"), ("topic", "ascending"), ("variant", "ascending"), ("id", "ascending")]).to_pylist()
    posts = [t for t in history["text"].to_pylist() if t] + [r["output"] for r in train_rows if r["output"]]
    return posts, [r["instruction"] for r in train_rows]


def _pretrain(directory: Path, size: DemoSize, posts: list[str], prompts: list[str]) -> tuple[float, float]:
    from transformers import AutoTokenizer

    from pac_lora import SYSTEM_PROMPT, build_tiny_checkpoint, pretrain_tiny_lm

    build_tiny_checkpoint(directory, hidden_size=size.hidden, num_layers=2, num_heads=4, num_kv_heads=2,
                          intermediate_size=size.hidden * 2, texts=posts + prompts, vocab_size=4000, seed=0)
    # The posts teach the language; the training prompts the template and long positions. Each prompt
    # is answered by a random post of the corpus, never its own answer: the base model learns that a
    # post follows the prompt (as an instruct model knows), and which user writes what about which
    # news is left to PAC-LoRA, so the zero-shot base stays a fair baseline.
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    pick = random.Random(0)
    conversations = [tokenizer.apply_chat_template(
        [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": prompt},
         {"role": "assistant", "content": pick.choice(posts)}], tokenize=False).rstrip().removesuffix("<|im_end|>")
        for prompt in prompts]  # pretraining ends every text with the end-of-turn token itself
    return pretrain_tiny_lm(directory, posts + conversations, steps=size.pretrain_steps, batch_size=8, seq_len=512,
                            progress=True)
