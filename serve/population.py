"""Macro populations read from Parquet: a users table or the SFT set, under the server's population_dir.
A directory is read as its *.parquet files (e.g. `sft/test`; other files beside them are ignored).

- SFT set (`cluster.schemas.SFT`): one member per user_id; its `user_part` is used verbatim (the
  history in it was retrieved for that row's topic, not for the request's news) with the row's
  prompt variant (`full` rows preferred).
- users table: a name column (`user_name`, `screen_name` or `name`), optionally `user_id`,
  `history` (list of strings) and `persona`; rendered like a micro request's user.

A client names a table by a path relative to population_dir; anything else (absolute, `..`, a
link out of the folder, control characters) is refused before the file system is asked. Reading is
bounded before it starts: the row count comes from the Parquet footers (`max_population_rows`),
then only the key columns are read to pick the members (`max_users_per_request`), and the texts
of the chosen members last. Errors name the client's problem, never a server path.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from serve.protocol import InvalidPrompt, LimitExceeded, UserProfile

log = logging.getLogger(__name__)

_LOC = ("body", "population", "path")
NAME_COLUMNS = ("user_name", "screen_name", "name")
SFT_KEYS = ("user_id", "user_part")


@dataclass(frozen=True)
class Member:
    name: str
    user_id: str | None
    profile: UserProfile | None = None  # users table
    user_part: str | None = None  # SFT row
    variant: str | None = None  # SFT row


def resolve_path(path: str, root: Path | None) -> Path:
    """`path`, relative to `root`, as a real path inside it; anything else is an InvalidPrompt."""
    if root is None:
        raise InvalidPrompt(_LOC, "population paths are disabled on this server (population_dir is not set)")
    if any(ord(char) < 32 or ord(char) == 127 for char in path):
        raise InvalidPrompt(_LOC, "must not contain control characters")
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or path.startswith("\\"):
        raise InvalidPrompt(_LOC, "must be relative to the server's population_dir")
    if ".." in PurePosixPath(path.replace("\\", "/")).parts:
        raise InvalidPrompt(_LOC, "must not contain '..'")
    try:
        base = root.resolve()
        resolved = (base / path).resolve()
        inside = resolved.is_relative_to(base)
        exists = inside and resolved.exists()
    except (OSError, ValueError, RuntimeError) as error:  # a name too long, a link loop, ...
        log.info("population path refused: %s", error)
        raise InvalidPrompt(_LOC, "cannot be read under the server's population_dir") from None
    if not inside:
        raise InvalidPrompt(_LOC, "must lie under the server's population_dir (it links outside)")
    if not exists:
        raise InvalidPrompt(_LOC, "no such file or directory under the server's population_dir")
    return resolved


def load_population(
    path: str, root: Path | None, sample_size: int | None, seed: int, max_users: int, variant: str = "full",
    max_rows: int = 1_000_000,
) -> list[Member]:
    """The members drawn from the table at `path` (under `root`): at most `max_users`, from a table of
    at most `max_rows` rows, `sample_size` of them drawn with `seed` when given."""
    resolved = resolve_path(path, root)
    try:
        files = parquet_files(resolved, root.resolve() if root else resolved)
    except OSError as error:  # a folder it may not list
        log.info("population path refused: %s", error)
        raise InvalidPrompt(_LOC, "cannot be read under the server's population_dir") from None
    return read_members(files, variant, sample_size, seed, max_users, max_rows)


def read_members(
    files: list[str], variant: str = "full", sample_size: int | None = None, seed: int = 0,
    max_users: int = 1_000_000, max_rows: int = 1_000_000,
) -> list[Member]:
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(files, format="parquet")
        rows = dataset.count_rows()  # from the footers: nothing is loaded yet
    except Exception as error:  # pyarrow raises several types for unreadable input, with server paths
        log.info("population table refused: %s", error)
        raise InvalidPrompt(_LOC, "cannot read it as Parquet (not Parquet, or truncated)") from None
    if rows > max_rows:
        raise LimitExceeded(_LOC, "max_population_rows", max_rows,
                            f"the table has {rows} rows, more than max_population_rows={max_rows}")
    columns = set(dataset.schema.names)
    if set(SFT_KEYS) <= columns:
        kind, keys = "sft", ["user_id", *(["variant"] if "variant" in columns else [])]
    else:
        name_column = next((name for name in NAME_COLUMNS if name in columns), None)
        if name_column is None:
            raise InvalidPrompt(
                _LOC, f"expected an SFT table (user_id, user_part) or a users table with one of {NAME_COLUMNS}; "
                f"got columns {sorted(columns)[:20]}",
            )
        kind, keys = "users", [name_column, *(["user_id"] if "user_id" in columns else [])]
    key_rows = _read(dataset, keys).to_pylist()
    candidates = _sft_candidates(key_rows, variant) if kind == "sft" else _user_candidates(key_rows, keys[0])
    if sample_size is not None and sample_size < len(candidates):
        candidates = [candidates[i] for i in sorted(random.Random(seed).sample(range(len(candidates)), sample_size))]
    if len(candidates) > max_users:
        raise LimitExceeded(
            ("body", "population"), "max_users_per_request", max_users,
            f"the population has {len(candidates)} users, more than max_users_per_request={max_users}; "
            "pass a smaller sample_size",
        )
    if kind == "sft":
        wanted = [name for name in ("user_id", "user_name", "user_part", "variant") if name in columns]
        chosen = _read(dataset, wanted, candidates).to_pylist()
        return _sft_members(chosen, variant)
    wanted = [keys[0], *(name for name in ("user_id", "history", "persona") if name in columns)]
    return _user_members(_read(dataset, wanted, candidates).to_pylist(), keys[0])


def _read(dataset: Any, columns: list[str], indices: list[int] | None = None) -> Any:
    try:
        return dataset.to_table(columns=columns) if indices is None else dataset.take(indices, columns=columns)
    except Exception as error:  # a file whose footer reads but whose data does not
        log.info("population table refused: %s", error)
        raise InvalidPrompt(_LOC, "cannot read it as Parquet (not Parquet, or truncated)") from None


def parquet_files(path: Path, base: Path) -> list[str]:
    """`path`, or the *.parquet files under a directory (the dataset stage writes JSONL beside them);
    a file that links outside `base` is refused."""
    if not path.is_dir():
        return [str(path)]
    files = []
    for file in sorted(path.rglob("*.parquet")):
        if file.name.startswith((".", "_")) or not file.is_file():
            continue
        if not file.resolve().is_relative_to(base):
            raise InvalidPrompt(_LOC, "a file in that directory links outside the server's population_dir")
        files.append(str(file))
    if not files:
        raise InvalidPrompt(_LOC, "the directory holds no *.parquet files (only those are read)")
    return files


def _sft_candidates(rows: list[dict], variant: str) -> list[int]:
    """Row indices, one per user_id: its first row of the wanted variant (of any variant if none is)."""
    wanted = "full" if variant == "auto" else variant
    preferred = [i for i, row in enumerate(rows) if row.get("variant") == wanted] or range(len(rows))
    chosen, seen = [], set()
    for index in preferred:
        user_id = _text(rows[index].get("user_id"))
        if user_id not in seen:
            seen.add(user_id)
            chosen.append(index)
    return chosen


def _user_candidates(rows: list[dict], name_column: str) -> list[int]:
    return [i for i, row in enumerate(rows) if row.get(name_column) or row.get("user_id")]


def _sft_members(rows: list[dict], variant: str) -> list[Member]:
    wanted = "full" if variant == "auto" else variant
    return [
        Member(name=str(row.get("user_name") or row.get("user_id")), user_id=_text(row.get("user_id")),
               user_part=row["user_part"], variant=row.get("variant") or wanted)
        for row in rows if row.get("user_part")
    ]


def _user_members(rows: list[dict], name_column: str) -> list[Member]:
    members = []
    for row in rows:
        name = str(row.get(name_column) or row.get("user_id"))
        texts = row.get("history") or []
        history = tuple((str(text), None) for text in ([texts] if isinstance(texts, str) else texts) if text)
        profile = UserProfile(name=name, history=history, persona=row.get("persona") or None)
        members.append(Member(name=name, user_id=_text(row.get("user_id")), profile=profile))
    return members


def _text(value: object) -> str | None:
    return None if value is None else str(value)
