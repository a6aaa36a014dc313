"""Personas: five short facets (interests, language style, emotional tone, personality, values) of a
user, through any OpenAI-compatible endpoint, or built offline from the user's own posts.

The request has two wordings: ours, and the research's byte for byte (`RESEARCH_REQUEST`: its system
prompt keeps the line breaks around it, a repost reads 该用户转发了微博: ..., 并评论说: ..., the user
message is stripped). The answer is kept trimmed (Markdown out, each facet at most FACET_CHARS
characters) or raw (as the research puts it in its prompt: only runs of line breaks collapsed).

LLM calls: the research persona prompt, through the shared client (`cluster.llm.LLMClient`: at most
`concurrency` calls in flight per worker, a request-rate cap, timeouts, 408/409/429/5xx and empty
answers retried by the shared policy of `cluster.retry`); token usage recorded per call. Every answer
is keyed by a content hash (model + prompt) so the persona step's cache never pays twice. A user
whose retries run out gets the offline persona and is flagged with the reason (secrets masked); the
job goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cluster.llm import LLMClient, LLMEndpointConfig, UnusableAnswer, tries_of
from cluster.logs import redact
from cluster.retry import Backoff
from dataset_jobs.retrieval import tokenize

log = logging.getLogger(__name__)

SYSTEM_PROMPT = "你是一个微博平台的用户分析师，负责从用户信息和历史博文中抽取用户特征，生成用户画像。"
USER_PROMPT = (
    "你的任务是基于以下用户名和该用户的历史博文，生成该用户的详细用户画像。请从以下几个维度进行刻画：\n\n"
    "1. 兴趣话题：用户关注的主题、喜欢讨论的话题、常提及的领域。\n"
    "2. 语言风格：用户常用的表达方式、口头禅、语气（如幽默、正式、随意等）。\n"
    "3. 情感基调：用户在博文中表现出的情感倾向，通常是积极的、消极的还是中立的。\n"
    "4. 性格特征：用户在博文中体现的性格特征，如乐观、悲观、独立等。\n"
    "5. 价值观：用户在博文中体现的价值观，如重视环保、关注社会公平等。\n\n"
    "请根据以上格式带数字标号分项列举，精简地对该用户做用户画像，以便更好地预测该用户对某一新闻话题可能发表的博文。"
    "每项不超过20字。\n\n"
    "请注意，不需要预测用户对特定新闻的具体观点；无需提示词，直接输出用户画像即可；不要使用Markdown格式。\n\n"
    "用户信息：\n用户名：{user_name}\n\n历史博文：\n{history}"
)
FACETS = ("兴趣话题", "语言风格", "情感基调", "性格特征", "价值观")
Wording = Literal["ours", "research"]
AnswerForm = Literal["trimmed", "raw"]
OURS, RESEARCH_REQUEST = "ours", "research"
FACET_CHARS = 20
OFFLINE_MODEL = "offline"

_POSITIVE = ("好", "棒", "赞", "支持", "喜欢", "开心", "期待", "感动", "厉害", "加油",
             "点赞", "优秀", "幸福", "满意", "哈哈")
_NEGATIVE = ("差", "烂", "烦", "失望", "生气", "愤怒", "离谱", "垃圾", "难过", "讨厌",
             "无语", "坑", "糟", "担心", "吐槽")
_EMOJI = re.compile(r"\[[^\[\]]{1,8}\]")
_STOP = set("的了是在我你他她它们这那就都也和与及或而但很还又有没不要会能可以吗呢吧啊呀哦嗯么个一")


def persona_prompt(user_name: str, posts: Sequence[str], wording: Wording = OURS) -> str:
    """The user message; `posts` already shown as the wording shows them (`shown_post`)."""
    history = "\n".join(f"{i}. {post}" for i, post in enumerate(posts, 1))
    prompt = USER_PROMPT.format(user_name=user_name, history=history)
    return prompt.strip() if wording == RESEARCH_REQUEST else prompt


def system_prompt(wording: Wording = OURS) -> str:
    return f"\n{SYSTEM_PROMPT}\n" if wording == RESEARCH_REQUEST else SYSTEM_PROMPT


def shown_post(text: str, retweet_text: str | None, wording: Wording = OURS) -> str:
    """A history post as the request shows it: ours as the generation prompt does (你转发了微博...),
    the research's as its persona request does (该用户转发了微博...)."""
    if wording == RESEARCH_REQUEST:
        return f"该用户转发了微博: {retweet_text}, 并评论说: {text}" if retweet_text is not None else text
    from pac_lora import format_history_post

    return format_history_post(text, retweet_text)


