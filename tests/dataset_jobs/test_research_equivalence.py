"""`build-dataset preset=research` against results worked out by hand from the research code
(github.com/Znull-1220/SocialAlign, dataset_construction/ and utils/): a hand-written crawl of three
users, written as the crawl's Parquet tables, through the real stage on the session's local Ray.

What the research does, step by step, for this crawl (the comments on HISTORY say why each post
goes or stays):
- clean_user_history.filter_weibo: text and repost text cleaned (a card after a line break goes,
  `#...的微博视频` becomes `#`, any three characters before a line break and 全文 go); a post is
  dropped for an excluded repost topic, repost text, topic, text or the user's name (in that order),
  a topic of at most 3 characters, a text of hashtags only, no text, or no topic.
- organize_dataset: per case, the user's history without the case's own post; fewer than 10 posts:
  no case; else BM25 (jieba, k1 1.5, b 0.75, ties in timeline order, newest first) of the topic's
  news against each post (text + ' ' + reposted text), top 5.
- extract_user_persona: one request per case from its 5 posts (a repost: 该用户转发了微博: X, 并评论说: Y).
- organize_alphca_dataset: the prompt (a repost: 你转发了微博: X, 并评论说: Y; blank lines of the
  persona collapsed), the target post cleaned as the output.

BM25 by hand, case (山姆超市翻车事件, A-T1): the news' words 山姆, 超市, 牛奶, 虫卵 and '，' occur in
a01 (all five), a02 (山姆 超市 牛奶), a03 (山姆) and nowhere else among the 11 posts, so a01 > a02 >
a03, then the two newest posts that score 0: A-T2 (the same user's post on the other topic), a10.
Case (城市马拉松报名创新高, A-T2): 今年 and 马拉松 occur in a07, 城市 in a06 (its reposted text),
nothing else: a07 > a06, then A-T1, a10, a09.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from cluster.config import load_config
from cluster.parquet import atomic_write_parquet, read_table_dir
from cluster.schemas import CASES, CLEAN_HISTORY, CRAWL_TABLES, PERSONAS, RETRIEVAL, SFT
from dataset_jobs.config import DatasetConfig
from dataset_jobs.job import SUCCESS, run
from tests.fakes.openai_server import FakeLLM


def at(month: int, day: int, hour: int = 8) -> datetime:
    return datetime(2024, month, day, hour, tzinfo=timezone.utc)


T1, T2 = "山姆超市翻车事件", "城市马拉松报名创新高"
A, B, C = "1001", "1002", "1003"
NAMES = {A: "小明同学", B: "阿花", C: "跑步的老王"}
NEWS_T1 = "山姆超市十天内翻车三次，牛奶盒内出现虫卵。"  # given in the topics file: wins over the crawl's
NEWS_T2 = "今年城市马拉松报名人数突破三十万。"  # the crawl's AI-search summary

# (user, mid, text, topics, reposted text, time)
HISTORY = [
    (A, "a01", "#食品安全问题# 山姆超市的牛奶盒里有虫卵，太吓人了", ["食品安全问题"], None, at(10, 1)),
    (A, "a02", "#周末囤货清单# 周末去山姆超市囤货 顺便买了牛奶", ["周末囤货清单"], None, at(10, 2)),
    (A, "a03", "#烤鸡爱好者# 山姆的烤鸡还是很香的", ["烤鸡爱好者"], None, at(10, 3)),
    (A, "a04", "#晚霞观察笔记# 下班路上看到晚霞很漂亮\n小明同学的微博视频", ["晚霞观察笔记"], None, at(10, 4)),  # card
    (A, "a05", "#家常菜谱大全# 晚饭做了番茄炒蛋 真好吃啊\n全文", ["家常菜谱大全"], None, at(10, 5)),  # 好吃啊 goes
    (A, "a06", "#全民健身运动# 说得太对了", ["全民健身运动"], "城市跑步的人越来越多了", at(10, 6)),  # a repost
    (A, "a07", "#晨跑记录本# 早上跑了五公里 今年的目标是跑一次马拉松", ["晨跑记录本"], None, at(10, 7)),
    (A, "a08", "新买的书到了 #读书计划表#王小二的微博视频", ["读书计划表"], None, at(10, 8)),  # '#...的微博视频' -> '#'
    (A, "a09", "#街边面馆探店# 公司楼下新开了一家面馆 味道一般", ["街边面馆探店"], None, at(10, 9)),
    (A, "a10", "#周末去哪儿玩# 周末去郊外爬山 空气很好", ["周末去哪儿玩"], None, at(10, 10)),
    (A, "A-T1", "#山姆超市翻车事件# 山姆超市又翻车了，以后少去\n小明同学的微博视频", [T1], None, at(11, 1, 10)),
    (A, "A-T2", "#城市马拉松报名创新高# 今年又没中签 明年继续", [T2], None, at(11, 2, 10)),
    (A, "d1", "#周末计划安排# @小红 周末一起去山姆吗", ["周末计划安排"], None, at(9, 1)),  # '@' is an excluded text
    (A, "d2", "今天的晚霞很好看", [], None, at(9, 2)),  # no topic
    (A, "d3", "#求助# 电脑开不了机了", ["求助"], None, at(9, 3)),  # a topic of 2 characters
    (A, "d4", "#海边旅游攻略# 准备出发去海边", ["海边旅游攻略"], None, at(9, 4)),  # '旅游' is an excluded topic
    (A, "d5", "#好运连连来# 手气不错", ["好运连连来"], "转发本条微博参与抽奖 送手机", at(9, 5)),  # '抽奖' reposted
    (A, "d6", "#祝福送给你们# 祝福", ["祝福送给你们"], "#生日快乐# 今天是我的生日", at(9, 6)),  # '生日' reposted topic
    (A, "d7", "#努力的每一天# 小明同学今天也很努力", ["努力的每一天"], None, at(9, 7)),  # the user's own name
    (A, "d8", "#山姆超市翻车事件# #食品安全问题#", [T1, "食品安全问题"], None, at(9, 8)),  # hashtags only
    (A, "d9", "", [], "好消息 城市马拉松扩容", at(9, 9)),  # a repost without words of its own
    *[(B, f"b{i:02d}", f"#我的跑步日记# 今天跑了{i}公里", ["我的跑步日记"], None, at(10, i)) for i in range(1, 10)],
    *[(C, f"c{i:02d}", f"#书法练习记录# 今天写了{i}页字", ["书法练习记录"], None, at(10, i)) for i in range(1, 10)],
    (C, "C-T2", "#城市马拉松报名创新高# 报上了 开心", [T2], None, at(11, 3, 10)),
]
# (topic, user, mid): A posted on both topics; B has 9 usable posts; C has 10 with its case's own post.
POSTS = [(T1, A, "A-T1"), (T2, A, "A-T2"), (T1, B, "B-T1"), (T2, C, "C-T2")]
TARGET_TEXTS = {"B-T1": "#山姆超市翻车事件# 再也不去了"}

# Worked out by hand: what stays, as the research leaves it, and why the rest goes.
CLEANED = {
    "a01": "#食品安全问题# 山姆超市的牛奶盒里有虫卵，太吓人了",
    "a02": "#周末囤货清单# 周末去山姆超市囤货 顺便买了牛奶",
    "a03": "#烤鸡爱好者# 山姆的烤鸡还是很香的",
    "a04": "#晚霞观察笔记# 下班路上看到晚霞很漂亮",
    "a05": "#家常菜谱大全# 晚饭做了番茄炒蛋 真",
    "a06": "#全民健身运动# 说得太对了",
    "a07": "#晨跑记录本# 早上跑了五公里 今年的目标是跑一次马拉松",
    "a08": "新买的书到了 #读书计划表#",
    "a09": "#街边面馆探店# 公司楼下新开了一家面馆 味道一般",
    "a10": "#周末去哪儿玩# 周末去郊外爬山 空气很好",
    "A-T1": "#山姆超市翻车事件# 山姆超市又翻车了，以后少去",
    "A-T2": "#城市马拉松报名创新高# 今年又没中签 明年继续",
    **{f"c{i:02d}": f"#书法练习记录# 今天写了{i}页字" for i in range(1, 10)},
    "C-T2": "#城市马拉松报名创新高# 报上了 开心",
}
DROPPED = {"excluded_word": 1, "no_topic": 1, "short_topic": 1, "excluded_topic": 1, "excluded_retweet_text": 1,
           "excluded_retweet_topic": 1, "own_name": 1, "hashtags_only": 1, "no_own_text": 1, "user_too_few_posts": 9}
RETRIEVED = {(T1, "A-T1"): ["a01", "a02", "a03", "A-T2", "a10"], (T2, "A-T2"): ["a07", "a06", "A-T1", "a10", "a09"]}

SYSTEM = "\n你是一个微博平台的用户分析师，负责从用户信息和历史博文中抽取用户特征，生成用户画像。\n"
REQUEST_HEAD = (
    "你的任务是基于以下用户名和该用户的历史博文，生成该用户的详细用户画像。请从以下几个维度进行刻画：\n\n"
    "1. 兴趣话题：用户关注的主题、喜欢讨论的话题、常提及的领域。\n"
    "2. 语言风格：用户常用的表达方式、口头禅、语气（如幽默、正式、随意等）。\n"
    "3. 情感基调：用户在博文中表现出的情感倾向，通常是积极的、消极的还是中立的。\n"
    "4. 性格特征：用户在博文中体现的性格特征，如乐观、悲观、独立等。\n"
    "5. 价值观：用户在博文中体现的价值观，如重视环保、关注社会公平等。\n\n"
    "请根据以上格式带数字标号分项列举，精简地对该用户做用户画像，以便更好地预测该用户对某一新闻话题可能发表的博文。每项不超过20字。\n\n"
    "请注意，不需要预测用户对特定新闻的具体观点；无需提示词，直接输出用户画像即可；不要使用Markdown格式。\n\n"
    "用户信息：\n用户名：小明同学\n\n历史博文：\n"
)
REQUESTS = {
    (T1, "A-T1"): REQUEST_HEAD + (
        "1. #食品安全问题# 山姆超市的牛奶盒里有虫卵，太吓人了\n"
        "2. #周末囤货清单# 周末去山姆超市囤货 顺便买了牛奶\n"
        "3. #烤鸡爱好者# 山姆的烤鸡还是很香的\n"
        "4. #城市马拉松报名创新高# 今年又没中签 明年继续\n"
        "5. #周末去哪儿玩# 周末去郊外爬山 空气很好"),
    (T2, "A-T2"): REQUEST_HEAD + (
        "1. #晨跑记录本# 早上跑了五公里 今年的目标是跑一次马拉松\n"
        "2. 该用户转发了微博: 城市跑步的人越来越多了, 并评论说: #全民健身运动# 说得太对了\n"
        "3. #山姆超市翻车事件# 山姆超市又翻车了，以后少去\n"
        "4. #周末去哪儿玩# 周末去郊外爬山 空气很好\n"
        "5. #街边面馆探店# 公司楼下新开了一家面馆 味道一般"),
}
ANSWER = "1. 兴趣话题：超市购物、食品安全与城市里的各种跑步赛事\n\n2. 语言风格：口语化，简短\n3. 情感基调：中立偏谨慎"
PERSONA = "1. 兴趣话题：超市购物、食品安全与城市里的各种跑步赛事\n2. 语言风格：口语化，简短\n3. 情感基调：中立偏谨慎"
INSTRUCTION_TAIL = (
    "    - 可以参考你的个人信息、历史博文、用户画像和这则新闻，用自己的风格和立场发表观点\n"
    "    - 这条微博的长度应与你的历史博文相似\n"
    "    - 不要强行参考历史信息\n"
    "    - 仅输出你发表的微博内容"
)
PROMPTS = {
    (T1, "A-T1"): (
        "你的用户名为小明同学, 以下是你的五条历史博文: \n"
        "1. #食品安全问题# 山姆超市的牛奶盒里有虫卵，太吓人了\n"
        "2. #周末囤货清单# 周末去山姆超市囤货 顺便买了牛奶\n"
        "3. #烤鸡爱好者# 山姆的烤鸡还是很香的\n"
        "4. #城市马拉松报名创新高# 今年又没中签 明年继续\n"
        "5. #周末去哪儿玩# 周末去郊外爬山 空气很好\n"
        f"以下是你的用户画像：\n{PERSONA}\n",
        "现在你看到了一则新闻: \n山姆超市十天内翻车三次，牛奶盒内出现虫卵。\n"
        "关于这个新闻的hashtag #山姆超市翻车事件# 登上了微博热搜",
        "，请发一条关于hashtag #山姆超市翻车事件# 的微博，请注意：\n" + INSTRUCTION_TAIL,
    ),
    (T2, "A-T2"): (
        "你的用户名为小明同学, 以下是你的五条历史博文: \n"
        "1. #晨跑记录本# 早上跑了五公里 今年的目标是跑一次马拉松\n"
        "2. 你转发了微博: 城市跑步的人越来越多了, 并评论说: #全民健身运动# 说得太对了\n"
        "3. #山姆超市翻车事件# 山姆超市又翻车了，以后少去\n"
        "4. #周末去哪儿玩# 周末去郊外爬山 空气很好\n"
        "5. #街边面馆探店# 公司楼下新开了一家面馆 味道一般\n"
        f"以下是你的用户画像：\n{PERSONA}\n",
        "现在你看到了一则新闻: \n今年城市马拉松报名人数突破三十万。\n"
        "关于这个新闻的hashtag #城市马拉松报名创新高# 登上了微博热搜",
        "，请发一条关于hashtag #城市马拉松报名创新高# 的微博，请注意：\n" + INSTRUCTION_TAIL,
    ),
}
OUTPUTS = {(T1, "A-T1"): "#山姆超市翻车事件# 山姆超市又翻车了，以后少去",
           (T2, "A-T2"): "#城市马拉松报名创新高# 今年又没中签 明年继续"}


class RecordingLLM(FakeLLM):
    """The fake endpoint, answering ANSWER and keeping every request's messages."""

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[list[dict[str, str]]] = []

    def answer(self, prompt: str) -> str:  # type: ignore[override]
        return ANSWER

    async def _chat(self, request):  # type: ignore[no-untyped-def]
        body = await request.json()
        with self._lock:
            self.requests.append(body["messages"])
        return await super()._chat(request)


