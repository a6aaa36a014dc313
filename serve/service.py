"""What each endpoint does, apart from HTTP: limits, prompts to jobs, fan-out to the Generator,
labels, aggregation. Given a way to call the Generator and a labeler, so tests drive it directly.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Awaitable, Callable

from serve.config import ServeConfig
from serve.limits import Limits
from serve.population import Member, load_population
from serve.protocol import ChatPrompt, Completion, InvalidPrompt, Job, ResearchPrompt, UnknownModel, UserProfile
from serve.responses import aggregate, chat_choice, prediction
from serve.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Decoding,
    Health,
    HistoryPost,
    MacroRequest,
    MacroResponse,
    MicroRequest,
    MicroResponse,
    ModelCard,
    ModelList,
    User,
    UserPosts,
)
from serve.sentiment import Labeler, check_labels

CallGenerator = Callable[[str, list[Job]], Awaitable[list[list[Completion]]]]


class Service:
    """The endpoints' work, given a way to call the Generator and a labeler."""

    def __init__(self, config: ServeConfig, call_generator: CallGenerator, labeler: Labeler) -> None:
        self.config = config
        self.limits = Limits(config)
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

    def model_card(self, model: str) -> ModelCard:
        """One served model (`GET /v1/models/{id}`, the openai client's models.retrieve)."""
        if model not in self.models:
            raise UnknownModel(model, self.models)
        return ModelCard(id=model, created=self.started)

    async def micro(self, request: MicroRequest) -> MicroResponse:
        model = self.model_id(request.model)
        self.limits.check_user(("body", "user"), request.user)
        self.limits.check_texts(("body",), news=request.news, topic=request.topic)
        self.limits.check_count(("body", "n"), request.n, "max_samples_per_request")
        sampling = self.limits.sampling(request.decoding, ("body", "decoding"))
        variant = resolve_variant(request.variant, request.user)
        prompt = ResearchPrompt(request.news, hashtag(request.topic), variant, user=profile(request.user))
        job = Job(prompt, sampling, request.n, gates=request.gate_detail if request.return_gates else None)
        self.limits.check_work([job], f"n={request.n} samples")
        [completions] = await self.generate(model, [job])
        labels = await self.label([c.text for c in completions], prompt.topic)
        return MicroResponse(
            model=model,
            labeler=self.labeler.name,
            variant=variant,
            prompt_tokens=completions[0].prompt_tokens,
            predictions=[prediction(c, label) for c, label in zip(completions, labels, strict=True)],
            gates=completions[0].gates if request.return_gates else None,
        )

    async def macro(self, request: MacroRequest) -> MacroResponse:
        model = self.model_id(request.model)
        self.limits.check_texts(("body",), news=request.news, topic=request.topic)
        self.limits.check_count(("body", "samples_per_user"), request.samples_per_user, "max_samples_per_request")
        sampling = self.limits.sampling(request.decoding, ("body", "decoding"))
        topic = hashtag(request.topic)
        members = await self.members(request)
        jobs = [Job(member_prompt(m, request.news, topic, request.variant), sampling, request.samples_per_user)
                for m in members]
        self.limits.check_work(jobs, f"{len(members)} users x {request.samples_per_user} samples_per_user")
        results = await self.generate(model, jobs)
        texts = [c.text for completions in results for c in completions]
        labels = iter(await self.label(texts, topic))
        per_user = [
            UserPosts(user=m.name, user_id=m.user_id, predictions=[prediction(c, next(labels)) for c in completions])
            for m, completions in zip(members, results, strict=True)
        ]
        return aggregate(model, self.labeler.name, topic, per_user, request.samples_per_class, request.return_posts)

    async def chat(self, request: ChatCompletionRequest) -> ChatCompletion:
        model = self.model_id(request.model)
        for index, message in enumerate(request.messages):
            self.limits.check_text(("body", "messages", index, "content"), message.text())
        self.limits.check_count(("body", "n"), request.n, "max_samples_per_request")
        decoding = Decoding(
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k,
            repetition_penalty=request.repetition_penalty,
            repetition_penalty_scope=request.repetition_penalty_scope,
            max_new_tokens=request.max_completion_tokens or request.max_tokens,
        )
        sampling = self.limits.sampling(decoding, ("body",), tokens_field="max_tokens")
        roles = {"developer": "system"}  # templates know system, user, assistant
        # Tools are not served: tool results (and the assistant turns that only called tools) stay out.
        messages = tuple((roles.get(m.role, m.role), m.text()) for m in request.messages
                         if m.role not in ("tool", "function") and (m.role != "assistant" or m.content is not None))
        if not any(role == "user" for role, _ in messages):  # refused here, not after a trip to the Generator
            raise InvalidPrompt(("body", "messages"), "needs at least one message with role 'user'")
        job = Job(ChatPrompt(messages), sampling, request.n)
        self.limits.check_work([job], f"n={request.n} choices")
        [completions] = await self.generate(model, [job])
        stops = [request.stop] if isinstance(request.stop, str) else list(request.stop or [])
        prompt_tokens = completions[0].prompt_tokens
        completion_tokens = sum(c.completion_tokens for c in completions)
        return ChatCompletion(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=model,
            choices=[chat_choice(index, c, stops) for index, c in enumerate(completions)],
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

    async def members(self, request: MacroRequest) -> list[Member]:
        """The population: a Parquet table under population_dir, or the users in the request (drawn)."""
        population = request.population
        if population.path is not None:
            self.limits.check_text(("body", "population", "path"), population.path)
            return await asyncio.to_thread(
                load_population, population.path, self.config.population_dir, population.sample_size,
                population.seed, self.config.max_users_per_request, request.variant, self.config.max_population_rows,
            )
        users = population.users or []
        self.limits.check_count(("body", "population", "users"), len(users), "max_users_per_request")
        for index, user in enumerate(users):
            self.limits.check_user(("body", "population", "users", index), user)
        if population.sample_size is not None and population.sample_size < len(users):
            chosen = sorted(random.Random(population.seed).sample(range(len(users)), population.sample_size))
            users = [users[i] for i in chosen]
        return [Member(name=u.name, user_id=u.user_id, profile=profile(u), variant=None) for u in users]

    async def generate(self, model: str, jobs: list[Job]) -> list[list[Completion]]:
        """Jobs in chunks of about one batch, sent concurrently so that several replicas can share them,
        at most fanout_per_request at a time: a large request waits its turn instead of overflowing the
        Generator's queue (which would answer 503 to a request that no retry could get through)."""
        chunks: list[list[Job]] = [[]]
        rows = 0
        for job in jobs:
            if chunks[-1] and rows + job.n > self.config.max_batch_size:
                chunks.append([])
                rows = 0
            chunks[-1].append(job)
            rows += job.n
        gate = asyncio.Semaphore(self.config.fanout_per_request)

        async def call(chunk: list[Job]) -> list[list[Completion]]:
            async with gate:
                return await self.call_generator(model, chunk)

        tasks = [asyncio.ensure_future(call(chunk)) for chunk in chunks]
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


def member_prompt(member: Member, news: str, topic: str, variant: str) -> ResearchPrompt:
    if member.user_part is not None:  # an SFT row: its own user part and variant
        return ResearchPrompt(news, topic, member.variant or "full", user_part=member.user_part)
    assert member.profile is not None
    return ResearchPrompt(news, topic, resolve_variant(variant, member.profile), user=member.profile)
