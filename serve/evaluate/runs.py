"""Several evaluations of the same methods (one per seed or world) side by side: mean and spread.

    from serve.evaluate import combine_runs
    combined = combine_runs([Path("eval-seed0"), Path("eval-seed1"), Path("eval-seed2")], Path("eval-seeds"))
    combined["methods"]["pac-lora"]["macro_js"]  # {"mean": .., "sd": .., "runs": 3, "values": [...]}

Each run is an `evaluate` output directory; its `_SUCCESS.json` report is read (nothing is
recomputed). Per method and figure: the mean and the sample standard deviation over the runs that
have the figure (sd None with fewer than two). Into `out_dir`: `seeds.png` (per method bars of the
headline figures with their spread, each run a dot), `seeds.md` (the table) and `combined.json`.
"""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from cluster.reports import read_report

# The combined figure's name -> the summary figure of each run it is taken from.
FIGURES = {
    "micro_accuracy": "sentiment_accuracy",
    "micro_macro_f1": "sentiment_macro_f1",
    "macro_js": "js",
    "macro_tv": "tv",
    "macro_emd": "emd",
    "spearman_stance": "spearman_stance",
    "topic_mention": "topic_mention",
    "wrong_hashtag": "wrong_hashtag",
    "gap_closed_js": "gap_closed_js",
    "gap_closed_macro_f1": "gap_closed_macro_f1",
    "gap_closed_spearman": "gap_closed_spearman",
}
PLOTTED = ("micro_macro_f1", "macro_js", "spearman_stance", "gap_closed_js")


def spread(values: list[float | None]) -> dict[str, Any]:
    """Mean and sample sd of the values there are (None and NaN left out)."""
    kept = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return {"mean": statistics.fmean(kept) if kept else None,
            "sd": statistics.stdev(kept) if len(kept) > 1 else None, "runs": len(kept), "values": kept}


def combine_runs(run_dirs: list[Path], out_dir: Path | None = None) -> dict[str, Any]:
    """Mean and spread per method and figure over the evaluations in `run_dirs`; written to `out_dir` if given."""
    if not run_dirs:
        raise ValueError("combine_runs: give at least one evaluate output directory")
    reports = [read_report(Path(d)) for d in run_dirs]
    methods = list(dict.fromkeys(m for report in reports for m in report["methods"]))
    combined: dict[str, Any] = {"methods": {}, "runs": len(reports)}
    for method in methods:
        rows = [report["methods"].get(method, {}) for report in reports]
        combined["methods"][method] = {name: spread([row.get(source) for row in rows])
                                       for name, source in FIGURES.items()}
    accuracy = [(report.get("truth") or {}).get("labeller_vs_truth", {}).get("accuracy") for report in reports]
    combined["labeller_accuracy"] = spread(accuracy)
    combined["labeller_macro_f1"] = spread(
        [(report.get("truth") or {}).get("labeller_vs_truth", {}).get("macro_f1") for report in reports])
    combined["labeler"] = sorted({report.get("labeler", "") for report in reports})
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "combined.json").write_text(json.dumps(combined, ensure_ascii=False, indent=2), encoding="utf-8")
        plot = _plot(out_dir, combined)
        (out_dir / "seeds.md").write_text(_markdown(combined, [str(d) for d in run_dirs], plot), encoding="utf-8")
    return combined


def _plot(out: Path, combined: dict[str, Any]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from serve.evaluate.report import DPI, FIGURE_SIZE, PALETTE, _save

    methods = list(combined["methods"])
    figure, panels = plt.subplots(1, len(PLOTTED), figsize=FIGURE_SIZE, dpi=DPI)
    for axes, name in zip(panels, PLOTTED, strict=True):
        for k, method in enumerate(methods):
            entry = combined["methods"][method][name]
            colour = PALETTE[k % len(PALETTE)]
            if entry["mean"] is None:
                axes.text(k, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
                continue
            axes.bar(k, entry["mean"], yerr=entry["sd"] or 0.0, capsize=3, color=colour, alpha=0.8)
            axes.scatter([k] * len(entry["values"]), entry["values"], s=8, color="black", zorder=3)
        axes.axhline(0, color="#555555", linewidth=0.6)
        axes.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
        axes.set_title(name, fontsize=9)
        axes.tick_params(axis="y", labelsize=7)
    figure.suptitle(f"mean over {combined['runs']} run(s); bars +- sd, dots: each run "
                    "(js lower is better, the others higher)", fontsize=9)
    figure.tight_layout()
    path = out / "seeds.png"
    _save(figure, path)
    return path


def _markdown(combined: dict[str, Any], runs: list[str], plot: Path) -> str:
    names = list(FIGURES)
    lines = ["# SocialAlign evaluation over several runs", "", f"Runs: {', '.join(runs)}.",
             f"Labeller: {', '.join(combined['labeler'])}; its accuracy against the truth: "
             f"{_cell(combined['labeller_accuracy'])}.", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for method, entries in combined["methods"].items():
        lines.append(f"| {method} | " + " | ".join(_cell(entries[n]) for n in names) + " |")
    lines += ["", "Each cell: mean +- sample sd over the runs that have the figure (n/a: none).", "",
              f"![{plot.stem}]({plot.name})", ""]
    return "\n".join(lines)


def _cell(entry: dict[str, Any]) -> str:
    if entry["mean"] is None:
        return "n/a"
    return f"{entry['mean']:.3f}" + (f" +- {entry['sd']:.3f}" if entry["sd"] is not None else "")