def write_crawl(root: Path) -> None:
    now = datetime(2024, 11, 5, tzinfo=timezone.utc)
    texts = {mid: text for _, mid, text, *_ in HISTORY} | TARGET_TEXTS
    tables = {
        "topics": [{"topic": T1, "news": "AI搜索给的摘要（话题文件的新闻优先）", "source": "ai_search",
                    "crawled_at": now},
                   {"topic": T2, "news": NEWS_T2, "source": "ai_search", "crawled_at": now}],
        "posts": [{"mid": mid, "user_id": user, "screen_name": NAMES[user], "text": texts[mid], "query": topic,
                   "topics": [topic], "created_at": at(11, 1, 10), "found_by": "search", "crawled_at": now}
                  for topic, user, mid in POSTS],
        "users": [{"user_id": user, "screen_name": name, "crawled_at": now} for user, name in NAMES.items()],
        "history": [{"user_id": user, "mid": mid, "text": text, "topics": topics, "retweet_text": retweet,
                     "retweet_id": f"r-{mid}" if retweet is not None else None, "created_at": when, "crawled_at": now}
                    for user, mid, text, topics, retweet, when in HISTORY],
    }
    for name, rows in tables.items():
        (root / name).mkdir(parents=True)
        atomic_write_parquet(pa.Table.from_pylist(rows, schema=CRAWL_TABLES[name]), root / name / "part-000.parquet")


