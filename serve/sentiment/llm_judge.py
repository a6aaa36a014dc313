"""The LLM judge: any OpenAI-compatible endpoint labels each post with a fixed prompt."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from serve.sentiment.labels import SENTIMENTS, UNLABELLED

log = logging.getLogger(__name__)

API_KEY_ENV = ("SOCIALALIGN_LLM_API_KEY", "OPENAI_API_KEY")  # the persona job's, in the same order
JUDGE_SYSTEM = "你是一个严谨的微博情感分析助手。"
JUDGE_PROMPT = (
    "判断下面这条微博的情感倾向{about}。只回答一个词：正面、中性或负面，不要解释。\n\n微博：{post}"
)
_ANSWERS = {"正面": "positive", "积极": "positive", "中性": "neutral", "中立": "neutral", "负面": "negative",
            "消极": "negative", "positive": "positive", "neutral": "neutral", "negative": "negative"}
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
