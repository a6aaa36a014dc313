"""The serve stage's parts that need no model: labelers, the API service logic, populations, config files."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from ray.serve import Application
from ray.serve.schema import ServeDeploySchema

from cluster.config import ConfigError, load_config
from serve.config import ServeConfig
from serve.deploy_config import render
from serve.population import load_population, resolve_path
from serve.protocol import Completion, InvalidPrompt, LimitExceeded
from serve.responses import aggregate
from serve.schemas import MacroRequest, Prediction, User, UserPosts
from serve.sentiment import Labeler, check_labels, make_labeler
from serve.service import Service, resolve_variant

REPO = Path(__file__).resolve().parents[2]


class Keywords:
    """A toy labeler, plugged in as any other labeller is."""

    name = "keywords"

    def label(self, posts, topic=None):
        return ["negative" if "烦" in p else "positive" if "好" in p else "neutral" for p in posts]


def test_labelers_by_name_or_import_path() -> None:
    placeholder = make_labeler("placeholder-unlabelled")
    assert isinstance(placeholder, Labeler) and placeholder.label(["a", "b"]) == ["unlabelled", "unlabelled"]
    assert make_labeler("serve.sentiment:PlaceholderLabeler").name == "placeholder-unlabelled"
    with pytest.raises(ValueError, match="expected one of"):
        make_labeler("vader")
    with pytest.raises(ValueError, match="cannot import"):
        make_labeler("nowhere.module:Thing")
    with pytest.raises(TypeError, match="no `name` and `label"):
        make_labeler("collections:OrderedDict")
    with pytest.raises(RuntimeError, match="2 labels for 1 posts"):
        check_labels(placeholder, ["a"], ["neutral", "neutral"])
    with pytest.raises(RuntimeError, match="unknown labels"):
        check_labels(placeholder, ["a"], ["happy"])


def test_macro_aggregation_with_a_real_labeler() -> None:
    posts = {"a": ["真好", "好烦"], "b": ["一般"]}
    labels = iter(Keywords().label([t for texts in posts.values() for t in texts]))
    per_user = [
        UserPosts(user=user, user_id=None, predictions=[
            Prediction(text=t, sentiment=next(labels), finish_reason="stop", completion_tokens=2) for t in texts
        ])
        for user, texts in posts.items()
    ]
    result = aggregate("alpha", "keywords", "话题", per_user, samples_per_class=1, return_posts=False)
    assert result.counts.model_dump() == {"positive": 1, "neutral": 1, "negative": 1, "unlabelled": 0}
    assert result.distribution.model_dump() == pytest.approx({"positive": 1 / 3, "neutral": 1 / 3, "negative": 1 / 3})
    assert result.samples["negative"][0].text == "好烦" and result.per_user is None


def test_variant_follows_what_the_user_has() -> None:
    assert resolve_variant("auto", User(name="a", history=["x"], persona="p")) == "full"
    assert resolve_variant("auto", User(name="a", history=["x"])) == "without_persona"
    assert resolve_variant("auto", User(name="a", persona="p")) == "without_history"
    assert resolve_variant("without_history", User(name="a", history=["x"], persona="p")) == "without_history"


def test_macro_jobs_are_sent_in_batch_sized_chunks_and_labelled() -> None:
    config = ServeConfig(max_batch_size=4, max_ongoing_requests=4, max_users_per_request=10)
    sent: list[int] = []

    async def fake_generator(model: str, jobs):
        sent.append(sum(job.n for job in jobs))
        return [[Completion(f"{job.prompt.user.name}好", 10, 3, "stop")] * job.n for job in jobs]

    service = Service(config, fake_generator, Keywords())
    users = [{"name": f"u{i}"} for i in range(5)]
    request = MacroRequest.model_validate(
        {"news": "n", "topic": "#t#", "population": {"users": users}, "samples_per_user": 2, "return_posts": True}
    )
    result = asyncio.run(service.macro(request))
    assert sent == [4, 4, 2]
    assert result.counts.positive == 10 and result.distribution.positive == 1.0 and result.topic == "t"
    assert [u.user for u in result.per_user] == [f"u{i}" for i in range(5)]
    assert result.model == "base" and service.default_model == "base"


def test_population_tables_and_paths(tmp_path: Path) -> None:
    users = pa.table({"screen_name": ["a", "b", "c"], "user_id": ["1", "2", "3"],
                      "history": [["h1", "h2"], [], None], "persona": ["p", None, ""]})
    pq.write_table(users, tmp_path / "users.parquet")
    members = load_population("users.parquet", tmp_path, sample_size=None, seed=0, max_users=3)
    assert [(m.name, m.user_id, m.profile.history, m.profile.persona) for m in members] == [
        ("a", "1", (("h1", None), ("h2", None)), "p"), ("b", "2", (), None), ("c", "3", (), None)
    ]
    drawn = load_population("users.parquet", tmp_path, sample_size=2, seed=1, max_users=2)
    assert len(drawn) == 2 and drawn == load_population("./users.parquet", tmp_path, 2, 1, 2)
    with pytest.raises(LimitExceeded, match="max_users_per_request"):
        load_population("users.parquet", tmp_path, None, 0, max_users=2)
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "posts.parquet")
    with pytest.raises(InvalidPrompt, match="expected an SFT table"):
        load_population("posts.parquet", tmp_path, None, 0, 5)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(InvalidPrompt, match="cannot read it as Parquet"):
        load_population("junk.parquet", tmp_path, None, 0, 5)
    for bad, reason in (("../x.parquet", "'..'"), ("/etc/hostname", "relative"), ("nope.parquet", "no such")):
        with pytest.raises(InvalidPrompt, match=reason):
            resolve_path(bad, tmp_path)
    with pytest.raises(InvalidPrompt, match="disabled"):
        resolve_path("users.parquet", None)


def test_a_population_directory_is_read_as_its_parquet_files(tmp_path: Path) -> None:
    split = tmp_path / "sft" / "test"  # as build-dataset writes it: Parquet parts, JSONL beside the split
    split.mkdir(parents=True)
    pq.write_table(pa.table({"user_id": ["1", "2"], "user_part": ["a", "b"], "variant": ["full", "full"]}),
                   split / "part-0.parquet")
    (split / ".part-1.parquet.tmp").write_text("half written")
    (tmp_path / "sft" / "test-full.jsonl").write_text('{"user_id": "3"}\n')
    assert [m.user_id for m in load_population("sft/test", tmp_path, None, 0, 5)] == ["1", "2"]
    assert [m.user_id for m in load_population("sft", tmp_path, None, 0, 5)] == ["1", "2"]
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "jsonl" / "users.jsonl").write_text('{"name": "a"}\n')
    with pytest.raises(InvalidPrompt, match=r"no \*\.parquet files"):
        load_population("jsonl", tmp_path, None, 0, 5)


def test_the_serve_config_file_is_the_generated_one_and_valid() -> None:
    path = REPO / "serve" / "serve_config.yaml"
    text = path.read_text(encoding="utf-8")
    config = load_config(ServeConfig, overrides=["host=0.0.0.0"], environ={})
    arguments = "--path /config/serve.yaml host=0.0.0.0"
    assert text == render(config, "/config/serve.yaml", ["host=0.0.0.0"], arguments)
    document = ServeDeploySchema.model_validate(yaml.safe_load(text))
    [application] = document.applications
    assert application.import_path == "serve.app:app_builder" and application.args["config"] == "/config/serve.yaml"


def test_the_builder_reads_the_same_config_as_the_cli(tmp_path: Path, monkeypatch) -> None:
    from serve.app import app_builder, missing_paths, run

    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump({"base_model": str(tmp_path / "model"), "max_batch_size": 4}))
    monkeypatch.setenv("SOCIALALIGN_SERVE_TOKEN", "a-token-from-the-cluster")
    assert isinstance(app_builder({"config": str(config_path), "overrides": ["num_replicas=2"]}), Application)
    with pytest.raises(ValueError, match="unknown args"):
        app_builder({"config_path": "x"})
    with pytest.raises(ConfigError, match="max_ongoing_requests"):
        app_builder({"config": str(config_path), "overrides": ["max_ongoing_requests=2"]})
    config = load_config(ServeConfig, config_path, ["adapters={a: /nowhere}"])
    assert [line.split(":")[0] for line in missing_paths(config)] == ["base_model", "adapters.a"]
    for adapter_dir, config_file in (("pac", "pac_lora_config.json"), ("lora", "adapter_config.json")):
        (tmp_path / adapter_dir).mkdir()  # PAC-LoRA, and the peft LoRA baseline (train method=lora)
        (tmp_path / adapter_dir / config_file).write_text("{}")
    adapters = f"adapters={{pac: {tmp_path / 'pac'}, lora: {tmp_path / 'lora'}}}"
    assert [line.split(":")[0] for line in missing_paths(load_config(ServeConfig, config_path, [adapters]))] == [
        "base_model"]
    with pytest.raises(ConfigError, match="base_model: .* is not a local model directory"):
        run(config)  # refused before Ray or Serve start


def test_serve_config_checks_its_fields() -> None:
    for override, field in (
        ("max_ongoing_requests=4", "max_ongoing_requests"),
        ("decoding.max_new_tokens=2000", "decoding"),
        ("default_model=gamma", "default_model"),
        ("adapters={'a b': /x}", "adapters"),
    ):
        with pytest.raises(ConfigError, match=field):
            load_config(ServeConfig, overrides=[override], environ={})
    assert load_config(ServeConfig, overrides=["adapters={a: /x}", "default_model=a"], environ={}).default_model == "a"
    assert ServeConfig().labeler == "offline"  # the evaluation stage's labeller, not the placeholder


def test_the_evaluation_labellers_are_registered_for_serving() -> None:
    from serve.sentiment import LLMJudgeLabeler, OfflineLabeler

    offline = make_labeler("offline")
    assert isinstance(offline, OfflineLabeler) and isinstance(offline, Labeler)
    assert offline.label(["太好了，支持！期待！", "垃圾，太失望了，气死了"]) == ["positive", "negative"]
    judge = make_labeler("llm-judge", base_url="http://127.0.0.1:9/v1", model="judge")
    assert isinstance(judge, LLMJudgeLabeler) and judge.name == "llm-judge"
