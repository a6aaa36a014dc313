"""A tiny served model: a Qwen2 checkpoint with two PAC-LoRA adapters and a peft LoRA (the
baseline's format), and the Serve app serving them.

The tiny checkpoint's linears are re-drawn with a larger scale: at the default initialisation the
residual stream is mostly the input embedding, so (with tied embeddings) greedy decoding repeats
the last prompt token forever and every model would answer the same empty text.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import torch
import yaml

from tests.conftest import free_port

CORPUS = [
    "今天北京发布了新的交通政策，大家怎么看？#北京交通新政# 我觉得挺好的，支持！",
    "上海又下雨了，好烦啊，出门都不方便。#上海暴雨# 希望大家注意安全。",
    "新手机发布会太精彩了，价格也很良心，必须买！#新品发布会# [doge]",
]
TOKEN = "test-serve-token-0123456789"
APP = "socialalign-test"


@dataclass(frozen=True)
class TinyModels:
    base: Path
    adapters: dict[str, Path]  # PAC-LoRA adapters and the peft LoRA ("lora"), by adapter id


@dataclass(frozen=True)
class Served:
    url: str
    token: str
    population_dir: Path

    def post(self, path: str, body: object, token: str | None = TOKEN, timeout: float = 60) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.post(self.url + path, json=body, headers=headers, timeout=timeout)

    def get(self, path: str, token: str | None = TOKEN) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return requests.get(self.url + path, headers=headers, timeout=30)

    def generator_stats(self) -> dict:
        from ray import serve

        return serve.get_deployment_handle("Generator", app_name=APP).stats.remote().result(timeout_s=30)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    from pac_lora import (
        PACLoraConfig,
        apply_pac_lora,
        build_tiny_checkpoint,
        load_base_model,
        save_adapter,
    )

    root = tmp_path_factory.mktemp("serve-models")
    base_dir = build_tiny_checkpoint(root / "base", texts=CORPUS)
    model, _ = load_base_model(base_dir)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim == 2 and "embed" not in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    model.save_pretrained(base_dir)
    adapters = {}
    for seed, (adapter_id, routing) in enumerate((("alpha", "sequence"), ("beta", "token"))):
        fresh, _ = load_base_model(base_dir)
        pac = apply_pac_lora(fresh, PACLoraConfig(routing=routing))
        weights = torch.Generator().manual_seed(100 + seed)
        with torch.no_grad():
            for param in pac.adapter_state_dict().values():
                param.copy_(torch.randn(param.shape, generator=weights) * 0.1)
        adapters[adapter_id] = save_adapter(pac, root / adapter_id)
    adapters["lora"] = save_peft_lora(base_dir, root / "lora")
    return TinyModels(base=base_dir, adapters=adapters)


def save_peft_lora(base_dir: Path, directory: Path) -> Path:
    """A peft LoRA saved as `socialalign train method=lora` saves it, with nonzero B so it changes outputs."""
    from peft import LoraConfig, get_peft_model

    from pac_lora import load_base_model

    base, _ = load_base_model(base_dir)
    lora = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                           task_type="CAUSAL_LM"))
    weights = torch.Generator().manual_seed(200)
    with torch.no_grad():
        for name, param in lora.named_parameters():
            if "lora_" in name:
                param.copy_(torch.randn(param.shape, generator=weights) * 0.3)
    lora.save_pretrained(str(directory))
    return directory


def serve_yaml(models: TinyModels, population_dir: Path, **overrides: object) -> dict:
    """The test server's config: small limits so every limit can be hit cheaply; Serve may hand the
    generation loop two batches of 4 at once (max_ongoing_requests // max_batch_size). The largest
    macro request allowed (20 users x 3 samples: max_rows_per_request) needs more Generator calls
    than the Generator takes and queues (8 + 8): it passes because a request keeps 8 in flight."""
    config = {
        "base_model": str(models.base),
        "adapters": {name: str(path) for name, path in models.adapters.items()},
        "default_model": "alpha",
        "app_name": APP,
        "max_batch_size": 4,
        "batch_wait_timeout_s": 0.05,
        "max_ongoing_requests": 8,
        "max_queued_requests": 8,
        "max_users_per_request": 24,
        "max_samples_per_request": 3,
        "max_rows_per_request": 60,  # 20 users x 3 samples: 20 Generator calls, more than its 8 + 8 slots
        "max_history_posts": 5,
        "max_text_chars": 300,
        "max_prompt_tokens": 1024,
        "max_new_tokens_limit": 16,
        "max_request_bytes": 65536,
        "population_dir": str(population_dir),
        "decoding": {"max_new_tokens": 8},
        "labeler": "placeholder-unlabelled",  # these tests are about the API; labelling has its own tests
    }
    config.update(overrides)
    return config


@pytest.fixture(scope="module")
def served(ray_local: object, tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A Serve app for the module (test_app.py holds every test that needs one), built the way a
    Serve config file builds it (app_builder), with the token from the environment as in a cluster.
    Stopped at the module's end, so later tests get the local Ray's CPUs back."""
    from ray import serve

    from serve.app import app_builder

    root = tmp_path_factory.mktemp("serve-app")
    population_dir = root / "populations"
    population_dir.mkdir()
    config_path = root / "serve.yaml"
    config_path.write_text(yaml.safe_dump(serve_yaml(tiny_models, population_dir)), encoding="utf-8")
    port = free_port()
    previous = os.environ.get("SOCIALALIGN_SERVE_TOKEN")
    os.environ["SOCIALALIGN_SERVE_TOKEN"] = TOKEN
    try:
        application = app_builder({"config": str(config_path)})
    finally:
        if previous is None:
            os.environ.pop("SOCIALALIGN_SERVE_TOKEN")
        else:
            os.environ["SOCIALALIGN_SERVE_TOKEN"] = previous
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(application, name=APP, route_prefix="/")
        yield Served(url=f"http://127.0.0.1:{port}", token=TOKEN, population_dir=population_dir)
    finally:
        serve.shutdown()
