"""Evaluating with known truth: the simulator's true sentiments and stances, the truth-aware
labeller, the history baseline, the oracle, gap closed, and several runs side by side."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cluster.config import ConfigError
from cluster.reports import read_report
from cluster.schemas import EVALUATION_SUMMARY, PREDICTIONS, RETRIEVAL
from cluster.stage_config import RayConfig
from crawl_actors.simulator import SimulatorConfig, oracle_predictions, truth_table
from crawl_actors.simulator import lexicon as simulator_words
from crawl_actors.simulator.corpus import build_corpus
from serve import make_labeler
from serve.evaluate import combine_runs, spearman
from serve.evaluate.config import EvaluateConfig
from serve.evaluate.history import plurality
from serve.evaluate.job import run
from serve.evaluate.summary import gap_closed
from serve.evaluate.truth import Truth, labeller_vs_truth, wrong_hashtag
from serve.sentiment import simulator_lexicon

WORLD = SimulatorConfig(seed=4, num_users=40, history_posts=(15, 30), hot_topic_posts=60, topic_posts=60,
                        num_topics=3)


# -- the truth-aware labeller ------------------------------------------------------------------------


def test_the_truth_aware_labeller_knows_the_simulators_lexicon_and_gives_the_truth() -> None:
    assert simulator_lexicon.POSITIVE_WORDS == simulator_lexicon_words("POSITIVE_WORDS")
    assert simulator_lexicon.NEGATIVE_WORDS == simulator_lexicon_words("NEGATIVE_WORDS")
    labeler = make_labeler("simulator-lexicon")
    assert labeler.name == "simulator-lexicon"
    posts = list(build_corpus(WORLD).posts.values())
    assert labeler.label([post.text for post in posts]) == [post.sentiment for post in posts]
    assert labeler.label(["", "   "]) == ["unlabelled", "unlabelled"]


def simulator_lexicon_words(name: str) -> tuple[str, ...]:
    return getattr(simulator_words, name)


# -- small pieces ------------------------------------------------------------------------------------


@given(st.lists(st.integers(-10**6, 10**6), min_size=3, max_size=30, unique=True))
def test_spearman_is_one_for_any_increasing_map_and_minus_one_reversed(xs) -> None:
    assert spearman(xs, [x**3 + 2 for x in xs]) == pytest.approx(1.0)
    assert spearman(xs, [-x for x in xs]) == pytest.approx(-1.0)


def test_spearman_with_ties_and_constants() -> None:
    # hand-worked: ranks (1, 2.5, 2.5, 4) against (1, 2, 3, 4): r = 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([1], [2]))


def test_plurality_ties_are_neutral_and_nothing_is_unlabelled() -> None:
    assert plurality(["positive", "positive", "negative"]) == "positive"
    assert plurality(["positive", "negative"]) == "neutral"
    assert plurality(["positive", "neutral", "negative", "negative"]) == "negative"
    assert plurality(["unlabelled", "unlabelled"]) == "unlabelled" == plurality([])


def test_a_wrong_hashtag_is_a_post_whose_hashtags_are_all_other_topics() -> None:
    assert wrong_hashtag("#金价创历史新高# 冲鸭！", "新能源车降价潮")
    assert wrong_hashtag("#高校食堂# 不愧是你 #金价创历史新高#", "#新能源车降价潮#")
    assert not wrong_hashtag("#高校食堂# 不愧是你 #新能源车降价潮#", "新能源车降价潮")  # one of them is its own
    assert not wrong_hashtag("#新能源车降价潮# 保值率越来越好！！", "#新能源车降价潮#")
    assert not wrong_hashtag("新能源车降价潮，保值率越来越好", "新能源车降价潮")  # no hashtag: not counted
    assert not wrong_hashtag("", "x") and not wrong_hashtag(None, "x") and not wrong_hashtag("# 单个井号", "x")


def test_gap_closed_is_zero_at_zero_shot_and_one_at_the_oracle_whichever_way_a_figure_improves() -> None:
    rows = [{"method": "zero-shot", "js": 0.4, "sentiment_macro_f1": 0.3},
            {"method": "oracle", "js": 0.1, "sentiment_macro_f1": 0.7},
            {"method": "pac-lora", "js": 0.25, "sentiment_macro_f1": 0.6}]
    gaps = {row["method"]: row for row in gap_closed(rows)}
    assert gaps["zero-shot"]["gap_closed_js"] == 0 and gaps["oracle"]["gap_closed_js"] == 1
    assert gaps["pac-lora"]["gap_closed_js"] == pytest.approx(0.5)
    assert gaps["pac-lora"]["gap_closed_macro_f1"] == pytest.approx(0.75)
    assert gaps["pac-lora"]["gap_closed_tv"] is None  # the figure is missing
    assert all(row["gap_closed_js"] is None for row in gap_closed(rows[1:]))  # no zero-shot


def test_labeller_against_truth() -> None:
    truth = Truth({"a": "positive", "b": "negative", "c": "neutral", "d": "neutral"})
    scores = labeller_vs_truth({"a": "positive", "b": "positive", "c": "neutral", "d": "unlabelled"}, truth)
    assert scores["posts"] == 4 and scores["unlabelled"] == 1
    assert scores["accuracy"] == pytest.approx(2 / 3)


# -- a whole evaluation on a simulator world -------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("truth")
    corpus = build_corpus(WORLD)
    topic = corpus.topics[1]
    cases = [{"topic": topic.name, "user_id": corpus.posts[mid].uid, "mid": mid, "real": corpus.posts[mid].text}
             for mid in corpus.topic_posts[topic.name]]

    def method(name: str, text) -> Path:
        rows = [{"method": name, "topic": c["topic"], "user_id": c["user_id"], "mid": c["mid"], "sample": 0,
                 "prediction": text(c), "real": c["real"]} for c in cases]
        pq.write_table(pa.Table.from_pylist(rows, schema=PREDICTIONS), root / f"{name}.parquet")
        return root / f"{name}.parquet"

    other = corpus.topics[0].name  # neutral, off topic, under another topic's hashtag
    files = [method("zero-shot", lambda c: f"#{other}# 今天天气不错，出去走走。"),
             method("copy", lambda c: c["real"])]  # the real post itself: perfect
    pq.write_table(oracle_predictions(corpus, cases, samples=4, seed=0), root / "oracle.parquet")
    files.append(root / "oracle.parquet")
    pq.write_table(truth_table(corpus), root / "truth.parquet")
    # build-dataset's retrieval, by hand: each case's user's five latest history posts of the topic's category
    retrieval = []
    for c in cases:
        history = [corpus.posts[mid] for mid in corpus.timelines[c["user_id"]]
                   if corpus.posts[mid].category == topic.category and not corpus.posts[mid].topic][:5]
        retrieval.append({"topic": c["topic"], "user_id": c["user_id"], "mid": c["mid"],
                          "history_mids": [p.mid for p in history], "history_texts": [p.text for p in history],
                          "scores": [1.0] * len(history)})
    (root / "dataset" / "retrieval").mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(retrieval, schema=RETRIEVAL), root / "dataset" / "retrieval" / "part.parquet")
    return {"root": root, "corpus": corpus, "topic": topic, "cases": cases, "files": files, "retrieval": retrieval}


def evaluate(world: dict, out: str, ray_local=None, **overrides) -> Path:
    values = {"predictions": world["files"], "output_dir": world["root"] / out, "labeler": "simulator-lexicon",
              "truth": world["root"] / "truth.parquet", "dataset": world["root"] / "dataset",
              "ray": RayConfig(include_dashboard=False)}
    values.update(overrides)
    assert run(EvaluateConfig(**values)) == 0
    return world["root"] / out


@pytest.fixture(scope="module")
def evaluated(world: dict, ray_local) -> Path:
    return evaluate(world, "eval")


def test_with_truth_real_posts_count_as_their_true_sentiment(world: dict, evaluated: Path) -> None:
    report = read_report(evaluated)
    vs = report["truth"]["labeller_vs_truth"]
    assert vs == {"accuracy": 1.0, "macro_f1": 1.0, "posts": len(world["cases"]), "unlabelled": 0}
    methods = report["methods"]
    assert set(methods) == {"zero-shot", "copy", "oracle", "history-baseline"}
    copy = methods["copy"]
    assert copy["sentiment_accuracy"] == 1.0 and copy["js"] == pytest.approx(0.0)
    # the real posts follow the users' stances, and so do the oracle's fresh posts
    assert report["truth"]["real_spearman_stance"] > 0.4
    assert copy["spearman_stance"] == pytest.approx(report["truth"]["real_spearman_stance"])
    assert methods["oracle"]["spearman_stance"] > 0.4
    assert methods["zero-shot"]["spearman_stance"] is None  # one constant share: no ranking
    # the true crowd: macro distribution of the real side is the truth's
    macro = pq.read_table(evaluated / "macro.parquet").to_pylist()
    truth = Counter(world["corpus"].posts[c["mid"]].sentiment for c in world["cases"])
    real = next(row["real_distribution"] for row in macro if row["method"] == "copy" and row["topic"] != "(mean)")
    assert real == pytest.approx([truth[s] / len(world["cases"]) for s in ("positive", "neutral", "negative")])


def test_gap_closed_topic_mentions_and_wrong_hashtags(evaluated: Path) -> None:
    methods = read_report(evaluated)["methods"]
    assert methods["zero-shot"]["gap_closed_js"] == 0 and methods["oracle"]["gap_closed_js"] == 1
    assert methods["zero-shot"]["gap_closed_macro_f1"] == 0 and methods["oracle"]["gap_closed_macro_f1"] == 1
    assert methods["copy"]["gap_closed_macro_f1"] > 1  # the real posts themselves beat sampling noise
    assert methods["zero-shot"]["topic_mention"] == 0
    assert methods["oracle"]["topic_mention"] == 1 == methods["copy"]["topic_mention"]
    assert methods["history-baseline"]["topic_mention"] is None
    assert methods["zero-shot"]["wrong_hashtag"] == 1
    assert methods["oracle"]["wrong_hashtag"] == 0 == methods["copy"]["wrong_hashtag"]
    assert methods["history-baseline"]["wrong_hashtag"] is None
    summary = pq.read_table(evaluated / "summary.parquet")
    assert summary.schema.names == EVALUATION_SUMMARY.names


def test_the_history_baseline_is_a_method_beside_the_predictions(world: dict, evaluated: Path) -> None:
    report = read_report(evaluated)
    assert report["history_baseline"]["cases"] == len(world["cases"])
    assert report["history_baseline"]["cases_without_history"] == 0
    scored = [row for row in pq.read_table(evaluated / "scored.parquet").to_pylist()
              if row["method"] == "history-baseline"]
    assert len(scored) == len(world["cases"]) and all(row["rouge1"] is None for row in scored)
    labels = {row["mid"]: [world["corpus"].posts[m].sentiment for m in row["history_mids"]]
              for row in world["retrieval"]}
    assert {row["mid"]: row["predicted_label"] for row in scored} == {mid: plurality(v) for mid, v in labels.items()}
    pooled = Counter(label for values in labels.values() for label in values)
    macro = next(row for row in pq.read_table(evaluated / "macro.parquet").to_pylist()
                 if row["method"] == "history-baseline" and row["topic"] != "(mean)")
    total = sum(pooled.values())
    assert macro["predicted_distribution"] == pytest.approx([pooled[s] / total for s in ("positive", "neutral",
                                                                                          "negative")])
    # the users' history leans with their stance, so the baseline ranks users by stance
    assert report["methods"]["history-baseline"]["spearman_stance"] > 0.3


def test_the_report_shows_truth_stance_and_methods(evaluated: Path) -> None:
    text = (evaluated / "report.md").read_text(encoding="utf-8")
    assert "## Truth" in text and "history-baseline" in text and "spearman_stance" in text
    assert "![stance](stance.png)" in text
    with Image.open(evaluated / "stance.png") as image:
        assert image.size == (800, 450)


def test_bad_truth_or_dataset_is_a_config_error_before_ray(world: dict, tmp_path: Path) -> None:
    base = {"predictions": world["files"], "output_dir": tmp_path / "out", "labeler": "simulator-lexicon"}
    with pytest.raises(ConfigError, match="truth: .*no such file"):
        run(EvaluateConfig(**base, truth=tmp_path / "none.parquet"))
    (tmp_path / "broken.parquet").write_bytes(b"no parquet")
    with pytest.raises(ConfigError, match="not a readable Parquet file"):
        run(EvaluateConfig(**base, truth=tmp_path / "broken.parquet"))
    pq.write_table(pa.table({"mid": ["1"]}), tmp_path / "nosentiment.parquet")
    with pytest.raises(ConfigError, match=r"missing column\(s\) \['sentiment'\]"):
        run(EvaluateConfig(**base, truth=tmp_path / "nosentiment.parquet"))
    pq.write_table(pa.table({"mid": ["1"], "sentiment": ["happy"]}), tmp_path / "badlabel.parquet")
    with pytest.raises(ConfigError, match="sentiment must be one of"):
        run(EvaluateConfig(**base, truth=tmp_path / "badlabel.parquet"))
    other = truth_table(build_corpus(SimulatorConfig(seed=99, num_users=10, history_posts=(1, 2), hot_topic_posts=10,
                                                     topic_posts=10, num_topics=2)))
    pq.write_table(other, tmp_path / "other.parquet")
    with pytest.raises(ConfigError, match="is it the truth of this run"):
        run(EvaluateConfig(**base, truth=tmp_path / "other.parquet"))
    with pytest.raises(ConfigError, match="no retrieval table"):
        run(EvaluateConfig(**base, dataset=tmp_path))
    assert not (tmp_path / "out").exists()


def test_several_runs_side_by_side_with_their_spread(world: dict, evaluated: Path, ray_local) -> None:
    second = evaluate(world, "eval-offline", labeler="offline", dataset=None)
    combined = combine_runs([evaluated, second], world["root"] / "seeds")
    assert combined["runs"] == 2
    oracle = combined["methods"]["oracle"]
    first_js = read_report(evaluated)["methods"]["oracle"]["js"]
    second_js = read_report(second)["methods"]["oracle"]["js"]
    assert oracle["macro_js"]["mean"] == pytest.approx((first_js + second_js) / 2)
    assert oracle["gap_closed_js"] == {"mean": 1.0, "sd": 0.0, "runs": 2, "values": [1.0, 1.0]}
    assert combined["methods"]["history-baseline"]["macro_js"]["runs"] == 1  # only the first run has it
    assert combined["methods"]["history-baseline"]["macro_js"]["sd"] is None
    # the offline labeller is not the truth: its error is reported, not hidden
    accuracy = combined["labeller_accuracy"]["values"]
    assert accuracy[0] == 1.0 and accuracy[1] < 1.0
    written = json.loads((world["root"] / "seeds" / "combined.json").read_text(encoding="utf-8"))
    assert written == combined
    assert "oracle" in (world["root"] / "seeds" / "seeds.md").read_text(encoding="utf-8")
    with Image.open(world["root"] / "seeds" / "seeds.png") as image:
        assert image.size == (800, 450)
    # the same from the command's config: runs instead of predictions
    assert run(EvaluateConfig(runs=[evaluated, second], output_dir=world["root"] / "seeds-cli")) == 0
    assert read_report(world["root"] / "seeds-cli")["combined"] == combined
    with pytest.raises(ConfigError, match="not both"):
        run(EvaluateConfig(runs=[evaluated], predictions=world["files"]))
    with pytest.raises(ConfigError, match="no finished evaluation"):
        run(EvaluateConfig(runs=[evaluated, world["root"]]))
