"""Every Parquet table that flows between stages, declared once.

Stage 1 (crawl) writes `topics`, `posts`, `users`, `history` and `errors`. Times are UTC
timestamps; Weibo's own times are Beijing time (+08:00) and are converted on parsing. Ids are
strings: Weibo ids exceed what some readers hold exactly as numbers.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("ms", tz="UTC")
STRINGS = pa.list_(pa.string())
GATES = pa.list_(
    pa.struct([
        pa.field("name", pa.string(), nullable=False),
        pa.field("analyze", pa.list_(pa.float32()), nullable=False),
        pa.field("compose", pa.list_(pa.float32()), nullable=False),
    ])
)

TOPICS = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),  # the hashtag or keyword, without surrounding '#'
        pa.field("news", pa.string()),  # the news text the topic is about
        pa.field("source", pa.string(), nullable=False),  # ai_search | config
        pa.field("crawled_at", TIMESTAMP, nullable=False),
    ]
)

# The target posts: what search and AI search found for a topic.
POSTS = pa.schema(
    [
        pa.field("mid", pa.string(), nullable=False),
        pa.field("bid", pa.string()),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("screen_name", pa.string()),
        pa.field("text", pa.string(), nullable=False),
        pa.field("topics", STRINGS),  # hashtags in the text, without '#'
        pa.field("at_users", STRINGS),  # @-mentioned names, without '@'
        pa.field("location", pa.string()),  # the place tag of the post, if any
        pa.field("created_at", TIMESTAMP),
        pa.field("source", pa.string()),  # the client it was posted from
        pa.field("reposts_count", pa.int64()),
        pa.field("comments_count", pa.int64()),
        pa.field("attitudes_count", pa.int64()),
        pa.field("pics", STRINGS),
        pa.field("video_url", pa.string()),
        pa.field("retweet_id", pa.string()),
        pa.field("user_verified", pa.string()),  # 蓝V | 黄V | 红V | 金V | 普通用户
        pa.field("region", pa.string()),  # IP region of the post ("北京"), from the region endpoint
        pa.field("query", pa.string(), nullable=False),  # the topic whose search found it
        pa.field("found_by", pa.string(), nullable=False),  # search | ai_search
        pa.field("crawled_at", TIMESTAMP, nullable=False),
    ]
)

USERS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("screen_name", pa.string()),
        pa.field("gender", pa.string()),  # f | m
        pa.field("description", pa.string()),
        pa.field("statuses_count", pa.int64()),
        pa.field("followers_count", pa.int64()),
        pa.field("follow_count", pa.int64()),
        pa.field("verified", pa.bool_()),
        pa.field("verified_type", pa.int32()),
        pa.field("verified_reason", pa.string()),
        pa.field("urank", pa.int32()),
        pa.field("mbrank", pa.int32()),
        # From the details card (230283<uid>_-_INFO); null when the user does not show them.
        pa.field("birthday", pa.string()),
        pa.field("location", pa.string()),
        pa.field("education", pa.string()),
        pa.field("company", pa.string()),
        pa.field("registered", pa.string()),
        pa.field("sunshine_credit", pa.string()),
        pa.field("ip_region", pa.string()),
        pa.field("crawled_at", TIMESTAMP, nullable=False),
    ]
)

# Users' timeline posts (their history), one row per (user_id, mid).
HISTORY = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("mid", pa.string(), nullable=False),
        pa.field("bid", pa.string()),
        pa.field("text", pa.string(), nullable=False),  # the full text, long posts expanded
        pa.field("topics", STRINGS),
        pa.field("at_users", STRINGS),
        pa.field("created_at", TIMESTAMP),
        pa.field("source", pa.string()),
        pa.field("reposts_count", pa.int64()),
        pa.field("comments_count", pa.int64()),
        pa.field("attitudes_count", pa.int64()),
        pa.field("pics", STRINGS),
        pa.field("video_url", pa.string()),
        pa.field("is_long_text", pa.bool_()),
        pa.field("is_pinned", pa.bool_()),
        pa.field("retweet_id", pa.string()),
        pa.field("retweet_text", pa.string()),  # the reposted post's text (a repost renders as X + comment)
        pa.field("retweet_user", pa.string()),
        pa.field("crawled_at", TIMESTAMP, nullable=False),
    ]
)

# Every page that failed, whatever the reason; a crawl never stops for one.
ERRORS = pa.schema(
    [
        pa.field("url", pa.string(), nullable=False),
        pa.field("task", pa.string(), nullable=False),  # the crawl task kind: search, profile, timeline, ...
        pa.field("kind", pa.string(), nullable=False),  # parse | http | network | blocked | gave_up
        pa.field("status", pa.int32()),
        pa.field("snippet", pa.string()),  # the first characters of the response body
        pa.field("message", pa.string()),
        pa.field("time", TIMESTAMP, nullable=False),
    ]
)

# Pieces crawl workers stage beside the tables, which the crawl folds into them when it finishes:
# a long post's full text (history) and a post's IP region (posts).
LONG_TEXTS = pa.schema(
    [
        pa.field("mid", pa.string()),
        pa.field("text", pa.string()),
        pa.field("topics", STRINGS),
        pa.field("at_users", STRINGS),
        pa.field("crawled_at", TIMESTAMP),
    ]
)

REGIONS = pa.schema([pa.field("bid", pa.string()), pa.field("region", pa.string()), pa.field("crawled_at", TIMESTAMP)])

# Stage 2 (build-dataset): cleaned history, the cases (one per target post), what retrieval picked,
# the personas, and the SFT set.
CLEAN_HISTORY = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("mid", pa.string(), nullable=False),
        pa.field("text", pa.string(), nullable=False),  # noise patterns removed
        pa.field("retweet_text", pa.string()),
        pa.field("created_at", TIMESTAMP),
    ]
)

CASES = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("news", pa.string(), nullable=False),
        pa.field("news_source", pa.string()),  # config | ai_search | hashtag (null in sets built before it)
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_name", pa.string()),
        pa.field("mid", pa.string(), nullable=False),
        pa.field("output", pa.string(), nullable=False),  # the target post, cleaned
        pa.field("created_at", TIMESTAMP),
    ]
)

RETRIEVAL = pa.schema(
    [
        pa.field("topic", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("mid", pa.string(), nullable=False),  # the case's target post
        pa.field("history_mids", STRINGS),  # most relevant first
        pa.field("history_texts", STRINGS),  # as the prompt shows them (a repost shows what it reposted)
        pa.field("scores", pa.list_(pa.float64())),
    ]
)

PERSONAS = pa.schema(
    [
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_name", pa.string()),
        pa.field("persona", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),  # llm | cache | offline | offline-fallback
        pa.field("model", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=False),  # content hash of model + prompt
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("attempts", pa.int32()),
        pa.field("error", pa.string()),  # why the LLM gave no persona (then the offline one is used)
        pa.field("topic", pa.string()),  # the case a persona is for (persona_per: case); null: the user's
        pa.field("mid", pa.string()),
    ]
)

PERSONA_CACHE = pa.schema(
    [
        pa.field("key", pa.string(), nullable=False),
        pa.field("persona", pa.string(), nullable=False),
        pa.field("model", pa.string(), nullable=False),
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
    ]
)

# The SFT set: one row per (target post, prompt variant), in alpaca
# form plus the three prompt parts that pac_lora.build_prompt turns into tokens and spans.
SFT = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),  # "<topic>|<user_id>|<mid>|<variant>"
        pa.field("split", pa.string(), nullable=False),  # train | test (by topic: no topic in both)
        pa.field("variant", pa.string(), nullable=False),  # full | without_persona | without_history
        pa.field("topic", pa.string(), nullable=False),
        pa.field("news", pa.string(), nullable=False),
        pa.field("news_source", pa.string()),  # config | ai_search | hashtag (null in sets built before it)
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("user_name", pa.string()),
        pa.field("mid", pa.string(), nullable=False),  # the target post (its text is `output`)
        pa.field("instruction", pa.string(), nullable=False),  # user_part + news_part + instruction_part
        pa.field("input", pa.string(), nullable=False),  # "" (alpaca form, as the research set)
        pa.field("output", pa.string(), nullable=False),  # what the user really posted
        pa.field("user_part", pa.string(), nullable=False),
        pa.field("news_part", pa.string(), nullable=False),
        pa.field("instruction_part", pa.string(), nullable=False),
        pa.field("persona", pa.string()),
        pa.field("history_mids", STRINGS),  # the retrieved history posts, most relevant first
        pa.field("history_texts", STRINGS),  # those posts as the prompt shows them
    ]
)

# Evaluation: one row per (topic, user, sample) of a method's predictions; and the metrics.
PREDICTIONS = pa.schema(
    [
        pa.field("method", pa.string(), nullable=False),  # the label of this prediction set in reports
        pa.field("topic", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("mid", pa.string(), nullable=False),  # the real post being predicted
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("variant", pa.string()),
        pa.field("prediction", pa.string(), nullable=False),
        pa.field("real", pa.string(), nullable=False),  # what the user really posted
        pa.field("adapter", pa.string()),  # adapter directory or id; null for the base model
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        # With `predict return_gates=true` and a PAC-LoRA adapter: the prompt's expert gate weights, one
        # entry per target module (name q_proj, ...; averaged over the layers) or per module of every layer
        # (its path), each a router's weights over its analyze and compose experts; null otherwise.
        pa.field("gates", GATES),
    ]
)

# A run with known truth (the simulator's; `crawl_actors.simulator.truth_table`): per real post its
# true sentiment, and optionally the author's stance on the topic's category and the topic's terms.
TRUTH = pa.schema(
    [
        pa.field("mid", pa.string(), nullable=False),
        pa.field("topic", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("category", pa.string()),
        pa.field("sentiment", pa.string(), nullable=False),  # positive | neutral | negative
        pa.field("stance", pa.float64()),  # in [-1, 1]
        pa.field("topic_terms", STRINGS),  # the hashtag's text and what the topic's posts talk about
    ]
)

SCORED = pa.schema(
    [
        pa.field("method", pa.string(), nullable=False),
        pa.field("topic", pa.string(), nullable=False),
        pa.field("user_id", pa.string(), nullable=False),
        pa.field("mid", pa.string(), nullable=False),
        pa.field("sample", pa.int32(), nullable=False),
        pa.field("predicted_label", pa.string()),
        pa.field("real_label", pa.string()),
        pa.field("rouge1", pa.float64()),
        pa.field("rouge2", pa.float64()),
        pa.field("rougeL", pa.float64()),
        pa.field("bleu4", pa.float64()),
        pa.field("length_ratio", pa.float64()),
    ]
)

MACRO = pa.schema(
    [
        pa.field("method", pa.string(), nullable=False),
        pa.field("topic", pa.string(), nullable=False),  # "(mean)" for the average over topics
        pa.field("real_distribution", pa.list_(pa.float64())),  # positive, neutral, negative
        pa.field("predicted_distribution", pa.list_(pa.float64())),
        pa.field("predictions", pa.int64()),
        pa.field("js", pa.float64()),
        pa.field("kl", pa.float64()),
        pa.field("tv", pa.float64()),
        pa.field("emd", pa.float64()),
    ]
)

# Evaluation: each real post's label once (labelled by the evaluation labeller), and per method the
# micro averages and the macro metrics averaged over topics.
REAL_LABELS = pa.schema(
    [pa.field("mid", pa.string()), pa.field("real_label", pa.string()), pa.field("labeler", pa.string())]
)

EVALUATION_SUMMARY = pa.schema(
    [
        pa.field("method", pa.string()),
        pa.field("predictions", pa.int64()),
        pa.field("rouge1", pa.float64()),
        pa.field("rouge2", pa.float64()),
        pa.field("rougeL", pa.float64()),
        pa.field("bleu4", pa.float64()),
        pa.field("length_ratio", pa.float64()),
        pa.field("sentiment_accuracy", pa.float64()),
        pa.field("sentiment_macro_f1", pa.float64()),
        pa.field("js", pa.float64()),
        pa.field("kl", pa.float64()),
        pa.field("tv", pa.float64()),
        pa.field("emd", pa.float64()),
        pa.field("unlabelled", pa.int64()),
        pa.field("real_unlabelled", pa.int64()),
        pa.field("labeler", pa.string()),
        # With truth (EvaluateConfig.truth): Spearman of predicted positive share vs true stance, and
        # the share of predictions naming the topic or its terms (and, with or without truth, carrying
        # only other topics' hashtags); with methods zero-shot and oracle,
        # (figure - zero-shot) / (oracle - zero-shot) per figure. Null where not measured.
        pa.field("spearman_stance", pa.float64()),
        pa.field("topic_mention", pa.float64()),
        pa.field("wrong_hashtag", pa.float64()),
        pa.field("gap_closed_js", pa.float64()),
        pa.field("gap_closed_tv", pa.float64()),
        pa.field("gap_closed_emd", pa.float64()),
        pa.field("gap_closed_macro_f1", pa.float64()),
        pa.field("gap_closed_accuracy", pa.float64()),
        pa.field("gap_closed_spearman", pa.float64()),
    ]
)

CRAWL_TABLES: dict[str, pa.Schema] = {
    "topics": TOPICS,
    "posts": POSTS,
    "users": USERS,
    "history": HISTORY,
    "errors": ERRORS,
}

# The columns that identify a row: a table never holds two rows with the same key.
PRIMARY_KEYS: dict[str, tuple[str, ...]] = {
    "topics": ("topic",),
    "posts": ("query", "mid"),
    "users": ("user_id",),
    "history": ("user_id", "mid"),
}
