"""The LLM judge through the real `openai` client against a local OpenAI-compatible server.

The server is written here rather than taken from `tests.fakes.openai_server.FakeLLM`: that one answers
every prompt with a persona, while these tests need a chosen answer per post and the key it was sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from aiohttp import web

from cluster.http_thread import serve_in_thread
from serve.config import ServeConfig
from serve.protocol import Completion
from serve.schemas import MacroRequest
from serve.sentiment import LLMJudgeLabeler, make_labeler
from serve.service import Service
from tests.conftest import free_port


class Judge:
    """Answers the judge's prompt with `answers[post]`, or fails every request with `status`."""

    def __init__(self, answers: dict[str, str] | None = None, status: int = 200) -> None:
        self.answers, self.status = answers or {}, status
        self.calls: Counter = Counter()  # post -> requests that reached the server
        self.keys: set[str | None] = set()

    @contextmanager
    def running(self) -> Iterator[str]:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        with serve_in_thread(app, "127.0.0.1", 0, name="judge") as url:
            yield f"{url}/v1"

    async def _chat(self, request: web.Request) -> web.Response:
        self.keys.add(request.headers.get("Authorization"))
        body = await request.json()
        post = body["messages"][-1]["content"].rsplit("微博：", 1)[1]
        self.calls[post] += 1
        if self.status != 200:
            return web.json_response({"error": {"message": "the judge is down"}}, status=self.status)
        message = {"role": "assistant", "content": self.answers.get(post, "")}
        return web.json_response({
            "id": "chatcmpl-judge", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        })


def judge_at(url: str, **options: object) -> LLMJudgeLabeler:
    labeler = make_labeler("llm-judge", base_url=url, model="judge", timeout_s=10, **options)
    assert isinstance(labeler, LLMJudgeLabeler)
    return labeler


def test_a_parseable_answer_is_a_label_and_an_unparseable_one_is_asked_once_more() -> None:
    judge = Judge({"支持新政！": "正面", "又堵车了": " 负面。", "说不好": "我觉得是正面的吧"})
    with judge.running() as url:
        labeler = judge_at(url, max_retries=0)
        labels = labeler.label(["支持新政！", "又堵车了", "说不好", "  "], topic="北京交通新政")
    assert labels == ["positive", "negative", "unlabelled", "unlabelled"]
    assert judge.calls == {"支持新政！": 1, "又堵车了": 1, "说不好": 2}  # a blank post costs no call
    assert labeler.stats["retried"] == 1 and labeler.stats["unparseable"] == 1 and labeler.stats["failed"] == 0


def test_a_failing_endpoint_gives_unlabelled_posts_counted_by_reason(caplog: pytest.LogCaptureFixture) -> None:
    judge = Judge(status=500)
    with judge.running() as url, caplog.at_level(logging.WARNING, logger="serve.sentiment.llm_judge"):
        labeler = judge_at(url, max_retries=1, api_key="sk-judge-secret-0123")
        labels = labeler.label(["支持新政！", "又堵车了"], topic="北京交通新政")
    assert labels == ["unlabelled", "unlabelled"]
    assert judge.calls == {"支持新政！": 2, "又堵车了": 2}  # the client's own retry came first
    assert labeler.stats["failed"] == 2 and labeler.failures == {"HTTP 500": 2}
    assert "2 of 2 posts unlabelled" in caplog.text and "HTTP 500" in caplog.text
    assert "sk-judge-secret-0123" not in caplog.text + repr(labeler)

    nobody = judge_at(f"http://127.0.0.1:{free_port()}/v1", max_retries=0)  # nothing listens there
    assert nobody.label(["支持新政！"]) == ["unlabelled"] and nobody.failures == {"APIConnectionError": 1}


def test_serve_answers_with_unlabelled_posts_when_the_judge_is_down() -> None:
    async def generator(model: str, jobs):
        return [[Completion(f"{job.prompt.user.name}说好", 10, 3, "stop")] * job.n for job in jobs]

    with Judge(status=503).running() as url:
        service = Service(ServeConfig(), generator, judge_at(url, max_retries=0))
        request = MacroRequest.model_validate(
            {"news": "n", "topic": "t", "population": {"users": [{"name": "a"}, {"name": "b"}]}})
        result = asyncio.run(service.macro(request))
    assert result.counts.unlabelled == 2 and result.distribution is None
    assert service.labeler.failures == {"HTTP 503": 2}


def test_the_key_comes_from_the_environment_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    judge = Judge({"支持新政！": "正面"})
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("SOCIALALIGN_LLM_API_KEY", "sk-from-the-environment")
    with judge.running() as url:
        assert judge_at(url, max_retries=0).label(["支持新政！"]) == ["positive"]
        assert judge.keys == {"Bearer sk-from-the-environment"}
        judge.keys.clear()
        judge_at(url, max_retries=0, api_key="sk-given").label(["支持新政！"])
        assert judge.keys == {"Bearer sk-given"}


def test_evaluation_hands_the_judge_its_endpoint_config() -> None:
    from serve.evaluate.config import EvaluateConfig
    from serve.evaluate.job import labeler_options

    judge = Judge({"支持新政！": "正面"})
    with judge.running() as url:
        config = EvaluateConfig(labeler="llm-judge", judge={"base_url": url, "model": "judge", "max_retries": 0})
        labeler = make_labeler(config.labeler, **labeler_options(config))
        assert isinstance(labeler, LLMJudgeLabeler)
        # the config's endpoint, without its key (a labelling worker reads that from its environment)
        assert labeler.endpoint == config.judge.model_copy(update={"api_key": None})
        assert labeler.label(["支持新政！"], topic="北京交通新政") == ["positive"]
    with pytest.raises(ValueError, match="max_retry"):  # serve's labeler_options are the endpoint's fields
        make_labeler("llm-judge", base_url=url, model="judge", max_retry=3)
