"""`socialalign submit`: the job it builds, Ray's token auth, and real jobs on a real `ray start --head`
(the session's `ray_head`, tests/cluster/conftest.py): a crawl of the local simulator that must
succeed, write its tables, leave its logs with the job API and its metrics on the node's Prometheus
endpoint, and a job that must fail."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray.job_submission import JobSubmissionClient

from cluster.config import ConfigError, secret_fields
from cluster.stages import STAGES
from cluster.submit import UPLOAD_EXCLUDES, SubmitError, auth_token, build_job, project_dependencies
from crawl_actors.output import read_table
from crawl_actors.simulator import SimulatorConfig, WeiboSimulator, unlimited_rates
from tests.cluster.prometheus import Samples, scrape_until
from tests.conftest import PACKAGES, REPO, VENV_BIN


def test_job_runs_the_stage_module_with_the_config_relative_to_the_working_dir(tmp_path: Path) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "train.yaml").write_text("method: lora\n")
    spec = build_job(STAGES["train"], str(tmp_path / "configs" / "train.yaml"), ["epochs=1"], tmp_path)
    assert spec.entrypoint == "python -m train_jobs --config configs/train.yaml epochs=1 ray.address=auto"
    assert spec.runtime_env["working_dir"] == str(tmp_path.resolve())
    assert set(UPLOAD_EXCLUDES) <= set(spec.runtime_env["excludes"]) and ".venv" in UPLOAD_EXCLUDES
    assert spec.metadata == {"socialalign_stage": "train"}


def test_outputs_and_environments_are_never_uploaded_but_package_data_is(tmp_path: Path) -> None:
    """Matched by Ray's own upload filter, which reads the excludes as .gitignore lines."""
    from ray._private.runtime_env.packaging import _get_excludes

    excluded = _get_excludes(tmp_path, build_job(STAGES["crawl"], None, [], tmp_path).runtime_env["excludes"])
    for left_out in (".venv/bin/python", ".git/HEAD", "data/crawl/posts/part-0.parquet", "demo-out/logs/demo.log",
                     "out/x", "secrets/cookies.txt", "configs/secrets/cookies.txt", "cluster/__pycache__/a.pyc"):
        assert excluded(tmp_path / left_out), left_out
    for uploaded in ("crawl_actors/data/weibo_regions.json", "crawl_actors/job.py", "configs/crawl.yaml",
                     "serve/out.py"):
        assert not excluded(tmp_path / uploaded), uploaded


def test_without_pip_the_cluster_image_provides_the_dependencies(tmp_path: Path) -> None:
    assert "pip" not in build_job(STAGES["crawl"], None, [], tmp_path).runtime_env


