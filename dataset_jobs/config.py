"""The build-dataset stage's config: `socialalign build-dataset --help` lists every field.

`preset: research` gives the research pipeline's dataset (github.com/Znull-1220/SocialAlign,
dataset_construction/): its cleaning rules and exclusion lists, five posts retrieved from all of
a user's history but the target, and one persona per case from that case's posts, asked for with
the research's request text. Each field it sets says why our default differs (docs/presets.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from cluster.llm import LLMEndpointConfig
from cluster.presets import PresetValue, WithPresets

RESEARCH = {
    "text_patterns": PresetValue(
        "research",
        "the research's `\\n\\S+的微博视频` and `#[^#]+的微博视频` remove the user's own words before a card, and its "
        "`...\\n全文` is a regex that removes any three characters; the crawl's parser removes cards from the page's "
        "markup, so ours removes only fixed strings and leaves every other text as it is",
    ),
    "exclusions": PresetValue(
        "research",
        "the research's ~400 words (dataset_jobs/research_exclusions.yaml) were picked by hand for its 2024 topics "
        "(idols, dramas, games) and include '@', '【', '转发', '美', '帅' and '85', which drop ordinary posts; ours "
        "is 23 words of ads, lotteries and fan-club chatter",
    ),
    "require_own_text": PresetValue(
        True, "a repost without a comment still shows what the user chose to spread (the prompt says 你转发了微博)"
    ),
    "require_topics": PresetValue(
        True, "most everyday posts carry no hashtag, yet they say who the user is; requiring one drops most history "
        "and with it the users who fall under min_history_posts",
    ),
    "short_topic_chars": PresetValue(
        3, "a short hashtag (#求助#, #晚安#) is not a sign of a bad post; the research drops the whole post"
    ),
    "exclude_targets": PresetValue(
        "own", "with 'own' a user's post about one topic is history for the same user's case on another topic, "
        "which may sit in the test split: a test answer would be shown in training prompts",
    ),
    "history_before_post": PresetValue(
        False, "history written after the target post may hold the user's later reaction to the same news: the "
        "model would be shown the future (ours may then give fewer than top_k posts, and the prompt says so)",
    ),
    "persona_per": PresetValue(
        "case", "a user is one person: one persona per user, from the user's most recent posts, costs one call "
        "per user instead of one per case and does not change with the news item",
    ),
    "persona_request": PresetValue(
        "research", "the research's system prompt starts and ends with a stray line break, and its request words a "
        "repost 该用户转发了微博 where the generation prompt says 你转发了微博; ours shows the posts exactly as the "
        "generation prompt does",
    ),
    "persona_answer": PresetValue(
        "raw", "the request asks for at most 20 characters per facet and no Markdown; models do not always listen, "
        "so ours removes Markdown and trims each facet to 20 characters",
    ),
}


class DatasetConfig(WithPresets):
    """build-dataset: clean, retrieve, extract personas and build the SFT set with Ray Data."""

    PRESETS: ClassVar[dict[str, dict[str, PresetValue]]] = {"research": RESEARCH}

    crawl_dir: Path = Field(Path("data/crawl"), description="output_dir of the crawl")
    output_dir: Path = Path("data/dataset")
    steps: list[Literal["clean", "retrieve", "persona", "sft"]] = Field(
        default_factory=lambda: ["clean", "retrieve", "persona", "sft"]
    )
    force: bool = Field(False, description="run the steps even when their outputs are up to date")
    news: dict[str, str] = Field(
        default_factory=dict,
        description="news text per topic ({topic: text}): the BM25 query and the prompt's news; wins over news_file "
        "and the crawl's AI-search summary",
    )
    news_file: Path | None = Field(
        None, description="topics file: lines 'topic<TAB>news' (\\n in news: a line break) or a YAML list of "
        "{topic, news}; wins over the crawl's AI-search summary",
    )
    text_patterns: Literal["ours", "research"] = Field(
        "ours", description="noise removed from texts: ours (fixed strings only) | research (its regexes too)"
    )
    exclusions: Literal["ours", "research"] = Field(
        "ours", description="built-in exclusion lists: ours (ads, lotteries, fan clubs; text and repost) | research "
        "(its lists of topics, texts, repost topics, repost texts)",
    )
    exclusion_words: list[str] | None = Field(
        None, description="posts whose text contains any are dropped (replaces the built-in list of texts)"
    )
    exclude_own_name: bool = Field(True, description="drop history posts that contain the user's own name")
    require_own_text: bool = Field(False, description="drop reposts that add no words of their own")
    require_topics: bool = Field(False, description="drop history posts without a hashtag topic")
    short_topic_chars: int = Field(0, ge=0, description="drop posts with a topic this short or shorter (0: none)")
    min_history_posts: int = Field(10, ge=1, description="users (cases) with fewer usable history posts are dropped")
    exclude_targets: Literal["all", "own"] = Field(
        "all", description="target posts left out of history: all (every target post of the user) | own (each "
        "case's own)",
    )
    top_k: int = Field(5, ge=1, description="history posts retrieved per case")
    bm25_k1: float = Field(1.5, gt=0)
    bm25_b: float = Field(0.75, ge=0, le=1)
    history_before_post: bool = Field(True, description="retrieve only history posted before the target post")
    persona: LLMEndpointConfig = Field(default_factory=LLMEndpointConfig)
    persona_per: Literal["user", "case"] = Field(
        "user", description="user: one persona per user from its persona_posts most recent posts | case: one per "
        "case from the case's retrieved posts",
    )
    persona_posts: int = Field(5, ge=1, description="recent posts shown to the persona model (persona_per: user)")
    persona_request: Literal["ours", "research"] = Field(
        "ours", description="the persona request's text: ours | research (byte for byte as the research sends it)"
    )
    persona_answer: Literal["trimmed", "raw"] = Field(
        "trimmed", description="trimmed: Markdown out, each facet at most 20 characters | raw: as answered (blank "
        "lines collapsed)",
    )
    persona_workers: int = Field(1, ge=1, description="Ray actors calling the persona endpoint")
    variants: list[Literal["full", "without_persona", "without_history"]] = Field(
        default_factory=lambda: ["full", "without_persona", "without_history"]
    )
    test_fraction: float = Field(0.2, ge=0, lt=1, description="share of topics held out for test")
    test_topics: list[str] | None = Field(None, description="hold out exactly these topics (test_fraction unused)")
    seed: int = 0

    @field_validator("news")
    @classmethod
    def _news_texts(cls, value: dict[str, str]) -> dict[str, str]:
        news = {}
        for topic, text in value.items():
            name = topic.strip().strip("#").strip()
            if not name:
                raise ValueError(f"a topic name is empty ({topic!r})")
            if not str(text).strip():
                raise ValueError(f"the news of {name!r} is empty")
            news[name] = str(text).strip()
        return news
