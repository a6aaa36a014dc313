"""The news text of each topic, given by the user: the BM25 query and the news in the prompt.

The research wrote each topic's news by hand (news.txt per topic). Here it comes from the config
(`news: {topic: text}`), from a topics file (`news_file`), or, for a topic given neither way, from
the crawl's `topics` table (the AI-search summary); a topic without any falls back to `#topic#`.
Each case records which (`news_source`: config | ai_search | hashtag).

A topics file is either lines `topic<TAB>news` (blank lines skipped; `\\n` in the news stands for a
line break, as in the research's news files) or, named *.yaml / *.yml, a YAML list of
`{topic: ..., news: ...}`. A topic may be written with its `#...#`. Any problem is a ConfigError
that names the file and line.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from cluster.config import ConfigError

SOURCES = ("config", "ai_search", "hashtag")


def topic_name(topic: str) -> str:
    return topic.strip().strip("#").strip()


def load_news_file(path: Path) -> dict[str, str]:
    """{topic: news} from a topics file; ConfigError naming the file and line of any problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"news_file: cannot read {path}: {error}") from None
    entries = _yaml_entries(path, text) if path.suffix in (".yaml", ".yml") else _tsv_entries(path, text)
    news: dict[str, str] = {}
    seen: dict[str, int] = {}
    for line, topic, body in entries:
        where = f"news_file {path}:{line}"
        name = topic_name(topic)
        if not name:
            raise ConfigError(f"{where}: the topic is empty")
        if not body.strip():
            raise ConfigError(f"{where}: topic {name!r} has no news text")
        if name in seen:
            raise ConfigError(f"{where}: topic {name!r} is given twice (first on line {seen[name]})")
        seen[name] = line
        news[name] = body.strip()
    if not news:
        raise ConfigError(f"news_file {path}: no topics in it")
    return news


def _tsv_entries(path: Path, text: str) -> list[tuple[int, str, str]]:
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        topic, tab, body = line.partition("\t")
        if not tab:
            raise ConfigError(f"news_file {path}:{number}: expected 'topic<TAB>news', found no tab")
        entries.append((number, topic, body.replace("\\n", "\n")))
    return entries


def _yaml_entries(path: Path, text: str) -> list[tuple[int, str, str]]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"news_file {path}{line}: not valid YAML ({getattr(error, 'problem', error)})") from None
    if not isinstance(root, yaml.SequenceNode):
        line = root.start_mark.line + 1 if root is not None else 1
        raise ConfigError(f"news_file {path}:{line}: expected a YAML list of {{topic: ..., news: ...}}")
    entries = []
    for node in root.value:
        line = node.start_mark.line + 1
        item = yaml.safe_load(yaml.serialize(node)) if isinstance(node, yaml.MappingNode) else None
        if not isinstance(item, dict) or set(item) != {"topic", "news"}:
            raise ConfigError(f"news_file {path}:{line}: expected an item with exactly 'topic' and 'news'")
        if not isinstance(item["topic"], str) or not isinstance(item["news"], str):
            raise ConfigError(f"news_file {path}:{line}: 'topic' and 'news' must be text")
        entries.append((line, item["topic"], item["news"]))
    return entries


def given_news(news: dict[str, str], news_file: Path | None) -> dict[str, str]:
    """The news the user gave: the file's, then the config's (which wins for a topic in both)."""
    given = load_news_file(news_file) if news_file is not None else {}
    return {**given, **news}
