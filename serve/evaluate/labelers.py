"""Sentiment labellers (positive / neutral / negative) behind `serve.sentiment.Labeler`.

Offline default, chosen on the hand-labelled sample `sentiment_sample.tsv` (60 Weibo-style posts,
20 per class; `python -m serve.evaluate.labelers` reprints the comparison):

| labeller | accuracy | macro-F1 |
|---|---|---|
| snownlp (naive Bayes on reviews), neutral band 0.3-0.7 | 0.55 | 0.53 |
| cnsenti (sentiment lexicon counts) | 0.60 | 0.60 |
| cnsenti, and snownlp with a 0.2-0.8 neutral band where the lexicon is silent | 0.68 | 0.67 |

Both packages ship their model or lexicon (no download). The combination is the default: the
lexicon is precise when it fires, the classifier covers posts without lexicon words, and the wide
neutral band keeps more factual posts neutral. Still, factual posts lean to a polarity (neutral
recall 9/20 on the sample); the sample is small and the band was picked on it, so treat its figures
as a sanity check: the LLM judge is the labeller for real evaluations.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from serve.sentiment import SENTIMENTS, UNLABELLED

log = logging.getLogger(__name__)

SAMPLE = Path(__file__).with_name("sentiment_sample.tsv")
API_KEY_ENV = ("SOCIALALIGN_LLM_API_KEY", "OPENAI_API_KEY")  # the persona job's, in the same order
NEUTRAL_BAND = (0.2, 0.8)
JUDGE_SYSTEM = "你是一个严谨的微博情感分析助手。"
JUDGE_PROMPT = (
    "判断下面这条微博的情感倾向{about}。只回答一个词：正面、中性或负面，不要解释。\n\n微博：{post}"
)
_ANSWERS = {"正面": "positive", "积极": "positive", "中性": "neutral", "中立": "neutral", "负面": "negative",
            "消极": "negative", "positive": "positive", "neutral": "neutral", "negative": "negative"}


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
        counts = self._lexicon.sentiment_count(text)
        if counts["pos"] != counts["neg"]:
            return "positive" if counts["pos"] > counts["neg"] else "negative"
        score = self._classifier(text).sentiments
        low, high = NEUTRAL_BAND
        return "positive" if score > high else "negative" if score < low else "neutral"


class LLMJudgeLabeler:
    """An LLM through any OpenAI-compatible endpoint; a fixed prompt; the answer must be exactly one
    of 正面/中性/负面 (or positive/neutral/negative). An unparseable answer is asked once more, then
    counted in `stats["unparseable"]` and labelled unlabelled. A post whose request still fails after
    the client's own retries is labelled unlabelled too, counted in `stats["failed"]` and by reason
    in `failures`: one bad post or a flaky endpoint must not sink an evaluation or a serve request.

    The key: `api_key`, else SOCIALALIGN_LLM_API_KEY or OPENAI_API_KEY (as the persona job reads it).
    """

    name = "llm-judge"

    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 8,
                 timeout_s: float = 60.0, max_retries: int = 3) -> None:
        key = api_key or next((os.environ[name] for name in API_KEY_ENV if os.environ.get(name)), None)
        self.options = dict(base_url=base_url, api_key=key or "not-needed", timeout=timeout_s,
                            max_retries=max_retries)
        self.model, self.concurrency = model, concurrency
        self.stats: Counter = Counter()
        self.failures: Counter = Counter()  # reason -> posts
        self._lock = threading.Lock()  # serve labels from several threads at once

    def __repr__(self) -> str:  # never the key
        return f"LLMJudgeLabeler(base_url={self.options['base_url']!r}, model={self.model!r})"

    def label(self, posts: Sequence[str], topic: str | None = None) -> list[str]:
        tally = _Tally()  # this call's own counts, merged under the lock
        labels = asyncio.run(self._label_all(list(posts), topic, tally))
        with self._lock:
            self.stats.update(tally.counts)
            self.failures.update(tally.reasons)
        failed, unparseable = tally.counts["failed"], tally.counts["unparseable"]
        if failed or unparseable:
            log.warning("LLM judge: %d of %d posts unlabelled: %d unparseable answers, %d failed requests %s",
                        failed + unparseable, len(labels), unparseable, failed, dict(tally.reasons))
        return labels

    async def _label_all(self, posts: list[str], topic: str | None, tally: _Tally) -> list[str]:
        from openai import AsyncOpenAI

        client = AsyncOpenAI(**self.options)
        gate = asyncio.Semaphore(self.concurrency)
        try:
            return await asyncio.gather(*(self._label_one(client, gate, post, topic, tally) for post in posts))
        finally:
            await client.close()

    async def _label_one(self, client, gate: asyncio.Semaphore, post: str, topic: str | None, tally: _Tally) -> str:
        if not (post or "").strip():
            return UNLABELLED  # nothing to judge: no call
        about = f"（话题：#{topic}#）" if topic else ""
        prompt = JUDGE_PROMPT.format(about=about, post=post)
        for attempt in range(2):
            answer = await self._ask(client, gate, prompt, tally)
            if answer is None:
                return UNLABELLED
            label = parse_judgement(answer)
            tally.counts["calls"] += 1
            if label is not None:
                return label
            tally.counts["retried" if attempt == 0 else "unparseable"] += 1
        return UNLABELLED

    async def _ask(self, client, gate: asyncio.Semaphore, prompt: str, tally: _Tally) -> str | None:
        """The endpoint's answer, or None (counted) when it fails after the client's retries."""
        import openai

        try:
            async with gate:
                reply = await client.chat.completions.create(
                    model=self.model, temperature=0,
                    messages=[{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}],
                )
        except openai.APIError as error:
            tally.counts["failed"] += 1
            tally.reasons[_reason(error)] += 1
            return None
        return (reply.choices[0].message.content or "") if reply.choices else ""


@dataclass
class _Tally:
    counts: Counter = field(default_factory=Counter)  # calls, retried, unparseable, failed
    reasons: Counter = field(default_factory=Counter)  # failed requests by reason


def _reason(error: Exception) -> str:
    """A short, secret-free reason: the HTTP status, or the kind of failure (timeout, connection)."""
    status = getattr(error, "status_code", None)
    return f"HTTP {status}" if status else type(error).__name__


def parse_judgement(answer: str) -> str | None:
    """One of SENTIMENTS if the answer is exactly one allowed word (punctuation and case aside)."""
    word = re.sub(r"[\s。.!！,，:：\"'“”‘’]", "", answer).lower()
    label = _ANSWERS.get(word)
    return label if label in SENTIMENTS else None


def load_sample() -> list[tuple[str, str]]:
    rows = []
    for line in SAMPLE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            label, text = line.split("\t", 1)
            rows.append((label, text.strip()))
    return rows


def compare_on_sample() -> dict[str, dict[str, float]]:
    """Accuracy and macro-F1 of the candidate offline labellers on the hand-labelled sample."""
    from serve.evaluate.metrics import accuracy, macro_f1

    rows = load_sample()
    gold = [label for label, _ in rows]
    offline = OfflineLabeler()

    def snownlp_only(text: str) -> str:
        score = offline._classifier(text).sentiments
        return "positive" if score > 0.7 else "negative" if score < 0.3 else "neutral"

    def cnsenti_only(text: str) -> str:
        counts = offline._lexicon.sentiment_count(text)
        return "positive" if counts["pos"] > counts["neg"] else "negative" if counts["neg"] > counts["pos"] else "neutral"

    results = {}
    for name, label in (("snownlp", snownlp_only), ("cnsenti", cnsenti_only), (offline.name, offline.label_one)):
        predicted = [label(text) for _, text in rows]
        results[name] = {"accuracy": accuracy(predicted, gold), "macro_f1": macro_f1(predicted, gold)}
    return results


if __name__ == "__main__":
    for name, scores in compare_on_sample().items():
        print(f"{name:<28} accuracy {scores['accuracy']:.3f}  macro-F1 {scores['macro_f1']:.3f}")
