"""`socialalign submit <stage>`: what `ray job submit --working-dir . -- python -m <stage> ...` does,
with the entrypoint, runtime env and Ray's token authentication handled for the user.

Secrets never travel in a job's entrypoint or runtime env (both are shown on the dashboard) nor in
its working dir (the cluster's job store and every node that runs it keep a copy): the cluster
supplies them through its own environment (Kubernetes Secrets under KubeRay). So `build_job`
refuses, before anything is sent, an override that holds a secret (a secret field, or a value
whose YAML holds one, however deep), a config file that sets a secret inline, and a secret file
(`cookies_file`) inside the working dir; each error names the field or file and what to do
instead, and never shows the value.

The working dir puts our packages on the job's path, but not their dependencies: the cluster's
image must have them (the k8s image installs this project), or `pip=True` (`--pip`) has Ray
install `pyproject.toml`'s dependencies into the job's runtime env (a virtualenv on top of the
image's packages, cached per node).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from cluster.config import ConfigError, load_config, parse_override, secret_fields
from cluster.logs import register_secret
from cluster.secret_scan import filled, lookup, secret_in_override, secret_keys, secret_keys_inside
from cluster.stages import Stage

log = logging.getLogger(__name__)

# Never uploaded: environments, caches and data, which belong on shared storage, not in a job.
# Ray matches these as .gitignore lines against paths in the working dir: the output folders are
# anchored to its top ("/data"), so a package's own data files (crawl_actors/data/) still travel.
UPLOAD_EXCLUDES = (
    ".venv",
    ".git",
    "**/__pycache__",
    ".pytest_cache",
    ".hypothesis",
    ".cache",
    "*.egg-info",
    "/data",
    "/demo-out",
    "/out",
    "secrets",  # cookie files live here (README), at any depth: never shipped to a cluster's job store
)
# The cluster's own Ray runs the job (and must be the version of pyproject's pin): never pip-installed.
NOT_PIP_INSTALLED = ("ray",)
JOB_ENV = {"PYTHONUNBUFFERED": "1"}
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# A field that names a file of secrets: `<secret field>_file` (cookies_file beside cookies), or these.
SECRET_FILE_SUFFIXES = ("cookies_file", "token_file", "key_file", "password_file")
CLUSTER_ENVIRONMENT = "the cluster's environment (a Kubernetes Secret under KubeRay)"


class SubmitError(RuntimeError):
    """The job could not be submitted or followed."""


@dataclass(frozen=True)
class JobSpec:
    entrypoint: str
    runtime_env: dict[str, Any]
    metadata: dict[str, str] = field(default_factory=dict)


def build_job(
    stage: Stage,
    config_path: str | None,
    overrides: Sequence[str],
    working_dir: str | os.PathLike[str] = ".",
    pip: bool = False,
) -> JobSpec:
    """Check the config here, then describe the job that runs `stage` on the cluster."""
    model = stage.config_model()
    refuse_secret_overrides(model, overrides)
    if config_path is not None:
        refuse_inline_secrets(model, Path(config_path))
    config = load_config(model, config_path, overrides)
    root = Path(working_dir).resolve()
    if not root.is_dir():
        raise SubmitError(f"working dir {working_dir} is not a directory")
    refuse_uploaded_secret_files(config, root)
    command = ["python", "-m", stage.module]
    if config_path is not None:
        command += ["--config", _inside(root, Path(config_path))]
    # The job's driver joins the cluster it runs on, whatever address the local config names.
    command += [*overrides, "ray.address=auto"]
    runtime_env = {"working_dir": str(root), "excludes": list(UPLOAD_EXCLUDES), "env_vars": dict(JOB_ENV)}
    if pip:
        runtime_env["pip"] = {"packages": project_dependencies(root), "pip_check": False}
    return JobSpec(shlex.join(command), runtime_env, {"socialalign_stage": stage.name})


def submit_stage(
    stage: Stage,
    address: str,
    config_path: str | None,
    overrides: Sequence[str],
    working_dir: str | os.PathLike[str] = ".",
    wait: bool = True,
    submission_id: str | None = None,
    pip: bool = False,
) -> int:
    """Submit `stage` to the cluster whose dashboard is at `address`; 0 when the job succeeds."""
    spec = build_job(stage, config_path, overrides, working_dir, pip=pip)
    client = _client(address)
    job_id = submission_id or f"socialalign-{stage.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    try:
        job_id = client.submit_job(
            entrypoint=spec.entrypoint,
            runtime_env=spec.runtime_env,
            submission_id=job_id,
            metadata=spec.metadata,
        )
    except Exception as error:  # the SDK raises bare RuntimeError/ConnectionError subclasses
        raise SubmitError(f"the cluster at {address} refused the job: {error}") from error
    print(f"submitted {job_id} to {address}: {spec.entrypoint}", file=sys.stderr)
    print(f"  logs: ray job logs {job_id} --address {address}   stop: ray job stop {job_id} --address {address}",
          file=sys.stderr)
    if not wait:
        return 0
    try:
        status = follow(client, job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running (ray job stop {job_id} ends it)", file=sys.stderr)
        return 130
    if status != "SUCCEEDED":
        message = client.get_job_info(job_id).message or ""
        print(f"job {job_id} ended {status}: {message}".rstrip(": "), file=sys.stderr)
        return 1
    print(f"job {job_id} SUCCEEDED", file=sys.stderr)
    return 0


def follow(client: Any, job_id: str, poll_s: float = 0.5) -> str:
    """Stream the job's logs to stdout until it ends; its final status."""

    async def stream() -> None:
        async for lines in client.tail_job_logs(job_id):
            print(lines, end="", flush=True)

    asyncio.run(stream())
    while (status := str(client.get_job_status(job_id).value)) not in TERMINAL:
        time.sleep(poll_s)
    return status