@pytest.fixture(scope="module")
def research(tmp_path_factory: pytest.TempPathFactory, ray_local) -> tuple[Path, RecordingLLM]:
    root = tmp_path_factory.mktemp("research")
    write_crawl(root / "crawl")
    (root / "topics.tsv").write_text(f"#{T1}#\t{NEWS_T1}\n", encoding="utf-8")
    with RecordingLLM().running() as llm:
        config = load_config(DatasetConfig, overrides=[
            "preset=research", f"crawl_dir={root / 'crawl'}", f"output_dir={root / 'dataset'}",
            f"news_file={root / 'topics.tsv'}", f"persona.base_url={llm.base_url}", "persona.model=fake-persona-1",
            f"test_topics=[{T2}]", "ray.include_dashboard=false"], environ={})
        assert run(config) == 0
    return root / "dataset", llm


def report(out: Path, step: str) -> dict:
    return json.loads((out / step / SUCCESS).read_text())["report"]


def test_cleaned_texts_and_the_rule_that_dropped_each_post(research) -> None:
    out, _ = research
    kept = {row["mid"]: row for row in read_table_dir(out / "clean" / "history", CLEAN_HISTORY).to_pylist()}
    assert {mid: row["text"] for mid, row in kept.items()} == CLEANED
    assert kept["a06"]["retweet_text"] == "城市跑步的人越来越多了"
    clean = report(out, "clean")
    assert {rule: n for rule, n in clean["dropped_by_rule"].items() if n} == DROPPED
    assert (clean["history_rows_in"], clean["history_rows_kept"]) == (len(HISTORY), len(CLEANED))
    # B has 9 usable posts; C has 10, but its case's own post leaves 9 for the case: no case for either
    assert (clean["cases"], clean["cases_dropped_user"], clean["cases_dropped_too_few_posts"]) == (2, 1, 1)


