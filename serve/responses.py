"""Response bodies built from completions and labels: predictions, chat choices, the macro aggregate."""

from __future__ import annotations

from collections import Counter

from serve.protocol import Completion
from serve.schemas import (
    AssistantMessage,
    ChatChoice,
    MacroResponse,
    Prediction,
    SamplePost,
    SentimentCounts,
    SentimentDistribution,
    UserPosts,
)
from serve.sentiment import LABELS, SENTIMENTS


def prediction(completion: Completion, label: str) -> Prediction:
    return Prediction(
        text=completion.text, sentiment=label, finish_reason=completion.finish_reason,
        completion_tokens=completion.completion_tokens,
    )


def chat_choice(index: int, completion: Completion, stops: list[str]) -> ChatChoice:
    """The completion cut at the first stop string it contains (finish_reason "stop" then)."""
    text, reason = completion.text, completion.finish_reason
    cuts = [text.find(stop) for stop in stops if stop and stop in text]
    if cuts:
        text, reason = text[: min(cuts)], "stop"
    return ChatChoice(index=index, message=AssistantMessage(content=text), finish_reason=reason)


def aggregate(
    model: str, labeler: str, topic: str, per_user: list[UserPosts], samples_per_class: int, return_posts: bool
) -> MacroResponse:
    """Counts per label, the distribution over the labelled posts (None when none is), examples per label."""
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
