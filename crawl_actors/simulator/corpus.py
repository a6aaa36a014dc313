"""The seeded synthetic corpus: topics, users with latent traits, their posts and timelines.

Everything comes from one `random.Random(seed)`, drawn in a fixed order, so a seed gives the same
corpus byte for byte. Dates are fixed in the past: histories from 2024-10 to 2025-10, topics in
October 2025 (Beijing time), every post on a whole minute.

A post is a list of `Segment`s (text, #topic#, @user, [emoji], link, line break). The renderers turn
segments into Weibo's HTML; the plain text (what a perfect parser recovers) is `clean_text` of the
segments' plain forms, computed once here.

Traits shape the text: a user's stance on a category sets the odds of positive vs negative
judgements (`lexicon.POSITIVE_WORDS` / `NEGATIVE_WORDS`), the tone adds its phrases and endings,
pet phrases and favourite emoji recur, and the typical length sets how long posts run (over 140
characters a post is a long post, truncated in lists and expanded by the long-text endpoints).

Truth: every post records the polarity of each judgement written into it (`Post.judgements`) and
so its true sentiment (`Post.sentiment`, `true_sentiment`): "positive" when it holds more positive
than negative judgements, "negative" when more negative, otherwise "neutral" (a tie, only neutral
judgements, or none at all: a daily-life post, a repost's comment). Recording it draws nothing
from the generator: a seed gives the same texts as before truth was recorded.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from crawl_actors.parsers import clean_text
from crawl_actors.regions import city_codes, city_name, province_codes, province_name
from crawl_actors.simulator import lexicon as lex
from crawl_actors.simulator.config import SimulatorConfig

POSITIVE, NEUTRAL, NEGATIVE = "positive", "neutral", "negative"  # serve's SENTIMENTS names

BEIJING = timezone(timedelta(hours=8))
HISTORY_START = datetime(2024, 10, 1, tzinfo=BEIJING)
HISTORY_END = datetime(2025, 10, 1, tzinfo=BEIJING)
TOPICS_START = datetime(2025, 10, 6, tzinfo=BEIJING)
HOT_DAYS, TOPIC_DAYS, TOPIC_SPACING_DAYS = 3, 2, 4
HOT_PEAK = timedelta(hours=20)  # the hot topic's peak hour starts 20:00 on its first day
HOT_PEAK_PROVINCE = 11  # 北京: 18 district codes, so the peak splits into 18 city slices
HOT_PEAK_SHARE = 0.88  # of the peak hour, in that province: 528 of the default 600, past Weibo's 500-post cap
LONG_TEXT_CHARS = 140
PREVIEW_CHARS = 100
MAX_SLICE_POSTS = 300  # every (hour, city) search slice stays under 30 of Weibo's 50 pages
PIC_HOSTS = ("wx1", "wx2", "wx3", "wx4")
LIST_PICS = 9  # a timeline or search card shows at most 9 pictures; the detail page has them all
# Where users live and post from: every province of Weibo's table that has cities (not 其他).
HOME_PROVINCES = tuple(code for code in province_codes() if city_codes(code))
MEDIA_CARDS = {"video_card": "视频", "live_card": "直播"}


@dataclass(frozen=True)
class Segment:
    kind: str  # text | topic | at | emoji | link | newline | video_card | live_card
    value: str = ""  # a card's value is the name it is labelled with: '<value>的微博视频'
    url: str = ""

    @property
    def plain(self) -> str:
        if self.kind in MEDIA_CARDS:
            return ""  # a video/live card is markup Weibo adds, not text: a perfect parser drops it
        if self.kind == "topic":
            return f"#{self.value}#"
        if self.kind == "at":
            return f"@{self.value}"
        return "\n" if self.kind == "newline" else self.value


@dataclass(frozen=True)
class Traits:
    stances: dict[str, float]  # per category, in [-1, 1]
    tone: str
    typical_length: int
    pet_phrases: tuple[str, ...]
    emoji: tuple[str, ...]


@dataclass
class User:
    uid: str
    screen_name: str
    gender: str
    description: str | None
    followers_count: int
    follow_count: int
    verified: bool
    verified_type: int
    verified_reason: str | None
    badge: str  # 蓝V | 黄V | 红V | 金V | 普通用户
    urank: int
    mbrank: int
    province: int
    city: int
    details: dict[str, str]  # only the items the user shows
    traits: Traits
    device: str
    activity: float
    statuses_count: int = 0


@dataclass
class Post:
    mid: str
    bid: str
    uid: str
    created_at: datetime  # UTC, whole minute
    segments: tuple[Segment, ...]
    source: str | None
    reposts_count: int
    comments_count: int
    attitudes_count: int
    pics: tuple[str, ...]  # large URLs
    video_url: str | None
    province: int
    city: int
    location: str | None = None  # place tag, shown in search only
    retweet_of: str | None = None
    topic: str | None = None  # the crawl topic it belongs to
    is_pinned: bool = False
    judgements: tuple[str, ...] = ()  # the polarity of each judgement written into it, in order
    category: str | None = None  # the category its judgements are about; None: daily life, a repost
    text: str = field(init=False)
    topics: list[str] = field(init=False)
    at_users: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.text = clean_text("".join(segment.plain for segment in self.segments))
        self.topics = list(dict.fromkeys(s.value for s in self.segments if s.kind == "topic"))
        self.at_users = list(dict.fromkeys(s.value for s in self.segments if s.kind == "at"))

    @property
    def is_long(self) -> bool:
        return len(self.text) > LONG_TEXT_CHARS

    @property
    def sentiment(self) -> str:
        """The post's true sentiment: `true_sentiment` of its judgements."""
        return true_sentiment(self.judgements)


