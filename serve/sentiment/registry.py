"""Labellers by name: a key of `LABELERS`, or "package.module:factory" for one defined elsewhere."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from serve.sentiment.labels import Labeler, PlaceholderLabeler
from serve.sentiment.llm_judge import LLMJudgeLabeler
from serve.sentiment.offline import OfflineLabeler
from serve.sentiment.simulator_lexicon import SimulatorLexiconLabeler

LABELERS: dict[str, Callable[..., Labeler]] = {
    "offline": OfflineLabeler,
    "llm-judge": LLMJudgeLabeler,
    PlaceholderLabeler.name: PlaceholderLabeler,
    SimulatorLexiconLabeler.name: SimulatorLexiconLabeler,  # truth-aware: the simulator's corpus only
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
