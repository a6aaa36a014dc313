"""The LLM judge: any OpenAI-compatible endpoint labels each post, through the one LLM client
(`cluster.llm.LLMClient`: concurrency, start-rate cap, the shared retry policy).
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cluster.llm import LLMClient, LLMEndpointConfig, failure_reason
from serve.sentiment.labels import SENTIMENTS, UNLABELLED

log = logging.getLogger(__name__)

JUDGE_SYSTEM = "你是一个严谨的微博情感分析助手。"
JUDGE_PROMPT = (
    "判断下面这条微博的情感倾向{about}。只回答一个词：正面、中性或负面，不要解释。\n\n微博：{post}"
)
ANSWERS = {"正面": "positive", "积极": "positive", "中性": "neutral", "中立": "neutral", "负面": "negative",
           "消极": "negative", "positive": "positive", "neutral": "neutral", "negative": "negative"}
ASKS = 2  # an unparseable answer is asked once more, whatever the endpoint's retry policy


class LLMJudgeLabeler:
    """A fixed prompt; the answer must be exactly one of 正面/中性/负面 (or positive/neutral/negative).
    An unparseable answer is asked once more, then counted in `stats["unparseable"]` and labelled
    unlabelled. A post whose request still fails after the client's retries is labelled unlabelled
    too, counted in `stats["failed"]` and by reason in `failures`: one bad post or a flaky endpoint
    must not sink an evaluation or a serve request.

    Built from `endpoint` (evaluation's `judge`), or from its fields as keyword arguments (serve's
    `labeler_options`: base_url, model, api_key, timeout_s, max_retries, concurrency, ...). The key:
    `api_key`, else SOCIALALIGN_LLM_API_KEY or OPENAI_API_KEY.
    """

    name = "llm-judge"

    def __init__(self, endpoint: LLMEndpointConfig | None = None, **fields: Any) -> None:
        if endpoint is not None and fields:
            raise TypeError("give the judge's endpoint or its fields, not both")
        self.endpoint = endpoint if endpoint is not None else LLMEndpointConfig(**fields)
        if not self.endpoint.base_url or not self.endpoint.model:
            raise ValueError("the LLM judge needs base_url and model (any OpenAI-compatible endpoint)")
        self.stats: Counter = Counter()  # calls, retried, unparseable, failed
        self.failures: Counter = Counter()  # reason -> posts
        self._lock = threading.Lock()  # serve labels from several threads at once

    def __repr__(self) -> str:  # never the key
        return f"LLMJudgeLabeler(base_url={self.endpoint.base_url!r}, model={self.endpoint.model!r})"

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
        client = LLMClient(self.endpoint)  # one per call: the client belongs to this call's event loop
        try:
            return await asyncio.gather(*(self._label_one(client, post, topic, tally) for post in posts))
        finally:
            await client.close()

    async def _label_one(self, client: LLMClient, post: str, topic: str | None, tally: _Tally) -> str:
        if not (post or "").strip():
            return UNLABELLED  # nothing to judge: no call
        messages = judge_messages(post, topic)
        for ask in range(ASKS):
            answer = await self._ask(client, messages, tally)
            if answer is None:
                return UNLABELLED
            tally.counts["calls"] += 1
            label = parse_judgement(answer)
            if label is not None:
                return label
            tally.counts["retried" if ask < ASKS - 1 else "unparseable"] += 1
        return UNLABELLED

    async def _ask(self, client: LLMClient, messages: list[dict[str, str]], tally: _Tally) -> str | None:
        """The endpoint's answer, or None (counted by reason) when it still fails after the retries."""
        import openai

        try:
            answer, _ = await client.chat(messages, reply_text, temperature=0)
        except openai.APIError as error:
            tally.counts["failed"] += 1
            tally.reasons[failure_reason(error)] += 1
            return None
        return answer


@dataclass
class _Tally:
    counts: Counter = field(default_factory=Counter)  # calls, retried, unparseable, failed
    reasons: Counter = field(default_factory=Counter)  # failed requests by reason


def judge_messages(post: str, topic: str | None) -> list[dict[str, str]]:
    about = f"（话题：#{topic}#）" if topic else ""
    prompt = JUDGE_PROMPT.format(about=about, post=post)
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": prompt}]


def reply_text(reply: Any) -> str:
    return (reply.choices[0].message.content or "") if reply.choices else ""


def parse_judgement(answer: str) -> str | None:
    """One of SENTIMENTS if the answer is exactly one allowed word (punctuation and case aside)."""
    word = re.sub(r"[\s。.!！,，:：\"'“”‘’]", "", answer).lower()
    label = ANSWERS.get(word)
    return label if label in SENTIMENTS else None
