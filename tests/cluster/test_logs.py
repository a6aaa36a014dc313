"""Secrets never reach a log line, whether in the message, its arguments or a traceback."""

from __future__ import annotations

import logging

import pytest

from cluster.config import load_config
from cluster.logs import REDACTED, redact, register_secret, setup_logging
from crawl_actors.config import CrawlConfig


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