def test_cases_take_the_given_news_before_the_crawls(research) -> None:
    out, _ = research
    cases = {(row["topic"], row["mid"]): row for row in read_table_dir(out / "clean" / "cases", CASES).to_pylist()}
    assert {key: (row["news"], row["news_source"], row["output"]) for key, row in cases.items()} == {
        (T1, "A-T1"): (NEWS_T1, "config", OUTPUTS[(T1, "A-T1")]),
        (T2, "A-T2"): (NEWS_T2, "ai_search", OUTPUTS[(T2, "A-T2")]),
    }


def test_retrieved_posts_in_order(research) -> None:
    out, _ = research
    rows = read_table_dir(out / "retrieval", RETRIEVAL).to_pylist()
    assert {(row["topic"], row["mid"]): row["history_mids"] for row in rows} == RETRIEVED
    assert report(out, "retrieval")["cases_by_history_length"] == {"5": 2}


def test_persona_requests_byte_for_byte_one_per_case(research) -> None:
    out, llm = research
    asked = sorted((messages[0]["content"], messages[1]["content"]) for messages in llm.requests)
    assert asked == sorted((SYSTEM, request) for request in REQUESTS.values())
    personas = read_table_dir(out / "personas", PERSONAS).to_pylist()
    assert {(row["topic"], row["mid"]): row["persona"] for row in personas} == {key: PERSONA for key in REQUESTS}
    assert all(row["source"] == "llm" for row in personas)


def test_prompts_byte_for_byte(research) -> None:
    out, _ = research
    rows = [row for split in ("train", "test") for row in read_table_dir(out / "sft" / split, SFT).to_pylist()]
    full = {(row["topic"], row["mid"]): row for row in rows if row["variant"] == "full"}
    assert {key: (row["user_part"], row["news_part"], row["instruction_part"]) for key, row in full.items()} == PROMPTS
    for key, row in full.items():
        assert row["instruction"] == "".join(PROMPTS[key]) and row["input"] == "" and row["output"] == OUTPUTS[key]
        assert row["split"] == ("test" if key[0] == T2 else "train")
    assert {row["news_source"] for row in full.values()} == {"config", "ai_search"}
