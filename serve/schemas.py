"""The HTTP API's request and response models (pydantic): what /openapi.json publishes.

Our own endpoints refuse unknown fields (422 naming them); the OpenAI-compatible chat endpoint
ignores fields it does not use (seed, presence_penalty, tools, ...), as OpenAI clients send them
freely. Limits that depend on the server's config (text length, users, samples, tokens) are
checked after parsing and answered 413 naming the limit.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from pac_lora import GateDetail
from serve.protocol import RepetitionPenaltyScope
from serve.sentiment import LABELS


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


Text = Annotated[str, AfterValidator(_encodable)]
NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(_encodable)]
Label = Literal["positive", "neutral", "negative", "unlabelled"]
Variant = Literal["auto", "full", "without_persona", "without_history"]
assert set(LABELS) == set(Label.__args__)  # one list of labels: serve.sentiment's


def _not_tiny_temperature(value: float | None) -> float | None:
    # 0 < t < 0.01 overflows the logits; 0 already means greedy.
    if value is not None and 0 < value < 0.01:
        raise ValueError("use 0 for greedy decoding, or at least 0.01")
    return value


Temperature = Annotated[float | None, Field(ge=0.0, le=2.0), AfterValidator(_not_tiny_temperature)]
TopP = Annotated[float | None, Field(gt=0.0, le=1.0)]
TopK = Annotated[int | None, Field(ge=0, le=100_000)]
RepetitionPenalty = Annotated[float | None, Field(ge=0.1, le=10.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Decoding(Strict):
    """Per-request decoding; a field left out takes the server's default (research: sampling,
    temperature 0.7, top_p 0.9, top_k 20, repetition penalty 1.2, 256 new tokens; the penalty over the generated
    tokens unless the server runs `preset: research`). temperature 0: greedy."""

    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = Field(None, description="0 disables top-k")
    repetition_penalty: RepetitionPenalty = None
    repetition_penalty_scope: RepetitionPenaltyScope | None = Field(
        None, description="output: the penalty counts the generated tokens only; prompt_and_output: the prompt's "
        "too, as Hugging Face and the research apply it")
    max_new_tokens: int | None = Field(None, ge=1, description="at most the server's max_new_tokens_limit")


class HistoryPost(Strict):
    text: NonEmptyText
    retweet_text: Text | None = Field(None, description="the reposted post, when this post is a repost")


class User(Strict):
    name: NonEmptyText = Field(description="the user's screen name")
    history: list[NonEmptyText | HistoryPost] = Field(
        default_factory=list, description="history posts, most relevant first (research: the top 5 by BM25)"
    )
    persona: Text | None = Field(None, description="persona text (the dataset stage's persona extraction)")
    user_id: Text | None = Field(None, description="echoed in macro results")


class MicroRequest(Strict):
    model: Text | None = Field(
        None, description="adapter id or the base model id (GET /v1/models); default: the server's"
    )
    user: User
    news: NonEmptyText
    topic: NonEmptyText = Field(description="the event's hashtag, with or without '#'")
    variant: Variant = Field("auto", description="prompt variant; auto: full, or without the parts the user lacks")
    n: int = Field(1, ge=1, description="number of predicted posts (samples)")
    decoding: Decoding = Field(default_factory=Decoding)
    return_gates: bool = Field(
        False, description="also return the prompt's expert gate weights (PAC-LoRA adapters; null for other models)"
    )
    gate_detail: GateDetail = Field(
        "module", description="module: per target module, averaged over the layers; layer: per module of every layer"
    )


class ExpertGates(BaseModel):
    """A router's weights over its experts (each list sums to 1): analyze experts, chosen from the news
    part, and compose experts, chosen from the user part. Token routing: the mean over the span's tokens."""

    analyze: list[float]
    compose: list[float]


class Prediction(BaseModel):
    text: str
    sentiment: Label
    finish_reason: Literal["stop", "length"]
    completion_tokens: int


