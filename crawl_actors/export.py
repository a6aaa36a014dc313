"""`socialalign crawl export`: crawl tables -> the research pipeline's formats.

- search CSV per topic (weibo-search's columns): `<out>/search/<topic>.csv`, UTF-8 with BOM;
- one JSON per user (weibo-crawler's layout, `{"user": {...}, "weibo": [...]}`): `<out>/users/<uid>.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from crawl_actors.output import read_table
from crawl_actors.parsers import BEIJING

SEARCH_COLUMNS = (
    "id", "bid", "user_id", "用户昵称", "微博正文", "头条文章url", "发布位置", "艾特用户", "话题", "转发数",
    "评论数", "点赞数", "发布时间", "发布工具", "微博图片url", "微博视频url", "retweet_id", "ip", "user_authentication",
)


def main(argv: list[str] | None = None, prog: str = "socialalign crawl export") -> int:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True, type=Path, help="crawl output dir (holds posts/, users/, history/)")
    parser.add_argument("--out", required=True, type=Path, help="where to write search/ and users/")
    args = parser.parse_args(argv)
    if not (args.input / "posts").is_dir() and not (args.input / "users").is_dir():
        print(f"{prog}: {args.input} holds no crawl tables (run socialalign crawl first)", file=sys.stderr)
        return 2
    searches = export_search_csv(args.input, args.out / "search")
    users = export_user_json(args.input, args.out / "users")
    print(f"exported {searches} search CSV file(s) and {users} user JSON file(s) to {args.out}")
    return 0


def export_search_csv(crawl_dir: Path, out_dir: Path) -> int:
    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for post in read_table(crawl_dir, "posts").to_pylist():
        by_topic[post["query"]].append(post)
    out_dir.mkdir(parents=True, exist_ok=True)
    for topic, posts in by_topic.items():
        with open(out_dir / f"{_safe(topic)}.csv", "w", encoding="utf-8-sig", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(SEARCH_COLUMNS)
            writer.writerows(_search_row(post) for post in posts)
    return len(by_topic)


def export_user_json(crawl_dir: Path, out_dir: Path) -> int:
    posts: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in read_table(crawl_dir, "history").to_pylist():
        posts[row["user_id"]].append(_weibo(row))
    out_dir.mkdir(parents=True, exist_ok=True)
    users = read_table(crawl_dir, "users").to_pylist()
    for user in users:
        payload = {"user": _user(user), "weibo": posts.get(user["user_id"], [])}
        path = out_dir / f"{_safe(user['user_id'])}.json"
        path.write_text(json.dumps(payload, ensure_ascii=False, indent=2), encoding="utf-8")
    return len(users)


def _search_row(post: dict[str, Any]) -> list[Any]:
    return [
        post["mid"], post["bid"] or "", post["user_id"], post["screen_name"] or "", post["text"], "",
        post["location"] or "", ",".join(post["at_users"] or []), ",".join(post["topics"] or []),
        post["reposts_count"] or 0, post["comments_count"] or 0, post["attitudes_count"] or 0,
        _local(post["created_at"], "%Y-%m-%d %H:%M"), post["source"] or "", ",".join(post["pics"] or []),
        post["video_url"] or "", post["retweet_id"] or "", post["region"] or "", post["user_verified"] or "",
    ]


def _user(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": user["user_id"], "screen_name": user["screen_name"], "gender": user["gender"],
        "birthday": user["birthday"] or "", "location": user["location"] or "", "education": user["education"] or "",
        "company": user["company"] or "", "registration_time": user["registered"] or "",
        "sunshine": user["sunshine_credit"] or "", "ip_region": user["ip_region"] or "",
        "statuses_count": user["statuses_count"], "followers_count": user["followers_count"],
        "follow_count": user["follow_count"], "description": user["description"] or "",
        "urank": user["urank"], "mbrank": user["mbrank"], "verified": user["verified"],
        "verified_type": user["verified_type"], "verified_reason": user["verified_reason"] or "",
    }


def _weibo(row: dict[str, Any]) -> dict[str, Any]:
    item = {
        "id": row["mid"], "bid": row["bid"], "text": row["text"], "topics": ",".join(row["topics"] or []),
        "at_users": ",".join(row["at_users"] or []), "created_at": _local(row["created_at"], "%Y-%m-%d"),
        "full_created_at": _local(row["created_at"], "%Y-%m-%d %H:%M:%S"), "source": row["source"] or "",
        "attitudes_count": row["attitudes_count"], "comments_count": row["comments_count"],
        "reposts_count": row["reposts_count"], "pics": ",".join(row["pics"] or []),
    }
    if row["retweet_id"]:
        item["retweet"] = {"id": row["retweet_id"], "text": row["retweet_text"], "screen_name": row["retweet_user"]}
    return item


def _local(moment: datetime | None, fmt: str) -> str:
    return moment.astimezone(BEIJING).strftime(fmt) if moment is not None else ""


def _safe(name: str) -> str:
    return re.sub(r'[\\/:*?"<>|\s]+', "_", name).strip("._") or "topic"