def cache_key(model: str, prompt: str, wording: Wording = OURS, answer: AnswerForm = "trimmed") -> str:
    """Content hash of what was asked and how the answer is kept (ours, trimmed: the original key)."""
    tail = "" if answer == "trimmed" else f"\n{answer}"
    return hashlib.sha256(f"{model}\n{system_prompt(wording)}\n{prompt}{tail}".encode()).hexdigest()


def offline_persona(user_name: str, posts: Sequence[str]) -> str:
    """A deterministic persona from the posts alone: top keywords, typical length, sentiment, style."""
    words = Counter(
        token for post in posts for token in tokenize(_EMOJI.sub(" ", post))
        if len(token) >= 2 and not (set(token) & _STOP) and not token.strip("#@ ").isdigit() and token.strip()
    )
    keywords = "、".join(word.strip("#") for word, _ in words.most_common(3)) or "日常生活"
    lengths = [len(post) for post in posts] or [0]
    typical = int(statistics.median(lengths))
    tone, lean = _tone(posts)
    emoji = Counter(e for post in posts for e in _EMOJI.findall(post)).most_common(1)
    exclaims = sum(post.count("！") + post.count("!") for post in posts) / max(len(posts), 1)
    style = (f"{'爱用' + emoji[0][0] if emoji else '少用表情'}，"
             f"{'语气强烈' if exclaims >= 1 else '语气平和'}，约{typical}字")
    personality = {"积极": "乐观开朗", "消极": "直率爱吐槽", "中立": "理性克制"}[tone]
    values = f"关注{words.most_common(1)[0][0].strip('#') if words else '身边小事'}"
    facets = (keywords, style, f"{tone}（{lean}）", personality, values)
    named = enumerate(zip(FACETS, facets, strict=True), 1)
    return "\n".join(f"{i}. {name}：{_short(value)}" for i, (name, value) in named)


def _tone(posts: Sequence[str]) -> tuple[str, str]:
    positive = sum(post.count(word) for post in posts for word in _POSITIVE)
    negative = sum(post.count(word) for post in posts for word in _NEGATIVE)
    total = positive + negative
    if total == 0:
        return "中立", "少有情绪词"
    share = positive / total
    if share >= 0.6:
        return "积极", f"正面词占{share:.0%}"
    if share <= 0.4:
        return "消极", f"负面词占{1 - share:.0%}"
    return "中立", "褒贬参半"


def _short(text: str) -> str:
    return text if len(text) <= FACET_CHARS else text[: FACET_CHARS - 1] + "…"


def raw_persona(text: str) -> str:
    """The answer as the research puts it in its prompt: runs of line breaks collapsed to one."""
    return re.sub(r"\n{2,}", "\n", text)


def normalize_persona(text: str) -> str:
    """An LLM answer in the research form: numbered lines, no markdown, each facet's value at most
    FACET_CHARS characters (the prompt asks for that; models do not always listen)."""
    lines = [re.sub(r"[*#`>]+", "", line).strip() for line in text.strip().splitlines()]
    return "\n".join(_trim_facet(line) for line in lines if line)


_FACET_LINE = re.compile(r"(\d+\s*[.、．)]\s*)?(?:([^：:]{1,12})([：:]))?(.*)")


