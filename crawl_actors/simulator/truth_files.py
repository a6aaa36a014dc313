"""The simulator's truth and its oracle as Parquet files, for a program that knows the simulator only
as a process (the demo): the world arguments that serve it, plus `--write-truth DIR`, write

- `DIR/truth.parquet`: `truth_table` of the `--truth-topic` topics (every topic without one): the
  file `socialalign evaluate` takes as `truth`;
- `DIR/oracle.parquet` (with `--oracle-cases`): `oracle_predictions` for the cases, the rows of
  one prompt variant of an SFT split (build-dataset's `sft/test`): a prediction set, method `oracle`;

and print one JSON line {truth, truth_rows, oracle, oracle_rows}, instead of serving. The same
world arguments build the same corpus, so the truth is that of the world the crawl saw.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from cluster.parquet import atomic_write_parquet, read_table_dir
from cluster.schemas import SFT
from crawl_actors.simulator.config import SimulatorConfig
from crawl_actors.simulator.corpus import build_corpus
from crawl_actors.simulator.oracle import oracle_predictions
from crawl_actors.simulator.truth import truth_table


def write_truth_files(config: SimulatorConfig, out_dir: Path, topics: list[str] | None = None,
                      cases: Path | None = None, samples: int = 5, seed: int = 0,
                      variant: str = "full") -> dict[str, Any]:
    """Write truth.parquet (and oracle.parquet for `cases`) into `out_dir`; what was written. An
    unknown topic, a missing or empty cases split, or a case the simulator does not have is a
    ValueError that names it; nothing is written then."""
    corpus = build_corpus(config)
    topics = None if topics is None else [topic.strip("#") for topic in topics]
    truth = truth_table(corpus, topics)
    oracle = None
    if cases is not None:
        rows = [row for row in _read_cases(cases).to_pylist() if row["variant"] == variant]
        if not rows:
            raise ValueError(f"--oracle-cases {cases}: no rows of prompt variant {variant!r}")
        outside = sorted({row["topic"] for row in rows} - set(truth["topic"].to_pylist()))
        if outside:
            raise ValueError(f"--oracle-cases {cases}: cases of topic(s) {outside} outside the truth's topics")
        oracle = oracle_predictions(corpus, rows, samples=samples, seed=seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"truth": str(out_dir / "truth.parquet"), "truth_rows": truth.num_rows}
    atomic_write_parquet(truth, out_dir / "truth.parquet")
    if oracle is not None:
        atomic_write_parquet(oracle, out_dir / "oracle.parquet")
        written.update({"oracle": str(out_dir / "oracle.parquet"), "oracle_rows": oracle.num_rows})
    return written


def _read_cases(path: Path) -> Any:
    """An SFT split: a directory of Parquet parts or one Parquet file."""
    if path.is_file():
        try:
            return pq.read_table(path, schema=SFT)
        except (OSError, ValueError) as error:  # pyarrow's errors are ValueErrors or OSErrors
            raise ValueError(f"--oracle-cases {path}: not an SFT Parquet file ({error})") from None
    if not path.is_dir():
        raise ValueError(f"--oracle-cases {path}: no such file or directory")
    try:
        table = read_table_dir(path, SFT)
    except (OSError, ValueError) as error:
        raise ValueError(f"--oracle-cases {path}: not an SFT split ({error})") from None
    if table.num_rows == 0:
        raise ValueError(f"--oracle-cases {path}: no cases in it")
    return table