def test_pip_installs_the_projects_dependencies_but_not_ray(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\ndependencies = ["ray[data,serve]>=2.60,<2.61", "torch>=2.13", "Pyarrow>=26", '
        '"tomli; python_version < \'3.11\'"]\n'
    )
    spec = build_job(STAGES["crawl"], None, [], tmp_path, pip=True)
    assert spec.runtime_env["pip"] == {
        "packages": ["torch>=2.13", "Pyarrow>=26", "tomli; python_version < '3.11'"],
        "pip_check": False,
    }
    assert spec.runtime_env["working_dir"] == str(tmp_path.resolve())


def test_pip_of_this_checkout_is_its_pyproject_dependencies() -> None:
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    packages = project_dependencies(REPO)
    assert packages == [r for r in declared if not r.startswith("ray")]
    assert any(r.startswith("torch") for r in packages) and any(r.startswith("pyarrow") for r in packages)


def test_pip_without_readable_dependencies_is_refused(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(SubmitError, match="no readable \\[project\\] dependencies"):
        build_job(STAGES["crawl"], None, [], tmp_path, pip=True)


def test_overrides_with_spaces_are_quoted_for_the_shell(tmp_path: Path) -> None:
    spec = build_job(STAGES["build-dataset"], None, ["exclusion_words=[抽奖, 转发 抽奖]"], tmp_path)
    assert spec.entrypoint == "python -m dataset_jobs 'exclusion_words=[抽奖, 转发 抽奖]' ray.address=auto"


def test_config_outside_the_working_dir_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "train.yaml"
    outside.write_text("epochs: 1\n")
    (tmp_path / "work").mkdir()
    with pytest.raises(SubmitError, match="outside the working dir"):
        build_job(STAGES["train"], str(outside), [], tmp_path / "work")


def test_a_secret_never_goes_on_the_job_command_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"auth_token=\*\*\*.*set SOCIALALIGN_SERVE_TOKEN in the cluster"):
        build_job(STAGES["serve"], None, ["auth_token=letmein-please"], tmp_path)


# Plainly fake secrets, split so that secret scanners do not flag them.
API_KEY = "sk-" + "proj-fake-key-0123456789abcdef"
REDIS_PASSWORD = "redis-" + "password-0123456789"


@pytest.mark.parametrize(
    ("stage", "override", "field", "env"),
    [
        ("build-dataset", f"persona={{base_url: http://llm:8000/v1, model: m, api_key: {API_KEY}}}",
         "persona.api_key", "SOCIALALIGN_LLM_API_KEY"),
        ("build-dataset", f"persona.api_key={API_KEY}", "persona.api_key", "SOCIALALIGN_LLM_API_KEY"),
        ("evaluate", f"judge={{model: m, api_key: {API_KEY}}}", "judge.api_key", "SOCIALALIGN_LLM_API_KEY"),
        ("crawl", f"redis_url=redis://:{REDIS_PASSWORD}@cache:6379/0", "redis_url", "SOCIALALIGN_REDIS_URL"),
        ("crawl", f"cookies=SUB={API_KEY}", "cookies", "SOCIALALIGN_WEIBO_COOKIES"),
        # Inside a list, or under a field the stage does not have: still a secret, still never echoed.
        ("build-dataset", f"persona=[{{api_key: {API_KEY}}}]", "persona.0.api_key", "SOCIALALIGN_LLM_API_KEY"),
        ("build-dataset", f"judge.api_key={API_KEY}", "judge.api_key", "the cluster's environment"),
        ("serve", f"adapters={{pac-lora: {{path: /a, token: {API_KEY}}}}}", "adapters.pac-lora.token",
         "the cluster's environment"),
    ],
)
def test_a_secret_anywhere_in_an_override_is_refused_without_showing_it(
    tmp_path: Path, stage: str, override: str, field: str, env: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        build_job(STAGES[stage], None, [override], tmp_path)
    message = str(refused.value)
    assert f"and {field} is one;" in message and env in message and "=***'" in message
    assert API_KEY not in message and REDIS_PASSWORD not in message


_SECRET_TEXT = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=8, max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=_SECRET_TEXT, in_list=st.booleans())
def test_every_secret_field_is_refused_however_its_override_nests_it(tmp_path: Path, data, value: str,
                                                                     in_list: bool) -> None:
    """Any secret field of any stage, set through any of its parents as a YAML mapping (or a list of
    one): refused, and the value is never in the message."""
    choices = [(name, dotted) for name, stage in STAGES.items() for dotted in secret_fields(stage.config_model())]
    name, dotted = data.draw(st.sampled_from(choices))
    parts = dotted.split(".")
    split = data.draw(st.integers(min_value=1, max_value=len(parts)))
    nested: object = value
    for part in reversed(parts[split:]):
        nested = {part: nested}
    if in_list and split < len(parts):
        nested = [nested]
    text = yaml.safe_dump(nested, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()
    with pytest.raises(ConfigError) as refused:
        build_job(STAGES[name], None, [f"{'.'.join(parts[:split])}={text}"], tmp_path)
    assert value not in str(refused.value) and "a secret is never put on a job's command line" in str(refused.value)


def test_overrides_that_only_look_like_secrets_pass(tmp_path: Path) -> None:
    spec = build_job(STAGES["serve"], None, ["decoding={max_new_tokens: 48}"], tmp_path)
    assert "decoding=" in spec.entrypoint


@pytest.mark.parametrize(
    ("stage", "text", "field", "env"),
    [
        ("crawl", f"output_dir: out/crawl\nredis_url: redis://:{REDIS_PASSWORD}@cache:6379/0\n", "redis_url",
         "SOCIALALIGN_REDIS_URL"),
        ("build-dataset", f"persona:\n  base_url: http://llm:8000/v1\n  model: m\n  api_key: {API_KEY}\n",
         "persona.api_key", "SOCIALALIGN_LLM_API_KEY"),
        ("serve", f"auth_token: {API_KEY}\n", "auth_token", "SOCIALALIGN_SERVE_TOKEN"),
    ],
)
def test_a_config_file_with_an_inline_secret_is_not_uploaded(tmp_path: Path, stage: str, text: str, field: str,
                                                             env: str) -> None:
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "stage.yaml").write_text(text)
    with pytest.raises(ConfigError) as refused:
        build_job(STAGES[stage], str(tmp_path / "configs" / "stage.yaml"), [], tmp_path)
    message = str(refused.value)
    assert f"stage.yaml: sets the secret {field} inline" in message and f"set {env}" in message
    assert API_KEY not in message and REDIS_PASSWORD not in message


@pytest.mark.parametrize("how", ["relative in the file", "absolute in the file", "as an override"])
def test_a_cookies_file_inside_the_working_dir_is_not_uploaded(tmp_path: Path, how: str) -> None:
    (tmp_path / "configs").mkdir()
    cookies = tmp_path / "configs" / "cookies.txt"
    cookies.write_text(f"SUB={API_KEY}\n")
    config, overrides = tmp_path / "configs" / "crawl.yaml", []
    if how == "as an override":
        config.write_text("output_dir: out/crawl\n")
        overrides = ["cookies_file=configs/cookies.txt"]
    else:
        config.write_text(f"cookies_file: {'configs/cookies.txt' if how.startswith('relative') else cookies}\n")
    with pytest.raises(ConfigError) as refused:
        build_job(STAGES["crawl"], str(config), overrides, tmp_path)
    message = str(refused.value)
    assert "cookies_file" in message and "is inside the working dir" in message
    assert "set SOCIALALIGN_WEIBO_COOKIES" in message and "absolute path" in message and API_KEY not in message


def test_a_cookies_file_outside_the_working_dir_stays_where_the_cluster_reads_it(tmp_path: Path) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "cookies.txt").write_text(f"SUB={API_KEY}\n")
    (tmp_path / "work" / "crawl.yaml").write_text(f"cookies_file: {tmp_path / 'cookies.txt'}\n")
    spec = build_job(STAGES["crawl"], str(tmp_path / "work" / "crawl.yaml"), [], tmp_path / "work")
    assert spec.entrypoint == "python -m crawl_actors --config crawl.yaml ray.address=auto"


