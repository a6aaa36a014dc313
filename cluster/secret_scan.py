"""Where a secret hides in config data: a secret field's dotted path, a field under one, or a key that
names a secret anywhere inside a mapping or list value. `load_config` masks what this finds before it
echoes an argument, and `submit` refuses to put it on a job's command line."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# Keys that hold a secret wherever they appear inside an override's or a config file's value, besides
# the last part of each secret field of the stage's model (`api_key` of `persona.api_key`).
SECRET_KEYS = frozenset({"api_key", "auth_token", "token", "password", "secret", "cookies", "cookie", "redis_url"})


def secret_in_override(key: str, value: Any, secrets: dict[str, list[str]]) -> str | None:
    """The dotted secret the override `key=value` sets, if any. `secrets`: dotted secret field -> env
    names (`cluster.config.secret_fields`)."""
    for dotted in secrets:
        if key == dotted or key.startswith(f"{dotted}."):
            return dotted
        if dotted.startswith(f"{key}.") and filled(lookup(value, dotted[len(key) + 1 :])):
            return dotted
    if key.rsplit(".", 1)[-1] in secret_keys(secrets):
        return key
    inside = next(secret_keys_inside(value, secret_keys(secrets)), None)
    return f"{key}.{inside}" if inside is not None else None


def secret_keys(secrets: dict[str, list[str]]) -> set[str]:
    return SECRET_KEYS | {dotted.rsplit(".", 1)[-1] for dotted in secrets}


def secret_keys_inside(node: Any, keys: set[str], prefix: str = "") -> Iterator[str]:
    """Dotted paths (list items by index) of the keys in `keys` set anywhere inside `node`, with a value."""
    if isinstance(node, dict):
        for name, value in node.items():
            dotted = f"{prefix}{name}"
            if str(name) in keys and filled(value):
                yield dotted
            yield from secret_keys_inside(value, keys, f"{dotted}.")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from secret_keys_inside(value, keys, f"{prefix}{index}.")


def secret_values_inside(node: Any, keys: set[str]) -> Iterator[str]:
    """The text of every value under a key in `keys` inside `node` (leaves only), to register for redaction."""
    for dotted in secret_keys_inside(node, keys):
        found = lookup(node, dotted)
        if isinstance(found, str | int | float):
            yield str(found)


def lookup(node: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            node = node.get(part) if isinstance(node, dict) else None
    return node


def filled(value: Any) -> bool:
    return value is not None and value != "" and value != {} and value != []
