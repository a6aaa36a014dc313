"""What the HTTP ingress (`Api`) and the model deployment (`Generator`) pass each other.

Plain frozen dataclasses with no torch in sight, so the ingress stays a light process. A `Job`
is one prompt and how many samples to draw for it; the Generator answers a list of jobs with a
list of `Completion` lists, one per job, in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# output: the repetition penalty counts the generated tokens only; prompt_and_output: Hugging Face's
# (and the research's), over the prompt too.
RepetitionPenaltyScope = Literal["prompt_and_output", "output"]


@dataclass(frozen=True)
class Sampling:
    """Decoding of one prompt. temperature 0 means greedy (top_p and top_k are then unused)."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_new_tokens: int
    repetition_penalty_scope: RepetitionPenaltyScope

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def group_key(self) -> tuple:
        """Rows with equal keys can share one `generate` call (max_new_tokens is cut per row)."""
        if self.greedy:
            return ("greedy", self.repetition_penalty, self.repetition_penalty_scope)
        return ("sample", self.temperature, self.top_p, self.top_k, self.repetition_penalty,
                self.repetition_penalty_scope)


@dataclass(frozen=True)
class UserProfile:
    name: str
    history: tuple[tuple[str, str | None], ...] = ()  # (text, reposted text or None), oldest first
    persona: str | None = None


@dataclass(frozen=True)
class ResearchPrompt:
    """The research prompt for one user and one news item (pac_lora.research_prompt_parts).

    `user_part`, when given, replaces the rendered user part verbatim (an SFT row carries it).
    """

    news: str
    topic: str
    variant: str
    user: UserProfile | None = None
    user_part: str | None = None


@dataclass(frozen=True)
class ChatPrompt:
    """An OpenAI-style conversation: (role, content) pairs, rendered by the model's chat template."""

    messages: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Job:
    prompt: ResearchPrompt | ChatPrompt
    sampling: Sampling
    n: int = 1
    gates: str | None = None  # "module" | "layer": also report the expert gates (PAC-LoRA; pac_lora.gates)


@dataclass(frozen=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # "stop" (end of turn) | "length" (max_new_tokens reached)
    # The prompt's expert gates when its job asked for them and the model routes (PAC-LoRA):
    # {name: {"analyze": [...], "compose": [...]}} (pac_lora.GateRecord.rows); None otherwise.
    gates: dict[str, dict[str, list[float]]] | None = None


class LimitExceeded(ValueError):
    """A request asks for more than a configured limit allows; the API answers 413 naming it."""

    def __init__(self, loc: tuple, limit: str, maximum: int, message: str) -> None:
        super().__init__(loc, limit, maximum, message)  # all in args: survives pickling across Ray
        self.loc, self.limit, self.maximum, self.message = loc, limit, maximum, message

    def __str__(self) -> str:
        return self.message


class InvalidPrompt(ValueError):
    """The prompt cannot be rendered (e.g. the chat template refuses the conversation): a 422."""

    def __init__(self, loc: tuple, message: str) -> None:
        super().__init__(loc, message)
        self.loc, self.message = loc, message

    def __str__(self) -> str:
        return self.message


class UnknownModel(LookupError):
    def __init__(self, model: str, served: list[str]) -> None:
        super().__init__(model, served)
        self.model, self.served = model, served

    def __str__(self) -> str:
        return f"unknown model {self.model!r}; served: {', '.join(self.served)}"
