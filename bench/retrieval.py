"""Top-5 retrieval for 2,000 users x 200 posts: our BM25 against the research algorithm.

The research algorithm is re-implemented here as it was written: python jieba, every post
tokenised, then for every (query, post) the query tokenised again and scored word by word.
It takes minutes for 2,000 users, so it runs on a seeded sample of users and its time is scaled
to all of them (its cost is linear in users); agreement is measured on that sample. Ours runs on
all users, single process (`speedup`), and through the Ray Data retrieval job (`job_speedup`).
Posts and news come from the Weibo simulator's corpus (Chinese posts with hashtags, @mentions).

Targets: speedup >= 30; top5_agreement >= 0.99. Last line: one JSON object, ratios first.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dataset_jobs.retrieval import BM25Retriever, repost_document  # noqa: E402


def corpus(users: int, posts: int, seed: int) -> tuple[list[list[str]], str]:
    """`users` histories of exactly `posts` posts, drawn from the simulator's corpus, and a news text."""
    from crawl_actors.simulator import SimulatorConfig, WeiboSimulator

    truth = WeiboSimulator(SimulatorConfig(seed=seed, num_users=300, history_posts=(150, 300))).ground_truth()
    pool = [repost_document(row["text"], row["retweet_text"]) for row in truth["history"]]
    rng = random.Random(seed)
    news = "".join(topic["news"] for topic in truth["topics"])  # a realistic 150-300 character news text
    return [rng.sample(pool, posts) for _ in range(users)], news


def research_top_k(news: str, posts: list[str], k: int = 5, k1: float = 1.5, b: float = 0.75) -> list[int]:
    import jieba

    docs = [list(jieba.cut(post)) for post in posts]
    avgdl = np.mean([len(doc) for doc in docs])
    word_freq, doc_freq = Counter(), Counter()
    for doc in docs:
        word_freq.update(doc)
        doc_freq.update(set(doc))
    scored = []
    for index, doc in enumerate(docs):
        query_words = list(jieba.cut(news))
        score, counts = 0.0, Counter(doc)
        for word in query_words:
            if word not in word_freq:
                continue
            idf = np.log((len(docs) - doc_freq[word] + 0.5) / (doc_freq[word] + 0.5) + 1)
            tf = counts[word]
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(doc) / avgdl))
        scored.append((index, score))
    scored.sort(key=lambda item: item[1], reverse=True)
    return [index for index, _ in scored[:k]]


def ray_data_job(histories: list[list[str]], news: str) -> float:
    """Seconds for the retrieval step of `socialalign build-dataset` over the same histories."""
    from datetime import datetime, timedelta, timezone

    import pyarrow as pa
    import ray

    from cluster.parquet import atomic_write_parquet
    from cluster.schemas import CASES, CLEAN_HISTORY
    from cluster.stage_config import RayConfig
    from dataset_jobs.config import DatasetConfig
    from dataset_jobs.steps import retrieve

    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    with tempfile.TemporaryDirectory() as work:
        out = Path(work)
        history = [{"user_id": f"u{u}", "mid": f"{u}-{i}", "text": post, "retweet_text": None,
                    "created_at": start + timedelta(minutes=i)} for u, posts in enumerate(histories)
                   for i, post in enumerate(posts)]
        cases = [{"topic": "t", "news": news, "user_id": f"u{u}", "user_name": f"用户{u}", "mid": f"case-{u}",
                  "output": "x", "created_at": start + timedelta(days=30)} for u in range(len(histories))]
        for name, rows, schema in (("history", history, CLEAN_HISTORY), ("cases", cases, CASES)):
            (out / "clean" / name).mkdir(parents=True)
            atomic_write_parquet(pa.Table.from_pylist(rows, schema=schema), out / "clean" / name / "part-000.parquet")
        ray.init(num_cpus=4, include_dashboard=False, logging_level="ERROR")
        try:
            config = DatasetConfig(output_dir=out, ray=RayConfig(include_dashboard=False))
            began = time.perf_counter()
            retrieve.build(config, out, out)
            return time.perf_counter() - began
        finally:
            ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--sample", type=int, default=200,
                        help="users the research algorithm runs on (200: one mismatch moves agreement by 0.5%%)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import jieba

    jieba.setLogLevel(60)
    jieba.initialize()
    histories, news = corpus(args.users, args.posts, args.seed)
    BM25Retriever().rank(news, histories[0][:5], 5)  # load rjieba's dictionary outside the timing

    began = time.perf_counter()
    ours = [[i for i, _ in BM25Retriever().rank(news, posts, 5)] for posts in histories]
    ours_s = time.perf_counter() - began

    sample = random.Random(args.seed).sample(range(args.users), min(args.sample, args.users))
    began = time.perf_counter()
    research = {u: research_top_k(news, histories[u]) for u in sample}
    research_sample_s = time.perf_counter() - began
    research_s = research_sample_s * args.users / len(sample)
    agreement = sum(research[u] == ours[u] for u in sample) / len(sample)

    job_s = ray_data_job(histories, news)
    figures = {
        "speedup": research_s / ours_s,
        "top5_agreement": agreement,
        "job_speedup": research_s / job_s,
        "ours_seconds": ours_s,
        "ray_data_job_seconds": job_s,
        "research_seconds_scaled": research_s,
        "research_sample_users": len(sample),
        "research_sample_seconds": research_sample_s,
        "users": args.users,
        "posts_per_user": args.posts,
        "news_chars": len(news),
    }
    print(f"ours {ours_s:.1f}s (Ray Data job {job_s:.1f}s), research {research_s:.0f}s scaled from "
          f"{len(sample)} users, top-5 agreement {agreement:.3f}", file=sys.stderr)
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in figures.items()}))


if __name__ == "__main__":
    main()
