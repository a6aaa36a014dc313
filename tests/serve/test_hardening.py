"""What keeps the server safe without Ray: tokens (files, placeholders, exposure), the per-request
work budget and fan-out, populations read from untrusted paths, tokenisation off the event loop.
(The HTTP side of the guard, against the real Serve app: test_app.py.)"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ray.serve.exceptions import BackPressureError

from cluster.config import ConfigError, load_config
from serve.config import ServeConfig
from serve.population import load_population
from serve.protocol import ChatPrompt, Completion, InvalidPrompt, Job, LimitExceeded, Sampling
from serve.schemas import ChatCompletionRequest, MacroRequest, MicroRequest
from serve.service import Service

REPO = Path(__file__).resolve().parents[2]
TOKEN = "a-real-token-0123456789abcdef"
ENV = "SOCIALALIGN_SERVE_TOKEN"


# -- Tokens -----------------------------------------------------------------------------------------

def test_a_token_from_a_file_loses_its_newline_and_a_blank_one_is_none() -> None:
    # kubectl create secret --from-file keeps the file's last newline, and the env var carries it.
    config = load_config(ServeConfig, environ={ENV: f"{TOKEN}\n"})
    assert config.auth_token.get_secret_value() == TOKEN
    assert load_config(ServeConfig, environ={ENV: " \n"}).auth_token is None
    assert load_config(ServeConfig, overrides=[f"auth_token=' {TOKEN} '"], environ={}).auth_token.get_secret_value() \
        == TOKEN


def k8s_placeholder() -> str:
    """The serve token the k8s base ships (a placeholder): read from the manifest, not copied here."""
    kustomization = yaml.safe_load((REPO / "k8s" / "base" / "kustomization.yaml").read_text(encoding="utf-8"))
    literals = [item for generator in kustomization["secretGenerator"] for item in generator.get("literals", [])]
    return next(item.split("=", 1)[1] for item in literals if item.startswith("serve-token="))


@pytest.mark.parametrize("token", ["changeme", "CHANGE-ME-please-now", "<token>", "<your-serve-token>", "${TOKEN}",
                                   "placeholder-token-value", "your-token-here-123", "xxxxxxxxxxxxxxxx", "abc",
                                   "two words but long enough", "k8s-base"])
def test_placeholder_and_weak_tokens_are_refused_without_echoing_them(token: str) -> None:
    token = k8s_placeholder() if token == "k8s-base" else token
    with pytest.raises(ConfigError, match=f"environment variable {ENV}: auth_token: ") as error:
        load_config(ServeConfig, environ={ENV: token})
    assert token not in str(error.value)


def test_serving_beyond_this_machine_needs_a_token(tmp_path: Path) -> None:
    from serve.app import build_app, run

    for host in ("0.0.0.0", "::", "10.0.0.7", "serve.example.org"):
        with pytest.raises(ConfigError, match=f"host: {re.escape(host)} .* SOCIALALIGN_SERVE_TOKEN"):
            build_app(ServeConfig(host=host))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        build_app(ServeConfig(host=host))  # this machine only: no token needed
    build_app(ServeConfig(host="0.0.0.0", auth_token=TOKEN))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match="host: 0.0.0.0"):
        run(ServeConfig(host="0.0.0.0", base_model=str(tmp_path / "model")))  # before Ray starts


def test_the_builder_reads_a_token_file_as_the_cluster_mounts_it(tmp_path: Path, monkeypatch) -> None:
    from serve.app import app_builder

    config_path = tmp_path / "serve.yaml"
    config_path.write_text(yaml.safe_dump({"host": "0.0.0.0"}))
    monkeypatch.setenv(ENV, "")
    with pytest.raises(ConfigError, match="host: 0.0.0.0"):  # an empty token is no token: refused, not open
        app_builder({"config": str(config_path)})
    monkeypatch.setenv(ENV, TOKEN + "\n")
    app_builder({"config": str(config_path)})


# -- The work of one request ------------------------------------------------------------------------

def test_a_request_may_keep_only_what_the_queue_holds_in_flight() -> None:
    with pytest.raises(ConfigError, match="fanout_per_request .*max_ongoing_requests \\+ max_queued_requests"):
        load_config(ServeConfig, overrides=["max_batch_size=4", "max_ongoing_requests=4", "max_queued_requests=4",
                                            "fanout_per_request=9"], environ={})
    load_config(ServeConfig, overrides=["max_batch_size=4", "max_ongoing_requests=4", "max_queued_requests=4",
                                        "fanout_per_request=8"], environ={})


def capacity_bound_generator(config: ServeConfig, seen: dict) -> object:
    """A Generator as Serve's router lets one idle replica take calls: max_ongoing_requests at once,
    max_queued_requests waiting, BackPressureError (503) beyond."""
    room = config.max_ongoing_requests + config.max_queued_requests
    seen.update(in_flight=0, peak=0, calls=0)

    async def generate(model: str, jobs: list[Job]) -> list[list[Completion]]:
        if seen["in_flight"] >= room:
            raise BackPressureError(seen["in_flight"] - config.max_ongoing_requests, config.max_queued_requests)
        seen["in_flight"] += 1
        seen["calls"] += 1
        seen["peak"] = max(seen["peak"], seen["in_flight"])
        try:
            await asyncio.sleep(0.005)
            return [[Completion("好", 10, 1, "stop")] * job.n for job in jobs]
        finally:
            seen["in_flight"] -= 1

    return generate


def test_the_largest_macro_request_fits_an_idle_replica() -> None:
    config = ServeConfig(max_batch_size=4, max_ongoing_requests=4, max_queued_requests=8, fanout_per_request=6,
                         max_users_per_request=256, max_samples_per_request=5, max_rows_per_request=1280)
    seen: dict = {}
    service = Service(config, capacity_bound_generator(config, seen), make_keywords())
    users = [{"name": f"u{i}"} for i in range(256)]  # 256 users x 5 samples: 256 calls of one user each
    request = MacroRequest.model_validate({"news": "n", "topic": "t", "population": {"users": users},
                                           "samples_per_user": 5})
    result = asyncio.run(service.macro(request))
    assert result.posts == 1280 and seen["calls"] == 256
    assert seen["peak"] == config.fanout_per_request


def make_keywords() -> object:
    from serve.sentiment import make_labeler

    return make_labeler("placeholder-unlabelled")


def test_a_request_over_the_work_budget_is_413_naming_it() -> None:
    config = ServeConfig(max_rows_per_request=10, max_prompt_chars_per_request=500, max_users_per_request=50,
                         max_text_chars=400)
    calls: list = []

    async def generate(model, jobs):
        calls.append(jobs)
        return [[Completion("x", 1, 1, "stop")] * job.n for job in jobs]

    service = Service(config, generate, make_keywords())
    users = [{"name": f"u{i}"} for i in range(6)]
    rows = MacroRequest.model_validate({"news": "n", "topic": "t", "population": {"users": users},
                                        "samples_per_user": 2})
    with pytest.raises(LimitExceeded, match=r"6 users x 2 samples_per_user = 12 .*max_rows_per_request=10") as error:
        asyncio.run(service.macro(rows))
    assert error.value.limit == "max_rows_per_request"
    long_news = MicroRequest.model_validate({"user": {"name": "a", "persona": "p" * 300}, "news": "新" * 250,
                                             "topic": "t"})
    with pytest.raises(LimitExceeded, match="max_prompt_chars_per_request=500"):
        asyncio.run(service.micro(long_news))
    message = {"role": "user", "content": "x" * 300}
    chat = ChatCompletionRequest.model_validate({"model": "base", "messages": [message, message]})
    with pytest.raises(LimitExceeded, match="600 characters"):
        asyncio.run(service.chat(chat))
    assert calls == []  # refused before any generation


# -- Populations from untrusted paths ----------------------------------------------------------------

@pytest.fixture()
def population_root(tmp_path: Path) -> Path:
    root = tmp_path / "populations"
    root.mkdir()
    users = pa.table({"screen_name": [f"u{i}" for i in range(8)], "user_id": [str(i) for i in range(8)],
                      "persona": ["乐观" * 50] * 8})
    pq.write_table(users, root / "users.parquet", compression="NONE", use_dictionary=False)
    (root / "notes.txt").write_text("not a table")
    (root / "fake.parquet").write_text("not parquet either")
    data = (root / "users.parquet").read_bytes()
    (root / "cut.parquet").write_bytes(data[: len(data) // 2])
    (root / "empty.parquet").write_bytes(b"")
    secret = tmp_path / "secret"
    secret.mkdir()
    pq.write_table(pa.table({"name": ["hidden"]}), secret / "raw.parquet")
    (root / "out.parquet").symlink_to(secret / "raw.parquet")
    (root / "outdir").symlink_to(secret)
    (root / "mixed").mkdir()
    (root / "mixed" / "part-0.parquet").symlink_to(secret / "raw.parquet")
    return root


@pytest.mark.parametrize(("path", "reason"), [
    ("users\x00.parquet", "control characters"),
    ("../secret/raw.parquet", "'..'"),
    ("a/../../secret/raw.parquet", "'..'"),
    ("/etc/passwd", "relative"),
    ("\\\\server\\share\\x.parquet", "relative"),
    ("C:\\data\\x.parquet", "relative"),
    ("out.parquet", "links outside"),
    ("outdir/raw.parquet", "links outside"),
    ("mixed", "links outside"),
    ("missing.parquet", "no such file"),
    ("x" * 5000, "cannot be read"),
    ("notes.txt", "cannot read it as Parquet"),
    ("fake.parquet", "cannot read it as Parquet"),
    ("cut.parquet", "cannot read it as Parquet"),
    ("empty.parquet", "cannot read it as Parquet"),
])
def test_every_bad_path_is_a_clear_4xx_without_server_paths(population_root: Path, path: str, reason: str) -> None:
    with pytest.raises(InvalidPrompt, match=re.escape(reason)) as error:
        load_population(path, population_root, None, 0, 10)
    assert error.value.loc == ("body", "population", "path")
    assert str(population_root.parent) not in error.value.message


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(["..", ".", "", "users.parquet", "outdir", "out.parquet", "mixed", "/", "\x00", "\\",
                              "raw.parquet", "~", "C:", "cut.parquet"]), max_size=5).map("/".join),
))
def test_no_path_whatever_escapes_or_crashes(population_root: Path, path: str) -> None:
    try:
        members = load_population(path, population_root, None, 0, 10)
    except (InvalidPrompt, LimitExceeded) as error:
        assert str(population_root.parent) not in error.message
    else:
        assert [m.name for m in members] == [f"u{i}" for i in range(8)]  # only the one table inside


def corrupt_column(path: Path, column: str) -> None:
    """Overwrite one column's pages with garbage: its footer still says how many rows there are."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns) if meta.column(i).path_in_schema == column)
    data = bytearray(path.read_bytes())
    start = chunk.data_page_offset
    data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))


