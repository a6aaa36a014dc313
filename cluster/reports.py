"""What a stage leaves beside its output when it finished: `<output>/_SUCCESS.json`.

    {"stage": "crawl", "finished_at": "2026-12-01T21:44:00+00:00", "report": {...}, ...}

The report is the stage's own summary (rows, steps, losses, ...); other fields are the stage's
bookkeeping (e.g. the fingerprint build-dataset compares to skip an up-to-date step). The demo
and anyone scripting the pipeline read a stage's outcome here instead of importing the stage.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

SUCCESS = "_SUCCESS.json"


def write_success(directory: str | os.PathLike[str], stage: str, report: dict[str, Any], **fields: Any) -> Path:
    """Write `directory/_SUCCESS.json` atomically (a reader never sees half of it)."""
    path = Path(directory) / SUCCESS
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"stage": stage, "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                **fields, "report": report}
    temp = path.with_name(f".{SUCCESS}.tmp-{os.getpid()}")
    temp.write_text(json.dumps(document, ensure_ascii=False, indent=2, default=str), encoding="utf-8")
    os.replace(temp, path)
    return path


def read_success(directory: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The whole `_SUCCESS.json` of `directory`, or None when the stage has not finished there."""
    try:
        return json.loads((Path(directory) / SUCCESS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_report(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The report of a finished stage; a clear error when there is none."""
    document = read_success(directory)
    if document is None:
        raise FileNotFoundError(f"{Path(directory) / SUCCESS}: no finished stage output here")
    return document["report"]
