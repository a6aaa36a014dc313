"""A small, learnable SFT set in the real table format, for tests, benchmarks and the demo.

Each synthetic user always writes in one recognisable way (a fixed phrase pattern around the
topic), so a model that reads the user part and the news part can learn to predict the post;
rows are built with `pac_lora.research_prompt_parts` and written with `cluster.schemas.SFT`,
exactly like the dataset stage's output.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cluster.schemas import SFT
from pac_lora import VARIANTS, research_prompt_parts

USERS = (
    ("阳光小明", "积极乐观，喜欢点赞", "支持！{topic}太好了，加油加油！"),
    ("吐槽小红", "爱吐槽，语气不耐烦", "唉，{topic}，又是这样，无语了。"),
    ("数码老王", "理性分析，喜欢列数据", "从数据看，{topic}影响有限，理性看待。"),
    ("路人阿飞", "冷淡，不太关心新闻", "哦，{topic}，关我什么事。"),
    ("热心大姐", "热心肠，提醒大家注意安全", "{topic}！大家一定注意安全，互相帮助！"),
    ("段子手", "幽默，爱玩梗", "{topic}？笑死，今天的热搜又是段子[doge]"),
    ("老师小李", "认真，喜欢讲道理", "关于{topic}，我们应当冷静思考，明辨是非。"),
    ("追星女孩", "情绪化，爱用感叹号", "啊啊啊{topic}！！冲鸭！！"),
)
TOPICS = (
    ("北京交通新政", "北京发布了新的交通政策，早晚高峰部分道路限行。"),
    ("上海暴雨", "上海今天遭遇特大暴雨，多条地铁线路临时停运。"),
    ("新品发布会", "某品牌今天举行新品发布会，新手机价格下调。"),
    ("高考放榜", "今年高考成绩今天公布，各地陆续放榜。"),
    ("春运开启", "春运今天正式开启，预计旅客发送量创新高。"),
    ("台风登陆", "台风今天下午在沿海登陆，多地发布预警。"),
)


def synthetic_sft_rows(
    num_users: int = 8,
    num_topics: int = 6,
    test_topics: int = 1,
    variants: tuple[str, ...] = VARIANTS,
    history_posts: int = 2,
    copies: int = 1,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (topic, user, variant, copy); the last `test_topics` topics form the test split.

    `history_posts` lengthens the prompts; `copies` repeats every row under its own id (a bigger set
    for benchmarks)."""
    if not 1 <= num_users <= len(USERS) or not 1 <= num_topics <= len(TOPICS):
        raise ValueError(f"at most {len(USERS)} users and {len(TOPICS)} topics")
    rng = random.Random(seed)
    rows = []
    for t, (topic, news) in enumerate(TOPICS[:num_topics]):
        split = "test" if t >= num_topics - test_topics else "train"
        for u, (name, persona, style) in enumerate(USERS[:num_users]):
            others = [other for other, _ in TOPICS if other != topic]
            picked = rng.sample(others, min(history_posts, len(others)))
            picked += rng.choices(others, k=history_posts - len(picked))
            history = [style.format(topic=other) for other in picked]
            for variant, copy in ((v, c) for c in range(copies) for v in variants):
                parts = research_prompt_parts(name, history, persona, news, topic, variant)
                mid = f"{t:02d}{u:02d}" + (f"c{copy}" if copy else "")
                rows.append(
                    {
                        "id": f"{topic}|u{u}|{mid}|{variant}",
                        "split": split,
                        "variant": variant,
                        "topic": topic,
                        "news": news,
                        "user_id": f"u{u}",
                        "user_name": name,
                        "mid": mid,
                        "instruction": parts.instruction,
                        "input": "",
                        "output": style.format(topic=topic),
                        "user_part": parts.user_part,
                        "news_part": parts.news_part,
                        "instruction_part": parts.instruction_part,
                        "persona": persona,
                        "history_mids": [f"h{u}{i}" for i in range(len(history))],
                    }
                )
    return rows


def write_synthetic_sft(directory: str | Path, rows: list[dict[str, Any]] | None = None, **kwargs: Any) -> Path:
    """Write `<directory>/{train,test}/part-0.parquet` with the SFT schema; returns `directory`."""
    directory = Path(directory)
    rows = synthetic_sft_rows(**kwargs) if rows is None else rows
    for split in ("train", "test"):
        chosen = [row for row in rows if row["split"] == split]
        (directory / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(chosen, schema=SFT), directory / split / "part-0.parquet")
    return directory


def synthetic_corpus(rows: list[dict[str, Any]] | None = None) -> list[str]:
    """The texts of the set, to train a tiny tokenizer that encodes it compactly."""
    rows = synthetic_sft_rows() if rows is None else rows
    return [row["instruction"] + row["output"] for row in rows]