def project_dependencies(root: Path) -> list[str]:
    """The `[project] dependencies` of `root`/pyproject.toml (else of the installed socialalign), less Ray."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = None
    pyproject = root / "pyproject.toml"
    if tomllib is not None and pyproject.is_file():
        try:
            requirements = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
        except (tomllib.TOMLDecodeError, KeyError) as error:
            raise SubmitError(f"{pyproject}: no readable [project] dependencies ({error})") from None
    else:
        from importlib.metadata import PackageNotFoundError, requires

        try:
            requirements = [r for r in requires("socialalign") or [] if "extra ==" not in r]
        except PackageNotFoundError:
            raise SubmitError(f"--pip: no pyproject.toml in {root} and socialalign is not installed") from None
    return [r for r in requirements if _requirement_name(r) not in NOT_PIP_INSTALLED]


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def auth_token() -> str | None:
    """Ray's token, from where Ray itself looks: RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        token = path.read_text().strip() if path.is_file() else ""
    register_secret(token)
    return token or None


def _client(address: str) -> Any:
    from ray.job_submission import JobSubmissionClient

    token = auth_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as error:
        raise SubmitError(f"cannot reach the Ray dashboard at {address}: {error}") from error


def _inside(root: Path, config_path: Path) -> str:
    resolved = config_path.resolve()
    if not resolved.is_relative_to(root):
        raise SubmitError(
            f"config file {config_path} is outside the working dir {root}; "
            "only the working dir is uploaded, so move the file there or pass --working-dir"
        )
    return resolved.relative_to(root).as_posix()


def refuse_secret_overrides(model: type[BaseModel], overrides: Sequence[str]) -> None:
    """ConfigError for the first `key=value` that holds a secret: a secret field of `model` (or a field
    under one), a value whose YAML sets one (`persona={base_url: ..., api_key: ...}`), or a secret key
    anywhere inside the value (in lists too). The message shows the key only."""
    secrets = secret_fields(model)
    for item in overrides:
        key, value, _ = parse_override(item)
        found = secret_in_override(key, value, secrets)
        if found is not None:
            raise ConfigError(
                f"argument '{key}=***': a secret is never put on a job's command line (the dashboard shows it, "
                f"and so does submit), and {found} is one; set {_env_of(found, secrets)} instead"
            )


def refuse_inline_secrets(model: type[BaseModel], config_path: Path) -> None:
    """ConfigError when the config file sets a secret inline: it would be uploaded with the working dir."""
    try:
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return  # load_config reports it, naming the file and line
    secrets = secret_fields(model)
    found = next((dotted for dotted in secrets if filled(lookup(data, dotted))), None)
    found = found or next(secret_keys_inside(data, secret_keys(secrets)), None)
    if found is not None:
        raise ConfigError(
            f"{config_path}: sets the secret {found} inline; submit uploads the config with the working dir "
            f"(the cluster's job store and every node keep a copy), so remove it from the file and set "
            f"{_env_of(found, secrets)} instead"
        )


def refuse_uploaded_secret_files(config: BaseModel, root: Path) -> None:
    """ConfigError when a file of secrets (`cookies_file`) lies inside the working dir `root`: it would be
    uploaded with the code (or, if excluded, be missing from the job's copy, where a relative path points)."""
    secrets = secret_fields(type(config))
    for dotted, value in _secret_file_fields(config):
        path = Path(value).expanduser()
        resolved = (path if path.is_absolute() else root / path).resolve()
        if resolved.is_relative_to(root):
            field_of = dotted.removesuffix("_file")
            env = f"set {_env_of(field_of, secrets)}" if field_of in secrets else f"use {CLUSTER_ENVIRONMENT}"
            raise ConfigError(
                f"{dotted} {value} is inside the working dir {root}: submit would upload it with the code (the "
                f"cluster's job store and every node keep a copy), or, where it is excluded, the job would not find "
                f"it; {env}, or put the file on storage the cluster reads, outside the working dir, and name it by "
                "its absolute path"
            )


def _env_of(dotted: str, secrets: dict[str, list[str]]) -> str:
    """Where a secret belongs instead: its environment variable, in the cluster's environment."""
    owner = next((d for d in secrets if dotted == d or dotted.startswith(f"{d}.")), None)
    if owner is None:  # a key inside a value: the secret field of that name, if the model has one
        leaf = dotted.rsplit(".", 1)[-1]
        owner = next((d for d in secrets if d.rsplit(".", 1)[-1] == leaf), None)
    if owner is None:
        return f"it in {CLUSTER_ENVIRONMENT}"
    return f"{' or '.join(secrets[owner])} in {CLUSTER_ENVIRONMENT}"


def _secret_file_fields(config: BaseModel, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted field, value) of each field that names a file of secrets and is set, nested models too."""
    secrets = secret_fields(type(config))
    for name in type(config).model_fields:
        value = getattr(config, name)
        dotted = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from _secret_file_fields(value, f"{dotted}.")
        elif value and (name.endswith(SECRET_FILE_SUFFIXES) or (
                name.endswith("_file") and name.removesuffix("_file") in {d.rsplit(".", 1)[-1] for d in secrets})):
            yield dotted, value
