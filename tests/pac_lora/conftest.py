"""Tiny checkpoints written once per session and loaded through the real loading path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pac_lora import build_prompt, build_tiny_checkpoint, collate, load_base_model

CORPUS = [
    "今天北京发布了新的交通政策，大家怎么看？#北京交通新政# 我觉得挺好的，支持！",
    "上海又下雨了，好烦啊，出门都不方便。#上海暴雨# 希望大家注意安全。",
    "新手机发布会太精彩了，价格也很良心，必须买！#新品发布会# [doge]",
]

SAMPLES = [
    (
        "用户名：小明\n历史微博：\n1. 今天天气不错，出去走走。\n2. 你转发了微博: 加油！, 并评论说: 支持\n"
        "以下是你的用户画像：积极乐观\n",
        "现在你看到了一则新闻: 北京发布了新的交通政策。\n#北京交通新政# 正在热搜。\n",
        "请发一条关于hashtag #北京交通新政# 的微博，只输出微博内容。",
        "挺好的，支持！",
    ),
    (
        "用户名：小红\n以下是你的用户画像：喜欢抱怨\n",
        "现在你看到了一则新闻: 上海暴雨。#上海暴雨# 正在热搜。\n",
        "请发一条关于hashtag #上海暴雨# 的微博。",
        "好烦啊，又下雨，出门都不方便",
    ),
    (
        "用户名：数码控\n历史微博：\n1. 新手机真香\n",
        "现在你看到了一则新闻: 新品发布会今天举行，价格良心。#新品发布会#\n",
        "请发一条关于hashtag #新品发布会# 的微博。",
        "必须买！[doge]",
    ),
]


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "qwen2", texts=CORPUS)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "llama", arch="llama", texts=CORPUS)


@pytest.fixture()
def qwen(tiny_qwen: Path):
    """A fresh (model, tokenizer) pair in eval mode for each test."""
    model, tokenizer = load_base_model(tiny_qwen)
    return model.eval(), tokenizer


def encode(tokenizer, routing: str = "sequence", with_response: bool = True, samples=SAMPLES):
    return [
        build_prompt(tokenizer, user, news, instruction, response if with_response else None, routing=routing)
        for user, news, instruction, response in samples
    ]


def batch_of(tokenizer, routing: str = "sequence", padding_side: str = "right", with_response: bool = True):
    return collate(encode(tokenizer, routing, with_response), tokenizer.pad_token_id, padding_side)


def randomize_adapter(model, seed: int = 0, scale: float = 0.05) -> None:
    """Non-zero experts and routers, so every part of the mixture changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.adapter_state_dict().values():
            param.copy_(torch.randn(param.shape, generator=generator) * scale)
