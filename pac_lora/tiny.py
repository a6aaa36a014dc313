"""Tiny decoder-only checkpoints built here, for tests, benchmarks and the demo (nothing can be downloaded).

They are written in the Hugging Face layout, so `load_base_model` reads them as it reads a real
Qwen2.5-7B-Instruct. The tiny tokenizer is a byte-level BPE trained here with the exact
normaliser / pre-tokeniser / decoder pipeline transformers rebuilds for Qwen2, so encodings
survive the save-and-reload round trip.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import torch

from pac_lora.base import load_base_model

# Qwen2's pre-tokenisation pattern (contractions, letters, single digits, punctuation, newlines, spaces).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Enough Chinese and English for a BPE to learn merges; callers add their own corpus.
SEED_TEXT = (
    "你是一个微博用户。现在你看到了一则新闻：今天北京发布了新的交通政策，#北京交通新政# 登上热搜。"
    "请发一条关于hashtag #北京交通新政# 的微博，要求符合你自己的风格和立场，长度与你的历史微博相近。"
    "以下是你的用户画像：1. 兴趣：科技数码 2. 语言风格：幽默 3. 情感基调：积极 4. 性格：开朗 5. 价值观：务实。"
    "你转发了微博：这届奥运会太精彩了！并评论说：支持中国队，加油！哈哈哈[doge][允悲]真的太好了。"
    "The quick brown fox jumps over the lazy dog. Users respond to news with posts, comments and reposts. "
    "Public response prediction at micro and macro level: sentiment is positive, neutral or negative."
)


def train_tokenizer(texts: Iterable[str] = (), vocab_size: int = 2000) -> Any:
    """A byte-level BPE with a ChatML chat template, as a transformers fast tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator([SEED_TEXT, *texts], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token=None
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def build_tiny_checkpoint(
    directory: str | Path,
    arch: Literal["qwen2", "llama"] = "qwen2",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    texts: Iterable[str] = (),
    vocab_size: int = 2000,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised decoder-only LM and its tokenizer to `directory`, HF layout."""
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    directory = Path(directory)
    tokenizer = train_tokenizer(texts, vocab_size)
    config_class = {"qwen2": Qwen2Config, "llama": LlamaConfig}[arch]
    config = config_class(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if arch == "llama":
        _keep_generic_tokenizer(directory)
    return directory


def _keep_generic_tokenizer(directory: Path) -> None:
    """LlamaTokenizer would rebuild a sentencepiece-style pipeline on load; ours is byte-level BPE."""
    path = directory / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")


def pretrain_tiny_lm(
    directory: str | Path,
    texts: Iterable[str],
    steps: int = 300,
    batch_size: int = 16,
    seq_len: int = 128,
    learning_rate: float = 3e-3,
    seed: int = 0,
    progress: bool = False,
) -> tuple[float, float]:
    """Teach a tiny checkpoint the language of `texts` (full causal-LM training), saved in place.

    No model can be downloaded here, so demos that want generations which read like the corpus give
    their tiny base model a short pretraining on it first. Returns (first, last) training loss.
    """
    directory = Path(directory)
    model, tokenizer = load_base_model(directory, dtype=torch.float32)
    stream: list[int] = []
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    if len(stream) <= seq_len + 1:
        raise ValueError(f"pretraining needs more than {seq_len + 1} tokens of text, got {len(stream)}")
    tokens = torch.tensor(stream)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.1)
    model.train()
    losses = []
    bar = _bar(steps, progress)
    for _ in range(steps):
        starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=generator)
        batch = torch.stack([tokens[s : s + seq_len + 1] for s in starts.tolist()])
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    if bar is not None:
        bar.close()
    model.eval().save_pretrained(directory)
    return losses[0], sum(losses[-10:]) / len(losses[-10:])


def _bar(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="pretrain", unit="step", dynamic_ncols=True)
