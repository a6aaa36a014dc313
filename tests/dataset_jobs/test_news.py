"""News text per topic from the config or a topics file: the BM25 query and the prompt's news; a bad
topics file is a ConfigError naming the file and line, raised before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from cluster.config import ConfigError, load_config
from dataset_jobs.config import DatasetConfig
from dataset_jobs.job import run
from dataset_jobs.news import given_news, load_news_file
from dataset_jobs.steps.clean import _news


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_topics_file_lines_become_news(tmp_path: Path) -> None:
    path = write(tmp_path, "topics.tsv", "#山姆超市翻车#\t十天翻车三次。\\n屡现风波。\n\n马拉松\t报名人数创新高 \n")
    assert load_news_file(path) == {"山姆超市翻车": "十天翻车三次。\n屡现风波。", "马拉松": "报名人数创新高"}


def test_a_yaml_list_of_topics(tmp_path: Path) -> None:
    path = write(tmp_path, "topics.yaml",
                 "- topic: '#山姆超市翻车#'\n  news: |\n    第一行\n    第二行\n- {topic: 马拉松, news: 报名}\n")
    assert load_news_file(path) == {"山姆超市翻车": "第一行\n第二行", "马拉松": "报名"}


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("topics.tsv", "甲\t新闻一\n乙 新闻二\n", r"topics.tsv:2: expected 'topic<TAB>news', found no tab"),
        ("topics.tsv", "甲\t新闻一\n\n乙\t  \n", r"topics.tsv:3: topic '乙' has no news text"),
        ("topics.tsv", "##\t新闻\n", r"topics.tsv:1: the topic is empty"),
        ("topics.tsv", "甲\t一\n#甲#\t二\n", r"topics.tsv:2: topic '甲' is given twice \(first on line 1\)"),
        ("topics.tsv", "\n\n", r"topics.tsv: no topics in it"),
        ("topics.yaml", "- topic: 甲\n  news: 一\n- topic: 乙\n", r"topics.yaml:3: expected an item with exactly"),
        ("topics.yaml", "甲: 一\n", r"topics.yaml:1: expected a YAML list"),
        ("topics.yaml", "- topic: 甲\n  news: [一\n", r"topics.yaml:\d+: not valid YAML"),
        ("topics.yml", "- topic: 甲\n  news: 3\n", r"topics.yml:1: 'topic' and 'news' must be text"),
    ],
)
def test_a_bad_topics_file_names_file_and_line(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"news_file {tmp_path}/{message}"):
        load_news_file(write(tmp_path, name, text))


def test_a_missing_topics_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="news_file: cannot read .*nowhere.tsv"):
        load_news_file(tmp_path / "nowhere.tsv")


def test_the_config_wins_over_the_file_and_the_file_over_the_crawl(tmp_path: Path) -> None:
    path = write(tmp_path, "topics.tsv", "甲\t文件里的甲\n乙\t文件里的乙\n")
    given = given_news({"甲": "配置里的甲"}, path)
    assert given == {"甲": "配置里的甲", "乙": "文件里的乙"}
    crawled = {"乙": {"news": "AI搜索的乙", "source": "ai_search"}, "丙": {"news": "AI搜索的丙", "source": "ai_search"},
               "丁": {"news": "爬虫配置的丁", "source": "config"}}
    assert _news("甲", given, crawled) == ("配置里的甲", "config")
    assert _news("乙", given, crawled) == ("文件里的乙", "config")
    assert _news("丙", given, crawled) == ("AI搜索的丙", "ai_search")
    assert _news("丁", given, crawled) == ("爬虫配置的丁", "config")
    assert _news("戊", given, crawled) == ("#戊#", "hashtag")


def test_news_in_the_config_is_checked_when_it_loads(tmp_path: Path) -> None:
    config = load_config(DatasetConfig, overrides=["news.山姆超市翻车=山姆超市十天翻车三次"], environ={})
    assert config.news == {"山姆超市翻车": "山姆超市十天翻车三次"}
    path = write(tmp_path, "hashtag.yaml", "# config: build-dataset\nnews:\n  '#山姆超市翻车#': ' 十天翻车三次\n'\n")
    assert load_config(DatasetConfig, path, environ={}).news == {"山姆超市翻车": "十天翻车三次"}
    path = write(tmp_path, "dataset.yaml", "# config: build-dataset\nnews:\n  山姆超市翻车: '  '\n")
    with pytest.raises(ConfigError, match="the news of '山姆超市翻车' is empty"):
        load_config(DatasetConfig, path, environ={})


def test_a_bad_topics_file_stops_the_stage_before_any_work(crawl_dir: Path, tmp_path: Path) -> None:
    bad = write(tmp_path, "topics.tsv", "甲\t新闻\n乙\n")
    out = tmp_path / "dataset"
    with pytest.raises(ConfigError, match=rf"news_file {bad}:2: expected 'topic<TAB>news'"):
        run(DatasetConfig(crawl_dir=crawl_dir, output_dir=out, news_file=bad))
    assert not out.exists()
