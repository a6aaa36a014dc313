"""The serve stage: Ray Serve for micro and macro prediction, predicting a test split, and the
sentiment labellers that serving and evaluation share.

    from serve import build_app, deploy        # the Serve application from a ServeConfig
    app = build_app(config)                    # Generator (model, adapters, batching) behind Api (FastAPI)
    url = deploy(config)                       # Serve's proxy on config.host:port, then the app
    labeler = make_labeler("offline")          # or "llm-judge", "placeholder-unlabelled", "package.module:factory"

`socialalign serve --config serve.yaml` runs `serve.app:run`; a Serve config file (`serve deploy`,
KubeRay RayService) names `serve.app:app_builder`; `python -m serve.deploy_config` writes one.
Names resolve lazily, so `python -m serve.predict --help` imports neither Ray nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_SENTIMENT = "serve.sentiment"
_EXPORTS = {
    "build_app": "serve.app",
    "app_builder": "serve.app",
    "deploy": "serve.app",
    "run": "serve.app",
    "LABELERS": _SENTIMENT,
    "LABELS": _SENTIMENT,
    "LLMJudgeLabeler": _SENTIMENT,
    "Labeler": _SENTIMENT,
    "OfflineLabeler": _SENTIMENT,
    "PlaceholderLabeler": _SENTIMENT,
    "SENTIMENTS": _SENTIMENT,
    "UNLABELLED": _SENTIMENT,
    "check_labels": _SENTIMENT,
    "labeler_factory": _SENTIMENT,
    "load_sample": _SENTIMENT,
    "make_labeler": _SENTIMENT,
    "parse_judgement": _SENTIMENT,
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
