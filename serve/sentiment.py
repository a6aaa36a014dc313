"""Sentiment labelers for predicted posts: the interface, a placeholder, and a factory by name.

The serve API labels every predicted post through a `Labeler` chosen by `ServeConfig.labeler`:
a name registered in `LABELERS`, or "package.module:factory" for one defined elsewhere. The
default is "offline" (the evaluation stage's offline Chinese classifier, `serve.evaluate.labelers`);
"llm-judge" asks an OpenAI-compatible endpoint (options: base_url, model, ...); the placeholder,
which labels nothing and says so, remains for tests and for serving without any labeller.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

SENTIMENTS = ("positive", "neutral", "negative")  # ordered, as the macro metrics read them
UNLABELLED = "unlabelled"
LABELS = (*SENTIMENTS, UNLABELLED)


@runtime_checkable
class Labeler(Protocol):
    """Labels posts with one of SENTIMENTS (or UNLABELLED when it cannot tell)."""

    name: str

    def label(self, posts: Sequence[str], topic: str | None = None) -> list[str]:
        """One label per post, in order. Called from a worker thread; may block (e.g. on an LLM endpoint)."""
        ...


class PlaceholderLabeler:
    """Labels nothing: every post is "unlabelled". Stands in until a real labeler is configured."""

    name = "placeholder-unlabelled"

    def label(self, posts: Sequence[str], topic: str | None = None) -> list[str]:
        return [UNLABELLED] * len(posts)


def _offline(**options: Any) -> Labeler:
    from serve.evaluate.labelers import OfflineLabeler  # imported on use: it loads its models

    return OfflineLabeler(**options)


def _llm_judge(**options: Any) -> Labeler:
    from serve.evaluate.labelers import LLMJudgeLabeler

    return LLMJudgeLabeler(**options)


LABELERS: dict[str, Callable[..., Labeler]] = {
    "offline": _offline,
    "llm-judge": _llm_judge,
    PlaceholderLabeler.name: PlaceholderLabeler,
}


def labeler_factory(spec: str) -> Callable[..., Labeler]:
    """The factory of the labeler named `spec` (a key of LABELERS or "module:factory"), not yet called."""
    factory = LABELERS.get(spec)
    if factory is not None:
        return factory
    module_name, sep, attribute = spec.partition(":")
    if not sep:
        raise ValueError(f"labeler {spec!r}: expected one of {sorted(LABELERS)} or 'package.module:factory'")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"labeler {spec!r}: cannot import it ({error})") from None


def make_labeler(spec: str, **options: Any) -> Labeler:
    """The labeler named `spec` (a key of LABELERS or "module:factory"), built with `options`."""
    labeler = labeler_factory(spec)(**options)
    if not isinstance(labeler, Labeler):
        raise TypeError(f"labeler {spec!r}: {type(labeler).__name__} has no `name` and `label(posts, topic)`")
    return labeler


def check_labels(labeler: Labeler, posts: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The labels, after checking that the labeler kept its promise (one known label per post)."""
    if len(labels) != len(posts):
        raise RuntimeError(f"labeler {labeler.name} returned {len(labels)} labels for {len(posts)} posts")
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise RuntimeError(f"labeler {labeler.name} returned unknown labels {unknown}; expected {LABELS}")
    return list(labels)