def true_sentiment(judgements: tuple[str, ...] | list[str]) -> str:
    """The majority polarity of the judgements: positive when more are positive than negative,
    negative when more are negative, neutral otherwise (a tie, only neutral ones, or none)."""
    balance = sum(1 if j == POSITIVE else -1 if j == NEGATIVE else 0 for j in judgements)
    return POSITIVE if balance > 0 else NEGATIVE if balance < 0 else NEUTRAL


@dataclass(frozen=True)
class Topic:
    name: str
    category: str
    news: str
    aspects: tuple[str, ...]
    facts: tuple[str, ...]
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, exclusive
    hot: bool


@dataclass
class Corpus:
    topics: list[Topic]
    users: dict[str, User]
    posts: dict[str, Post]
    timelines: dict[str, list[str]]  # uid -> mids in served order: pinned first, then newest first
    topic_posts: dict[str, list[str]]  # topic name -> mids, newest first (search order)
    by_bid: dict[str, str]

    def search_order(self, mids: list[str]) -> list[str]:
        return sorted(mids, key=lambda mid: (self.posts[mid].created_at, int(mid)), reverse=True)


def build_corpus(config: SimulatorConfig) -> Corpus:
    return _Builder(config).build()


def resample_topic_post(corpus: Corpus, topic: Topic, user: User, rng: random.Random) -> tuple[str, str]:
    """A fresh post of `user` on `topic`: the same traits and the same way of writing as the corpus's
    topic posts, drawn from `rng` instead of the corpus's generator; its plain text and true sentiment.
    The corpus is not changed."""
    builder = _Builder.__new__(_Builder)
    builder.rng, builder.users = rng, corpus.users
    segments, judged = builder.topic_segments(topic, user)
    return clean_text("".join(segment.plain for segment in segments)), true_sentiment(judged)


def preview_segments(segments: tuple[Segment, ...], limit: int = PREVIEW_CHARS) -> list[Segment]:
    """The first `limit` plain characters of a long post, cut at a segment or inside a text segment."""
    shown: list[Segment] = []
    used = 0
    for segment in segments:
        size = len(segment.plain)
        if used + size > limit:
            if segment.kind == "text" and limit > used:
                shown.append(Segment("text", segment.value[: limit - used]))
            break
        shown.append(segment)
        used += size
    return shown


