"""Macro populations read from Parquet: a users table or the SFT set, under the server's population_dir.
A directory is read as its *.parquet files (e.g. `sft/test`; other files beside them are ignored).

- SFT set (`cluster.schemas.SFT`): one member per user_id; its `user_part` is used verbatim (the
  history in it was retrieved for that row's topic, not for the request's news) with the row's
  prompt variant (`full` rows preferred).
- users table: a name column (`user_name`, `screen_name` or `name`), optionally `user_id`,
  `history` (list of strings) and `persona`; rendered like a micro request's user.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from serve.protocol import InvalidPrompt, LimitExceeded, UserProfile

_LOC = ("body", "population", "path")
NAME_COLUMNS = ("user_name", "screen_name", "name")


@dataclass(frozen=True)
class Member:
    name: str
    user_id: str | None
    profile: UserProfile | None = None  # users table
    user_part: str | None = None  # SFT row
    variant: str | None = None  # SFT row


def resolve_path(path: str, root: Path | None) -> Path:
    """`path` (relative to `root`, or absolute inside it); anything outside `root` is refused."""
    if root is None:
        raise InvalidPrompt(_LOC, "population paths are disabled on this server (population_dir is not set)")
    base = root.resolve()
    candidate = Path(path)
    resolved = (candidate if candidate.is_absolute() else base / candidate).resolve()
    if not resolved.is_relative_to(base):
        raise InvalidPrompt(_LOC, "must lie under the server's population_dir")
    if not resolved.exists():
        raise InvalidPrompt(_LOC, f"no such file or directory under population_dir: {path}")
    return resolved


def load_population(
    path: str, root: Path | None, sample_size: int | None, seed: int, max_users: int, variant: str = "full"
) -> list[Member]:
    members = read_members(resolve_path(path, root), variant)
    if sample_size is not None and sample_size < len(members):
        members = [members[i] for i in sorted(random.Random(seed).sample(range(len(members)), sample_size))]
    if len(members) > max_users:
        raise LimitExceeded(
            ("body", "population"), "max_users_per_request", max_users,
            f"the population has {len(members)} users, more than max_users_per_request={max_users}; "
            "pass a smaller sample_size",
        )
    return members


def read_members(path: Path, variant: str = "full") -> list[Member]:
    import pyarrow.dataset as ds

    try:
        table = ds.dataset(parquet_files(path), format="parquet").to_table()
    except Exception as error:  # pyarrow raises several types for unreadable input
        raise InvalidPrompt(_LOC, f"cannot read it as Parquet: {error}") from None
    columns = set(table.column_names)
    rows = table.to_pylist()
    if {"user_part", "user_id"} <= columns:
        return _sft_members(rows, variant)
    name_column = next((name for name in NAME_COLUMNS if name in columns), None)
    if name_column is None:
        raise InvalidPrompt(
            _LOC, f"expected an SFT table (user_id, user_part) or a users table with one of {NAME_COLUMNS}; "
            f"got columns {sorted(columns)}",
        )
    members = []
    for row in rows:
        name = row.get(name_column) or row.get("user_id")
        if not name:
            continue
        history = tuple((str(text), None) for text in (row.get("history") or []) if text)
        profile = UserProfile(name=str(name), history=history, persona=row.get("persona") or None)
        members.append(Member(name=str(name), user_id=_text(row.get("user_id")), profile=profile))
    return members


def parquet_files(path: Path) -> list[str]:
    """`path`, or the *.parquet files under a directory: the dataset stage writes JSONL beside them."""
    if not path.is_dir():
        return [str(path)]
    files = sorted(str(file) for file in path.rglob("*.parquet") if not file.name.startswith((".", "_")))
    if not files:
        raise InvalidPrompt(_LOC, "the directory holds no *.parquet files (only those are read)")
    return files


def _sft_members(rows: list[dict], variant: str) -> list[Member]:
    wanted = "full" if variant == "auto" else variant
    preferred = [row for row in rows if row.get("variant") == wanted] or rows
    members, seen = [], set()
    for row in preferred:
        user_id = _text(row.get("user_id"))
        if user_id in seen or not row.get("user_part"):
            continue
        seen.add(user_id)
        members.append(
            Member(
                name=str(row.get("user_name") or user_id),
                user_id=user_id,
                user_part=row["user_part"],
                variant=row.get("variant") or wanted,
            )
        )
    return members


def _text(value: object) -> str | None:
    return None if value is None else str(value)
