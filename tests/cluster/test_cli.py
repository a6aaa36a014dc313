"""The `socialalign` CLI and `python -m <stage>`: one entry point, help for everything, clear failures."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from cluster.cli import main
from cluster.stages import STAGES
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
SUBCOMMANDS = ["crawl", "build-dataset", "train", "serve", "predict", "evaluate", "demo", "submit"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_console_script_lists_all_eight_subcommands() -> None:
    script = Path(sys.executable).parent / "socialalign"
    result = run_cli(str(script), "--help")
    assert result.returncode == 0, result.stderr
    listed = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ") and line.split()]
    assert [name for name in listed if name in SUBCOMMANDS] == SUBCOMMANDS


def test_python_m_cluster_is_the_same_cli() -> None:
    result = run_cli(sys.executable, "-m", "cluster", "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: python -m cluster" in result.stdout
    assert all(name in result.stdout for name in SUBCOMMANDS)


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert f"usage: socialalign {command}" in text
    if command != "submit":
        assert STAGES[command].summary in text
        assert "Config fields" in text and "ray.address = local" in text


@pytest.mark.parametrize("stage", list(STAGES.values()), ids=list(STAGES))
def test_python_m_stage_module_help(stage) -> None:
    result = run_cli(sys.executable, "-m", stage.module, "--help")
    assert result.returncode == 0, result.stderr
    assert f"usage: python -m {stage.module}" in result.stdout
    assert "Config fields" in result.stdout


def print_config(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main([*args, "--print-config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_masks_secrets(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALALIGN_SERVE_TOKEN", "serve-token-that-stays-hidden")
    shown = print_config(capsys, "serve", "port=9000")
    assert shown["port"] == 9000
    assert shown["auth_token"] == "**********"


def test_flags_are_config_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert print_config(capsys, "build-dataset", "--steps", "clean, sft")["steps"] == ["clean", "sft"]
    shown = print_config(capsys, "evaluate", "--predictions", "a.parquet", "--predictions", "it's b.parquet")
    assert shown["predictions"] == ["a.parquet", "it's b.parquet"]
    shown = print_config(capsys, "demo", "--size", "smoke", "--address", "auto", "--keep-serving", "--out", "x")
    assert (shown["size"], shown["ray"]["address"], shown["keep_serving"], shown["out"]) == ("smoke", "auto", True, "x")


def test_overrides_may_come_before_and_after_options(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 5\n")
    argv = ["train", "epochs=1", "--config", str(path), "--log-level", "DEBUG", "method=lora", "--print-config"]
    assert main(argv) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert (shown["epochs"], shown["method"], shown["log_level"]) == (1, "lora", "DEBUG")


def test_config_error_exits_2_with_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "train.yaml"
    path.write_text("learning_rate: fast\nmethd: lora\n")
    assert main(["train", "--config", str(path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [
        f"socialalign train: config error: {path}:1: learning_rate: expected a valid number, "
        "unable to parse string as a number (got 'fast')",
        f"socialalign train: config error: {path}:2: methd: unknown field; did you mean 'method'?",
    ]


def test_stray_arguments_are_rejected(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--print-config", "not-an-override"]) == 2
    assert "argument 'not-an-override': expected key=value" in capsys.readouterr().err
    assert main(["train", "epochs=1", "--bogus"]) == 2
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


def test_submit_needs_a_dashboard_url(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["submit", "train"]) == 2
    assert "--address is required" in capsys.readouterr().err


@pytest.fixture()
def root_level() -> Iterator[None]:
    """Tests here set the root logger's level through the CLI; put it back afterwards."""
    before = logging.getLogger().level
    yield
    logging.getLogger().setLevel(before)


def test_log_level_comes_from_the_environment_unless_given(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, root_level: None
) -> None:
    monkeypatch.setenv("SOCIALALIGN_LOG_LEVEL", "WARNING")
    assert print_config(capsys, "train")["log_level"] == "WARNING"
    assert logging.getLogger().level == logging.WARNING
    assert print_config(capsys, "train", "--log-level", "DEBUG")["log_level"] == "DEBUG"
    assert logging.getLogger().level == logging.DEBUG
    monkeypatch.delenv("SOCIALALIGN_LOG_LEVEL")
    assert print_config(capsys, "train")["log_level"] == "INFO"


def test_a_dashboard_address_that_answers_nothing_fails_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["crawl", f"ray.address={address}"]) == 1
    err = capsys.readouterr().err
    assert f"socialalign crawl: cannot reach the Ray dashboard at {address}" in err
    assert "Traceback" not in err


def test_a_secret_override_with_a_dashboard_address_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", f"ray.address=http://127.0.0.1:{free_port()}", "auth_token=letmein-please"]) == 2
    err = capsys.readouterr().err
    assert "socialalign serve: config error: argument 'auth_token=***': a secret is never put on a job's" in err
    assert "Traceback" not in err and "letmein-please" not in err


def test_submit_options_reach_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    import cluster.submit

    seen = {}
    monkeypatch.setattr(cluster.submit, "submit_stage", lambda *args, **options: seen.update(options) or 0)
    assert main(["submit", "crawl", "--address", "http://127.0.0.1:8265", "--pip", "--no-wait"]) == 0
    assert seen["pip"] is True and seen["wait"] is False
    assert main(["submit", "crawl", "--address", "http://127.0.0.1:8265"]) == 0
    assert seen["pip"] is False and seen["wait"] is True
