"""The fake Messages API, driven by the real `anthropic` SDK over HTTP.

The fake stands in for Claude in every other test and in the benchmarks, so
these tests hold it to the real API's wire shapes: rate-limit headers and
429s, token counting, prompt caching and the Message Batches API.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import anthropic
import pytest
from anthropic import AsyncAnthropic

from tests.support.fake_anthropic import FakeAnthropic

MODEL = "claude-test-1"


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic().start()
    yield server
    server.stop()


@pytest.fixture
async def client(fake: FakeAnthropic) -> AsyncIterator[AsyncAnthropic]:
    async with AsyncAnthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0) as c:
        yield c


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def document(text: str, title: str = "doc") -> dict:
    source = {"type": "text", "media_type": "text/plain", "data": text}
    return {"type": "document", "title": title, "source": source}


async def test_count_tokens_answers_the_estimate_that_usage_reports(client):
    system = "You are terse."  # 14 characters: 4 tokens
    content = [{"type": "text", "text": "x" * 400}, document("y" * 39, title="T")]
    messages = [{"role": "user", "content": content}]
    counted = await client.messages.count_tokens(model=MODEL, system=system, messages=messages)
    assert counted.input_tokens == 4 + 100 + 10
    message = await client.messages.create(
        model=MODEL, max_tokens=100, system=system, messages=messages
    )
    assert message.usage.input_tokens == counted.input_tokens
    assert message.usage.output_tokens == 7 and message.stop_reason == "end_turn"
    assert message.model == MODEL


async def test_answer_model_names_the_stand_in(client, fake):
    fake.answer_model = "fake-claude (local stand-in)"
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    assert message.model == "fake-claude (local stand-in)"


async def test_a_request_without_max_tokens_is_refused_as_the_api_does(client, fake):
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.post(
            "/v1/messages", body={"model": MODEL, "messages": user("hi")}, cast_to=object
        )
    assert raised.value.status_code == 400
    assert raised.value.body["error"]["type"] == "invalid_request_error"
