"""Secrets never reach a log line, whether in the message, its arguments or a traceback, and
whichever process logs it: a Ray worker that reads a secret from its environment masks it too."""

from __future__ import annotations

import io
import logging
import secrets
import sys
from pathlib import Path

import pytest

from cluster.config import load_config, secret_fields
from cluster.logs import (
    REDACTED,
    SECRET_ENV_NAMES,
    redact,
    register_secret,
    register_secrets_from_env,
    setup_logging,
)
from cluster.stages import STAGES
from crawl_actors.config import CrawlConfig


def ray_remote_class():
    """ray.remote, imported only when this module is collected with Ray installed."""
    import ray

    return ray.remote(num_cpus=0)


@pytest.fixture()
def log_text(capsys: pytest.CaptureFixture[str]):
    setup_logging("INFO")

    def read() -> str:
        return capsys.readouterr().err

    return read


def test_secrets_loaded_from_env_are_masked_in_logs(log_text) -> None:
    # Shaped like a Weibo SUB cookie but plainly fake (split so secret scanners do not flag it).
    cookie = "SUB=_2A25" + "cookie-value-that-must-not-leak; SUBP=0033WrSXqPxfM"
    load_config(CrawlConfig, environ={"SOCIALALIGN_WEIBO_COOKIES": cookie})
    logger = logging.getLogger("test.crawl")
    logger.info("requesting with cookie %s", cookie)
    logger.warning(f"raw f-string with {cookie} inside")
    text = log_text()
    assert cookie not in text and "cookie-value-that-must-not-leak" not in text
    assert text.count(REDACTED) == 2
    assert "requesting with cookie" in text


def test_secret_inside_a_traceback_is_masked(log_text) -> None:
    register_secret("sk-test-api-key-1234567890")
    try:
        raise RuntimeError("endpoint rejected sk-test-api-key-1234567890")
    except RuntimeError:
        logging.getLogger("test.persona").exception("persona call failed")
    text = log_text()
    assert "sk-test-api-key-1234567890" not in text
    assert "RuntimeError: endpoint rejected ***" in text


def test_short_values_are_not_treated_as_secrets() -> None:
    register_secret("abc")
    assert redact("abc def") == "abc def"


def test_inline_secret_in_yaml_is_warned_about_and_masked(tmp_path, log_text) -> None:
    path = tmp_path / "crawl.yaml"
    path.write_text("redis_url: redis://:inline-password-123@cache:6379/0\n")
    load_config(CrawlConfig, path, environ={})
    logging.getLogger("test").info("connecting to redis://:inline-password-123@cache:6379/0")
    text = log_text()
    assert "inline-password-123" not in text
    assert "sets the secret redis_url inline; prefer the environment variable SOCIALALIGN_REDIS_URL" in text


# --- secrets a process reads from its environment (Ray workers) -----------------------------------


def test_secrets_from_the_environment_are_registered_line_by_line_and_by_url_password() -> None:
    environ = {
        "SOCIALALIGN_LLM_API_KEY": "sk-env-key-0123456789",
        "SOCIALALIGN_WEIBO_COOKIES": "SUB=first-cookie-abcdef\nSUB=second-cookie-ghijkl\n",
        "SOCIALALIGN_REDIS_URL": "redis://:redis-pass-987654@socialalign-redis:6379/0",
        "SOCIALALIGN_SERVE_TOKEN": "   ",  # blank: not set
        "UNRELATED": "not-a-secret-value",
    }
    assert register_secrets_from_env(environ=environ) == [
        "SOCIALALIGN_WEIBO_COOKIES", "SOCIALALIGN_REDIS_URL", "SOCIALALIGN_LLM_API_KEY"]
    text = redact("key sk-env-key-0123456789, cookie SUB=second-cookie-ghijkl, AUTH redis-pass-987654 failed")
    assert text == "key ***, cookie ***, AUTH *** failed"
    assert redact("not-a-secret-value") == "not-a-secret-value"
    assert register_secrets_from_env(["UNRELATED"], environ) == ["UNRELATED"]  # the names are an argument
    assert redact("not-a-secret-value") == REDACTED


def test_every_secret_env_var_of_every_stage_is_known_to_the_foundation() -> None:
    declared = {name for stage in STAGES.values() for names in secret_fields(stage.config_model()).values()
                for name in names}
    assert declared and declared <= set(SECRET_ENV_NAMES)


def test_records_written_by_handlers_that_are_not_ours_are_redacted_too(log_text) -> None:
    """Ray's own loggers write through their own handler and do not propagate: a worker's provider
    error logged there must be masked as well, and so must a traceback another formatter renders."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    ray_like = logging.getLogger("test.ray_like")
    ray_like.addHandler(handler)
    ray_like.propagate = False
    try:
        register_secret("sk-key-seen-by-a-worker-42")
        ray_like.warning("provider said: invalid key %s", "sk-key-seen-by-a-worker-42")
        try:
            raise PermissionError("401: sk-key-seen-by-a-worker-42 is not valid")
        except PermissionError:
            ray_like.exception("call failed")
        ray_like.info("stack", stack_info=True)
    finally:
        ray_like.removeHandler(handler)
    text = stream.getvalue()
    assert "sk-key-seen-by-a-worker-42" not in text
    assert "provider said: invalid key ***" in text and "PermissionError: 401: *** is not valid" in text


@ray_remote_class()
class _SecretReadingWorker:
    """What a worker that calls an endpoint does: read the key from its environment, register it."""

    def run(self) -> tuple[list[str], str]:
        import os

        from cluster.logs import register_secrets_from_env, setup_logging

        setup_logging("INFO")
        names = register_secrets_from_env()
        key = os.environ["SOCIALALIGN_LLM_API_KEY"]
        logging.getLogger("dataset_jobs.persona").warning("endpoint refused key %s", key)
        logging.getLogger("ray.data.test").warning("through Ray's handler: %s", key)
        try:
            raise RuntimeError(f"Error code: 401 - incorrect API key provided: {key}")
        except RuntimeError:
            logging.getLogger("dataset_jobs.persona").exception("persona call failed")
        for handler in (*logging.getLogger().handlers, *logging.getLogger("ray").handlers):
            handler.flush()
        sys.stderr.flush()
        return names, os.readlink("/proc/self/fd/2")  # Ray's worker-*.err file, which it forwards


def test_a_ray_worker_that_reads_its_key_from_the_environment_never_logs_it(ray_local) -> None:
    import ray

    key = "sk-worker-" + secrets.token_hex(12)
    # The test's way to put the key in the worker's environment; a cluster sets it in the pod.
    worker = _SecretReadingWorker.options(runtime_env={"env_vars": {"SOCIALALIGN_LLM_API_KEY": key}}).remote()
    names, log_path = ray.get(worker.run.remote(), timeout=120)
    ray.kill(worker)
    assert "SOCIALALIGN_LLM_API_KEY" in names
    text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    assert key not in text
    assert "endpoint refused key ***" in text and "through Ray's handler: ***" in text
    assert "RuntimeError: Error code: 401 - incorrect API key provided: ***" in text
