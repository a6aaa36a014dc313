"""Personas through the real `openai` client against a local OpenAI-compatible server that injects
429, 500 and timeouts and counts every call; and the offline persona builder."""

from __future__ import annotations

import asyncio

import pytest

from cluster.llm import LLMEndpointConfig
from cluster.retry import Backoff
from dataset_jobs.persona import FACET_CHARS, FACETS, PersonaClient, offline_persona, persona_prompt, personas_for
from tests.fakes.openai_server import FakeLLM, FakeLLMConfig

POSTS = ["今天天气真好，支持！[哈哈]", "新手机发布会太棒了！", "北京交通新政我觉得很好", "周末去爬山，开心",
         "期待下一场比赛！"]


def users(n: int) -> list[dict]:
    return [{"user_id": str(i), "user_name": f"用户{i}", "posts": [f"{post}{i}" for post in POSTS]} for i in range(n)]


def client(llm: FakeLLM, **overrides) -> PersonaClient:
    options = dict(base_url=llm.base_url, model="fake-persona-1", concurrency=8, requests_per_second=None,
                   timeout_s=0.5, max_retries=6)
    options.update(overrides)
    endpoint = LLMEndpointConfig(**options)
    return PersonaClient(endpoint, backoff=Backoff(attempts=endpoint.max_retries + 1, initial_s=0.01, max_s=0.05))


async def ask_all(llm: FakeLLM, people: list[dict], **overrides):
    persona_client = client(llm, **overrides)
    try:
        return await personas_for(persona_client, people)
    finally:
        await persona_client.close()


def test_retries_ride_out_429_500_and_timeouts() -> None:
    config = FakeLLMConfig(rate_429=0.15, rate_500=0.15, rate_timeout=0.1, timeout_delay_s=1.0, seed=1)
    with FakeLLM(config).running() as llm:
        people = users(20)
        results = asyncio.run(ask_all(llm, people))
        calls = llm.calls
    assert [r.source for r in results] == ["llm"] * 20
    for person, result in zip(people, results, strict=True):
        assert result.persona == FakeLLM.answer(persona_prompt(person["user_name"], person["posts"]))
    assert calls.by_status[429] > 0 and calls.by_status[500] > 0
    assert calls.by_status[200] == 20  # exactly one successful call per user
    assert sum(r.attempts for r in results) >= 20 + calls.by_status[429] + calls.by_status[500]
    assert all(r.prompt_tokens > 0 and r.completion_tokens > 0 for r in results)


def test_a_user_whose_retries_run_out_gets_the_offline_persona_and_a_reason() -> None:
    with FakeLLM(FakeLLMConfig(rate_500=1.0)).running() as llm:
        results = asyncio.run(ask_all(llm, users(3), max_retries=2))
        calls = llm.calls.total
    assert calls == 3 * 3  # first try + 2 retries each, then stop
    for result in results:
        assert result.source == "offline-fallback"
        assert "InternalServerError 500" in result.error
        assert result.persona.startswith("1. 兴趣话题：")


def test_bounded_concurrency_and_rate() -> None:
    with FakeLLM(FakeLLMConfig(latency_s=0.2)).running() as llm:
        import time

        started = time.perf_counter()
        asyncio.run(ask_all(llm, users(8), concurrency=4))
        bounded = time.perf_counter() - started
        started = time.perf_counter()
        asyncio.run(ask_all(llm, users(4), concurrency=8, requests_per_second=4))
        paced = time.perf_counter() - started
    assert bounded >= 0.4  # 8 calls, 4 at a time, 0.2 s each: two waves at least
    assert paced >= 0.75  # 4 calls at 4/s: the last starts 0.75 s after the first


def test_offline_persona_is_deterministic_and_in_the_research_form() -> None:
    persona = offline_persona("小明", POSTS)
    assert persona == offline_persona("小明", POSTS)
    lines = persona.splitlines()
    assert [line.split("：")[0] for line in lines] == [f"{i}. {facet}" for i, facet in enumerate(FACETS, 1)]
    assert all(len(line.split("：", 1)[1]) <= FACET_CHARS for line in lines)
    assert "积极" in lines[2]  # these posts are plainly positive
    assert "积极" not in offline_persona("小红", ["太失望了，垃圾", "烦死了，离谱", "无语，又坑人"]).splitlines()[2]


@pytest.mark.parametrize("bad", ["", "not json"])
def test_the_fake_server_rejects_malformed_requests(bad: str) -> None:
    import urllib.error
    import urllib.request

    with FakeLLM().running() as llm:
        request = urllib.request.Request(f"{llm.base_url}/chat/completions", data=bad.encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as error:
            urllib.request.urlopen(request, timeout=5)
    assert error.value.code == 400
