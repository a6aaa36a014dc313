"""The evaluation report: Markdown tables and PNG plots.

- `distribution-<n>.png` per topic: the real sentiment distribution beside each method's prediction;
- `methods.png` when several methods are compared: micro and macro metrics side by side;
- `gates-<k>.png` per method whose predictions carry expert gates (`predict return_gates=true`):
  the mean analyze and compose gate weights of its posts, by their predicted sentiment;
- `stance.png` with known truth: per method, each user's predicted positive share on a topic against
  the user's true stance on its category (Spearman's rho in each panel's title), the real posts first.
Plots name topics T1, T2, ... (the report's table maps them to the topic), so they read the same
on machines without a CJK font.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from serve import SENTIMENTS

FIGURE_SIZE = (8.0, 4.5)  # inches; at DPI this is 800 x 450 pixels
DPI = 100
COLOURS = {"real": "#555555"}
PALETTE = ("#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")


def write_report(out: Path, summary: list[dict], macro: list[dict], labeler: str, gates: list[dict] = (),
                 extra: dict[str, Any] | None = None,
                 stance: dict[str, list[tuple[float, float]]] | None = None) -> Path:
    """`gates`: summary.gate_means rows (method, sentiment, posts, analyze, compose); none: no gate plot.
    `extra`: the truth and history-baseline reports; `stance`: per method, (true stance, positive share)."""
    extra = extra or {}
    import matplotlib

    matplotlib.use("Agg")
    topics = sorted({row["topic"] for row in macro if row["topic"] != "(mean)"})
    names = {topic: f"T{i}" for i, topic in enumerate(topics, 1)}
    methods = [row["method"] for row in summary]
    real_name = "real (truth)" if extra.get("truth") else "real"
    plots = [_distribution_plot(out, names[t], t, [row for row in macro if row["topic"] == t], methods, real_name)
             for t in topics]
    if len(methods) > 1:
        plots.append(_methods_plot(out, summary))
    gated = [method for method in methods if any(row["method"] == method for row in gates)]
    plots += [_gates_plot(out, k, method, [row for row in gates if row["method"] == method])
              for k, method in enumerate(methods, 1) if method in gated]
    if stance and any(stance.values()):
        plots.append(_stance_plot(out, stance))
    report = out / "report.md"
    report.write_text(_markdown(summary, macro, names, plots, labeler, gates, extra), encoding="utf-8")
    return report


def _distribution_plot(out: Path, short: str, topic: str, rows: list[dict], methods: list[str],
                       real_name: str = "real") -> Path:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    series = [(real_name, rows[0]["real_distribution"], COLOURS["real"])] + [
        (row["method"], row["predicted_distribution"], PALETTE[methods.index(row["method"]) % len(PALETTE)])
        for row in rows
    ]
    unlabelled = [label for label, values, _ in series if values is None]
    series = [item for item in series if item[1] is not None]  # nothing labelled: no bars, not made-up ones
    width = 0.8 / max(len(series), 1)
    for k, (label, values, colour) in enumerate(series):
        positions = [i + (k - (len(series) - 1) / 2) * width for i in range(len(SENTIMENTS))]
        axes.bar(positions, values, width=width, label=label, color=colour)
    axes.set_xticks(range(len(SENTIMENTS)), SENTIMENTS)
    axes.set_ylim(0, 1)
    axes.set_ylabel("share of posts")
    axes.set_title(f"{short}: real vs predicted sentiment")
    axes.legend(loc="upper right", fontsize=8)
    if unlabelled:
        axes.text(0.01, 0.97, "nothing labelled: " + ", ".join(unlabelled), transform=axes.transAxes, va="top",
                  fontsize=8)
    path = out / f"distribution-{short}.png"
    _save(figure, path)
    return path


def _methods_plot(out: Path, summary: list[dict]) -> Path:
    import matplotlib.pyplot as plt

    metrics = ("rouge1", "rougeL", "bleu4", "sentiment_macro_f1", "js", "emd")
    if any(row.get("spearman_stance") is not None for row in summary):
        metrics += ("spearman_stance",)
    figure, axes = plt.subplots(figsize=FIGURE_SIZE, dpi=DPI)
    width = 0.8 / len(summary)
    for k, row in enumerate(summary):
        positions = [i + (k - (len(summary) - 1) / 2) * width for i in range(len(metrics))]
        values = [math.nan if row.get(m) is None else row[m] for m in metrics]
        axes.bar(positions, values, width=width, label=row["method"], color=PALETTE[k % len(PALETTE)])
        for x, value in zip(positions, values, strict=True):
            if math.isnan(value):  # no bar, which must not read as a perfect 0
                axes.text(x, 0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    axes.set_xticks(range(len(metrics)), [m.replace("sentiment_", "").replace("_stance", "") for m in metrics])
    axes.set_title("methods compared (lower is better for js and emd, higher for the others)", fontsize=10)
    axes.legend(fontsize=8)
    path = out / "methods.png"
    _save(figure, path)
    return path


def _gates_plot(out: Path, k: int, method: str, rows: list[dict]) -> Path:
    """Two panels, analyze and compose experts: each expert's mean gate weight, a bar per sentiment."""
    import matplotlib.pyplot as plt

    figure, panels = plt.subplots(1, 2, figsize=FIGURE_SIZE, dpi=DPI, sharey=True)
    colours = dict(zip(SENTIMENTS, (PALETTE[2], PALETTE[7], PALETTE[3]), strict=True))
    for axes, side, who in ((panels[0], "analyze", "news"), (panels[1], "compose", "user")):
        experts = len(rows[0][side])
        width = 0.8 / len(rows)
        for j, row in enumerate(rows):
            positions = [i + (j - (len(rows) - 1) / 2) * width for i in range(experts)]
            axes.bar(positions, row[side], width=width, color=colours[row["sentiment"]],
                     label=f"{row['sentiment']} ({row['posts']})")
        axes.axhline(1 / experts, color=COLOURS["real"], linewidth=0.8, linestyle="--")  # uniform
        axes.set_xticks(range(experts), [f"{side[0].upper()}{i + 1}" for i in range(experts)])
        axes.set_title(f"{side} experts (routed on the {who} part)", fontsize=10)
    panels[0].set_ylabel("mean gate weight")
    panels[1].legend(fontsize=8, title="predicted", title_fontsize=8)
    figure.suptitle(f"{method}: expert gates by predicted sentiment (dashed: uniform)", fontsize=10)
    path = out / f"gates-{k}.png"
    _save(figure, path)
    return path