class MicroResponse(BaseModel):
    model: str
    labeler: str = Field(description="which labeler gave the sentiments; placeholder-unlabelled labels nothing")
    variant: str
    prompt_tokens: int
    predictions: list[Prediction]
    gates: dict[str, ExpertGates] | None = Field(
        None, description="with return_gates: the expert gates of the prompt, by target module (q_proj, ...) or by "
        "module path per layer; the same for every sample"
    )


class Population(Strict):
    """Either `users` or `path` (a users or SFT Parquet file or directory under the server's population_dir)."""

    users: list[User] | None = Field(None, min_length=1)
    path: NonEmptyText | None = Field(None, description="relative to the server's population_dir")
    sample_size: int | None = Field(None, ge=1, description="draw this many users (without replacement)")
    seed: int = Field(0, ge=0, le=2**32 - 1, description="seed of the draw")

    @model_validator(mode="after")
    def _one_source(self) -> Population:
        if (self.users is None) == (self.path is None):
            raise ValueError("give exactly one of users or path")
        return self


class MacroRequest(Strict):
    model: Text | None = Field(None, description="adapter id or the base model id; default: the server's")
    news: NonEmptyText
    topic: NonEmptyText
    population: Population
    variant: Variant = "auto"
    samples_per_user: int = Field(1, ge=1)
    samples_per_class: int = Field(3, ge=0, le=100, description="example posts returned per sentiment class")
    return_posts: bool = Field(False, description="also return every predicted post, per user")
    decoding: Decoding = Field(default_factory=Decoding)


class SentimentCounts(BaseModel):
    positive: int = 0
    neutral: int = 0
    negative: int = 0
    unlabelled: int = 0


class SentimentDistribution(BaseModel):
    positive: float
    neutral: float
    negative: float


class SamplePost(BaseModel):
    user: str
    text: str


class UserPosts(BaseModel):
    user: str
    user_id: str | None
    predictions: list[Prediction]


class MacroResponse(BaseModel):
    model: str
    labeler: str
    topic: str
    users: int
    posts: int
    counts: SentimentCounts
    distribution: SentimentDistribution | None = Field(
        description="shares of the labelled posts; null when no post is labelled (placeholder labeler)"
    )
    samples: dict[Label, list[SamplePost]]
    per_user: list[UserPosts] | None = None


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: Text


class ChatMessage(BaseModel):
    """A message; tool calls and tool results (role tool or function) are accepted and left out of the prompt."""

    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: Text | list[TextPart] | None = None
    name: Text | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    """OpenAI chat completions. Extensions: top_k, repetition_penalty(_scope). Unused OpenAI fields are ignored."""

    model_config = ConfigDict(extra="ignore")
    model: NonEmptyText
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    temperature: Temperature = None
    top_p: TopP = None
    top_k: TopK = None
    repetition_penalty: RepetitionPenalty = None
    repetition_penalty_scope: RepetitionPenaltyScope | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    stop: Text | list[Text] | None = Field(None, description="up to 4 stop strings")
    stream: bool = False
    stream_options: StreamOptions | None = Field(None, description="with stream: include_usage sends a last chunk "
                                                 "with the usage and no choices")

    @model_validator(mode="after")
    def _stops(self) -> ChatCompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 sequences")
        return self


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: Literal["stop", "length"]
    logprobs: None = None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "socialalign"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class ErrorInfo(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = Field(None, description="for 413: the limit exceeded (e.g. max_text_chars)")


class ErrorResponse(BaseModel):
    """Every error: FastAPI's `detail` (field-level for 413 and 422) and OpenAI's `error` object."""

    detail: Any
    error: ErrorInfo


class Liveness(BaseModel):
    """What /healthz tells anyone: the server answers. What it serves is behind the token (/v1/health)."""

    status: Literal["ok"] = "ok"


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    models: list[str]
    default_model: str
    labeler: str
