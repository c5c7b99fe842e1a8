"""The fake Messages API, driven by the real `anthropic` SDK over HTTP.

The fake stands in for Claude in every other test and in the benchmarks, so
these tests hold it to the real API's wire shapes: rate-limit headers and
429s, token counting, prompt caching and the Message Batches API.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic import AsyncAnthropic
from anthropic.types.messages import MessageBatch

from tests.conftest import eventually
from tests.support.fake_anthropic import FakeAnthropic, RateLimits
from tests.support.fake_anthropic.cache import PromptCache
from tests.support.fake_anthropic.tokens import PromptError, read_prompt
from tests.support.processes import ROOT

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


async def test_count_tokens_answers_the_estimate_that_usage_reports(client: AsyncAnthropic) -> None:
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


async def test_answer_model_names_the_stand_in(client: AsyncAnthropic, fake: FakeAnthropic) -> None:
    fake.answer_model = "fake-claude (local stand-in)"
    message = await client.messages.create(model=MODEL, max_tokens=10, messages=user("hi"))
    assert message.model == "fake-claude (local stand-in)"


async def test_a_request_without_max_tokens_is_refused_as_the_api_does(
    client: AsyncAnthropic,
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        await client.post(
            "/v1/messages", body={"model": MODEL, "messages": user("hi")}, cast_to=object
        )
    assert raised.value.status_code == 400
    assert raised.value.body["error"]["type"] == "invalid_request_error"


async def test_every_answer_carries_rate_limit_headers_and_a_request_id(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
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


async def test_unlimited_by_default_with_the_headers_still_sent(client: AsyncAnthropic) -> None:
    headers = (await call(client)).headers
    assert int(headers["anthropic-ratelimit-requests-remaining"]) >= 1_000_000 - 1
    # A full bucket resets now (to the second, rounded up).
    assert reset_at(headers, "requests") <= datetime.now(UTC) + timedelta(seconds=1)


async def test_a_burst_is_refused_with_retry_after_then_admitted_once_it_passes(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.limit(requests_per_minute=30, burst_requests=2)
    assert [(await call(client)).status_code for _ in range(2)] == [200, 200]
    refused = await call(client)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    retry_after = int(refused.headers["retry-after"])
    assert 1 <= retry_after <= 2  # one request refills in two seconds at 30 a minute
    # The reset is when the bucket is full again: two requests, four seconds.
    full_in_s = (reset_at(refused.headers, "requests") - datetime.now(UTC)).total_seconds()
    assert 3 <= full_in_s <= 5
    await asyncio.sleep(retry_after)  # what a well-behaved client does
    assert (await call(client)).status_code == 200
    assert (fake.answered_ok, fake.answered_429, len(fake.admitted_at)) == (3, 1, 3)
    assert [q["limited"] for q in fake.requests] == [False, False, True, False]


async def test_the_rate_achieved_stays_within_the_bucket(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.limit(requests_per_minute=1200, burst_requests=5)  # 20 a second
    started = time.monotonic()
    results = await asyncio.gather(*(call(client) for _ in range(40)))
    assert sum(r.status_code == 200 for r in results) <= 5 + 20 * (time.monotonic() - started)
    # Clients retrying eagerly for a second and a half get about the refill rate.
    while time.monotonic() - started < 1.5:
        await asyncio.gather(*(call(client) for _ in range(4)))
        await asyncio.sleep(0.01)
    elapsed = time.monotonic() - started
    assert fake.answered_429 > 0
    assert 5 + 20 * elapsed * 0.5 <= len(fake.admitted_at) <= 5 + 20 * elapsed + 1
    span = fake.admitted_at[-1] - fake.admitted_at[0]
    assert len(fake.admitted_at) <= 5 + 20 * span + 1


async def test_output_tokens_are_charged_from_max_tokens_then_corrected(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
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


async def test_a_cached_prefix_is_written_once_then_read(client: AsyncAnthropic) -> None:
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


async def test_the_longest_cached_prefix_is_read_and_the_rest_written(
    client: AsyncAnthropic,
) -> None:
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


async def test_a_prefix_below_the_minimum_is_not_cached(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
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


async def test_the_cache_fields_are_always_in_usage(client: AsyncAnthropic) -> None:
    raw = await client.messages.with_raw_response.create(
        model=MODEL, max_tokens=10, messages=user("no caching here")
    )
    usage = raw.http_response.json()["usage"]
    assert usage["cache_creation_input_tokens"] == 0 and usage["cache_read_input_tokens"] == 0


async def test_cached_reads_do_not_count_against_the_input_token_limit(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.limit(input_tokens_per_minute=3000)
    system = cached_system(2000)
    for _ in range(5):  # the write counts (2001 tokens), the reads do not (1 each)
        await client.messages.create(model=MODEL, max_tokens=10, system=system, messages=user("hi"))
    with pytest.raises(anthropic.RateLimitError):
        await client.messages.create(
            model=MODEL, max_tokens=10, system=system[0]["text"], messages=user("hi")
        )


def test_a_cache_entry_lives_its_ttl_from_its_last_hit() -> None:
    prompt = read_prompt({"model": MODEL, "system": cached_system(1100), "messages": user("q")})
    cache = PromptCache()
    cache.commit(cache.look_up(prompt, now=0.0), now=0.0)
    use = cache.look_up(prompt, now=299.0)
    assert use.read == 1100
    cache.commit(use, now=299.0)  # refreshed: five minutes from now
    assert cache.look_up(prompt, now=598.0).read == 1100
    assert cache.look_up(prompt, now=600.0).read == 0
    assert cache.look_up(prompt, now=600.0).written == 1100


def test_more_than_four_breakpoints_are_refused() -> None:
    system = cached_system(1) * 5
    with pytest.raises(PromptError, match="maximum of 4"):
        read_prompt({"model": MODEL, "system": system, "messages": user("q")})


def entry(custom_id: str, text: str = "hi") -> dict:
    return {
        "custom_id": custom_id,
        "params": {"model": MODEL, "max_tokens": 10, "messages": user(text)},
    }


def counts(**nonzero: int) -> dict[str, int]:
    return {
        **dict.fromkeys(("processing", "succeeded", "errored", "canceled", "expired"), 0),
        **nonzero,
    }


async def ended(client: AsyncAnthropic, batch_id: str, timeout: float = 20) -> MessageBatch:
    async def check() -> MessageBatch | None:
        batch = await client.messages.batches.retrieve(batch_id)
        return batch if batch.processing_status == "ended" else None

    return await eventually(check, timeout=timeout)


async def results_of(client: AsyncAnthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result async for r in await client.messages.batches.results(batch_id)}


async def test_a_batch_runs_in_progress_then_ends_with_its_results(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.batch_latency_s = 0.5
    started = time.monotonic()
    batch = await client.messages.batches.create(requests=[entry(f"doc-{n}") for n in range(5)])
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress" and batch.results_url is None
    assert batch.request_counts.processing == 5 and batch.request_counts.succeeded == 0
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    with pytest.raises(anthropic.AnthropicError, match="results_url"):
        await client.messages.batches.results(batch.id)

    done = await ended(client, batch.id)
    assert time.monotonic() - started >= 0.5
    assert done.request_counts.model_dump() == counts(succeeded=5)
    assert done.ended_at is not None and done.ended_at >= done.created_at
    assert done.results_url == f"{fake.url}/v1/messages/batches/{batch.id}/results"
    results = await results_of(client, batch.id)
    assert sorted(results) == [f"doc-{n}" for n in range(5)]
    message = results["doc-0"].message
    assert message.type == "message" and message.content[0].text.startswith("Analysis of")
    assert message.usage.service_tier == "batch" and message.usage.output_tokens == 7
    assert [e["op"] for e in fake.batch_log] == ["create", "results"]
    # Single calls were not counted.
    assert fake.requests == [] and fake.answered_ok == 0


async def test_errored_and_expired_entries_come_back_as_the_api_nests_them(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.batch_latency_s = 0
    requests = [
        entry("ok"),
        entry("server", "fake-answers[k1]=500,ok"),
        entry("overloaded", "fake-answers[k2]=529"),
        entry("bad", "fake-answers[k3]=400"),
        entry("late", "fake-answers[k4]=expired"),
        {"custom_id": "invalid", "params": {"model": MODEL, "messages": user("no max_tokens")}},
    ]
    batch = await client.messages.batches.create(requests=requests)
    done = await ended(client, batch.id)
    assert done.request_counts.model_dump() == counts(succeeded=1, errored=4, expired=1)
    results = await results_of(client, batch.id)
    assert results["ok"].type == "succeeded" and results["late"].type == "expired"
    errors = {k: r.error for k, r in results.items() if r.type == "errored"}
    assert all(e.type == "error" and e.error.message for e in errors.values())
    assert {k: e.error.type for k, e in errors.items()} == {
        "server": "api_error",
        "overloaded": "overloaded_error",
        "bad": "invalid_request_error",
        "invalid": "invalid_request_error",
    }
    # Resubmitted, the transient one gets its directive's next answer.
    again = await client.messages.batches.create(requests=[requests[1]])
    await ended(client, again.id)
    assert (await results_of(client, again.id))["server"].type == "succeeded"
    submitted = [s["custom_id"] for s in fake.batch_submissions()]
    assert submitted == [r["custom_id"] for r in requests] + ["server"]


async def test_a_canceled_batch_ends_with_its_unprocessed_entries_canceled(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.batch_latency_s = 60
    batch = await client.messages.batches.create(requests=[entry(f"d{n}") for n in range(4)])
    canceling = await client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    done = await ended(client, batch.id)
    assert done.request_counts.canceled == 4 and done.request_counts.processing == 0
    assert {r.type for r in (await results_of(client, batch.id)).values()} == {"canceled"}
    assert [e["op"] for e in fake.batch_log] == ["create", "cancel", "results"]


async def test_a_cancel_keeps_what_was_already_processed(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.batch_latency_s = 4.0
    batch = await client.messages.batches.create(requests=[entry("first"), entry("second")])
    # "first" falls due after half the latency, "second" at its end.
    await eventually(lambda: _processed(fake, batch.id, 1))
    await client.messages.batches.cancel(batch.id)
    done = await ended(client, batch.id)
    results = await results_of(client, batch.id)
    assert results["first"].type == "succeeded" and results["second"].type == "canceled"
    assert done.request_counts.succeeded == 1 and done.request_counts.canceled == 1


async def _processed(fake: FakeAnthropic, batch_id: str, n: int) -> bool:
    return fake.batch_progress(batch_id)[0] >= n


async def test_batches_are_listed_newest_first_in_pages(client: AsyncAnthropic) -> None:
    ids = [(await client.messages.batches.create(requests=[entry("x")])).id for _ in range(5)]
    newest_first = ids[::-1]
    first = await client.messages.batches.list(limit=2)
    assert [b.id for b in first.data] == newest_first[:2] and first.has_more
    assert (first.first_id, first.last_id) == (newest_first[0], newest_first[1])
    assert [b.id async for b in await client.messages.batches.list(limit=2)] == newest_first
    older = await client.messages.batches.list(limit=10, after_id=ids[2])
    assert [b.id for b in older.data] == ids[1::-1] and not older.has_more
    newer = await client.messages.batches.list(limit=1, before_id=ids[2])
    assert [b.id for b in newer.data] == [ids[3]] and newer.has_more


async def test_only_an_ended_batch_can_be_deleted(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.batch_latency_s = 0.3
    batch = await client.messages.batches.create(requests=[entry("x")])
    with pytest.raises(anthropic.BadRequestError):
        await client.messages.batches.delete(batch.id)
    await ended(client, batch.id)
    deleted = await client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        await client.messages.batches.retrieve(batch.id)
    assert [b.id async for b in client.messages.batches.list()] == []
    assert [e["op"] for e in fake.batch_log] == ["create", "delete"]


async def test_a_batch_is_refused_whole_as_the_api_refuses_it() -> None:
    small = FakeAnthropic(max_batch_requests=3, max_batch_bytes=10_000).start()
    try:
        async with AsyncAnthropic(base_url=small.url, api_key="sk-ant-test", max_retries=0) as c:
            with pytest.raises(anthropic.BadRequestError, match="at most 3"):
                await c.messages.batches.create(requests=[entry(f"d{n}") for n in range(4)])
            with pytest.raises(anthropic.BadRequestError, match="duplicate"):
                await c.messages.batches.create(requests=[entry("same"), entry("same")])
            with pytest.raises(anthropic.BadRequestError, match="custom_id"):
                await c.messages.batches.create(requests=[entry("no spaces allowed")])
            with pytest.raises(anthropic.APIStatusError) as too_big:
                await c.messages.batches.create(requests=[entry("big", "x" * 20_000)])
            assert too_big.value.status_code == 413
            assert too_big.value.body["error"]["type"] == "request_too_large"
            # The connection survives the refusals.
            assert (await c.messages.batches.create(requests=[entry("fine")])).id
        assert [e["op"] for e in small.batch_log] == ["create"]
    finally:
        small.stop()


async def test_rate_limits_of_single_calls_do_not_apply_to_batches(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.limit(requests_per_minute=1)
    fake.batch_latency_s = 0
    batch = await client.messages.batches.create(requests=[entry(f"d{n}") for n in range(20)])
    assert (await ended(client, batch.id)).request_counts.succeeded == 20
    assert (await call(client)).status_code == 200
    assert (await call(client)).status_code == 429


async def raw_call(port: int, body: bytes) -> int:
    """One Messages call on its own connection, without the SDK's overhead; its status."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    status_line, *headers = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
    length = next(int(h.split(":")[1]) for h in headers if h.startswith("content-length"))
    await reader.readexactly(length)
    writer.close()
    return int(status_line.split()[1])


