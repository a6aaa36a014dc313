"""The HTTP API: micro and macro prediction, OpenAI-compatible chat completions, models, health.

`Service` does the work of each endpoint apart from HTTP (limits, prompts to jobs, fan-out to the
Generator, labels, aggregation); `create_api` wraps it in a FastAPI app (auth, error mapping,
body-size guard, metrics). The `Api` deployment builds both inside its replica, so the app's
settings are plain closures rather than globals. This module never imports torch.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from ray import serve
from ray.exceptions import RayTaskError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle

from cluster.logs import setup_logging
from cluster.metrics import count, metric
from serve.config import ServeConfig
from serve.population import Member, load_population
from serve.protocol import (
    ChatPrompt,
    Completion,
    InvalidPrompt,
    Job,
    LimitExceeded,
    ResearchPrompt,
    Sampling,
    UnknownModel,
    UserProfile,
)
from serve.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    Decoding,
    ErrorResponse,
    Health,
    HistoryPost,
    MacroRequest,
    MacroResponse,
    MicroRequest,
    MicroResponse,
    ModelCard,
    ModelList,
    Prediction,
    SamplePost,
    SentimentCounts,
    SentimentDistribution,
    User,
    UserPosts,
)
from serve.sentiment import LABELS, SENTIMENTS, Labeler, check_labels, make_labeler

log = logging.getLogger(__name__)

CallGenerator = Callable[[str, list[Job]], Awaitable[list[list[Completion]]]]

DESCRIPTION = """Predict how users (micro) and crowds (macro) respond to news, with PAC-LoRA.

