"""Load and abuse bench of `socialalign serve`: a real server on 127.0.0.1, fuzzed, then loaded.

    .venv/bin/python bench/serve_load.py                    # about 3-5 minutes on a 2-core machine
    .venv/bin/python bench/serve_load.py --duration 30 --fuzz-seconds 20

1. A tiny Qwen2 (pac_lora.build_tiny_checkpoint) and a PAC-LoRA adapter with random weights, a
   users table under a population folder, and `python -m serve --config serve.yaml` in a process
   of its own (its own local Ray) with a random bearer token.
2. schemathesis fuzzes every operation of the server's OpenAPI document (with the token), bounded
   by --fuzz-seconds, checking that no answer is a server error.
3. locust runs --users concurrent clients for --duration seconds, each mixing valid micro, macro
   (users and a population path) and chat requests (streamed too) with abuse: malformed JSON,
   bodies over the limit (declared and chunked), chunked bodies, missing and wrong tokens, unicode
   edge cases, bad population paths, requests over a limit, and connections dropped mid-request.
   The server is sized so that these clients never exceed what it takes and queues: any request
   within the limits that does not get a 200 is a failure (`failed_within_limits`, target 0).
4. Meanwhile the RSS of the Api and Generator replicas and of Serve's proxy is sampled.

`unexpected_5xx` counts every 5xx, fuzzing included, other than 503 with Retry-After (target 0).
The last line is one JSON object: unexpected_5xx, failed_within_limits, requests (by status),
peak_rss_mb (per process), p50/p95 latency, and the figures per kind of request.

This file is also the locustfile: locust imports it (`locust -f bench/serve_load.py`) for the
clients, whose settings come from the environment this script sets.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCUST_CHILD = "SERVE_LOAD_RESULTS" in os.environ  # set for the locust process this script starts

# What each kind of request is: within the server's limits (must get 200), or which answers are right.
KINDS: dict[str, tuple[bool, frozenset[int]]] = {
    "micro": (True, frozenset({200})),
    "micro_unicode": (True, frozenset({200})),
    "micro_chunked": (True, frozenset({200})),
    "macro_users": (True, frozenset({200})),
    "macro_path": (True, frozenset({200})),
    "chat": (True, frozenset({200})),
    "chat_stream_usage": (True, frozenset({200})),
    "models": (True, frozenset({200})),
    "healthz": (True, frozenset({200})),
    "malformed_json": (False, frozenset({400, 422})),  # 400: not even UTF-8
    "lone_surrogate": (False, frozenset({422})),
    "schema_violation": (False, frozenset({422})),
    "over_a_limit": (False, frozenset({413})),
    "bad_population_path": (False, frozenset({422})),
    "unknown_model": (False, frozenset({404})),
    "no_token": (False, frozenset({401})),
    "wrong_token": (False, frozenset({401})),
    "oversized_declared": (False, frozenset({413})),
    "oversized_chunked": (False, frozenset({413})),
    "big_chunked_no_token": (False, frozenset({401})),  # 40 MB, as fast as the client sends
    "dropped_connection": (False, frozenset()),  # no answer is read: the server must just go on
}


# ---------------------------------------------------------------------------------------------------
# The clients (only when locust imports this file)
# ---------------------------------------------------------------------------------------------------

if LOCUST_CHILD:
    import random
    from collections import Counter, defaultdict
    from urllib.parse import urlparse

    from locust import HttpUser, between, events, task

    TOKEN = os.environ["SERVE_LOAD_TOKEN"]
    LIMIT_BYTES = int(os.environ["SERVE_LOAD_MAX_BYTES"])
    AUTH = {"Authorization": f"Bearer {TOKEN}"}
    NEWS = ["北京发布了新的交通政策。", "上海暴雨，地铁部分停运。", "新手机发布会今天举行，价格良心。",
            "奥运会今晚开幕。"]
    # A family emoji (ZWJ) and a flag, right-to-left text, stacked combining marks, CJK extension B,
    # zero-width characters, a NUL, full-width Latin.
    UNICODE = ["\U0001F469\u200d\U0001F469\u200d\U0001F467\U0001F1E8\U0001F1F3", "\u202e\u0645\u0631\u062d\u202c",
               "e\u0301\u0301\u0301", "\U0002070E\U00020731", "\u200b\ufeff", "\u0000nul", "\uff46\uff55\uff4c\uff4c"]
    outcomes: Counter = Counter()  # (kind, status)
    latencies: dict[str, list[float]] = defaultdict(list)
    retry_after_missing = Counter()  # kind -> 503 answers without Retry-After

    @events.request.add_listener
    def _record(request_type, name, response_time, response_length, response=None, context=None,  # noqa: ANN001
                exception=None, **_: object) -> None:
        status = (context or {}).get("status")
        if status is None:
            status = getattr(response, "status_code", None) or 0  # 0: no answer (connection error)
        if status == 503 and response is not None and "retry-after" not in response.headers:
            retry_after_missing[name] += 1
        outcomes[(name, int(status))] += 1
        latencies[name].append(response_time / 1000)

    @events.quitting.add_listener
    def _write(environment, **_: object) -> None:  # noqa: ANN001
        results = {"outcomes": [[kind, status, n] for (kind, status), n in sorted(outcomes.items())],
                   "latencies": latencies, "retry_after_missing": dict(retry_after_missing)}
        Path(os.environ["SERVE_LOAD_RESULTS"]).write_text(json.dumps(results), encoding="utf-8")

    def user(index: int, unicode: bool = False) -> dict:
        name = random.choice(UNICODE) + f"{index}" if unicode else f"用户{index}"
        history = [random.choice(NEWS) + (random.choice(UNICODE) if unicode else "") for _ in range(index % 4)]
        return {"name": name, "history": history, "persona": "乐观" * (index % 3)}

    def micro_body(unicode: bool = False) -> dict:
        return {"user": user(random.randrange(100), unicode), "news": random.choice(NEWS),
                "topic": random.choice(UNICODE) if unicode else "北京交通新政", "n": random.randint(1, 2),
                "decoding": {"temperature": random.choice([0, 0.7]), "max_new_tokens": random.randint(4, 16)}}

    class Client(HttpUser):
        """One client: a weighted mix of valid requests and abuse."""

        wait_time = between(0.05, 0.3)

        def send(self, kind: str, method: str, path: str, **kwargs: object) -> None:
            """A request named by its kind; locust's own pass/fail follows KINDS."""
            kwargs.setdefault("headers", AUTH)
            within, expected = KINDS[kind]
            try:
                with self.client.request(method, path, name=kind, catch_response=True, timeout=120,
                                         **kwargs) as response:
                    if (response.status_code in expected) or (not within and response.status_code == 0):
                        response.success()
                    else:
                        response.failure(f"{kind}: {response.status_code} {response.text[:200]}")
            except Exception as error:  # a connection the server dropped: recorded by the listener
                if within:
                    raise error

        @task(6)
        def micro(self) -> None:
            self.send("micro", "POST", "/v1/predict/micro", json=micro_body())

        @task(2)
        def micro_unicode(self) -> None:
            self.send("micro_unicode", "POST", "/v1/predict/micro", json=micro_body(unicode=True))

        @task(1)
        def micro_chunked(self) -> None:
            data = json.dumps(micro_body()).encode()
            parts = (data[i:i + 50] for i in range(0, len(data), 50))  # a generator: sent chunked
            self.send("micro_chunked", "POST", "/v1/predict/micro", data=parts,
                      headers={**AUTH, "Content-Type": "application/json"})

        @task(2)
        def macro_users(self) -> None:
            users = [user(i) for i in range(random.randint(2, 8))]
            body = {"news": random.choice(NEWS), "topic": "上海暴雨", "population": {"users": users},
                    "samples_per_user": random.randint(1, 3), "return_posts": random.random() < 0.5,
                    "decoding": {"max_new_tokens": 8}}
            self.send("macro_users", "POST", "/v1/predict/macro", json=body)

        @task(1)
        def macro_path(self) -> None:
            body = {"news": random.choice(NEWS), "topic": "奥运", "decoding": {"max_new_tokens": 8},
                    "population": {"path": "users.parquet", "sample_size": random.randint(1, 16),
                                   "seed": random.randrange(1000)}}
            self.send("macro_path", "POST", "/v1/predict/macro", json=body)

        @task(3)
        def chat(self) -> None:
            messages = [{"role": "system", "content": "你是一个微博用户。"},
                        {"role": "user", "content": random.choice(NEWS)}]
            body = {"model": random.choice(["pac", "base"]), "messages": messages, "max_tokens": 12}
            self.send("chat", "POST", "/v1/chat/completions", json=body)

        @task(1)
        def chat_stream_usage(self) -> None:
            body = {"model": "pac", "messages": [{"role": "user", "content": random.choice(NEWS)}],
                    "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True}}
            self.send("chat_stream_usage", "POST", "/v1/chat/completions", json=body)

        @task(1)
        def models(self) -> None:
            self.send("models", "GET", random.choice(["/v1/models", "/v1/models/pac", "/v1/health"]))

        @task(1)
        def healthz(self) -> None:
            self.send("healthz", "GET", "/healthz", headers={})

        @task(1)
        def malformed_json(self) -> None:
            data = random.choice([b'{"user": {"name": "a"', b"not json", b'{"news": "\xff\xfe"}', b"[]", b"null"])
            self.send("malformed_json", "POST", random.choice(["/v1/predict/micro", "/v1/chat/completions"]),
                      data=data, headers={**AUTH, "Content-Type": "application/json"})

        @task(1)
        def lone_surrogate(self) -> None:
            data = b'{"user": {"name": "\\ud800"}, "news": "n", "topic": "t"}'
            self.send("lone_surrogate", "POST", "/v1/predict/micro", data=data,
                      headers={**AUTH, "Content-Type": "application/json"})

        @task(1)
        def schema_violation(self) -> None:
            body = random.choice([{**micro_body(), "n": "two"}, {**micro_body(), "surprise": 1}, {"user": []},
                                  {"model": "pac", "messages": []}, {"news": "n", "topic": "t", "population": {}}])
            path = "/v1/chat/completions" if "messages" in body else (
                "/v1/predict/macro" if "population" in body else "/v1/predict/micro")
            self.send("schema_violation", "POST", path, json=body)

        @task(1)
        def over_a_limit(self) -> None:
            body = random.choice([
                {**micro_body(), "n": 5},
                {**micro_body(), "news": "新" * 5000},
                {"news": "n", "topic": "t", "population": {"users": [user(i) for i in range(17)]}},
                {"news": "n", "topic": "t", "population": {"users": [user(i) for i in range(16)]},
                 "samples_per_user": 4},
            ])
            self.send("over_a_limit", "POST", "/v1/predict/macro" if "population" in body else "/v1/predict/micro",
                      json=body)

        @task(1)
        def bad_population_path(self) -> None:
            path = random.choice(["../serve.yaml", "/etc/passwd", "users\x00.parquet", "nowhere.parquet",
                                  "notes.txt", "outside.parquet", "a/../../x"])
            body = {"news": "n", "topic": "t", "population": {"path": path}}
            self.send("bad_population_path", "POST", "/v1/predict/macro", json=body)

        @task(1)
        def unknown_model(self) -> None:
            self.send("unknown_model", "POST", "/v1/predict/micro", json={**micro_body(), "model": "gamma"})

        @task(1)
        def no_token(self) -> None:
            self.send("no_token", "POST", random.choice(["/v1/predict/micro", "/openapi.json", "/docs"]),
                      json=micro_body(), headers={})

        @task(1)
        def wrong_token(self) -> None:
            self.send("wrong_token", "POST", "/v1/predict/micro", json=micro_body(),
                      headers={"Authorization": f"Bearer {TOKEN[:-1]}x"})

        @task(1)
        def oversized_declared(self) -> None:
            self.send("oversized_declared", "POST", "/v1/predict/micro", data=b" " * (LIMIT_BYTES + 1),
                      headers={**AUTH, "Content-Type": "application/json"})

        @task(1)
        def oversized_chunked(self) -> None:
            parts = (b" " * 65536 for _ in range(LIMIT_BYTES // 65536 + 2))
            self.send("oversized_chunked", "POST", "/v1/predict/micro", data=parts,
                      headers={**AUTH, "Content-Type": "application/json"})

        @task(1)
        def big_chunked_no_token(self) -> None:
            parts = (b" " * 1_048_576 for _ in range(40))
            self.send("big_chunked_no_token", "POST", "/v1/predict/micro", data=parts,
                      headers={"Content-Type": "application/json"})

        @task(1)
        def dropped_connection(self) -> None:
            """Headers and half a body (or a whole request), then the connection is closed unanswered."""
            url = urlparse(self.host)
            data = json.dumps({"news": "n", "topic": "t", "population": {"users": [user(i) for i in range(8)]},
                               "samples_per_user": 2, "decoding": {"max_new_tokens": 16}}).encode()
            whole = random.random() < 0.5
            head = (f"POST /v1/predict/macro HTTP/1.1\r\nHost: {url.hostname}\r\nAuthorization: Bearer {TOKEN}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode()
            began = time.monotonic()
            with socket.create_connection((url.hostname, url.port), timeout=10) as connection:
                connection.sendall(head + (data if whole else data[: len(data) // 2]))
                time.sleep(random.uniform(0, 0.2))
            events.request.fire(request_type="RAW", name="dropped_connection",
                                response_time=(time.monotonic() - began) * 1000, response_length=0,
                                context={"status": 0}, exception=None)


# ---------------------------------------------------------------------------------------------------
# The bench (when run as a script)
# ---------------------------------------------------------------------------------------------------

def main() -> int:
    import argparse
    import secrets

    import requests

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=90, help="seconds of load (locust)")
    parser.add_argument("--users", type=int, default=8, help="concurrent clients")
    parser.add_argument("--fuzz-seconds", type=int, default=60, help="seconds of schema fuzzing (schemathesis)")
    args = parser.parse_args()

    began = time.monotonic()
    token = secrets.token_hex(24)
    with tempfile.TemporaryDirectory(prefix="bench-serve-load-") as tmp:
        work = Path(tmp)
        config_path, max_bytes = write_server(work)
        port = free_port()
        env = {**os.environ, "SOCIALALIGN_SERVE_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
               "PYTHONUNBUFFERED": "1"}
        log_file = (work / "serve.log").open("w")
        server = subprocess.Popen(
            [sys.executable, "-m", "serve", "--config", str(config_path), f"port={port}", "ray.num_cpus=4",
             "ray.include_dashboard=false", "ray.object_store_memory_mb=256"],
            cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        sampler = RssSampler(server.pid)
        try:
            wait_ready(url, token, server, work / "serve.log")
            threading.Thread(target=sampler.run, daemon=True).start()
            at_start = sampler.sample()
            fuzz = run_schemathesis(url, token, args.fuzz_seconds, work)
            load = run_locust(url, token, max_bytes, args, work)
            still_serving = requests.post(url + "/v1/predict/micro", headers={"Authorization": f"Bearer {token}"},
                                          json={"user": {"name": "a"}, "news": "n", "topic": "t"}, timeout=60)
            at_end = sampler.sample()
        finally:
            sampler.stop = True
            stop_server(server)
            log_file.close()
    figures = summarise(load, fuzz, sampler, at_start, at_end, still_serving.status_code, args)
    figures["wall_s"] = round(time.monotonic() - began, 1)
    print(json.dumps(figures, ensure_ascii=False))
    return 0


def write_server(work: Path) -> tuple[Path, int]:
    """The model, the adapter, a population folder, and the serve.yaml the server reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    import yaml

    sys.path.insert(0, str(ROOT))
    from pac_lora import PACLoraConfig, apply_pac_lora, build_tiny_checkpoint, load_base_model, save_adapter

    texts = ["北京发布了新的交通政策。", "上海暴雨，地铁部分停运。", "新手机发布会今天举行。", "奥运会今晚开幕。"]
    base_dir = build_tiny_checkpoint(work / "base", texts=texts)
    model = apply_pac_lora(load_base_model(base_dir)[0], PACLoraConfig())
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.adapter_state_dict().values():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    adapter_dir = save_adapter(model, work / "adapter")
    populations = work / "populations"  # a folder of its own: only what may be read through the API
    populations.mkdir()
    pq.write_table(pa.table({"screen_name": [f"用户{i}" for i in range(40)], "user_id": [str(i) for i in range(40)],
                             "history": [["今天天气不错。"] * (i % 3) for i in range(40)],
                             "persona": ["乐观" * (i % 4) for i in range(40)]}), populations / "users.parquet")
    (populations / "notes.txt").write_text("not a table", encoding="utf-8")
    (work / "outside.parquet").write_bytes((populations / "users.parquet").read_bytes())
    (populations / "outside.parquet").symlink_to(work / "outside.parquet")
    max_bytes = 1_000_000
    config = {
        "base_model": str(base_dir), "adapters": {"pac": str(adapter_dir)}, "default_model": "pac",
        "host": "127.0.0.1", "app_name": "bench-serve-load", "replica_cpus": 1,
        # Sized so that --users clients (8) stay within what one replica takes and queues: each
        # request keeps at most fanout_per_request calls in flight, 8 x 4 = 32 <= 16 + 64.
        "max_batch_size": 8, "max_ongoing_requests": 16, "max_queued_requests": 64, "fanout_per_request": 4,
        "max_users_per_request": 16, "max_samples_per_request": 4, "max_rows_per_request": 48,
        "max_text_chars": 2000, "max_new_tokens_limit": 32, "max_request_bytes": max_bytes,
        "population_dir": str(populations), "decoding": {"max_new_tokens": 16},
        "labeler": "placeholder-unlabelled",  # the bench is about the API; labelling has its own bench
    }
    path = work / "serve.yaml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    return path, max_bytes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_ready(url: str, token: str, server: subprocess.Popen, log_path: Path, timeout_s: float = 400) -> None:
    import requests

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited ({server.returncode}):\n{log_path.read_text()[-3000:]}")
        try:
            if requests.get(url + "/v1/health", headers={"Authorization": f"Bearer {token}"}, timeout=5).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise SystemExit(f"the server was not ready after {timeout_s:.0f}s:\n{log_path.read_text()[-3000:]}")


class RssSampler:
    """Peak RSS of Serve's processes under the server: its Api and Generator replicas, its proxy."""

    ROLES = {"Api": "ServeReplica:bench-serve-load:Api", "Generator": "ServeReplica:bench-serve-load:Generator",
             "proxy": "ProxyActor"}

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self.peak: dict[str, float] = {}
        self.stop = False

    def sample(self) -> dict[str, float]:
        import psutil

        now: dict[str, float] = {}
        try:
            processes = psutil.Process(self.root_pid).children(recursive=True)
        except psutil.Error:
            return now
        for process in processes:
            try:
                command = " ".join(process.cmdline())
                rss = process.memory_info().rss / 2**20
            except psutil.Error:
                continue
            for role, marker in self.ROLES.items():
                if marker in command:
                    now[role] = max(now.get(role, 0.0), rss)
        for role, rss in now.items():
            self.peak[role] = max(self.peak.get(role, 0.0), rss)
        return now

    def run(self) -> None:
        while not self.stop:
            self.sample()
            time.sleep(0.25)


def run_schemathesis(url: str, token: str, seconds: int, work: Path) -> dict:
    """Fuzz every operation of the OpenAPI document; returns its answers by status, the server errors
    among them (5xx but 503 with Retry-After) and the scenarios schemathesis itself could not run."""
    report = work / "schemathesis.ndjson"
    settings = work / "schemathesis.toml"  # the token from the environment, not on a command line
    settings.write_text('headers = { Authorization = "Bearer ${SERVE_LOAD_TOKEN}" }\n', encoding="utf-8")
    # One worker: Python 3.11 can fail to build an AST when hypothesis explains failures from
    # several threads at once ("AST constructor recursion depth mismatch"), which is no finding.
    command = [sys.executable, "-m", "schemathesis.cli", "--config-file", str(settings), "run", f"{url}/openapi.json",
               "--checks", "not_a_server_error", "--max-time", str(seconds), "--workers", "1",
               "--request-timeout", "60", "--seed", "1", "--report", "ndjson", "--report-ndjson-path", str(report),
               "--suppress-health-check", "all"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 300,
                          env={**os.environ, "SERVE_LOAD_TOKEN": token})
    statuses: dict[str, int] = {}
    server_errors = tool_errors = failed_checks = 0
    lines = report.read_text(encoding="utf-8").splitlines() if report.exists() else []
    for line in lines:
        scenario = json.loads(line).get("ScenarioFinished")
        if not scenario:
            continue
        tool_errors += scenario.get("status") == "error"
        recorder = scenario.get("recorder") or {}
        for interaction in (recorder.get("interactions") or {}).values():
            response = interaction.get("response") or {}
            status = response.get("status_code")
            if status is None:
                continue
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            headers = {name.lower() for name in response.get("headers") or {}}
            server_errors += status >= 500 and not (status == 503 and "retry-after" in headers)
        for results in (recorder.get("checks") or {}).values():
            failed_checks += sum(result.get("status") == "failure" for result in results)
    shown = (done.stdout + done.stderr).strip().splitlines()
    print("schemathesis:\n  " + "\n  ".join(shown[-40:] if done.returncode else shown[-3:]), file=sys.stderr)
    return {"exit_code": done.returncode, "statuses": statuses, "server_errors": server_errors,
            "failed_checks": failed_checks, "tool_errors": tool_errors}


def run_locust(url: str, token: str, max_bytes: int, args: object, work: Path) -> dict:
    results = work / "locust.json"
    env = {**os.environ, "SERVE_LOAD_RESULTS": str(results), "SERVE_LOAD_TOKEN": token,
           "SERVE_LOAD_MAX_BYTES": str(max_bytes)}
    command = [sys.executable, "-m", "locust", "-f", str(Path(__file__).resolve()), "--headless",
               "--users", str(args.users), "--spawn-rate", str(args.users), "--run-time", f"{args.duration}s",
               "--host", url, "--only-summary", "--loglevel", "ERROR", "--stop-timeout", "30"]
    subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.duration + 300)
    return json.loads(results.read_text(encoding="utf-8"))


def stop_server(server: subprocess.Popen) -> None:
    """SIGTERM (the app is deleted, its Ray stopped), then the process group it leaves, if any."""
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=90)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=30)
    try:
        os.killpg(server.pid, signal.SIGKILL)  # what Ray left in the server's session, if anything
    except ProcessLookupError:
        pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


def summarise(load: dict, fuzz: dict, sampler: RssSampler, at_start: dict, at_end: dict, final_status: int,
              args) -> dict:  # noqa: ANN001
    by_status: dict[str, int] = {}
    per_kind: dict[str, dict[str, int]] = {}
    unexpected_5xx = fuzz["server_errors"]
    failed_within_limits = 0 if final_status == 200 else 1
    wrong_answers = 0
    for kind, status, n in load["outcomes"]:
        by_status[str(status)] = by_status.get(str(status), 0) + n
        per_kind.setdefault(kind, {})[str(status)] = n
        within, expected = KINDS[kind]
        if status >= 500 and not (status == 503 and not load["retry_after_missing"].get(kind)):
            unexpected_5xx += n
        if within and status != 200:
            failed_within_limits += n
        if not within and expected and status not in expected and status != 0:
            wrong_answers += n
    valid = [t for kind, times in load["latencies"].items() if KINDS[kind][0] for t in times]
    every = [t for times in load["latencies"].values() for t in times]
    figures = {
        "unexpected_5xx": unexpected_5xx,
        "failed_within_limits": failed_within_limits,
        "requests": by_status,
        "peak_rss_mb": {role: round(mb, 1) for role, mb in sorted(sampler.peak.items())},
        "rss_after_start_mb": {role: round(mb, 1) for role, mb in sorted(at_start.items())},
        "rss_at_end_mb": {role: round(mb, 1) for role, mb in sorted(at_end.items())},
        "p50_ms": round(1000 * percentile(every, 0.5), 1),
        "p95_ms": round(1000 * percentile(every, 0.95), 1),
        "valid_p50_ms": round(1000 * percentile(valid, 0.5), 1),
        "valid_p95_ms": round(1000 * percentile(valid, 0.95), 1),
        "unexpected_4xx_answers": wrong_answers,
        "total_requests": sum(by_status.values()),
        "per_kind": per_kind,
        "fuzz": {"requests": fuzz["statuses"], "server_errors": fuzz["server_errors"],
                 "failed_checks": fuzz["failed_checks"], "tool_errors": fuzz["tool_errors"]},
        "users": args.users,
        "duration_s": args.duration,
    }
    lines = [f"{kind}: {statuses}" for kind, statuses in sorted(per_kind.items())]
    print("load, answers by kind:\n  " + "\n  ".join(lines), file=sys.stderr)
    return figures


if __name__ == "__main__":
    sys.exit(main())
