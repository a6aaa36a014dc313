"""One config system for every stage: typed pydantic models, YAML on disk, `key=value` overrides.

Precedence, lowest first: model defaults < environment defaults (fields made by `from_env`, e.g.
the log level) < YAML file < environment variables (secrets only) < `key=value` arguments. Any
problem becomes a `ConfigError` whose message has one line per problem, each naming where the bad
value came from (file, environment variable or argument), the dotted field and what was expected.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic_core import to_jsonable_python

from cluster.logs import register_secret
from cluster.secret_scan import filled, secret_in_override, secret_keys, secret_values_inside

Model = TypeVar("Model", bound=BaseModel)

DEFAULTS_SOURCE = "defaults"


class ConfigError(ValueError):
    """A configuration problem, already phrased for the person who wrote the config."""


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True)


def secret(*env: str, description: str) -> Any:
    """A secret field: read from the first of `env` that is set, never printed or logged."""
    return Field(default=None, description=description, json_schema_extra={"env": list(env)})


def from_env(env: str, default: Any, description: str) -> Any:
    """A plain field whose default is the environment variable `env` when that is set: the file and
    arguments still win (e.g. `log_level` falls back to SOCIALALIGN_LOG_LEVEL, then INFO)."""
    return Field(default=default, description=description, json_schema_extra={"env_default": env})


def load_config(
    model: type[Model],
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Model:
    """Build `model` from defaults, the YAML file at `path`, secret env vars and `key=value` overrides."""
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path is not None:
        data, lines = _read_yaml(Path(path))
        sources.update({key: f"{path}:{line}" for key, line in lines.items()})
        _warn_inline_secrets(model, data, str(path))
    for dotted, env_name in _env_defaults(model, environ):
        if not has_dotted(data, dotted):
            set_dotted(data, dotted, environ[env_name])
            sources[dotted] = f"environment variable {env_name}"
    for dotted, env_name in _secrets_from_env(model, environ):
        # A secret mounted from a file (a Kubernetes Secret made with --from-file) ends in a newline
        # that no client sends back: the ends are never part of a secret.
        set_dotted(data, dotted, environ[env_name].strip())
        sources[dotted] = f"environment variable {env_name}"
    for dotted, value, text in (parse_override(item) for item in overrides):
        set_dotted(data, dotted, value)
        sources[dotted] = f"argument '{_mask_override(model, dotted, value, text)}'"
    try:
        config = model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_describe(error, model, sources)) from None
    _register_secrets(config)
    return config


def parse_override(item: str) -> tuple[str, Any, str]:
    """`a.b=value` -> ("a.b", value parsed as a YAML scalar/list, the original text)."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part.isidentifier() for part in key.split(".")):
        raise ConfigError(f"argument '{item}': expected key=value, e.g. ray.address=auto")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value, item


def dump_config(config: BaseModel) -> str:
    """The resolved config as YAML, secrets masked: what `--print-config` shows."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def secret_fields(model: type[BaseModel]) -> dict[str, list[str]]:
    """Dotted path -> env var names for every secret field, nested models included."""
    return {dotted: list(names) for dotted, names in _fields_with(model, "env")}


def _fields_with(model: type[BaseModel], key: str, prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted path, value) of `key` in the json_schema_extra of every field that has it, nested too."""
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if key in extra:
            yield dotted, extra[key]
        nested = _nested_model(field.annotation)
        if nested is not None:
            yield from _fields_with(nested, key, prefix=f"{dotted}.")


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every leaf field: the reference in `--help`."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        nested = _nested_model(field.annotation)
        if nested is not None:
            rows.extend(describe_fields(nested, prefix=f"{dotted}."))
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        default = f"env {' or '.join(extra['env'])}" if "env" in extra else _show_default(field)
        if "env_default" in extra:
            default = f"env {extra['env_default']}, else {default}"
        rows.append((dotted, default, field.description or ""))
    return rows


