"""Config loading: YAML, overrides, env secrets, precedence, and error messages people can act on."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.config import ConfigError, dump_config, load_config, parse_override, secret_fields
from cluster.logs import redact
from cluster.stages import STAGES
from crawl_actors.config import CrawlConfig
from dataset_jobs.config import DatasetConfig
from serve.config import ServeConfig
from train_jobs.config import TrainConfig

NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "stage.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_research_defaults() -> None:
    config = load_config(TrainConfig, environ=NO_ENV)
    assert (config.learning_rate, config.epochs, config.effective_batch_size) == (2e-5, 2, 16)
    assert (config.warmup_ratio, config.weight_decay, config.max_grad_norm, config.max_length) == (0.1, 0.01, 1.0, 1024)
    assert config.ray.address == "local"
    decoding = load_config(ServeConfig, environ=NO_ENV).decoding
    assert (decoding.temperature, decoding.top_p, decoding.top_k) == (0.7, 0.9, 20)
    assert (decoding.repetition_penalty, decoding.max_new_tokens) == (1.2, 256)


def test_yaml_values_are_typed(tmp_path: Path) -> None:
    path = write(tmp_path, "learning_rate: 1.0e-4\nmethod: lora\nray:\n  address: auto\n  num_cpus: 8\n")
    config = load_config(TrainConfig, path, environ=NO_ENV)
    assert config.learning_rate == pytest.approx(1e-4)
    assert config.method == "lora"
    assert config.ray.address == "auto" and config.ray.num_cpus == 8
    assert config.zero_stage == 2  # untouched fields keep their defaults


def test_overrides_beat_the_file_and_parse_like_yaml(tmp_path: Path) -> None:
    path = write(tmp_path, "epochs: 3\nuse_gpu: false\n")
    config = load_config(
        TrainConfig,
        path,
        ["epochs=1", "use_gpu=true", "ray.address=ray://head:10001", "resources_per_worker={GPU: 1}"],
        environ=NO_ENV,
    )
    assert config.epochs == 1 and config.use_gpu is True
    assert config.ray.address == "ray://head:10001"
    assert config.resources_per_worker == {"GPU": 1.0}


def test_list_override_and_later_override_wins() -> None:
    config = load_config(DatasetConfig, overrides=["steps=[clean, sft]", "top_k=3", "top_k=7"], environ=NO_ENV)
    assert config.steps == ["clean", "sft"]
    assert config.top_k == 7


def test_secret_comes_from_env_and_is_never_printed() -> None:
    env = {"SOCIALALIGN_REDIS_URL": "redis://:hunter2-password@cache:6379/0"}
    config = load_config(CrawlConfig, environ=env)
    assert config.redis_url is not None
    assert config.redis_url.get_secret_value() == env["SOCIALALIGN_REDIS_URL"]
    dumped = dump_config(config)
    assert "hunter2-password" not in dumped and "hunter2-password" not in repr(config)
    assert yaml.safe_load(dumped)["redis_url"] == "**********"


def test_first_env_name_that_is_set_wins() -> None:
    both = {"SOCIALALIGN_LLM_API_KEY": "sk-from-socialalign-var", "OPENAI_API_KEY": "sk-from-openai-var"}
    only_openai = {"OPENAI_API_KEY": "sk-from-openai-var"}
    assert load_config(DatasetConfig, environ=both).persona.api_key.get_secret_value() == "sk-from-socialalign-var"
    assert load_config(DatasetConfig, environ=only_openai).persona.api_key.get_secret_value() == "sk-from-openai-var"


def test_precedence_file_then_env_then_argument(tmp_path: Path) -> None:
    path = write(tmp_path, "auth_token: token-in-the-file\n")
    env = {"SOCIALALIGN_SERVE_TOKEN": "token-in-the-env"}
    assert load_config(ServeConfig, path, environ=NO_ENV).auth_token.get_secret_value() == "token-in-the-file"
    assert load_config(ServeConfig, path, environ=env).auth_token.get_secret_value() == "token-in-the-env"
    from_arg = load_config(ServeConfig, path, ["auth_token=token-in-the-arg"], environ=env)
    assert from_arg.auth_token.get_secret_value() == "token-in-the-arg"


def test_log_level_falls_back_to_the_environment_then_info(tmp_path: Path) -> None:
    env = {"SOCIALALIGN_LOG_LEVEL": "debug"}
    assert load_config(TrainConfig, environ=NO_ENV).log_level == "INFO"
    assert load_config(TrainConfig, environ=env).log_level == "DEBUG"
    path = write(tmp_path, "log_level: warning\n")
    assert load_config(TrainConfig, path, environ=env).log_level == "WARNING"  # the file wins over the env
    assert load_config(TrainConfig, path, ["log_level=ERROR"], environ=env).log_level == "ERROR"


def test_a_bad_log_level_in_the_environment_is_named() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(TrainConfig, environ={"SOCIALALIGN_LOG_LEVEL": "loud"})
    assert str(error.value) == (
        "environment variable SOCIALALIGN_LOG_LEVEL: log_level: expected 'DEBUG', 'INFO', 'WARNING' or 'ERROR' "
        "(got 'LOUD')"
    )


def test_every_secret_field_names_an_env_var() -> None:
    found = {name: secret_fields(stage.config_model()) for name, stage in STAGES.items()}
    assert found["crawl"] == {
        "cookies": ["SOCIALALIGN_WEIBO_COOKIES"],
        "redis_url": ["SOCIALALIGN_REDIS_URL"],
    }
    assert found["build-dataset"] == {"persona.api_key": ["SOCIALALIGN_LLM_API_KEY", "OPENAI_API_KEY"]}
    assert found["serve"] == {"auth_token": ["SOCIALALIGN_SERVE_TOKEN"]}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("learning_rate: fast\n", "stage.yaml:1: learning_rate: expected a valid number"),
        ("method: pac-lora\n", "stage.yaml:1: method: expected 'pac_lora' or 'lora' (got 'pac-lora')"),
        ("epochs: 1\nzero_stage: 4\n", "stage.yaml:2: zero_stage: expected 2 or 3 (got 4)"),
        ("ray:\n  adress: auto\n", "stage.yaml:2: ray.adress: unknown field; did you mean 'address'?"),
        ("ray:\n  address: somewhere\n", "stage.yaml:2: ray.address: expected local, auto, ray://HOST:PORT"),
        ("warmup_ratio: 1.5\n", "stage.yaml:1: warmup_ratio: expected a value less than 1 (got 1.5)"),
    ],
)
def test_bad_values_name_file_line_field_and_expectation(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(TrainConfig, path, environ=NO_ENV)
    message = str(error.value)
    assert len(message.splitlines()) == 1
    assert expected in message
    assert str(tmp_path) in message


def test_every_problem_gets_its_own_line(tmp_path: Path) -> None:
    path = write(tmp_path, "learning_rate: fast\nmethod: qlora\n")
    with pytest.raises(ConfigError) as error:
        load_config(TrainConfig, path, ["epochs=-1"], environ=NO_ENV)
    lines = str(error.value).splitlines()
    assert len(lines) == 3
    assert any(line.startswith("argument 'epochs=-1': epochs: expected a value greater than 0") for line in lines)


def test_abbreviated_field_suggests_the_full_name() -> None:
    with pytest.raises(ConfigError, match=r"argument 'lr=3': lr: unknown field; did you mean 'learning_rate'\?"):
        load_config(TrainConfig, overrides=["lr=3"], environ=NO_ENV)


def test_a_misspelt_nested_field_is_caught_when_the_config_loads() -> None:
    with pytest.raises(ConfigError, match=r"adapter.rnak: unknown field; did you mean 'r'\?"):
        load_config(TrainConfig, overrides=["adapter.rnak=8"], environ=NO_ENV)
    with pytest.raises(ConfigError, match=r"adapter.routing: expected one of \('sequence', 'token'\)"):
        load_config(TrainConfig, overrides=["adapter.routing=tokens"], environ=NO_ENV)


def test_a_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as error:
        load_config(ServeConfig, overrides=["auth_token=[not, a, string-but-secret]"], environ=NO_ENV)
    assert "auth_token" in str(error.value) and "string-but-secret" not in str(error.value)
    assert "auth_token=***" in str(error.value)


@pytest.mark.parametrize(
    "override",
    [
        "persona={base_url: 'http://127.0.0.1:9/v1', api_key: sk-nested-in-a-mapping, concurrency: fast}",
        "persona={api_key: sk-nested-in-a-mapping, concurren: 4}",
        "persona.api_key=[sk-nested-in-a-mapping]",
    ],
)
def test_a_secret_nested_in_an_override_is_never_echoed_nor_logged(override: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(DatasetConfig, overrides=[override], environ=NO_ENV)
    assert "argument 'persona" in str(error.value) and "=***'" in str(error.value)
    assert "sk-nested-in-a-mapping" not in str(error.value)
    # registered for redaction before validation failed, so a log line that quotes it is masked
    assert "sk-nested-in-a-mapping" not in redact("the provider said: bad key sk-nested-in-a-mapping")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1,\n b: 2\n", "stage.yaml:3:1: invalid YAML"),
        ("- just\n- a list\n", "expected a mapping of field: value at the top, got list"),
    ],
)
def test_unreadable_files(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_config(TrainConfig, write(tmp_path, text), environ=NO_ENV)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(TrainConfig, tmp_path / "nope.yaml", environ=NO_ENV)


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    assert load_config(TrainConfig, write(tmp_path, ""), environ=NO_ENV) == load_config(TrainConfig, environ=NO_ENV)


@pytest.mark.parametrize("item", ["epochs", "=3", "a..b=1", "ray.=x", "1abc=2"])
def test_malformed_override(item: str) -> None:
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override(item)


def test_printed_config_loads_back_to_the_same_config(tmp_path: Path) -> None:
    config = load_config(TrainConfig, overrides=["method=lora", "ray.num_cpus=3", "adapter={r: 4}"], environ=NO_ENV)
    again = load_config(TrainConfig, write(tmp_path, dump_config(config)), environ=NO_ENV)
    assert again == config


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=30))
def test_any_override_text_either_loads_or_raises_config_error(value: str) -> None:
    for key in ("learning_rate", "method", "ray.address", "steps"):
        model = DatasetConfig if key == "steps" else TrainConfig
        try:
            load_config(model, overrides=[f"{key}={value}"], environ=NO_ENV)
        except ConfigError as error:
            assert key in str(error)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=10_000), st.floats(min_value=1e-9, max_value=1.0, allow_nan=False))
def test_numeric_overrides_round_trip(workers: int, lr: float) -> None:
    overrides = [f"num_workers={workers}", f"effective_batch_size={2 * workers}", f"learning_rate={lr!r}"]
    config = load_config(TrainConfig, overrides=overrides, environ=NO_ENV)
    assert config.num_workers == workers
    assert config.learning_rate == pytest.approx(lr)