def _stance_plot(out: Path, stance: dict[str, list[tuple[float, float]]]) -> Path:
    """One panel per method (the real posts first): each (topic, user)'s predicted positive share
    against the user's true stance, with Spearman's rho in the title."""
    import matplotlib.pyplot as plt

    from serve.evaluate.truth import stance_correlation

    names = sorted(stance, key=lambda name: (not name.startswith("("), name))
    columns = min(4, len(names))
    rows = math.ceil(len(names) / columns)
    figure, panels = plt.subplots(rows, columns, figsize=FIGURE_SIZE, dpi=DPI, sharex=True, sharey=True,
                                  squeeze=False)
    for k, axes in enumerate(panels.flat):
        if k >= len(names):
            axes.set_visible(False)
            continue
        pairs = stance[names[k]]
        colour = COLOURS["real"] if names[k].startswith("(") else PALETTE[k % len(PALETTE)]
        axes.scatter([s for s, _ in pairs], [p for _, p in pairs], s=8, alpha=0.6, color=colour)
        rho = stance_correlation(pairs)
        axes.set_title(f"{names[k]}\nrho {_fmt(rho)} (n={len(pairs)})", fontsize=8)
        axes.set_xlim(-1.05, 1.05)
        axes.set_ylim(-0.05, 1.05)
        axes.tick_params(labelsize=7)
    for axes in panels[-1]:
        axes.set_xlabel("true stance", fontsize=8)
    for axes in panels[:, 0]:
        axes.set_ylabel("positive share", fontsize=8)
    figure.suptitle("predicted positive share vs true stance, per user and topic", fontsize=10)
    figure.tight_layout()
    path = out / "stance.png"
    _save(figure, path)
    return path


