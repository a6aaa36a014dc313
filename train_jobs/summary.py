"""What a finished training run tells: the summary `train` returns, its one-paragraph description,
and the report the stage leaves in `<output_dir>/<run_name>/_SUCCESS.json`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainSummary:
    run_name: str
    method: str
    rows: int
    skipped: dict[str, int]
    steps: int
    resumed_from_step: int
    tokens: int
    train_seconds: float  # inside the workers' loop, summed over attempts
    seconds: float  # wall time of the whole stage
    first_loss: float | None
    final_loss: float | None
    adapter_dir: Path
    checkpoint: str
    metrics: dict[str, Any] = field(default_factory=dict)  # the last report of Ray Train

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0

    def report(self) -> dict[str, Any]:
        """Every field but Ray Train's raw metrics, as JSON values."""
        values = asdict(self)
        del values["metrics"]
        values["adapter_dir"] = str(self.adapter_dir)
        return values


def describe(summary: TrainSummary) -> str:
    resumed = f" (resumed from step {summary.resumed_from_step})" if summary.resumed_from_step else ""
    skipped = sum(summary.skipped.values())
    loss = ""
    if summary.first_loss is not None and summary.final_loss is not None:
        loss = f", loss {summary.first_loss:.4f} -> {summary.final_loss:.4f}"
    return (
        f"train: {summary.method} run {summary.run_name}: {summary.steps} steps{resumed} on {summary.rows} rows"
        f"{f' ({skipped} skipped)' if skipped else ''}, {summary.tokens:,} tokens in {summary.train_seconds:.1f}s "
        f"of training ({summary.tokens_per_s:,.0f} tokens/s, {summary.seconds:.1f}s in all){loss}\n"
        f"adapter: {summary.adapter_dir}\ncheckpoint: {summary.checkpoint}"
    )