def test_counts_are_read_from_the_footer_and_texts_only_for_the_members_drawn(population_root: Path) -> None:
    path = population_root / "users.parquet"
    corrupt_column(path, "persona")  # reading the personas now fails
    with pytest.raises(LimitExceeded, match="max_population_rows=5"):
        load_population("users.parquet", population_root, 2, 0, 10, max_rows=5)  # the footer alone
    with pytest.raises(LimitExceeded, match="more than max_users_per_request=4"):
        load_population("users.parquet", population_root, None, 0, 4)  # names and ids alone
    with pytest.raises(InvalidPrompt, match="cannot read it as Parquet"):
        load_population("users.parquet", population_root, 2, 0, 4)  # the drawn members' personas: unreadable


# -- Tokenisation off the event loop ---------------------------------------------------------------

def test_a_long_tokenisation_does_not_stall_the_event_loop(tmp_path: Path) -> None:
    from pac_lora import build_tiny_checkpoint, load_tokenizer
    from serve.generator import encode_jobs

    tokenizer = load_tokenizer(build_tiny_checkpoint(tmp_path / "tiny"))
    sampling = Sampling(0.0, 1.0, 0, 1.0, 4, "output")
    # 600k chars: well over 0.3 s to tokenise even on an idle machine (200k took 0.29 s there)
    huge = Job(ChatPrompt((("user", "今天北京发布了新的交通政策，大家怎么看？" * 30_000),)), sampling)

    async def scenario() -> tuple[float, float, bool]:
        gaps, last = [], time.monotonic()
        began = time.monotonic()
        task = asyncio.ensure_future(encode_jobs(tokenizer, [huge], "sequence", 10**6))
        while not task.done():
            await asyncio.sleep(0.005)
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        await task
        return time.monotonic() - began, max(gaps), len(task.result()[0].input_ids) > 100_000

    took, longest_gap, tokenised = asyncio.run(scenario())
    assert tokenised and took > 0.3, took  # long enough to see a stall
    # On the loop, one gap would last the whole tokenisation; a loaded machine may delay a tick a
    # little, never by a third of it.
    assert longest_gap < took / 3, (longest_gap, took)
