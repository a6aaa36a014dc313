"""The Serve application over HTTP, started once for this module (`served`, built by app_builder):
the API's behaviour, the guard in front of it (raw HTTP), dynamic batching, the `openai` client, a
fuzz of the OpenAPI schema, overload.
"""

from __future__ import annotations

import select
import socket
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cluster.schemas import SFT

# -- The API: health, models, auth, validation, limits, micro and macro ------------------------------

USER = {
    "name": "小明",
    "history": ["今天天气不错，出去走走。", {"text": "支持", "retweet_text": "加油！"}],
    "persona": "积极乐观，喜欢科技数码",
}
MICRO = {"user": USER, "news": "北京发布了新的交通政策。", "topic": "#北京交通新政#", "decoding": {"temperature": 0}}


def micro(model: str | None = None, **changes: object) -> dict:
    body = {**MICRO, **changes}
    if model is not None:
        body["model"] = model
    return body


def detail(response: requests.Response) -> list[dict]:
    return response.json()["detail"]


def test_only_liveness_is_public_and_health_models_and_docs_need_the_token(served) -> None:
    health = served.get("/healthz", token=None)
    assert health.status_code == 200 and health.json() == {"status": "ok"}  # nothing about what is served
    for path in ("/v1/health", "/v1/models", "/v1/models/alpha", "/openapi.json", "/docs", "/redoc", "/nowhere"):
        refused = served.get(path, token=None)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer", path
        assert "alpha" not in refused.text, path
    assert served.get("/v1/health").json() == {
        "status": "ok", "models": ["base", "alpha", "beta", "lora"], "default_model": "alpha",
        "labeler": "placeholder-unlabelled",
    }
    assert [m["id"] for m in served.get("/v1/models").json()["data"]] == ["base", "alpha", "beta", "lora"]
    paths = served.get("/openapi.json").json()["paths"]
    assert {"/v1/predict/micro", "/v1/predict/macro", "/v1/chat/completions", "/v1/models", "/v1/models/{model_id}",
            "/v1/health", "/healthz"} <= set(paths)
    assert served.get("/docs").status_code == 200 and served.get("/nowhere").status_code == 404


def test_auth_is_enforced_on_the_api_when_a_token_is_configured(served) -> None:
    for token in (None, "wrong-token-123456"):
        for response in (served.get("/v1/models", token=token), served.post("/v1/predict/micro", micro(), token=token)):
            assert response.status_code == 401
            assert response.headers["www-authenticate"] == "Bearer"
    basic = {"Authorization": f"Basic {served.token}"}
    assert requests.get(served.url + "/v1/models", headers=basic, timeout=30).status_code == 401
    assert served.get("/v1/models").status_code == 200


