"""The sentiment classes, the `Labeler` interface, and the check every labeller's answer passes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

SENTIMENTS = ("positive", "neutral", "negative")  # ordered: the macro metrics move mass along this line
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
    """Labels nothing: every post is "unlabelled". For tests, and for serving without any labeller."""

    name = "placeholder-unlabelled"

    def label(self, posts: Sequence[str], topic: str | None = None) -> list[str]:
        return [UNLABELLED] * len(posts)


def check_labels(labeler: Labeler, posts: Sequence[str], labels: Sequence[str]) -> list[str]:
    """The labels, after checking that the labeler kept its promise (one known label per post)."""
    if len(labels) != len(posts):
        raise RuntimeError(f"labeler {labeler.name} returned {len(labels)} labels for {len(posts)} posts")
    unknown = sorted(set(labels) - set(LABELS))
    if unknown:
        raise RuntimeError(f"labeler {labeler.name} returned unknown labels {unknown}; expected {LABELS}")
    return list(labels)
