"""The fake Messages API, driven by the real `anthropic` SDK over HTTP.

The fake stands in for Claude in every other test and in the benchmarks, so
these tests hold it to the real API's wire shapes: rate-limit headers and
429s, token counting, prompt caching and the Message Batches API.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import anthropic
import httpx2
import pytest
from anthropic import AsyncAnthropic

from tests.conftest import eventually
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.fake_anthropic.cache import PromptCache
from tests.support.fake_anthropic.tokens import PromptError, read_prompt

MODEL = "claude-test-1"
BUCKETS = ("requests", "input-tokens", "output-tokens", "tokens")


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


async def call(client: AsyncAnthropic, text: str = "hi", max_tokens: int = 10) -> httpx2.Response:
    """One Messages call; its HTTP response, whatever its status."""
    try:
        raw = await client.messages.with_raw_response.create(
            model=MODEL, max_tokens=max_tokens, messages=user(text)
        )
    except anthropic.APIStatusError as exc:
        return exc.response
    return raw.http_response


def reset_at(headers: httpx2.Headers, bucket: str) -> datetime:
    value = headers[f"anthropic-ratelimit-{bucket}-reset"]
    assert value.endswith("Z"), value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


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


async def test_every_answer_carries_rate_limit_headers_and_a_request_id(client, fake):
    fake.limit(requests_per_minute=60, output_tokens_per_minute=1000)
    fake.script("529", "500", "429:3")
    answers = [await call(client) for _ in range(4)]
    bad = await client.messages.with_raw_response.count_tokens(model=MODEL, messages=user("x"))
    answers.append(bad.http_response)
    assert [a.status_code for a in answers] == [529, 500, 429, 200, 200]
    for answer in answers:
        assert answer.headers["request-id"].startswith("req_")
        for bucket in BUCKETS:
            assert int(answer.headers[f"anthropic-ratelimit-{bucket}-limit"]) > 0
            assert int(answer.headers[f"anthropic-ratelimit-{bucket}-remaining"]) >= 0
            assert reset_at(answer.headers, bucket).tzinfo == UTC
    ok = answers[3].headers
    assert ok["anthropic-ratelimit-requests-limit"] == "60"
    # The errors consumed nothing: one request of 60 is gone.
    assert ok["anthropic-ratelimit-requests-remaining"] == "59"
    assert ok["anthropic-ratelimit-output-tokens-limit"] == "1000"
    # Output is the more restrictive of the two token limits (input is unlimited).
    assert ok["anthropic-ratelimit-tokens-limit"] == "1000"
    assert ok["anthropic-ratelimit-input-tokens-limit"] == "1000000000"
    assert answers[2].headers["retry-after"] == "3"


async def test_unlimited_by_default_with_the_headers_still_sent(client):
    headers = (await call(client)).headers
    assert int(headers["anthropic-ratelimit-requests-remaining"]) >= 1_000_000 - 1
    # A full bucket resets now (to the second, rounded up).
    assert reset_at(headers, "requests") <= datetime.now(UTC) + timedelta(seconds=1)


async def test_a_burst_is_refused_with_retry_after_then_admitted_once_it_passes(client, fake):
    fake.limit(requests_per_minute=60, burst_requests=2)
    assert [(await call(client)).status_code for _ in range(2)] == [200, 200]
    refused = await call(client)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    retry_after = int(refused.headers["retry-after"])
    assert retry_after == 1  # one request refills in a second at 60 a minute
    assert (reset_at(refused.headers, "requests") - datetime.now(UTC)).total_seconds() <= 3
    await asyncio.sleep(retry_after)  # what a well-behaved client does
    assert (await call(client)).status_code == 200
    assert (fake.answered_ok, fake.answered_429, len(fake.admitted_at)) == (3, 1, 3)
    assert [q["limited"] for q in fake.requests] == [False, False, True, False]


async def test_the_rate_achieved_stays_within_the_bucket(client, fake):
    fake.limit(requests_per_minute=1200, burst_requests=5)  # 20 a second
    started = time.monotonic()
    results = await asyncio.gather(*(call(client) for _ in range(40)))
    assert sum(r.status_code == 200 for r in results) <= 5 + 20 * (time.monotonic() - started)
    # A client retrying eagerly for a second and a half gets about the refill rate.
    while time.monotonic() - started < 1.5:
        await call(client)
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    assert fake.answered_429 > 0
    assert 5 + 20 * elapsed * 0.5 <= len(fake.admitted_at) <= 5 + 20 * elapsed + 1
    span = fake.admitted_at[-1] - fake.admitted_at[0]
    assert len(fake.admitted_at) <= 5 + 20 * span + 1


async def test_output_tokens_are_charged_from_max_tokens_then_corrected(client, fake):
    fake.limit(output_tokens_per_minute=1000)
    fake.script("slow:1")
    first = asyncio.create_task(call(client, max_tokens=900))
    await eventually(lambda: _logged(fake, 1))
    # While the first call runs, its whole max_tokens is held.
    second = await call(client, max_tokens=900)
    assert second.status_code == 429
    assert 45 <= int(second.headers["retry-after"]) <= 49  # 800 tokens at 1000 a minute
    first = await first
    assert first.status_code == 200 and first.json()["usage"]["output_tokens"] == 7
    # Once it answered, the 893 tokens it did not write were given back.
    assert int(first.headers["anthropic-ratelimit-output-tokens-remaining"]) >= 990
    assert (await call(client, max_tokens=900)).status_code == 200


async def _logged(fake: FakeAnthropic, n: int) -> bool:
    return len(fake.requests) >= n


def cached_system(tokens: int, ttl: str | None = None) -> list[dict]:
    control = {"type": "ephemeral", **({"ttl": ttl} if ttl else {})}
    return [{"type": "text", "text": "s" * (4 * tokens), "cache_control": control}]


async def test_a_cached_prefix_is_written_once_then_read(client):
    system = cached_system(1100)
    first = await client.messages.create(
        model=MODEL, max_tokens=10, system=system, messages=user("hi")
    )
    assert first.usage.cache_creation_input_tokens == 1100
    assert first.usage.cache_read_input_tokens == 0
    assert first.usage.cache_creation.ephemeral_5m_input_tokens == 1100
    assert first.usage.input_tokens == 1  # only what follows the cached prefix
    second = await client.messages.create(
        model=MODEL, max_tokens=10, system=system, messages=user("other question")
    )
    assert second.usage.cache_read_input_tokens == 1100
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens == 4
    # The cache is per model.
    other = await client.messages.create(
        model="claude-other", max_tokens=10, system=system, messages=user("hi")
    )
    assert other.usage.cache_creation_input_tokens == 1100


async def test_the_longest_cached_prefix_is_read_and_the_rest_written(client):
    def prompt(doc: str) -> dict:
        content = [{**document(doc), "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
        return {"system": cached_system(1100), "messages": [{"role": "user", "content": content}]}

    first = await client.messages.create(model=MODEL, max_tokens=10, **prompt("a" * 4800))
    assert first.usage.cache_creation_input_tokens == 1100 + 1201  # the title is 3 characters
    assert first.usage.cache_creation.ephemeral_1h_input_tokens == 1201
    second = await client.messages.create(model=MODEL, max_tokens=10, **prompt("b" * 4800))
    assert second.usage.cache_read_input_tokens == 1100
    assert second.usage.cache_creation_input_tokens == 1201
    third = await client.messages.create(model=MODEL, max_tokens=10, **prompt("b" * 4800))
    assert third.usage.cache_read_input_tokens == 2301
    assert (third.usage.cache_creation_input_tokens, third.usage.input_tokens) == (0, 0)


async def test_a_prefix_below_the_minimum_is_not_cached(client, fake):
    system = cached_system(1000)
    for _ in range(2):
        message = await client.messages.create(
            model=MODEL, max_tokens=10, system=system, messages=user("hi")
        )
        assert message.usage.cache_creation_input_tokens == 0
        assert message.usage.cache_read_input_tokens == 0
        assert message.usage.input_tokens == 1001
    fake.min_cache_tokens = 500
    message = await client.messages.create(
        model=MODEL, max_tokens=10, system=system, messages=user("hi")
    )
    assert message.usage.cache_creation_input_tokens == 1000


async def test_the_cache_fields_are_always_in_usage(client):
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=10, messages=user("no caching here")
    )
    usage = raw.http_response.json()["usage"]
    assert usage["cache_creation_input_tokens"] == 0 and usage["cache_read_input_tokens"] == 0


async def test_cached_reads_do_not_count_against_the_input_token_limit(client, fake):
    fake.limit(input_tokens_per_minute=3000)
    system = cached_system(2000)
    for _ in range(5):  # the write counts (2001 tokens), the reads do not (1 each)
        await client.messages.create(model=MODEL, max_tokens=10, system=system, messages=user("hi"))
    with pytest.raises(anthropic.RateLimitError):
        await client.messages.create(
            model=MODEL, max_tokens=10, system=system[0]["text"], messages=user("hi")
        )


def test_a_cache_entry_lives_its_ttl_from_its_last_hit():
    prompt = read_prompt({"model": MODEL, "system": cached_system(1100), "messages": user("q")})
    cache = PromptCache()
    cache.commit(cache.look_up(prompt, now=0.0), now=0.0)
    use = cache.look_up(prompt, now=299.0)
    assert use.read == 1100
    cache.commit(use, now=299.0)  # refreshed: five minutes from now
    assert cache.look_up(prompt, now=598.0).read == 1100
    assert cache.look_up(prompt, now=600.0).read == 0
    assert cache.look_up(prompt, now=600.0).written == 1100


def test_more_than_four_breakpoints_are_refused():
    system = cached_system(1) * 5
    with pytest.raises(PromptError, match="maximum of 4"):
        read_prompt({"model": MODEL, "system": system, "messages": user("q")})