def _show_default(field: Any) -> str:
    if field.is_required():
        return "(required)"
    default = field.get_default(call_default_factory=True)
    if isinstance(default, BaseModel):
        return "{...}"
    plain = to_jsonable_python(default)
    return yaml.safe_dump(plain, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """The mapping in `path`, and the line each dotted key is on (for error messages)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot read config file ({error})") from None
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or str(error)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of field: value at the top, got {type(data).__name__}")
    return data, dict(_key_lines(node))


def _key_lines(node: yaml.Node, prefix: str = "") -> Iterable[tuple[str, int]]:
    if not isinstance(node, yaml.MappingNode):
        return
    for key, value in node.value:
        dotted = f"{prefix}{key.value}"
        yield dotted, key.start_mark.line + 1
        yield from _key_lines(value, prefix=f"{dotted}.")


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested dicts, making the dicts on the way."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[leaf] = value


def has_dotted(data: dict[str, Any], dotted: str) -> bool:
    """Whether `data` sets `dotted`; a model object given whole sets all of its fields."""
    node: Any = data
    for part in dotted.split("."):
        if isinstance(node, BaseModel):
            return True
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _env_defaults(model: type[BaseModel], environ: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    for dotted, env_name in _fields_with(model, "env_default"):
        if environ.get(env_name):
            yield dotted, env_name


def _secrets_from_env(model: type[BaseModel], environ: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    for dotted, names in secret_fields(model).items():
        for env_name in names:
            if environ.get(env_name, "").strip():  # blank is unset, as an empty file mounted as one is
                yield dotted, env_name
                break


def _warn_inline_secrets(model: type[BaseModel], data: dict[str, Any], source: str) -> None:
    import logging

    for dotted, names in secret_fields(model).items():
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node:
            register_secret(str(node))
            logging.getLogger(__name__).warning(
                "%s sets the secret %s inline; prefer the environment variable %s", source, dotted, names[0]
            )


def _mask_override(model: type[BaseModel], dotted: str, value: Any, text: str) -> str:
    """The override as an error may echo it: `key=***` when it holds a secret at any depth, whose values
    are registered for redaction before validation can fail and log them."""
    secrets = secret_fields(model)
    if secret_in_override(dotted, value, secrets) is None:
        return text
    if isinstance(value, dict | list):
        for found in secret_values_inside(value, secret_keys(secrets)):
            register_secret(found)
    elif filled(value):
        register_secret(str(value))
    return f"{dotted}=***"


def _register_secrets(config: BaseModel) -> None:
    for value in _walk_values(config):
        if isinstance(value, SecretStr):
            register_secret(value.get_secret_value())


def _walk_values(node: Any) -> Iterable[Any]:
    if isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _walk_values(getattr(node, name))
    elif isinstance(node, dict):
        for value in node.values():
            yield from _walk_values(value)
    else:
        yield node


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    """The model type of a field that holds one model (or None); not of lists or dicts of models."""
    origin = get_origin(annotation)
    if origin is not None and origin not in (Union, UnionType):
        return None
    candidates = [*get_args(annotation)] if origin is not None else [annotation]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _describe(error: ValidationError, model: type[BaseModel], sources: dict[str, str]) -> str:
    lines = [_describe_one(item, model, sources) for item in error.errors()]
    return "\n".join(sorted(lines, key=_in_reading_order))


def _in_reading_order(line: str) -> tuple[int, str, int]:
    """File problems by line first, then environment, then arguments, each in the order given."""
    where = line.split(": ", 1)[0]
    path, _, number = where.rpartition(":")
    if number.isdigit():
        return 0, path, int(number)
    return (1 if where.startswith("environment") else 2), "", 0


def _describe_one(item: Mapping[str, Any], model: type[BaseModel], sources: dict[str, str]) -> str:
    loc = [str(part) for part in item["loc"] if not str(part).startswith("function-")]
    dotted = ".".join(loc) or "(top level)"
    source = _source_of(loc, sources)
    if item["type"] == "extra_forbidden":
        hint = _did_you_mean(model, loc)
        return f"{source}: {dotted}: unknown field{hint}"
    if item["type"] == "missing":
        return f"{source}: {dotted}: required field is missing"
    got = "" if _holds_secret(dotted, item.get("input"), model) else f" (got {item.get('input')!r})"
    return f"{source}: {dotted}: {_expected(item)}{got}"


def _holds_secret(dotted: str, value: Any, model: type[BaseModel]) -> bool:
    return secret_in_override(dotted, value, secret_fields(model)) is not None


def _expected(item: Mapping[str, Any]) -> str:
    message = str(item["msg"]).removeprefix("Value error, ")
    if message.startswith("Input should be "):
        wanted = message.removeprefix("Input should be ")
        return "expected " + ("a value " if wanted.startswith(("greater", "less")) else "") + wanted
    if message.startswith("Input should "):
        return "expected the value to " + message.removeprefix("Input should ")
    return message


def _source_of(loc: list[str], sources: dict[str, str]) -> str:
    for end in range(len(loc), 0, -1):
        key = ".".join(loc[:end])
        if key in sources:
            return sources[key]
    return DEFAULTS_SOURCE


def _did_you_mean(model: type[BaseModel], loc: list[str]) -> str:
    owner: type[BaseModel] | None = model
    for part in loc[:-1]:
        field = owner.model_fields.get(part) if owner else None
        owner = _nested_model(field.annotation) if field else None
    if owner is None:
        return ""
    names = list(owner.model_fields)
    initials = [name for name in names if "".join(part[:1] for part in name.split("_")) == loc[-1]]
    spoken = _also_known_as(owner)  # a short name's long form: `r` is also "rank", so "rnak" finds it
    close = initials or difflib.get_close_matches(loc[-1], [*names, *spoken], n=1, cutoff=0.5)
    known = ", ".join(names)
    return f"; did you mean '{spoken.get(close[0], close[0])}'?" if close else f"; known fields: {known}"


def _also_known_as(model: type[BaseModel]) -> dict[str, str]:
    """Other name -> field, from `json_schema_extra={"aka": [...]}` on a field."""
    found = {}
    for name, field in model.model_fields.items():
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        found.update({other: name for other in extra.get("aka", [])})
    return found