Models: the base model alone (zero-shot) and PAC-LoRA adapters, by id (`GET /v1/models`).
Auth: `Authorization: Bearer <token>` on /v1/* when the server sets SOCIALALIGN_SERVE_TOKEN.
Errors: 401 bad token, 404 unknown model, 413 a configured limit exceeded (named in the message),
422 invalid input (field-level), 503 overloaded (retry later).
Chat completions route both PAC-LoRA routers on the last user message (no user/news structure).
"""


class Service:
    """The endpoints' work, given a way to call the Generator and a labeler."""

    def __init__(self, config: ServeConfig, call_generator: CallGenerator, labeler: Labeler) -> None:
        self.config = config
        self.call_generator = call_generator
        self.labeler = labeler
        self.models = [config.base_model_id, *config.adapters]
        self.default_model = config.default_model or next(iter(config.adapters), config.base_model_id)
        self.started = int(time.time())

    # -- endpoints ------------------------------------------------------------------------------

    def health(self) -> Health:
        return Health(models=self.models, default_model=self.default_model, labeler=self.labeler.name)

    def model_list(self) -> ModelList:
        return ModelList(data=[ModelCard(id=model, created=self.started) for model in self.models])

    async def micro(self, request: MicroRequest) -> MicroResponse:
        model = self.model_id(request.model)
        self.check_user(("body", "user"), request.user)
        self.check_texts(("body",), news=request.news, topic=request.topic)
        self.check_count(("body", "n"), request.n, "max_samples_per_request")
        sampling = self.sampling(request.decoding, ("body", "decoding"))
        variant = resolve_variant(request.variant, request.user)
        prompt = ResearchPrompt(request.news, hashtag(request.topic), variant, user=profile(request.user))
        [completions] = await self.generate(model, [Job(prompt, sampling, request.n)])
        labels = await self.label([c.text for c in completions], prompt.topic)
        return MicroResponse(
            model=model,
            labeler=self.labeler.name,
            variant=variant,
            prompt_tokens=completions[0].prompt_tokens,
            predictions=[prediction(c, label) for c, label in zip(completions, labels)],
        )

    async def macro(self, request: MacroRequest) -> MacroResponse:
        model = self.model_id(request.model)
        self.check_texts(("body",), news=request.news, topic=request.topic)
        self.check_count(("body", "samples_per_user"), request.samples_per_user, "max_samples_per_request")
        sampling = self.sampling(request.decoding, ("body", "decoding"))
        topic = hashtag(request.topic)
        members = await self.members(request)
        jobs = [Job(self.member_prompt(m, request, topic), sampling, request.samples_per_user) for m in members]
        results = await self.generate(model, jobs)
        texts = [c.text for completions in results for c in completions]
        labels = iter(await self.label(texts, topic))
        per_user = [
            UserPosts(user=m.name, user_id=m.user_id, predictions=[prediction(c, next(labels)) for c in completions])
            for m, completions in zip(members, results)
        ]
        return aggregate(model, self.labeler.name, topic, per_user, request.samples_per_class, request.return_posts)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        model = self.model_id(request.model)
        for index, message in enumerate(request.messages):
            self.check_text(("body", "messages", index, "content"), message.text())
        self.check_count(("body", "n"), request.n, "max_samples_per_request")
        decoding = Decoding(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            repetition_penalty=request.repetition_penalty,
            max_new_tokens=request.max_completion_tokens or request.max_tokens,
        )
        sampling = self.sampling(decoding, ("body",), tokens_field="max_tokens")
        roles = {"developer": "system"}  # templates know system, user, assistant
        messages = tuple((roles.get(m.role, m.role), m.text()) for m in request.messages)
        [completions] = await self.generate(model, [Job(ChatPrompt(messages), sampling, request.n)])
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        choices = [chat_choice(index, c, stops) for index, c in enumerate(completions)]
        prompt_tokens = completions[0].prompt_tokens
        completion_tokens = sum(c.completion_tokens for c in completions)
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            choices=choices,
            usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                   "total_tokens": prompt_tokens + completion_tokens},
        )

    # -- pieces ---------------------------------------------------------------------------------

    def model_id(self, requested: str | None) -> str:
        if requested is None:
            return self.default_model
        if requested not in self.models:
            raise UnknownModel(requested, self.models)
        return requested

    def sampling(self, decoding: Decoding, loc: tuple, tokens_field: str = "max_new_tokens") -> Sampling:
        defaults = self.config.decoding
        chosen = {name: getattr(decoding, name) for name in type(decoding).model_fields}
        merged = {name: getattr(defaults, name) if value is None else value for name, value in chosen.items()}
        limit = self.config.max_new_tokens_limit
        if merged["max_new_tokens"] > limit:
            raise LimitExceeded(
                (*loc, tokens_field), "max_new_tokens_limit", limit,
                f"{tokens_field}: at most {limit} (max_new_tokens_limit), got {merged['max_new_tokens']}",
            )
        return Sampling(**merged)

    async def members(self, request: MacroRequest) -> list[Member]:
        population = request.population
        if population.path is not None:
            return await asyncio.to_thread(
                load_population, population.path, self.config.population_dir, population.sample_size,
                population.seed, self.config.max_users_per_request, request.variant,
            )
        users = population.users or []
        self.check_count(("body", "population", "users"), len(users), "max_users_per_request")
        for index, user in enumerate(users):
            self.check_user(("body", "population", "users", index), user)
        if population.sample_size is not None and population.sample_size < len(users):
            chosen = sorted(random.Random(population.seed).sample(range(len(users)), population.sample_size))
            users = [users[i] for i in chosen]
        return [Member(name=u.name, user_id=u.user_id, profile=profile(u), variant=None) for u in users]

    def member_prompt(self, member: Member, request: MacroRequest, topic: str) -> ResearchPrompt:
        if member.user_part is not None:  # an SFT row: its own user part and variant
            return ResearchPrompt(request.news, topic, member.variant or "full", user_part=member.user_part)
        assert member.profile is not None
        variant = resolve_variant(request.variant, member.profile)
        return ResearchPrompt(request.news, topic, variant, user=member.profile)

    async def generate(self, model: str, jobs: list[Job]) -> list[list[Completion]]:
        """Jobs in chunks of about one batch, sent concurrently so that several replicas can share them."""
        chunks: list[list[Job]] = [[]]
        rows = 0
        for job in jobs:
            if chunks[-1] and rows + job.n > self.config.max_batch_size:
                chunks.append([])
                rows = 0
            chunks[-1].append(job)
            rows += job.n
        tasks = [asyncio.ensure_future(self.call_generator(model, chunk)) for chunk in chunks]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            raise
        return [completions for chunk in results for completions in chunk]

    async def label(self, posts: list[str], topic: str) -> list[str]:
        if not posts:
            return []
        labels = await asyncio.to_thread(self.labeler.label, posts, topic)
        return check_labels(self.labeler, posts, labels)

    def check_user(self, loc: tuple, user: User) -> None:
        self.check_texts(loc, name=user.name, persona=user.persona)
        self.check_count((*loc, "history"), len(user.history), "max_history_posts")
        for index, post in enumerate(user.history):
            if isinstance(post, HistoryPost):
                self.check_texts((*loc, "history", index), text=post.text, retweet_text=post.retweet_text)
            else:
                self.check_text((*loc, "history", index), post)

    def check_texts(self, loc: tuple, **texts: str | None) -> None:
        for name, text in texts.items():
            self.check_text((*loc, name), text)

    def check_text(self, loc: tuple, text: str | None) -> None:
        limit = self.config.max_text_chars
        if text is not None and len(text) > limit:
            message = f"at most {limit} characters (max_text_chars), got {len(text)}"
            raise LimitExceeded(loc, "max_text_chars", limit, message)

    def check_count(self, loc: tuple, value: int, limit_name: str) -> None:
        limit = getattr(self.config, limit_name)
        if value > limit:
            raise LimitExceeded(loc, limit_name, limit, f"at most {limit} ({limit_name}), got {value}")


def hashtag(topic: str) -> str:
    cleaned = topic.strip().strip("#").strip()
    if not cleaned:
        raise InvalidPrompt(("body", "topic"), "a hashtag needs at least one character besides '#' and spaces")
    return cleaned


def profile(user: User) -> UserProfile:
    history = tuple((p.text, p.retweet_text) if isinstance(p, HistoryPost) else (p, None) for p in user.history)
    persona = user.persona.strip() if user.persona and user.persona.strip() else None
    return UserProfile(name=user.name, history=history, persona=persona)


def resolve_variant(requested: str, user: User | UserProfile) -> str:
    """auto: the full prompt, or the research ablation that leaves out what the user lacks."""
    if requested != "auto":
        return requested
    has_persona = bool(user.persona and user.persona.strip())
    if has_persona and not user.history:
        return "without_history"
    return "full" if has_persona else "without_persona"


def prediction(completion: Completion, label: str) -> Prediction:
    return Prediction(
        text=completion.text, sentiment=label, finish_reason=completion.finish_reason,
        completion_tokens=completion.completion_tokens,
    )


def chat_choice(index: int, completion: Completion, stops: list[str]) -> ChatChoice:
    text, reason = completion.text, completion.finish_reason
    cuts = [text.find(stop) for stop in stops if stop and stop in text]
    if cuts:
        text, reason = text[: min(cuts)], "stop"
    return ChatChoice(index=index, message=AssistantMessage(content=text), finish_reason=reason)


def aggregate(
    model: str, labeler: str, topic: str, per_user: list[UserPosts], samples_per_class: int, return_posts: bool
) -> MacroResponse:
    counts = Counter(p.sentiment for user in per_user for p in user.predictions)
    labelled = sum(counts[s] for s in SENTIMENTS)
    samples: dict[str, list[SamplePost]] = {label: [] for label in LABELS}
    for user in per_user:
        for post in user.predictions:
            if len(samples[post.sentiment]) < samples_per_class:
                samples[post.sentiment].append(SamplePost(user=user.user, text=post.text))
    return MacroResponse(
        model=model,
        labeler=labeler,
        topic=topic,
        users=len(per_user),
        posts=sum(counts.values()),
        counts=SentimentCounts(**counts),
        distribution=SentimentDistribution(**{s: counts[s] / labelled for s in SENTIMENTS}) if labelled else None,
        samples=samples,
        per_user=per_user if return_posts else None,
    )


# -- HTTP ---------------------------------------------------------------------------------------


def create_api(service: Service, token_sha256: str | None = None) -> FastAPI:
    """The FastAPI app over `service`; /v1/* needs the bearer token whose SHA-256 is `token_sha256`."""
    app = FastAPI(title="SocialAlign", version=_version(), description=DESCRIPTION)
    bearer = HTTPBearer(auto_error=False, description="the server's SOCIALALIGN_SERVE_TOKEN, when it sets one")

    async def authorize(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> None:
        if token_sha256 is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(hashlib.sha256(given.encode("utf-8")).hexdigest(), token_sha256):
            raise _Unauthorized()

    guarded = [Depends(authorize)]
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse, "description": text} for status, text in (
            (401, "missing or invalid bearer token"),
            (404, "unknown model"),
            (413, "a configured limit is exceeded; error.code names it"),
            (422, "invalid input; detail lists each field"),
            (503, "overloaded; retry later"),
        )
    }
    _install_error_handlers(app)
    _install_guards(app, service.config.max_request_bytes)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> Health:
        return service.health()

    @app.get("/v1/models", tags=["openai"], dependencies=guarded, responses=errors)
    async def list_models() -> ModelList:
        return service.model_list()

    @app.post("/v1/predict/micro", tags=["predict"], dependencies=guarded, responses=errors)
    async def predict_micro(request: MicroRequest) -> MicroResponse:
        """The posts one user would write about the news (n samples), each with its sentiment."""
        return await service.micro(request)

    @app.post("/v1/predict/macro", tags=["predict"], dependencies=guarded, responses=errors)
    async def predict_macro(request: MacroRequest) -> MacroResponse:
        """The sentiment distribution of a population's predicted posts, counts and examples per class."""
        return await service.macro(request)

    @app.post(
        "/v1/chat/completions", tags=["openai"], dependencies=guarded, responses=errors, response_model=ChatCompletion
    )
    async def chat_completions(request: ChatCompletionRequest) -> Any:
        """OpenAI-compatible. stream=true sends the whole completion as one chunk, then [DONE]."""
        completion = await service.chat(request)
        if request.stream:
            return StreamingResponse(_stream(completion), media_type="text/event-stream")
        return completion

    return app


class _Unauthorized(Exception):
    pass


def error_response(
    status: int, detail: Any, message: str, kind: str, param: str | None = None, code: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """FastAPI's `detail` (field-level) and OpenAI's `error` object, so both kinds of client read it."""
    body = {"detail": detail, "error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _field_errors(items: list[dict[str, Any]], status: int, kind: str, code: str | None = None) -> JSONResponse:
    message = "; ".join(f"{'.'.join(str(p) for p in item['loc'][1:]) or 'body'}: {item['msg']}" for item in items)
    param = (".".join(str(p) for p in items[0]["loc"][1:]) or None) if items else None
    return error_response(status, items, message, kind, param, code)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Field-level messages without echoing the input (it may be huge, or not encodable).
        items = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return _field_errors(items, 422, "invalid_request_error")

    @app.exception_handler(InvalidPrompt)
    async def invalid_prompt(_: Request, exc: InvalidPrompt) -> JSONResponse:
        return _field_errors([{"loc": list(exc.loc), "msg": exc.message, "type": "invalid_prompt"}], 422,
                             "invalid_request_error")

    @app.exception_handler(LimitExceeded)
    async def too_large(_: Request, exc: LimitExceeded) -> JSONResponse:
        item = {"loc": list(exc.loc), "msg": exc.message, "type": "limit_exceeded",
                "ctx": {"limit": exc.limit, "max": exc.maximum}}
        return _field_errors([item], 413, "invalid_request_error", code=exc.limit)

    @app.exception_handler(UnknownModel)
    async def unknown_model(_: Request, exc: UnknownModel) -> JSONResponse:
        return error_response(404, str(exc), str(exc), "invalid_request_error", "model", "model_not_found")

    @app.exception_handler(_Unauthorized)
    async def unauthorized(_: Request, exc: _Unauthorized) -> JSONResponse:
        message = "missing or invalid bearer token"
        return error_response(401, message, message, "authentication_error", None, "invalid_api_key",
                              {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(BackPressureError)
    async def overloaded(_: Request, exc: BackPressureError) -> JSONResponse:
        message = "overloaded: too many requests queued; retry later"
        return error_response(503, message, message, "server_error", None, "overloaded", {"Retry-After": "1"})


def _install_guards(app: FastAPI, max_request_bytes: int) -> None:
    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Any]]) -> Any:
        began = time.monotonic()
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > max_request_bytes:
            item = {"loc": ["body"], "type": "limit_exceeded",
                    "msg": f"request body is {length} bytes, more than max_request_bytes={max_request_bytes}",
                    "ctx": {"limit": "max_request_bytes", "max": max_request_bytes}}
            response: Any = _field_errors([item], 413, "invalid_request_error", code="max_request_bytes")
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        endpoint = getattr(route, "path", "unmatched")
        count("serve_requests", endpoint=endpoint, status=str(response.status_code))
        try:
            metric("serve_latency_s").observe(time.monotonic() - began, tags={"endpoint": endpoint})
        except Exception as error:  # metrics must never break the work they describe
            log.warning("metric serve_latency_s not recorded: %s", error)
        return response


async def _stream(completion: ChatCompletion) -> AsyncIterator[str]:
    base = {"id": completion.id, "object": "chat.completion.chunk", "created": completion.created,
            "model": completion.model}
    for choice in completion.choices:
        delta = {"role": "assistant", "content": choice.message.content}
        yield _event({**base, "choices": [{"index": choice.index, "delta": delta, "finish_reason": None}]})
        end = {"index": choice.index, "delta": {}, "finish_reason": choice.finish_reason}
        yield _event({**base, "choices": [end]})
    yield "data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("socialalign")
    except PackageNotFoundError:
        return "0"


# -- the deployment ---------------------------------------------------------------------------


@serve.deployment(name="Api")
@serve.ingress()
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