async def test_hundreds_of_slow_calls_are_answered_together(fake: FakeAnthropic) -> None:
    fake.delay_s = 1.0
    body = json.dumps({"model": MODEL, "max_tokens": 10, "messages": user("hi")}).encode()
    started = time.monotonic()
    statuses = await asyncio.gather(*(raw_call(fake.port, body) for _ in range(300)))
    assert statuses == [200] * 300
    assert fake.max_in_flight == 300  # all held at once, none queued behind another
    assert time.monotonic() - started < 5


async def test_a_batch_of_ten_thousand_requests_does_not_hold_up_single_calls(
    client: AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.batch_latency_s = 1.0
    requests = [entry(f"doc-{n}") for n in range(10_000)]
    batch = await client.messages.batches.create(requests=requests)
    slowest = 0.0
    while (await client.messages.batches.retrieve(batch.id)).processing_status != "ended":
        started = time.monotonic()
        await client.messages.create(model=MODEL, max_tokens=10, messages=user("meanwhile"))
        slowest = max(slowest, time.monotonic() - started)
        assert time.monotonic() - started < 30, "the batch did not end"
    assert slowest < 2
    # Read raw: the SDK takes seconds to build 10,000 Message objects, the fake does not.
    done = await client.messages.batches.retrieve(batch.id)
    async with httpx2.AsyncClient() as http:
        lines = (await http.get(done.results_url)).text.splitlines()
    results = {line["custom_id"]: line["result"] for line in map(json.loads, lines)}
    assert sorted(results) == sorted(r["custom_id"] for r in requests)
    assert {r["type"] for r in results.values()} == {"succeeded"}


async def test_the_command_line_serves_a_labelled_stand_in_until_interrupted() -> None:
    command = [
        "-m",
        "tests.support.fake_anthropic",
        "--answer-model",
        "stand-in",
        "--requests-per-minute",
        "120",
    ]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, *command, cwd=ROOT, stdout=PIPE, stderr=STDOUT
    )
    try:
        banner = []
        async with asyncio.timeout(20):
            while not (line := (await proc.stdout.readline()).decode()).startswith("Serving"):
                assert line, f"the command ended: {''.join(banner)}"
                banner.append(line)
        text = "".join(banner)
        assert "LOCAL STAND-IN" in text and "development" in text and "not Claude" in text
        url = next(line.split()[-1] for line in banner if line.strip().startswith("url:"))
        async with AsyncAnthropic(base_url=url, api_key="sk-ant-test", max_retries=0) as client:
            raw = await client.messages.with_raw_response.create(
                model=MODEL, max_tokens=10, messages=user("hi")
            )
        assert (await raw.parse()).model == "stand-in"
        assert raw.headers["anthropic-ratelimit-requests-limit"] == "120"
        proc.send_signal(signal.SIGINT)
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_reset_restores_the_options_and_forgets_everything() -> None:
    fake = FakeAnthropic(limits=RateLimits(requests_per_minute=50), batch_latency_s=0).start()
    try:
        async with AsyncAnthropic(base_url=fake.url, api_key="sk-ant-test", max_retries=0) as c:
            fake.answer_model, fake.delay_s, fake.batch_latency_s = "other", 0.01, 60
            fake.limit(requests_per_minute=1)
            fake.script("500", "500")
            batch = await c.messages.batches.create(requests=[entry("x")])
            fake.reset()
            assert (fake.answer_model, fake.delay_s, fake.batch_latency_s) == (None, 0.0, 0)
            assert fake.batch_log == [] and fake.requests == [] and fake.answered_ok == 0
            with pytest.raises(anthropic.NotFoundError):
                await c.messages.batches.retrieve(batch.id)
            headers = (await call(c)).headers  # not the scripted 500
            assert headers["anthropic-ratelimit-requests-limit"] == "50"
            assert headers["anthropic-ratelimit-requests-remaining"] == "49"
    finally:
        fake.stop()
