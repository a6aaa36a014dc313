"""Stage 4: Ray Serve for micro and macro prediction; predict and evaluate (issues #7, #8).

    from serve import build_app, deploy        # the Serve application from a ServeConfig
    app = build_app(config)                    # Generator (model, adapters, batching) behind Api (FastAPI)
    url = deploy(config)                       # serve.start on config.host:port + serve.run
    labeler = make_labeler("placeholder-unlabelled")   # or "package.module:factory"

`socialalign serve --config serve.yaml` runs `serve.app:run`; a Serve config file (`serve deploy`,
KubeRay RayService) names `serve.app:app_builder`; `python -m serve.deploy_config` writes one.
Names resolve lazily, so `python -m serve.predict --help` imports neither Ray nor torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_app": "serve.app",
    "app_builder": "serve.app",
    "deploy": "serve.app",
    "run": "serve.app",
    "Labeler": "serve.sentiment",
    "LABELERS": "serve.sentiment",
    "PlaceholderLabeler": "serve.sentiment",
    "make_labeler": "serve.sentiment",
    "SENTIMENTS": "serve.sentiment",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'serve' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
