"""`socialalign predict` through an endpoint that is busy (503), or refuses a row (413, 422)."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from aiohttp import web

from cluster.config import ConfigError
from cluster.http_thread import serve_in_thread
from cluster.schemas import PREDICTIONS, SFT
from serve import predict
from serve.config import PredictConfig
from serve.predict import predict_via_endpoint, run

BUSY_TIMES = 2  # "busy" is answered 503 this many times, then 200


class Endpoint:
    """/v1/predict/micro answering by the user's name: ok, busy (503 then 200), later (503 with
    Retry-After: 1, then 200), big (413), bad (422), down (always 503), broken (500)."""

    def __init__(self) -> None:
        self.calls: Counter = Counter()
        self.gate_details: list[str] = []
        self.decodings: list[dict] = []

    @contextmanager
    def running(self) -> Iterator[str]:
        app = web.Application()
        app.router.add_post("/v1/predict/micro", self._micro)
        with serve_in_thread(app, "127.0.0.1", 0, name="predict-endpoint") as url:
            yield url

    async def _micro(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.decodings.append(body["decoding"])
        name = body["user"]["name"]
        self.calls[name] += 1
        status = {"big": 413, "bad": 422, "down": 503, "broken": 500}.get(name, 200)
        if name == "busy" and self.calls[name] <= BUSY_TIMES:
            status = 503
        if name == "later" and self.calls[name] == 1:
            return web.json_response({"detail": "overloaded"}, status=503, headers={"Retry-After": "1"})
        if status != 200:
            return web.json_response({"detail": f"{name} refused"}, status=status)
        predictions = [{"text": f"{name}的微博{k}", "completion_tokens": 3} for k in range(body["n"])]
        answer = {"prompt_tokens": 7, "predictions": predictions}
        if body.get("return_gates"):  # the app's micro API: gates by name, as asked for
            self.gate_details.append(body["gate_detail"])
            answer["gates"] = {"q_proj": {"analyze": [0.5, 0.25, 0.25], "compose": [0.2, 0.3, 0.5]},
                               "v_proj": {"analyze": [0.1, 0.8, 0.1], "compose": [1 / 3] * 3}}
        return web.json_response(answer)


def row(name: str) -> dict:
    return {"id": f"t|{name}|m-{name}|full", "topic": "t", "news": "n", "variant": "full", "user_id": name,
            "user_name": name, "mid": f"m-{name}", "history_texts": [], "persona": None, "output": "真实的微博"}


@pytest.fixture(autouse=True)
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(predict, "BACKOFF_S", 0.01)
    monkeypatch.setattr(predict, "MAX_ATTEMPTS", 4)


def test_busy_rows_are_retried_and_refused_rows_skipped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    endpoint = Endpoint()
    with endpoint.running() as url, caplog.at_level(logging.INFO, logger="serve.predict"):
        config = PredictConfig(endpoint=url, samples_per_user=2, method="m")
        predicted = asyncio.run(predict_via_endpoint(config, [row(n) for n in ("ok", "busy", "big", "bad")]))
    assert sorted((p["user_id"], p["sample"], p["prediction"]) for p in predicted) == [
        ("busy", 0, "busy的微博0"), ("busy", 1, "busy的微博1"), ("ok", 0, "ok的微博0"), ("ok", 1, "ok的微博1")]
    assert endpoint.calls == {"ok": 1, "busy": BUSY_TIMES + 1, "big": 1, "bad": 1}  # refused rows: not retried
    assert "2 of 4 rows predicted, 2 skipped (413: 1, 422: 1), 2 retries after 503" in caplog.text


def test_a_busy_endpoints_retry_after_is_honoured() -> None:
    endpoint = Endpoint()
    with endpoint.running() as url:
        began = time.monotonic()
        predicted = asyncio.run(predict_via_endpoint(PredictConfig(endpoint=url), [row("later")]))
        waited = time.monotonic() - began
    assert [p["prediction"] for p in predicted] == ["later的微博0"] and endpoint.calls == {"later": 2}
    assert waited >= 1.0  # the computed backoff here is at most 0.01 s


def test_an_endpoint_that_stays_busy_or_fails_stops_the_run() -> None:
    endpoint = Endpoint()
    with endpoint.running() as url:
        config = PredictConfig(endpoint=url)
        with pytest.raises(RuntimeError, match=re.escape("answered 503 for t|down|m-down|full after 4 tries")):
            asyncio.run(predict_via_endpoint(config, [row("down")]))
        with pytest.raises(RuntimeError, match="answered 500"):
            asyncio.run(predict_via_endpoint(config, [row("broken")]))
    assert endpoint.calls == {"down": 4, "broken": 1}


def test_no_rows_or_no_model_is_a_config_error_before_ray(tmp_path) -> None:
    with pytest.raises(ConfigError, match="test_path: no full rows"):
        run(PredictConfig(test_path=tmp_path / "missing"))
    (tmp_path / "test").mkdir()
    sft_row = {field.name: None if field.nullable else "x" for field in SFT} | {"variant": "full"}
    pq.write_table(pa.Table.from_pylist([sft_row], schema=SFT), tmp_path / "test" / "part-0.parquet")
    with pytest.raises(ConfigError, match="base_model: .* is not a local Hugging Face model directory"):
        run(PredictConfig(test_path=tmp_path / "test", base_model=str(tmp_path / "no-model")))


def test_gates_are_asked_for_and_written_per_prediction() -> None:
    endpoint = Endpoint()
    with endpoint.running() as url:
        config = PredictConfig(endpoint=url, samples_per_user=2, return_gates=True, gate_detail="layer")
        predicted = asyncio.run(predict_via_endpoint(config, [row("ok")]))
        plain = asyncio.run(predict_via_endpoint(PredictConfig(endpoint=url), [row("ok")]))
    assert endpoint.gate_details == ["layer"]  # asked once, not for the run without return_gates
    table = pa.Table.from_pylist(predicted, schema=PREDICTIONS)
    gates = table["gates"].to_pylist()
    assert len(gates) == 2 and gates[0] == gates[1]  # every sample of the prompt
    assert [entry["name"] for entry in gates[0]] == ["q_proj", "v_proj"]
    assert gates[0][0]["analyze"] == pytest.approx([0.5, 0.25, 0.25])
    assert gates[0][1]["compose"][0] == pytest.approx(1 / 3)
    assert [p["gates"] for p in plain] == [None]


def test_every_decoding_setting_the_api_takes_is_sent_as_configured() -> None:
    from serve.schemas import Decoding

    endpoint = Endpoint()
    config = PredictConfig(endpoint="http://127.0.0.1:1", decoding={
        "temperature": 0.3, "top_p": 0.8, "top_k": 7, "repetition_penalty": 1.1,
        "repetition_penalty_scope": "output", "max_new_tokens": 9})
    with endpoint.running() as url:
        asyncio.run(predict_via_endpoint(config.model_copy(update={"endpoint": url}), [row("ok")]))
    [sent] = endpoint.decodings
    assert set(sent) == set(Decoding.model_fields)  # a setting the API takes is never left out
    assert Decoding(**sent).model_dump() == {name: getattr(config.decoding, name) for name in sent}