def test_micro_prediction_is_labelled_by_the_named_placeholder(served) -> None:
    response = served.post("/v1/predict/micro", micro(n=2, decoding={"max_new_tokens": 5}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "alpha" and body["labeler"] == "placeholder-unlabelled" and body["variant"] == "full"
    assert len(body["predictions"]) == 2
    for item in body["predictions"]:
        assert item["sentiment"] == "unlabelled" and item["completion_tokens"] <= 5
    without_persona = served.post("/v1/predict/micro", micro(user={"name": "无名"})).json()
    assert without_persona["variant"] == "without_persona"


def test_the_adapters_and_the_base_model_answer_differently(served) -> None:
    texts = {}
    for model in ("alpha", "beta", "lora", "base"):
        response = served.post("/v1/predict/micro", micro(model, decoding={"temperature": 0, "max_new_tokens": 12}))
        assert response.status_code == 200, response.text
        texts[model] = response.json()["predictions"][0]["text"]
    assert len(set(texts.values())) == 4, texts
    again = served.post("/v1/predict/micro", micro("alpha", decoding={"temperature": 0, "max_new_tokens": 12}))
    assert again.json()["predictions"][0]["text"] == texts["alpha"]  # greedy: the same every time


def test_micro_returns_the_expert_gates_on_request(served) -> None:
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for model in ("alpha", "beta"):  # PAC-LoRA, sequence and token routing
        body = served.post("/v1/predict/micro", micro(model, n=2, return_gates=True)).json()
        assert list(body["gates"]) == modules, body
        for gates in body["gates"].values():
            assert len(gates["analyze"]) == len(gates["compose"]) == 3
            assert sum(gates["analyze"]) == pytest.approx(1, abs=1e-5)
        per_layer = served.post("/v1/predict/micro", micro(model, return_gates=True, gate_detail="layer")).json()
        assert len(per_layer["gates"]) == 14 and all(".layers." in name for name in per_layer["gates"])
        assert served.post("/v1/predict/micro", micro(model)).json()["gates"] is None  # not asked for
    for model in ("lora", "base"):  # nothing routes: nothing to report
        assert served.post("/v1/predict/micro", micro(model, return_gates=True)).json()["gates"] is None
    refused = served.post("/v1/predict/micro", micro(return_gates=True, gate_detail="token"))
    assert refused.status_code == 422 and detail(refused)[0]["loc"] == ["body", "gate_detail"]


def test_invalid_input_gets_field_level_422(served) -> None:
    cases = [
        ({**MICRO, "user": {"history": []}}, ["body", "user", "name"]),
        ({**MICRO, "n": 0}, ["body", "n"]),
        ({**MICRO, "decoding": {"temperature": 5}}, ["body", "decoding", "temperature"]),
        ({**MICRO, "decoding": {"repetition_penalty_scope": "all"}}, ["body", "decoding", "repetition_penalty_scope"]),
        ({**MICRO, "unexpected": 1}, ["body", "unexpected"]),
        ({**MICRO, "topic": "##"}, ["body", "topic"]),
    ]
    for body, loc in cases:
        response = served.post("/v1/predict/micro", body)
        assert response.status_code == 422, (body, response.text)
        assert loc in [item["loc"] for item in detail(response)], response.text
    broken = requests.post(
        served.url + "/v1/predict/micro", data=b'{"user": "\\ud800"', timeout=30,
        headers={"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"},
    )
    assert broken.status_code == 422
    surrogate = requests.post(
        served.url + "/v1/predict/micro", data=b'{"user": {"name": "\\ud800"}, "news": "n", "topic": "t"}', timeout=30,
        headers={"Authorization": f"Bearer {served.token}", "Content-Type": "application/json"},
    )
    assert surrogate.status_code == 422 and detail(surrogate)[0]["loc"] == ["body", "user", "name"]


def test_oversize_input_gets_413_naming_the_limit(served) -> None:
    cases = [
        (micro(news="新" * 301), "max_text_chars", ["body", "news"]),
        (micro(user={**USER, "history": ["帖子"] * 6}), "max_history_posts", ["body", "user", "history"]),
        (micro(n=4), "max_samples_per_request", ["body", "n"]),
        (micro(decoding={"max_new_tokens": 17}), "max_new_tokens_limit", ["body", "decoding", "max_new_tokens"]),
        (micro(user={"name": "x", "history": ["长" * 300] * 5, "persona": "p" * 300}, news="新" * 300),
         "max_prompt_tokens", ["body"]),
    ]
    for body, limit, loc in cases:
        response = served.post("/v1/predict/micro", body)
        assert response.status_code == 413, (limit, response.text)
        [item] = detail(response)
        assert item["ctx"]["limit"] == limit and limit in item["msg"] and item["loc"] == loc
    users = [{"name": f"u{i}"} for i in range(25)]
    macro = served.post("/v1/predict/macro", {"news": "n", "topic": "t", "population": {"users": users}})
    assert macro.status_code == 413 and detail(macro)[0]["ctx"]["limit"] == "max_users_per_request"
    work = served.post("/v1/predict/macro", {"news": "n", "topic": "t", "population": {"users": users[:24]},
                                             "samples_per_user": 3})
    assert work.status_code == 413 and detail(work)[0]["ctx"]["limit"] == "max_rows_per_request", work.text
    assert "24 users x 3 samples_per_user = 72" in detail(work)[0]["msg"]
    huge = served.post("/v1/predict/micro", micro(news="x" * 70_000))
    assert huge.status_code == 413 and detail(huge)[0]["ctx"]["limit"] == "max_request_bytes"


# -- The guard, in raw HTTP: auth and the body's size before any body is read ----------------------
# Each request below leaves its body unfinished (a chunked body without its last chunk, or fewer
# bytes than its Content-Length): the server can answer only if it answers without the whole body.

def raw_answer(served, head: list[str], body_parts: list[bytes], token: str | None = None) -> tuple[int, bytes]:
    """Send the request line and headers, then `body_parts` (stopping early if the server has
    answered), and never the rest; returns the status and the body of the server's answer."""
    host, port = served.url.removeprefix("http://").split(":")
    lines = [*head, f"Host: {host}:{port}", "Content-Type: application/json"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        for part in body_parts:
            if select.select([connection], [], [], 0.05)[0]:
                break  # answered already
            try:
                connection.sendall(part)
            except OSError:  # the server closed its side after answering
                break
        answer = b""
        while not _complete(answer):  # a read timeout (30 s) fails the test: no answer came
            chunk = connection.recv(65536)
            if not chunk:
                break
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer.partition(b"\r\n\r\n")[2]


def _complete(answer: bytes) -> bool:
    """Whether `answer` holds the headers and as much body as their Content-Length says."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    lengths = [line.split(b":", 1)[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
    return not lengths or len(body) >= int(lengths[0])


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


MICRO_LINE = "POST /v1/predict/micro HTTP/1.1"
CHUNKED = [MICRO_LINE, "Transfer-Encoding: chunked"]


def test_a_chunked_body_without_a_token_gets_401_before_it_is_sent(served) -> None:
    parts = [chunk(b"x" * 16384)] * 40  # 640 KB of it, never finished
    assert raw_answer(served, CHUNKED, parts)[0] == 401
    assert raw_answer(served, CHUNKED, parts, token="wrong-token-123456")[0] == 401
    # Not JSON, and no token: the token is checked first, so 401 (not 422).
    assert raw_answer(served, CHUNKED, [chunk(b'{"user": '), b"0\r\n\r\n"])[0] == 401
    assert raw_answer(served, CHUNKED, [chunk(b'{"user": '), b"0\r\n\r\n"], token=served.token)[0] == 422


def test_a_chunked_body_is_counted_as_it_streams_and_refused_past_the_limit(served) -> None:
    parts = [chunk(b"x" * 16384)] * 40  # the limit is 64 KB: refused after the fifth chunk
    status, body = raw_answer(served, CHUNKED, parts, token=served.token)
    assert status == 413 and b"max_request_bytes" in body


def test_a_declared_length_over_the_limit_is_refused_unread(served) -> None:
    head = [MICRO_LINE, "Content-Length: 40000000"]
    assert raw_answer(served, head, [b"{"], token=served.token)[0] == 413
    assert raw_answer(served, head, [b"{"])[0] == 401  # and without a token, 401 first
    assert raw_answer(served, [MICRO_LINE, "Content-Length: 12"], [b"{"])[0] == 401


def test_a_chunked_body_within_the_limit_is_served(served) -> None:
    import json

    data = json.dumps(micro(decoding={"temperature": 0, "max_new_tokens": 2})).encode()
    parts = [chunk(data[:40]), chunk(data[40:]), b"0\r\n\r\n"]
    status, body = raw_answer(served, [*CHUNKED, "Connection: close"], parts, token=served.token)
    assert status == 200, body


def test_unknown_model_is_404(served) -> None:
    response = served.post("/v1/predict/micro", micro("gamma"))
    assert response.status_code == 404 and "gamma" in response.json()["detail"]


def test_macro_with_users_gives_counts_distribution_and_samples(served) -> None:
    users = [{"name": "a", "user_id": "1"}, {"name": "b", "persona": "悲观"}, {"name": "c", "history": ["哈哈"]}]
    body = {"news": "上海暴雨。", "topic": "上海暴雨", "population": {"users": users}, "samples_per_user": 2,
            "samples_per_class": 2, "return_posts": True, "decoding": {"max_new_tokens": 4}}
    response = served.post("/v1/predict/macro", body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["users"] == 3 and result["posts"] == 6
    assert result["counts"] == {"positive": 0, "neutral": 0, "negative": 0, "unlabelled": 6}
    assert result["distribution"] is None  # the placeholder labels nothing, and says so
    assert result["labeler"] == "placeholder-unlabelled"
    assert len(result["samples"]["unlabelled"]) == 2 and result["samples"]["positive"] == []
    assert [u["user"] for u in result["per_user"]] == ["a", "b", "c"] and result["per_user"][0]["user_id"] == "1"
    assert all(len(u["predictions"]) == 2 for u in result["per_user"])


def test_macro_population_from_an_sft_parquet_under_population_dir(served) -> None:
    rows = []
    for i in range(30):  # more users than max_users_per_request (24)
        for variant in ("full", "without_persona"):
            rows.append({
                "id": f"t|{i}|m{i}|{variant}", "split": "test", "variant": variant, "topic": "t", "news": "旧闻",
                "user_id": str(i), "user_name": f"用户{i}", "mid": f"m{i}", "instruction": "...", "input": "",
                "output": "真实帖子", "user_part": f"你的用户名为用户{i}, 以下是你的用户画像：\n乐观\n",
                "news_part": "...", "instruction_part": "...", "persona": "乐观", "history_mids": [],
            })
    pq.write_table(pa.Table.from_pylist(rows, schema=SFT), served.population_dir / "sft.parquet")
    body = {"news": "新闻", "topic": "话题", "population": {"path": "sft.parquet", "sample_size": 3, "seed": 7},
            "return_posts": True, "decoding": {"max_new_tokens": 4}}
    response = served.post("/v1/predict/macro", body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["users"] == 3 and len({u["user_id"] for u in result["per_user"]}) == 3
    whole = served.post("/v1/predict/macro", {**body, "population": {"path": "sft.parquet"}})
    assert whole.status_code == 413 and "sample_size" in detail(whole)[0]["msg"]
    for path in ("../outside.parquet", "/etc/passwd", "missing.parquet", "sft\x00.parquet", "sft.parquet/.."):
        refused = served.post("/v1/predict/macro", {**body, "population": {"path": path}})
        assert refused.status_code == 422 and detail(refused)[0]["loc"] == ["body", "population", "path"], path
        assert str(served.population_dir) not in refused.text and "/tmp" not in refused.text, refused.text
    (served.population_dir / "cut.parquet").write_bytes((served.population_dir / "sft.parquet").read_bytes()[:-100])
    cut = served.post("/v1/predict/macro", {**body, "population": {"path": "cut.parquet"}})
    assert cut.status_code == 422 and "Parquet" in cut.text and str(served.population_dir) not in cut.text


def test_the_largest_request_allowed_succeeds_on_an_idle_server(served) -> None:
    # 20 users x 3 samples: 20 Generator calls of one user each, while the Generator takes 8 and
    # queues 8 more; the request keeps fanout_per_request (8) in flight, the rest wait their turn.
    users = [{"name": f"用户{i}", "persona": "乐观" * i} for i in range(20)]
    body = {"news": "上海暴雨。", "topic": "上海暴雨", "population": {"users": users}, "samples_per_user": 3,
            "decoding": {"max_new_tokens": 2}}
    response = served.post("/v1/predict/macro", body, timeout=120)
    assert response.status_code == 200, response.text
    assert response.json()["users"] == 20 and response.json()["posts"] == 60


# -- Dynamic batching: concurrent requests share batches, and batching changes no greedy output ------

NEWS = ["北京发布了新的交通政策。", "上海暴雨，地铁停运。", "新手机发布会今天举行，价格良心。", "奥运会开幕。"]


def varied_request(index: int, model: str) -> dict:
    user = {"name": f"用户{index}", "history": ["今天天气不错。" * (index % 3 + 1)] * (index % 4),
            "persona": "乐观" * index}
    body = {"model": model, "user": user, "news": NEWS[index % 4] * (index % 2 + 1), "topic": f"话题{index}",
            "decoding": {"temperature": 0, "max_new_tokens": 6 + index % 3}}
    return body


def predict_texts(served, bodies: list[dict], concurrent: bool) -> list[list[str]]:
    def send(body: dict) -> list[str]:
        response = served.post("/v1/predict/micro", body)
        assert response.status_code == 200, response.text
        return [p["text"] for p in response.json()["predictions"]]

    if not concurrent:
        return [send(body) for body in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_batched_greedy_outputs_equal_one_by_one(served) -> None:
    # Different prompt lengths (left padding), adapters and max_new_tokens in one burst.
    bodies = [varied_request(i, model) for i, model in enumerate(["alpha"] * 4 + ["beta"] * 2 + ["base"] * 2)]
    before = len(served.generator_stats()["batch_sizes"])
    together = predict_texts(served, bodies, concurrent=True)
    during = served.generator_stats()["batch_sizes"][before:]
    alone = predict_texts(served, bodies, concurrent=False)
    after = served.generator_stats()["batch_sizes"][before + len(during):]
    assert together == alone
    assert max(during) > 1, during  # they did share batches
    assert after == [1] * len(bodies)  # one by one: batches of one


def test_concurrent_requests_are_batched(served) -> None:
    bodies = [varied_request(i, "alpha") for i in range(8)]
    before = len(served.generator_stats()["batch_sizes"])
    predict_texts(served, bodies, concurrent=True)
    sizes = served.generator_stats()["batch_sizes"][before:]
    assert sum(sizes) == 8 and max(sizes) > 1, sizes
    assert len(sizes) < 8, sizes


def test_samples_of_one_request_share_a_batch(served) -> None:
    before = len(served.generator_stats()["batch_sizes"])
    body = {**varied_request(1, "beta"), "n": 3, "decoding": {"max_new_tokens": 4}}  # research sampling defaults
    response = served.post("/v1/predict/micro", body)
    assert response.status_code == 200 and len(response.json()["predictions"]) == 3
    assert served.generator_stats()["batch_sizes"][before:] == [3]


# -- The openai client -------------------------------------------------------------------------------

@pytest.fixture()
def client(served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=served.token, max_retries=0, timeout=60)


def test_models_and_chat_completions_through_the_openai_client(client) -> None:
    assert [model.id for model in client.models.list()] == ["base", "alpha", "beta", "lora"]
    messages = [{"role": "system", "content": "你是一个微博用户。"}, {"role": "user", "content": "说说今天的新闻"}]
    first = client.chat.completions.create(model="alpha", messages=messages, temperature=0, max_tokens=8)
    again = client.chat.completions.create(model="alpha", messages=messages, temperature=0, max_tokens=8)
    assert first.choices[0].message.content == again.choices[0].message.content
    assert first.choices[0].finish_reason in ("stop", "length") and first.model == "alpha"
    usage = first.usage
    assert usage.prompt_tokens > 0 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    other = client.chat.completions.create(model="beta", messages=messages, temperature=0, max_tokens=8)
    assert other.choices[0].message.content != first.choices[0].message.content
    several = client.chat.completions.create(
        model="base", messages=messages, n=2, max_tokens=4, extra_body={"top_k": 5, "repetition_penalty": 1.1}
    )
    assert [choice.index for choice in several.choices] == [0, 1]


def test_the_chat_route_penalises_the_scope_asked_for_as_the_engine_does(client, tiny_models) -> None:
    from serve.engine import LoadedModel, Row, generate_rows, load_base
    from serve.prompts import encode
    from serve.protocol import ChatPrompt, Sampling

    base, tokenizer = load_base(str(tiny_models.base), device="cpu")
    said = "北京发布了新的交通政策。"  # a prompt whose words the penalty keeps this model from saying
    encoding = encode(tokenizer, ChatPrompt((("user", said),)), "sequence", 2048)
    model = LoadedModel("base", base, "sequence", takes_spans=False)
    served = {}
    for scope in ("output", "prompt_and_output"):
        reply = client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": said}], temperature=0, max_tokens=12,
            extra_body={"repetition_penalty": 3.0, "repetition_penalty_scope": scope})
        served[scope] = reply.choices[0].message.content
        [expected] = generate_rows([Row(model, encoding, Sampling(0, 1.0, 0, 3.0, 12, scope))], tokenizer)
        assert served[scope] == expected.text, scope
    assert served["output"] != served["prompt_and_output"]


def test_streaming_and_errors_through_the_openai_client(client, served) -> None:
    messages = [{"role": "user", "content": "你好"}]
    chunks = list(client.chat.completions.create(model="alpha", messages=messages, temperature=0, max_tokens=6,
                                                 stream=True))
    streamed = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    plain = client.chat.completions.create(model="alpha", messages=messages, temperature=0, max_tokens=6)
    assert streamed == plain.choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gamma", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=served.url + "/v1", api_key="wrong-key-123", max_retries=0).models.list()
    with pytest.raises(openai.APIStatusError) as too_long:
        client.chat.completions.create(model="alpha", messages=messages, max_tokens=17)
    assert too_long.value.status_code == 413 and too_long.value.code == "max_new_tokens_limit"
    assert "max_tokens: at most 16 (max_new_tokens_limit)" in too_long.value.body["message"]


def test_model_retrieval_usage_in_streams_and_tool_messages_through_the_openai_client(client) -> None:
    assert client.models.retrieve("beta").id == "beta"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gamma")
    messages = [{"role": "user", "content": "你好"}]
    chunks = list(client.chat.completions.create(model="alpha", messages=messages, temperature=0, max_tokens=4,
                                                 stream=True, stream_options={"include_usage": True}))
    *text_chunks, last = chunks
    assert last.choices == [] and last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert last.usage.completion_tokens > 0 and all(c.usage is None for c in text_chunks)
    plain = list(client.chat.completions.create(model="alpha", messages=messages, max_tokens=4, stream=True))
    assert all(c.choices for c in plain)  # no usage chunk unless asked for
    with_tools = [
        {"role": "user", "content": "北京天气怎么样？"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "晴"},
        {"role": "user", "content": "那出去走走？"},
    ]
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}]
    reply = client.chat.completions.create(model="alpha", messages=with_tools, tools=tools, temperature=0,
                                           max_tokens=4)
    alone = client.chat.completions.create(model="alpha", messages=[with_tools[0], with_tools[3]], temperature=0,
                                           max_tokens=4)
    assert reply.choices[0].message.content == alone.choices[0].message.content  # tool turns left out


def test_the_openai_client_reaches_every_endpoint(client, served) -> None:
    one = client.post("/predict/micro", cast_to=object, body={
        "model": "beta", "user": {"name": "小明"}, "news": "北京发布新政。", "topic": "北京交通新政", "n": 2,
    })
    assert one["model"] == "beta" and len(one["predictions"]) == 2
    crowd = client.post("/predict/macro", cast_to=object, body={
        "news": "北京发布新政。", "topic": "北京交通新政", "population": {"users": [{"name": "a"}, {"name": "b"}]},
    })
    assert crowd["posts"] == 2 and crowd["labeler"] == "placeholder-unlabelled"
    root = openai.OpenAI(base_url=served.url, api_key=served.token, max_retries=0)
    assert root.get("/healthz", cast_to=object)["status"] == "ok"
    assert client.get("/health", cast_to=object)["default_model"] == "alpha"


# -- Property-based fuzz of the published OpenAPI schema: no request body ever gets a 5xx -------------
# Bodies are drawn from each POST endpoint's request schema (as /openapi.json publishes it), then
# some are broken on purpose: a field replaced by arbitrary JSON, a required field dropped, an
# unknown field added, or a body that is arbitrary JSON altogether.

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def from_schema(schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy:
    """Values valid for a JSON schema (the subset FastAPI/pydantic emit), kept small."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return st.deferred(lambda: from_schema(components[name], components))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(option, components) for option in schema[key]])
    if "allOf" in schema:
        return from_schema(schema["allOf"][0], components)
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        low = schema.get("minLength", 0)
        return st.text(min_size=low, max_size=max(low, 12))
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -11) + 1)
        return st.integers(min_value=low, max_value=min(schema.get("maximum", low + 5), low + 5))
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -10.0))
        high = schema.get("maximum", schema.get("exclusiveMaximum", low + 10.0))
        return st.floats(min_value=low, max_value=high, allow_nan=False,
                         exclude_min="exclusiveMinimum" in schema, exclude_max="exclusiveMaximum" in schema)
    if kind == "boolean":
        return st.booleans()
    if kind == "null":
        return st.none()
    if kind == "array":
        low = schema.get("minItems", 0)
        return st.lists(from_schema(schema.get("items", {}), components), min_size=low,
                        max_size=min(schema.get("maxItems", low + 2), low + 2))
    if kind == "object" or "properties" in schema:
        properties = {name: _field(name, sub, components) for name, sub in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {name: value for name, value in properties.items() if name in required},
            optional={name: value for name, value in properties.items() if name not in required},
        )
    return JSON


