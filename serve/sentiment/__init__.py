"""Sentiment labellers: one home for the classes, the interface, the labellers and their names.

Serve labels every predicted post through the `Labeler` chosen by `ServeConfig.labeler`, and the
evaluation labels real and predicted posts the same way (`from serve import make_labeler`):

- "offline" (the default): a Chinese lexicon, then a naive Bayes classifier (`offline.py`);
- "llm-judge": any OpenAI-compatible endpoint (`llm_judge.py`; options: the endpoint's fields);
- "placeholder-unlabelled": labels nothing, and says so (tests, serving without a labeller);
- "simulator-lexicon": truth-aware, for the local simulator's corpus only: counts the simulator's
  judgement phrases, so it gives the simulator's true sentiment (`simulator_lexicon.py`);
- "package.module:factory": one defined elsewhere.
"""

from serve.sentiment.labels import LABELS, SENTIMENTS, UNLABELLED, Labeler, PlaceholderLabeler, check_labels
from serve.sentiment.llm_judge import LLMJudgeLabeler, parse_judgement
from serve.sentiment.offline import OfflineLabeler, load_sample
from serve.sentiment.registry import LABELERS, labeler_factory, make_labeler
from serve.sentiment.simulator_lexicon import SimulatorLexiconLabeler

__all__ = [
    "LABELERS",
    "LABELS",
    "LLMJudgeLabeler",
    "Labeler",
    "OfflineLabeler",
    "PlaceholderLabeler",
    "SENTIMENTS",
    "SimulatorLexiconLabeler",
    "UNLABELLED",
    "check_labels",
    "labeler_factory",
    "load_sample",
    "make_labeler",
    "parse_judgement",
]