def _save(figure: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    temp = path.with_name(f".{path.name}.tmp.png")
    figure.savefig(temp, dpi=DPI)  # no bbox="tight": every plot keeps exactly FIGURE_SIZE x DPI pixels
    plt.close(figure)
    temp.replace(path)


def _markdown(
    summary: list[dict], macro: list[dict], names: dict[str, str], plots: list[Path], labeler: str, gates: list[dict],
    extra: dict[str, Any],
) -> str:
    lines = ["# SocialAlign evaluation", "", f"Sentiment labeller: `{labeler}`.", ""]
    truth = extra.get("truth")
    if truth:
        vs = truth["labeller_vs_truth"]
        lines += ["## Truth", "", "Real posts count as their true sentiment (the truth file) in every metric below. "
                  f"The labeller against the truth on the {vs['posts']} real posts: accuracy "
                  f"{_fmt(vs['accuracy'])}, macro-F1 {_fmt(vs['macro_f1'])} ({vs['unlabelled']} unlabelled). "
                  "Spearman between the real posts' positive share and the users' true stance: "
                  f"{_fmt(truth['real_spearman_stance'])}.", ""]
    history = extra.get("history_baseline")
    if history:
        lines += [f"history-baseline: the plurality label of each case's retrieved history posts (a tie: neutral), "
                  f"the pooled history distribution per topic; {history['cases']} cases, {history['history_posts']} "
                  f"history posts ({history['history_unlabelled']} unlabelled), "
                  f"{history['cases_without_history']} cases without retrieved history.", ""]
    lines += ["## Methods", ""]
    columns = ("predictions", "rouge1", "rouge2", "rougeL", "bleu4", "length_ratio", "sentiment_accuracy",
               "sentiment_macro_f1", "js", "kl", "tv", "emd", "unlabelled", "real_unlabelled")
    when_measured = ("spearman_stance", "topic_mention", "wrong_hashtag", "gap_closed_js", "gap_closed_macro_f1")
    columns += tuple(name for name in when_measured if any(row.get(name) is not None for row in summary))
    lines += ["| method | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for row in summary:
        lines.append(f"| {row['method']} | " + " | ".join(_fmt(row.get(c)) for c in columns) + " |")
    lines += ["", "Micro metrics are averaged over predicted posts (ROUGE and BLEU-4 on characters); js, kl, tv "
              "and emd compare each topic's predicted sentiment distribution with the real one, averaged over "
              "topics; n/a where nothing was labelled (a topic without labelled predicted or real posts has "
              "no distribution and is left out of the averages). unlabelled and real_unlabelled count the "
              "predicted and real posts the labeller could not label. spearman_stance: Spearman between "
              "each user's predicted positive share on a topic and the user's true stance; topic_mention: the "
              "share of predicted posts naming the topic or its terms; wrong_hashtag: the share of predicted "
              "posts whose hashtags are all other topics'; gap_closed_x: (x - zero-shot's) / "
              "(oracle's - zero-shot's).", "", "## Topics", "",
              "| topic | name | method | real (pos/neu/neg) | predicted | js | emd |", "|---|---|---|---|---|---|---|"]
    for row in macro:
        if row["topic"] == "(mean)":
            continue
        lines.append(f"| {names[row['topic']]} | {row['topic']} | {row['method']} | {_dist(row['real_distribution'])} "
                     f"| {_dist(row['predicted_distribution'])} | {_fmt(row['js'])} | {_fmt(row['emd'])} |")
    if gates:
        lines += ["", "## Expert gates", "", "Mean gate weights of the posts whose predictions carry them, by the "
                  "post's predicted sentiment (each post's modules or layers averaged first; token routing: the "
                  "mean over the span's tokens).", "",
                  "| method | predicted | posts | analyze experts | compose experts |", "|---|---|---|---|---|"]
        for row in gates:
            lines.append(f"| {row['method']} | {row['sentiment']} | {row['posts']} | {_dist(row['analyze'], 3)} "
                         f"| {_dist(row['compose'], 3)} |")
    lines += ["", "## Plots", ""] + [f"![{plot.stem}]({plot.name})" for plot in plots] + [""]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def _dist(values: list[float] | None, digits: int = 2) -> str:
    return "/".join(f"{v:.{digits}f}" for v in values) if values else "n/a"