def _field(name: str, schema: dict[str, Any], components: dict[str, Any]) -> st.SearchStrategy:
    if name == "model":  # mostly served models, so that bodies get past the 404
        return st.sampled_from(["alpha", "beta", "base"]) | from_schema(schema, components)
    if name == "role":  # often a user, so that conversations get past "needs a user message"
        return st.just("user") | from_schema(schema, components)
    return from_schema(schema, components)


@st.composite
def broken(draw: st.DrawFn, valid: st.SearchStrategy) -> Any:
    body = draw(valid)
    how = draw(st.sampled_from(["replace", "drop", "extra", "anything"]))
    if how == "anything" or not isinstance(body, dict) or not body:
        return draw(JSON)
    key = draw(st.sampled_from(sorted(body)))
    if how == "replace":
        return {**body, key: draw(JSON)}
    if how == "drop":
        return {k: v for k, v in body.items() if k != key}
    return {**body, draw(st.text(min_size=1, max_size=8)): draw(JSON)}


ENDPOINTS = ["/v1/predict/micro", "/v1/predict/macro", "/v1/chat/completions"]


@pytest.fixture(scope="module")
def openapi(served) -> dict[str, Any]:
    return served.get("/openapi.json").json()


@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_request_body_gets_a_5xx(served, openapi, path: str) -> None:
    components = openapi["components"]["schemas"]
    schema = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    valid = from_schema(schema, components)
    seen: dict[int, int] = {}

    @settings(max_examples=30, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(valid, broken(valid)))
    def check(body: Any) -> None:
        response = served.post(path, body)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (body, response.status_code, response.text)
        if response.headers.get("content-type", "").startswith("application/json"):
            response.json()

    check()
    assert seen.get(200, 0) > 0 and seen.get(422, 0) > 0, seen  # both valid and invalid bodies were tried


