"""The `Api` deployment: the HTTP ingress replica, which builds the Service and its FastAPI app
inside itself (so the app's settings are closures, not globals) and calls the Generator.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI
from ray import serve as ray_serve
from ray.exceptions import RayTaskError
from ray.serve.handle import DeploymentHandle

from cluster.logs import setup_logging
from serve.api import create_api
from serve.config import ServeConfig
from serve.protocol import Completion, InvalidPrompt, Job, LimitExceeded, UnknownModel
from serve.sentiment import make_labeler
from serve.service import Service

log = logging.getLogger(__name__)


@ray_serve.deployment(name="Api")
@ray_serve.ingress()
class Api:
    """The HTTP ingress. Gets the Generator's handle, the config (without its secret) and the token's hash."""

    def __init__(self, generator: DeploymentHandle, config: ServeConfig, token_sha256: str | None) -> None:
        setup_logging(config.log_level)
        self.generator = generator
        self.base_model_id = config.base_model_id
        self.handles: dict[str, DeploymentHandle] = {}
        self.service = Service(config, self.call_generator, make_labeler(config.labeler, **config.labeler_options))
        self.token_sha256 = token_sha256
        log.info("Api ready: models %s, labeler %s, auth %s", self.service.models, self.service.labeler.name,
                 "on" if token_sha256 else "off")

    def __serve_build_asgi_app__(self) -> FastAPI:
        return create_api(self.service, self.token_sha256)

    async def call_generator(self, model: str, jobs: list[Job]) -> list[list[Completion]]:
        if model not in self.handles:
            # The base model is in every replica: no multiplexed id, any replica will do.
            is_base = model == self.base_model_id
            self.handles[model] = self.generator if is_base else self.generator.options(multiplexed_model_id=model)
        try:
            return await self.handles[model].generate.remote(jobs)
        except RayTaskError as error:
            cause = getattr(error, "cause", None)
            if isinstance(cause, (LimitExceeded, InvalidPrompt, UnknownModel)):
                raise cause from None
            raise