def weibo_bid(mid: str) -> str:
    """Weibo's short id: the mid in 7-digit groups from the right, each group in base 62."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    groups = []
    for end in range(len(mid), 0, -7):
        value, digits = int(mid[max(0, end - 7) : end]), ""
        while value:
            value, rest = divmod(value, 62)
            digits = alphabet[rest] + digits
        groups.append(digits.rjust(4, "0") if end - 7 > 0 else digits or "0")
    return "".join(reversed(groups))


class _Builder:
    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        # Draws for the shapes added later (media cards, more than 9 pictures) come from their own
        # generator, so that a seed still gives the same users, texts and times as before.
        self.extra = random.Random(f"extras:{config.seed}")
        self.users: dict[str, User] = {}
        self.posts: dict[str, Post] = {}
        self.mids: set[str] = set()

    def build(self) -> Corpus:
        for _ in range(self.config.num_users):
            user = self._user()
            self.users[user.uid] = user
        topics = self._topics()
        for user in self.users.values():
            self._history(user)
        topic_posts = {topic.name: self._topic_posts(topic) for topic in topics}
        self._reposts()
        timelines = self._timelines()
        corpus = Corpus(topics, self.users, self.posts, timelines, {}, {p.bid: p.mid for p in self.posts.values()})
        corpus.topic_posts = {name: corpus.search_order(mids) for name, mids in topic_posts.items()}
        _check_slices(corpus)
        return corpus

    # -- users ------------------------------------------------------------------------------

    def _user(self) -> User:
        rng = self.rng
        uid = self._unique_uid()
        province, city = self._random_region(list(HOME_PROVINCES))
        badge, verified_type, reason = self._verification()
        followers = int(10 ** rng.uniform(4.0, 7.3)) if badge != "普通用户" else int(10 ** rng.uniform(0.5, 5.6))
        name = self._screen_name(organisation=badge == "蓝V")
        return User(
            uid=uid, screen_name=name, gender=rng.choice("fm"),
            description=rng.choice(lex.DESCRIPTIONS) if rng.random() < 0.8 else None,
            followers_count=followers, follow_count=rng.randint(5, 1500),
            verified=badge != "普通用户", verified_type=verified_type,
            verified_reason=f"{name}官方微博" if badge == "蓝V" else reason,
            badge=badge, urank=rng.randint(1, 48), mbrank=rng.randint(0, 7),
            province=province, city=city, details=self._details(province, city),
            traits=self._traits(), device=rng.choice(lex.DEVICES), activity=rng.uniform(0.3, 3.0),
        )

    def _unique_uid(self) -> str:
        while (uid := str(self.rng.randrange(1_000_000_000, 8_000_000_000))) in self.users:
            pass
        return uid

    def _verification(self) -> tuple[str, int, str | None]:
        roll = self.rng.random()
        if roll < 0.08:
            return "蓝V", self.rng.randint(1, 7), None
        if roll < 0.20:
            badge = self.rng.choices(("黄V", "红V", "金V"), weights=(6, 2.5, 1.5))[0]
            return badge, 0, self.rng.choice(lex.PERSONAL_REASONS)
        return "普通用户", -1, None

    def _screen_name(self, organisation: bool) -> str:
        taken = {user.screen_name for user in self.users.values()}
        rng = self.rng
        while True:
            if organisation:
                name = rng.choice(lex.NAME_CORES) + rng.choice(lex.ORG_SUFFIXES)
            else:
                name = rng.choice(lex.NAME_PREFIXES) + rng.choice(lex.NAME_CORES) + rng.choice(lex.NAME_SUFFIXES)
            if len(name) < 2 or name in taken:
                name += str(rng.randint(10, 999))
            if name not in taken:
                return name

    def _details(self, province: int, city: int) -> dict[str, str]:
        rng = self.rng
        details = {"registered": f"{rng.randint(2009, 2023)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}",
                   "ip_region": province_name(province)}
        if rng.random() < 0.7:
            details["birthday"] = f"{rng.randint(1970, 2006)}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        if rng.random() < 0.85:
            details["location"] = f"{province_name(province)} {city_name(province, city)}"
        if rng.random() < 0.55:
            details["education"] = rng.choice(lex.UNIVERSITIES)
        if rng.random() < 0.35:
            details["company"] = rng.choice(lex.COMPANIES)
        if rng.random() < 0.9:
            details["sunshine_credit"] = rng.choice(lex.SUNSHINE_CREDITS)
        return details

    def _traits(self) -> Traits:
        rng = self.rng
        band = rng.choices(((18, 80), (80, 130), (150, 300)), weights=(62, 28, 10))[0]
        return Traits(
            stances={category: round(rng.uniform(-1, 1), 3) for category in lex.CATEGORIES},
            tone=rng.choice(lex.TONES),
            typical_length=rng.randint(*band),
            pet_phrases=tuple(rng.sample(lex.PET_PHRASES, rng.randint(1, 3))),
            emoji=tuple(rng.sample(lex.EMOJI, rng.randint(1, 3))),
        )

    # -- topics -----------------------------------------------------------------------------

    def _topics(self) -> list[Topic]:
        count = self.config.num_topics
        if count > len(lex.TOPIC_TEMPLATES):
            raise ValueError(f"SimulatorConfig: num_topics must be <= {len(lex.TOPIC_TEMPLATES)}")
        topics, start = [], TOPICS_START
        for index, template in enumerate(self.rng.sample(lex.TOPIC_TEMPLATES, count)):
            days = HOT_DAYS if index == 0 else TOPIC_DAYS
            topics.append(Topic(
                name=template["name"], category=template["category"], news=clean_text(template["news"]),
                aspects=template["aspects"], facts=template["facts"], hot=index == 0,
                start=start.astimezone(timezone.utc), end=(start + timedelta(days=days)).astimezone(timezone.utc),
            ))
            start += timedelta(days=days + TOPIC_SPACING_DAYS)
        return topics

    def _topic_posts(self, topic: Topic) -> list[str]:
        count = self.config.hot_topic_posts if topic.hot else self.config.topic_posts
        peak = count // 2 if topic.hot else 0
        peak_home = round(peak * HOT_PEAK_SHARE)
        mids = []
        for index in range(count):
            author = self._author()
            if index < peak:
                moment = topic.start + HOT_PEAK + timedelta(minutes=self.rng.randrange(60))
                region = self._peak_region(home=index < peak_home)
            else:
                moment = topic.start + timedelta(minutes=self.rng.randrange(_minutes(topic.end - topic.start)))
                region = self._region_of(author)
            mids.append(self._topic_post(topic, author, moment, region).mid)
        return mids

    def _author(self) -> User:
        users = list(self.users.values())
        return self.rng.choices(users, cum_weights=list(itertools.accumulate(u.activity for u in users)))[0]

    def _peak_region(self, home: bool) -> tuple[int, int]:
        if home:
            return self._random_region([HOT_PEAK_PROVINCE])
        return self._random_region([code for code in HOME_PROVINCES if code != HOT_PEAK_PROVINCE])

    def _region_of(self, user: User) -> tuple[int, int]:
        """Where a user posts from: home mostly, anywhere sometimes."""
        return (user.province, user.city) if self.rng.random() < 0.8 else self._random_region(list(HOME_PROVINCES))

    def _random_region(self, provinces: list[int]) -> tuple[int, int]:
        province = self.rng.choice(provinces)
        return province, self.rng.choice(city_codes(province))

    def _topic_post(self, topic: Topic, user: User, moment: datetime, region: tuple[int, int]) -> Post:
        segments, judged = self.topic_segments(topic, user)
        location = None
        if self.rng.random() < 0.12:
            location = f"{province_name(region[0])}·{city_name(*region)}"
        return self._post(user, moment, segments, region, topic=topic.name, location=location, judgements=judged,
                          category=topic.category)

    def topic_segments(self, topic: Topic, user: User) -> tuple[list[Segment], tuple[str, ...]]:
        """A post of `user` on `topic` (its text and hashtag) and the polarities of its judgements.
        The oracle calls this too, with a fresh generator."""
        segments, judged = self._compose(user, topic.category, subjects=topic.aspects, facts=topic.facts)
        hashtag = [Segment("topic", topic.name), Segment("text", " ")]
        segments = hashtag + segments if self.rng.random() < 0.6 else segments + [Segment("text", " ")] + hashtag[:1]
        return segments, judged

    # -- history ----------------------------------------------------------------------------

    def _history(self, user: User) -> None:
        low, high = self.config.history_posts
        span = _minutes(HISTORY_END - HISTORY_START)
        for _ in range(self.rng.randint(low, high)):
            moment = HISTORY_START + timedelta(minutes=self.rng.randrange(span))
            category = self._interest(user)
            subjects = lex.HISTORY_SUBJECTS[category] if category else None
            segments, judged = self._compose(user, category, subjects=subjects, facts=lex.DAILY_SENTENCES)
            if self.rng.random() < 0.4:
                tags = lex.CATEGORY_TAGS[category] if category else lex.DAILY_TAGS
                segments = [Segment("topic", self.rng.choice(tags)), Segment("text", " ")] + segments
            self._post(user, moment, segments, self._region_of(user), judgements=judged, category=category)

    def _interest(self, user: User) -> str | None:
        if self.rng.random() < 0.3:
            return None  # daily life
        favourites = sorted(lex.CATEGORIES, key=lambda c: -abs(user.traits.stances[c]))[:2]
        return self.rng.choice(favourites) if self.rng.random() < 0.7 else self.rng.choice(lex.CATEGORIES)

    def _reposts(self) -> None:
        """About 12% of each user's history are reposts of another user's earlier short post."""
        originals = sorted((p for p in self.posts.values() if p.topic is None and not p.is_long),
                           key=lambda p: (p.created_at, p.mid))
        times = [post.created_at for post in originals]
        own = Counter(post.uid for post in originals)
        span = _minutes(HISTORY_END - HISTORY_START)
        for user in self.users.values():
            for _ in range(round(own[user.uid] * 0.12)):
                moment = HISTORY_START + timedelta(minutes=self.rng.randrange(span // 10, span))
                before = bisect.bisect_left(times, moment)
                candidates = [p for p in originals[max(0, before - 200) : before] if p.uid != user.uid]
                if candidates:
                    self._repost(user, moment, self.rng.choice(candidates))

    def _repost(self, user: User, moment: datetime, original: Post) -> None:
        comment = [Segment("text", self.rng.choice(lex.REPOST_COMMENTS))]
        if self.rng.random() < 0.5:
            comment.append(Segment("emoji", self.rng.choice(user.traits.emoji)))
        self._post(user, moment, comment, self._region_of(user), retweet_of=original.mid, media=False)

    def _timelines(self) -> dict[str, list[str]]:
        timelines: dict[str, list[str]] = {uid: [] for uid in self.users}
        for post in self.posts.values():
            timelines[post.uid].append(post.mid)
        for uid, mids in timelines.items():
            mids.sort(key=lambda mid: (self.posts[mid].created_at, int(mid)), reverse=True)
            originals = [mid for mid in mids[10:] if self.posts[mid].retweet_of is None]
            if originals and self.rng.random() < 0.3:
                pinned = self.rng.choice(originals)
                self.posts[pinned].is_pinned = True
                mids.remove(pinned)
                mids.insert(0, pinned)
            self.users[uid].statuses_count = len(mids)
        return timelines

    # -- text -------------------------------------------------------------------------------

    def _compose(self, user: User, category: str | None, subjects, facts) -> tuple[list[Segment], tuple[str, ...]]:
        """Sentences in the user's voice until the user's typical length (±40%) is reached; and the
        polarity of each judgement among them."""
        rng, traits = self.rng, user.traits
        target = int(traits.typical_length * rng.uniform(0.6, 1.4))
        segments: list[Segment] = []
        self._judged: list[str] = []
        if rng.random() < 0.5:
            segments.append(Segment("text", rng.choice(traits.pet_phrases) + "，"))
        length = sum(len(s.plain) for s in segments)
        while length < target:
            sentence = self._sentence(user, category, subjects, facts)
            segments.append(sentence)
            length += len(sentence.value)
            if rng.random() < 0.08:
                segments.append(Segment("newline"))
        self._decorate(user, segments)
        return segments, tuple(self._judged)

    def _sentence(self, user: User, category: str | None, subjects, facts) -> Segment:
        rng, traits = self.rng, user.traits
        ending = lex.TONE_ENDINGS[traits.tone]
        roll = rng.random()
        if category is not None and subjects and roll < 0.55:
            return Segment("text", rng.choice(subjects) + self._judgement(traits.stances[category]) + ending)
        if roll < 0.75:
            return Segment("text", rng.choice(lex.TONE_PHRASES[traits.tone]) + ending)
        return Segment("text", rng.choice(facts) + "。")

    def _judgement(self, stance: float) -> str:
        """Neutral with odds 0.15 x (1 - |stance|), else positive with odds 0.5 + 0.45 x stance; the
        polarity is recorded in `_judged` (no extra draw)."""
        if self.rng.random() < 0.15 * (1 - abs(stance)):
            self._judged.append(NEUTRAL)
            return self.rng.choice(lex.NEUTRAL_WORDS)
        positive = self.rng.random() < 0.5 + 0.45 * stance
        self._judged.append(POSITIVE if positive else NEGATIVE)
        return self.rng.choice(lex.POSITIVE_WORDS if positive else lex.NEGATIVE_WORDS)

    def _decorate(self, user: User, segments: list[Segment]) -> None:
        rng = self.rng
        if rng.random() < 0.5:
            favourites = user.traits.emoji
            segments.extend(Segment("emoji", e) for e in rng.sample(favourites, rng.randint(1, len(favourites))))
        if rng.random() < 0.15:
            other = rng.choice([u for u in self.users.values() if u.uid != user.uid])
            at = rng.randint(0, len(segments))
            segments[at:at] = [Segment("at", other.screen_name), Segment("text", " ")]
        if rng.random() < 0.08:
            code = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789") for _ in range(8))
            segments.extend([Segment("text", " "), Segment("link", "网页链接", f"http://t.cn/{code}")])
        if rng.random() < 0.3:
            segments.append(Segment("text", rng.choice(user.traits.pet_phrases)))

    # -- posts ------------------------------------------------------------------------------

    def _post(self, user: User, moment: datetime, segments: list[Segment], region: tuple[int, int], *,
              topic: str | None = None, location: str | None = None, retweet_of: str | None = None,
              media: bool = True, judgements: tuple[str, ...] = (), category: str | None = None) -> Post:
        rng = self.rng
        mid = self._unique_mid(moment)
        pics, video = self._media() if media else ((), None)
        if media:
            segments = segments + self._media_card(user, video is not None)
        likes = int(user.followers_count * 10 ** rng.uniform(-3.2, -0.6)) if rng.random() < 0.9 else 0
        source = user.device if rng.random() < 0.85 else (rng.choice(lex.DEVICES) if rng.random() < 0.6 else None)
        post = Post(
            mid=mid, bid=weibo_bid(mid), uid=user.uid, created_at=moment.astimezone(timezone.utc),
            segments=tuple(segments), source=source, reposts_count=int(likes * rng.uniform(0, 0.4)),
            comments_count=int(likes * rng.uniform(0, 0.3)), attitudes_count=likes, pics=pics, video_url=video,
            province=region[0], city=region[1], location=location, retweet_of=retweet_of, topic=topic,
            judgements=judgements, category=category,
        )
        self.posts[mid] = post
        return post

    def _unique_mid(self, moment: datetime) -> str:
        minute = _minutes(moment - HISTORY_START)
        while (mid := str(5_100_000_000_000_000 + minute * 100_000 + self.rng.randrange(100_000))) in self.mids:
            pass
        self.mids.add(mid)
        return mid

    def _media(self) -> tuple[tuple[str, ...], str | None]:
        """Pictures (up to 9; a few posts more, which lists show 9 of), or a video, or neither."""
        roll = self.rng.random()
        if roll < 0.3:
            pics = tuple(self._pic() for _ in range(self.rng.randint(1, 9)))
            if len(pics) == LIST_PICS and self.extra.random() < 0.3:
                pics += tuple(self._extra_pic() for _ in range(self.extra.randint(1, 9)))
            return pics, None
        if roll < 0.36:
            query = "label=mp4_ld&template=852x480.25.0&ori=0&KID=unistore,video"
            return (), f"https://f.video.weibocdn.com/o0/{self._token(24)}.mp4?{query}"
        return (), None

    def _media_card(self, user: User, video: bool) -> list[Segment]:
        """The card Weibo appends to a post with a video (often) or a live stream (rarely), labelled
        '<name>的微博视频' / '的微博直播'; sometimes the user's own words say much the same just before it."""
        extra = self.extra
        kind = "video_card" if video and extra.random() < 0.7 else "live_card" if extra.random() < 0.02 else None
        if kind is None:
            return []
        name = user.screen_name if extra.random() < 0.8 else extra.choice(list(self.users.values())).screen_name
        card = [Segment("text", " "), Segment(kind, name)]
        if extra.random() < 0.3:  # words a regex on '的微博直播' would wrongly eat
            card.insert(0, Segment("text", f"今天看了{MEDIA_CARDS[kind]}太开心了{name}的微博{MEDIA_CARDS[kind]}"))
        return card

    def _pic(self) -> str:
        return f"https://{self.rng.choice(PIC_HOSTS)}.sinaimg.cn/large/{self._token(32)}.jpg"

    def _extra_pic(self) -> str:
        return f"https://{self.extra.choice(PIC_HOSTS)}.sinaimg.cn/large/{self.extra.getrandbits(128):032x}.jpg"

    def _token(self, size: int) -> str:
        return f"{self.rng.getrandbits(4 * size):0{size}x}"


def _minutes(span: timedelta) -> int:
    return int(span.total_seconds() // 60)


def _check_slices(corpus: Corpus) -> None:
    """A full crawl must be possible: no (hour, province, city) search slice may reach Weibo's 50-page cap."""
    for topic in corpus.topics:
        slices = Counter()
        for mid in corpus.topic_posts[topic.name]:
            post = corpus.posts[mid]
            slices[(post.created_at.replace(minute=0), post.province, post.city)] += 1
        worst = max(slices.values(), default=0)
        if worst > MAX_SLICE_POSTS:
            raise ValueError(f"SimulatorConfig: topic {topic.name!r} has {worst} posts in one hour and city "
                             f"(max {MAX_SLICE_POSTS}); lower hot_topic_posts / topic_posts")