# -- Overload ----------------------------------------------------------------------------------------

def test_overload_answers_503_and_never_crashes(served) -> None:
    # Api and Generator take 8 requests in flight and queue 8 more; a burst of 48 overflows them.
    body = micro(decoding={"temperature": 0, "max_new_tokens": 16})
    with ThreadPoolExecutor(48) as pool:
        codes = list(pool.map(lambda _: served.post("/v1/predict/micro", body).status_code, range(48)))
    assert set(codes) <= {200, 503}, codes
    assert codes.count(503) > 0 and codes.count(200) >= 8, codes
    assert served.post("/v1/predict/micro", body).status_code == 200  # and it recovers


# -- socialalign predict: through this app, and in-process, the same rows give the same posts -------


@pytest.mark.parametrize("adapter_id", ["alpha", "lora"])  # PAC-LoRA, and the peft LoRA baseline
def test_predict_through_the_app_equals_predicting_in_process(served, tiny_models, tmp_path, adapter_id) -> None:
    from cluster.stage_config import RayConfig
    from pac_lora import format_history_post, research_prompt_parts
    from serve.config import PredictConfig
    from serve.predict import run as predict

    rows = []
    for i, (news, topic) in enumerate([("北京发布了新的交通政策。", "北京交通新政"), ("上海暴雨。", "上海暴雨")]):
        history = [format_history_post("今天天气不错"), format_history_post("支持", "加油！")]
        for variant in ("full", "without_persona"):
            parts = research_prompt_parts(f"用户{i}", history, "积极乐观", news, topic, variant)
            rows.append({"id": f"{topic}|u{i}|m{i}|{variant}", "split": "test", "variant": variant, "topic": topic,
                         "news": news, "user_id": f"u{i}", "user_name": f"用户{i}", "mid": f"m{i}",
                         "instruction": parts.instruction, "input": "", "output": "真实的微博",
                         "user_part": parts.user_part, "news_part": parts.news_part,
                         "instruction_part": parts.instruction_part, "persona": "积极乐观",
                         "history_mids": ["h1", "h2"], "history_texts": history})
    (tmp_path / "test").mkdir()
    pq.write_table(pa.Table.from_pylist(rows, schema=SFT), tmp_path / "test" / "part-0.parquet")
    common = {"test_path": tmp_path / "test", "decoding": {"temperature": 0, "max_new_tokens": 8},
              "ray": RayConfig(include_dashboard=False), "return_gates": adapter_id == "alpha"}
    through_app = PredictConfig(endpoint=served.url, model=adapter_id, auth_token=served.token, method=adapter_id,
                                output_path=tmp_path / "app.parquet", **common)
    in_process = PredictConfig(base_model=str(tiny_models.base), adapter=str(tiny_models.adapters[adapter_id]),
                               method=adapter_id, output_path=tmp_path / "local.parquet", **common)
    assert predict(through_app) == 0 and predict(in_process) == 0
    app_rows = pq.read_table(tmp_path / "app.parquet").to_pylist()
    local_rows = pq.read_table(tmp_path / "local.parquet").to_pylist()
    assert len(app_rows) == len(local_rows) == 2  # the full rows only, one sample each
    key = lambda row: (row["topic"], row["mid"], row["sample"])  # noqa: E731
    app_posts, local_posts = ([r["prediction"] for r in sorted(read, key=key)] for read in (app_rows, local_rows))
    assert app_posts == local_posts
    app_gates, local_gates = ([r["gates"] for r in sorted(read, key=key)] for read in (app_rows, local_rows))
    if adapter_id == "alpha":  # the gate columns too (PAC-LoRA: return_gates)
        flat = [[w for entry in row for side in ("analyze", "compose") for w in entry[side]] for row in local_gates]
        assert [[w for entry in row for side in ("analyze", "compose") for w in entry[side]]
                for row in app_gates] == [pytest.approx(row, abs=1e-6) for row in flat]
        assert [e["name"] for e in app_gates[0]] == [e["name"] for e in local_gates[0]] and len(app_gates[0]) == 7
    else:
        assert app_gates == local_gates == [None, None]
    assert all(row["real"] == "真实的微博" for row in app_rows)
    assert {row["method"] for row in app_rows} == {adapter_id}


def test_the_url_names_the_proxy_serve_really_runs(served, caplog) -> None:
    from serve.app import proxy_address

    port = int(served.url.rsplit(":", 1)[1])
    assert proxy_address("127.0.0.1", port) == ("127.0.0.1", port)
    with caplog.at_level("WARNING", logger="serve.app"):
        assert proxy_address("127.0.0.1", port + 1) == ("127.0.0.1", port)  # another port cannot be had now
    assert "already running" in caplog.text
