"""The truth-aware labeller `simulator-lexicon`: it knows the local Weibo simulator's judgement words.

Declared as such: it is for runs on the simulator's corpus (crawl_actors.simulator), where the truth
is known, and nowhere else. The simulator writes a judgement as a subject followed by one of its
positive, negative or neutral phrases (`crawl_actors/simulator/lexicon.py`); a post's true
sentiment is the majority polarity of those judgements (more positive than negative phrases:
positive; more negative: negative; a tie, only neutral phrases, or none: neutral). This labeller
counts the same phrases in a text, so on the simulator's posts it gives the truth exactly, and on
a model's post it says which way the judgements the model wrote lean. A test checks that the word
lists here are the simulator's (serve may not import the crawl stage, so they are repeated here).
Evaluating with it next to the evaluation labeller shows how much labeller error moves a result.
"""

from __future__ import annotations

from collections.abc import Sequence

from serve.sentiment.labels import UNLABELLED

POSITIVE_WORDS = (
    "太棒了", "真心点赞", "值得期待", "非常支持", "很有希望", "做得漂亮", "进步很大", "越来越好", "很给力", "是个惊喜",
)
NEGATIVE_WORDS = (
    "太失望了", "不太靠谱", "真的离谱", "很难支持", "问题一堆", "让人担心", "没什么诚意", "越来越差", "纯属割韭菜",
    "让人无语",
)


class SimulatorLexiconLabeler:
    """Truth-aware: counts the simulator's positive and negative judgement phrases (ties and none: neutral)."""

    name = "simulator-lexicon"

    def label(self, posts: Sequence[str], topic: str | None = None) -> list[str]:
        return [self.label_one(post) for post in posts]

    def label_one(self, post: str | None) -> str:
        text = (post or "").strip()
        if not text:
            return UNLABELLED
        balance = sum(text.count(word) for word in POSITIVE_WORDS) - sum(text.count(word) for word in NEGATIVE_WORDS)
        return "positive" if balance > 0 else "negative" if balance < 0 else "neutral"