def _trim_facet(line: str) -> str:
    """'1. 语言风格：…' keeps its number and label; only the value is trimmed."""
    number, label, colon, value = _FACET_LINE.fullmatch(line).groups()  # type: ignore[union-attr]
    return f"{number or ''}{label or ''}{colon or ''}{_short(value.strip())}"


@dataclass(frozen=True)
class PersonaResult:
    user_id: str
    persona: str
    source: str  # llm | cache | offline | offline-fallback
    model: str
    key: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    error: str | None = None
    topic: str | None = None  # the case it is for (persona_per: case)
    mid: str | None = None


class PersonaClient:
    """Personas through an OpenAI-compatible endpoint, by the shared client (`cluster.llm.LLMClient`:
    bounded concurrency, a start-rate cap, the shared retry policy)."""

    def __init__(self, endpoint: LLMEndpointConfig, rate_share: float = 1.0, backoff: Backoff | None = None,
                 wording: Wording = OURS, answer: AnswerForm = "trimmed") -> None:
        self.llm = LLMClient(endpoint, rate_share, backoff)
        self.model = self.llm.model
        self.wording, self.answer = wording, answer

    async def persona(self, user_id: str, user_name: str, posts: Sequence[str], topic: str | None = None,
                      mid: str | None = None) -> PersonaResult:
        """`posts` already shown as this client's wording shows them (`shown_post`)."""
        prompt = persona_prompt(user_name, posts, self.wording)
        key = cache_key(self.model, prompt, self.wording, self.answer)
        messages = [{"role": "system", "content": system_prompt(self.wording)}, {"role": "user", "content": prompt}]
        accept = _raw_answer if self.answer == "raw" else _persona_answer
        try:
            (text, usage), tries = await self.llm.chat(messages, accept)
        except Exception as failure:  # one user's failure costs that user the LLM persona, never the job
            reason = redact(_describe(failure))  # an endpoint may echo the key it was sent
            who = f"case {topic}|{mid}" if mid is not None else f"user {user_id}"
            log.warning("persona for %s failed after %d attempts: %s", who, tries_of(failure), reason)
            return PersonaResult(user_id, offline_persona(user_name, posts), "offline-fallback", OFFLINE_MODEL, key,
                                 attempts=tries_of(failure), error=reason, topic=topic, mid=mid)
        return PersonaResult(user_id, text, "llm", self.model, key, attempts=tries,
                             prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
                             completion_tokens=getattr(usage, "completion_tokens", 0) or 0, topic=topic, mid=mid)

    async def close(self) -> None:
        await self.llm.close()


def _persona_answer(reply: Any) -> tuple[str, Any]:
    text = normalize_persona(reply.choices[0].message.content or "")
    if not text:
        raise UnusableAnswer("empty answer")
    return text, reply.usage


def _raw_answer(reply: Any) -> tuple[str, Any]:
    text = raw_persona(reply.choices[0].message.content or "")
    if not text.strip():
        raise UnusableAnswer("empty answer")
    return text, reply.usage


def _describe(failure: Exception) -> str:
    """The failure's kind, HTTP status and the start of its message (what the endpoint said)."""
    status = getattr(failure, "status_code", None)
    return f"{type(failure).__name__}{f' {status}' if status else ''}: {str(failure)[:160]}"


async def personas_for(
    client: PersonaClient, users: list[dict[str, Any]], on_result: Callable[[PersonaResult], None] | None = None
) -> list[PersonaResult]:
    """All users' personas, concurrently (the client bounds the concurrency); `on_result` sees each
    one as soon as it arrives, so a caller can keep what it paid for before the rest are back."""

    async def one(user: dict[str, Any]) -> PersonaResult:
        result = await client.persona(user["user_id"], user["user_name"], user["posts"], user.get("topic"),
                                      user.get("mid"))
        if on_result is not None:
            on_result(result)
        return result

    return await asyncio.gather(*(one(user) for user in users))