def test_the_command_refuses_a_secret_and_never_prints_it(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAY_")}
    result = subprocess.run(
        [str(VENV_BIN / "socialalign"), "submit", "build-dataset", "--address", "http://127.0.0.1:9",
         f"persona={{base_url: http://llm:8000/v1, model: m, api_key: {API_KEY}}}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 2
    assert "argument 'persona=***': a secret is never put on a job's command line" in result.stderr
    assert "persona.api_key is one; set SOCIALALIGN_LLM_API_KEY" in result.stderr
    assert API_KEY not in result.stdout + result.stderr


def test_a_bad_config_fails_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="zero_stage: expected 2 or 3"):
        build_job(STAGES["train"], None, ["zero_stage=1"], tmp_path)


def test_auth_token_is_found_where_ray_looks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("token-in-home\n")
    assert auth_token() == "token-in-home"
    (tmp_path / "elsewhere").write_text("token-in-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "elsewhere"))
    assert auth_token() == "token-in-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "token-in-env")
    assert auth_token() == "token-in-env"


@pytest.fixture(scope="module")
def simulator() -> Iterator[WeiboSimulator]:
    """A small local Weibo for the job to crawl over real HTTP (the test's process serves it)."""
    sim = WeiboSimulator(SimulatorConfig(seed=3, num_users=12, history_posts=(3, 8), hot_topic_posts=30,
                                         topic_posts=10, rates=unlimited_rates()))
    with sim.running():
        yield sim


@pytest.fixture()
def working_dir(tmp_path: Path, simulator: WeiboSimulator) -> Path:
    """What a user's checkout holds: the packages and a crawl config; its cookies file lies outside."""
    work = tmp_path / "work"
    for package in PACKAGES:
        shutil.copytree(REPO / package, work / package, ignore=shutil.ignore_patterns("__pycache__"))
    (work / "configs").mkdir()
    # Outside the working dir (submit refuses to upload a secret file): where the cluster reads it.
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "cookies.txt").write_text("\n".join(simulator.new_cookies(2)) + "\n")
    start, end = simulator.search_window()
    crawl = {
        "keywords": [t.query for t in simulator.topics()],
        "start": start,
        "end": end,
        "cookies_file": str(tmp_path / "secrets" / "cookies.txt"),  # absolute: on storage the cluster reads
        "endpoints": {host: simulator.base_url for host in ("search", "mobile", "ajax", "ai")},
        "rates": {host: {"rate": 50, "burst": 5} for host in ("search", "mobile", "ajax", "ai")},
        "history_days": None,
        "num_actors": 2,
        "concurrency_per_actor": 4,
        "output_dir": str(tmp_path / "crawl-from-job"),  # absolute: outlives the job's working dir
    }
    (work / "configs" / "crawl.yaml").write_text(yaml.safe_dump(crawl, allow_unicode=True))
    return work


def submit(ray_head: dict[str, str], cwd: Path, *args: str, token_path: str | None = None):
    env = {**os.environ, "PATH": ray_head["PATH"], "RAY_AUTH_TOKEN_PATH": token_path or ray_head["token_path"]}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
        env.pop(name, None)
    return subprocess.run(
        [str(VENV_BIN / "socialalign"), "submit", *args, "--address", ray_head["address"]],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False,
    )


def test_a_submitted_stage_runs_on_the_cluster_and_its_logs_stay_with_the_job(ray_head, working_dir: Path) -> None:
    job_id = f"socialalign-crawl-test-{secrets.token_hex(3)}"
    result = submit(ray_head, working_dir, "crawl", "--config", "configs/crawl.yaml", "--submission-id", job_id)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "python -m crawl_actors --config configs/crawl.yaml ray.address=auto" in output
    assert "joined Ray at" in output  # it joined the cluster instead of starting its own
    assert "crawl finished in" in output and f"{job_id} SUCCEEDED" in output  # streamed while it ran
    token = Path(ray_head["token_path"]).read_text()
    assert token not in output
    # Afterwards, the job API still has its status and its whole log.
    client = JobSubmissionClient(ray_head["address"], headers={"Authorization": f"Bearer {token}"})
    info = client.get_job_info(job_id)
    assert str(info.status.value) == "SUCCEEDED" and info.metadata == {"socialalign_stage": "crawl"}
    logs = client.get_job_logs(job_id)
    assert "joined Ray at" in logs and "crawl finished in" in logs
    tables = Path(yaml.safe_load((working_dir / "configs" / "crawl.yaml").read_text())["output_dir"])
    assert read_table(tables, "posts").num_rows > 0 and read_table(tables, "users").num_rows > 0
    requests = int(re.search(r"crawl finished in \S+: (\d+) requests", logs)[1])
    _the_jobs_metrics_are_on_the_nodes_prometheus_endpoint(int(ray_head["metrics_export_port"]), requests)


def _the_jobs_metrics_are_on_the_nodes_prometheus_endpoint(port: int, requests: int) -> None:
    """The crawl's own counters (cluster/metrics.py) with the tag values the crawl gave them. Its gauges
    (frontier, cookie states) are not checked here: Ray drops a gauge about two export intervals after
    its process stops reporting, so they are gone once the job ends (test_metrics checks them live)."""
    hosts = ("search", "mobile", "ajax", "ai")  # test_metrics' synthetic samples carry t-<tag> values

    def total(samples: Samples, name: str, **tags: str) -> float:
        return sum(value for labels, value in samples.get(name, []) if tags.items() <= labels.items())

    def crawled(samples: Samples) -> bool:
        return (total(samples, "ray_socialalign_crawl_requests_total", host="search", status="200") > 0
                and total(samples, "ray_socialalign_crawl_requests_total", host="mobile", status="200") > 0
                and total(samples, "ray_socialalign_crawl_pages_total", kind="search") > 0
                and total(samples, "ray_socialalign_crawl_rows_total", table="posts") > 0
                and total(samples, "ray_socialalign_crawl_rows_total", table="users") > 0)

    # Workers report every second on this cluster (RAY_metrics_report_interval_ms, conftest.py).
    samples, text = scrape_until(port, crawled, timeout_s=30)
    found = {name: rows for name, rows in samples.items() if name.startswith("ray_socialalign_crawl")}
    assert crawled(samples), f"the crawl's metrics are not on 127.0.0.1:{port}/metrics after 30 s: {found}"
    assert "# HELP ray_socialalign_crawl_requests_total HTTP requests sent by crawl workers" in text
    # Never more requests than the crawl itself counted (fewer only if a worker's last report was cut off).
    exported = sum(total(samples, "ray_socialalign_crawl_requests_total", host=host) for host in hosts)
    assert 0 < exported <= requests, (exported, requests)


def test_a_failing_job_fails_the_command_and_shows_why(ray_head, working_dir: Path) -> None:
    result = submit(ray_head, working_dir, "train")
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "not a local Hugging Face model directory" in output  # the job's own error, streamed back
    assert "ended FAILED" in output


def test_a_wrong_token_is_refused_with_a_clear_message(ray_head, working_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong-token"
    wrong.write_text("0" * 32)
    result = submit(ray_head, working_dir, "crawl", "--config", "configs/crawl.yaml", token_path=str(wrong))
    assert result.returncode == 1
    assert "Invalid authentication token" in result.stderr
    assert "0" * 32 not in result.stderr
