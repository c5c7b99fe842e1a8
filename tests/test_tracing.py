"""Tracing: one trace from the POST through the queue, each attempt and its Claude and S3
calls, to each webhook attempt; configured by the OTEL_* variables, and nothing at all
without them."""

from __future__ import annotations

import os
import signal

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobs import tracing
from jobs.settings import SettingsError
from tests.conftest import ACME, api_client, eventually, running_worker
from tests.support.api_server import ApiServer
from tests.support.otlp import OtlpSink
from tests.support.processes import kill, start_worker
from tests.support.receiver import Receiver

ANALYSES_ROUTE = "POST /v1/documents/{doc_id}/analyses"
ANSWER_MODEL = "claude-sonnet-5-5-20261201"


@pytest.fixture
def hook_settings(settings):
    return settings.model_copy(
        update={
            "webhook_allow_private_networks": True,
            "webhook_retry_schedule": [0, 1, 1],
            "webhook_timeout_seconds": 2.0,
        }
    )


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


@pytest.fixture
def spans():
    """Tracing on, into an in-memory exporter, for this test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


@pytest.fixture
def no_otel_variables(monkeypatch):
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)


async def analysis_delivered(client, receiver, headers=ACME) -> str:
    """Register the receiver, POST a document and an analysis of it; the job's id once the
    receiver has its `analysis.completed` event (a worker must be running)."""
    endpoint = await client.post(
        "/v1/webhook-endpoints",
        headers=ACME,
        json={"url": receiver.url, "events": ["analysis.completed"]},
    )
    receiver.secrets.append(endpoint.json()["secret"])
    doc = await client.post("/v1/documents", headers=ACME, json={"user_id": "u", "text": "t"})
    answer = await client.post(
        f"/v1/documents/{doc.json()['id']}/analyses", headers={**ACME, **headers}, json={}
    )
    assert answer.status_code == 202, answer.text

    async def delivered() -> bool:
        return any(r["answer"] == "ok" for r in receiver.received)

    await eventually(delivered, timeout=30)
    return answer.json()["id"]


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def one(exporter: InMemorySpanExporter, name: str) -> ReadableSpan:
    found = named(exporter, name)
    assert len(found) == 1, (name, [s.name for s in exporter.get_finished_spans()])
    return found[0]


def in_order(found: list[ReadableSpan]) -> list[ReadableSpan]:
    return sorted(found, key=lambda s: s.start_time or 0)


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def traceparent(span: ReadableSpan) -> str:
    context = span.context
    return f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"


async def test_one_analysis_is_one_trace_from_the_post_to_the_webhook_attempt(
    spans, hook_settings, claude, receiver, redis
):
    claude.min_cache_tokens = 1  # the system prompt is written to the cache
    claude.answer_model = ANSWER_MODEL
    async with api_client(hook_settings) as client, running_worker(hook_settings):
        job_id = await analysis_delivered(client, receiver, {"X-Request-ID": "trace-req-1"})
        await eventually(lambda: _ended(spans, "webhook attempt"))
        job = (await client.get(f"/v1/jobs/{job_id}", headers=ACME)).json()

    post = one(spans, ANALYSES_ROUTE)
    assert post.kind == SpanKind.SERVER
    assert post.attributes["http.route"] == "/v1/documents/{doc_id}/analyses"
    assert post.attributes["http.response.status_code"] == 202
    assert post.attributes["longrun.request_id"] == "trace-req-1"
    (enqueued,) = [e for e in post.events if e.name == "job enqueued"]
    assert enqueued.attributes["longrun.job.id"] == job_id
    record = await redis.hgetall(f"lr:job:{job_id}")
    assert record[b"traceparent"].decode() == traceparent(post)

    attempt = one(spans, "job analysis attempt 1")
    assert attempt.kind == SpanKind.CONSUMER and parent_of(attempt) == post.context.span_id
    assert dict(attempt.attributes) == {
        "longrun.job.id": job_id,
        "longrun.job.kind": "analysis",
        "longrun.account": "acme",
        "longrun.job.attempt": 1,
        "longrun.job.outcome": "succeeded",
    }
    assert attempt.status.status_code == StatusCode.UNSET

    claude_call = one(spans, "claude messages.create")
    assert claude_call.kind == SpanKind.CLIENT and parent_of(claude_call) == attempt.context.span_id
    usage = job["result"]["usage"]
    assert usage["cache_creation_input_tokens"] > 0
    assert {k: v for k, v in claude_call.attributes.items() if k.startswith("gen_ai.")} == {
        "gen_ai.system": "anthropic",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": hook_settings.analysis_model,
        "gen_ai.request.max_tokens": hook_settings.analysis_max_tokens,
        "gen_ai.response.model": ANSWER_MODEL,
        "gen_ai.response.id": claude_call.attributes["gen_ai.response.id"],
        "gen_ai.response.finish_reasons": ("end_turn",),
        "gen_ai.usage.input_tokens": usage["input_tokens"]
        + usage["cache_read_input_tokens"]
        + usage["cache_creation_input_tokens"],
        "gen_ai.usage.output_tokens": usage["output_tokens"],
        "gen_ai.usage.cache_read.input_tokens": usage["cache_read_input_tokens"],
        "gen_ai.usage.cache_creation.input_tokens": usage["cache_creation_input_tokens"],
    }
    assert claude_call.attributes["gen_ai.response.id"].startswith("msg_")

    s3_calls = [s for s in spans.get_finished_spans() if parent_of(s) == attempt.context.span_id]
    by_name = {s.name: s for s in s3_calls if s.name.startswith("s3 ")}
    assert {"s3 GetObject", "s3 PutObject"} <= set(by_name)
    saved = by_name["s3 PutObject"]
    assert saved.kind == SpanKind.CLIENT
    assert saved.attributes["aws.s3.bucket"] == hook_settings.s3_bucket
    assert saved.attributes["aws.s3.key"].endswith(f"/{job_id}.json")
    assert saved.attributes["rpc.method"] == "PutObject"
    assert saved.attributes["http.response.status_code"] == 200

    publish = one(spans, "job analysis publish")
    assert publish.kind == SpanKind.PRODUCER and parent_of(publish) == post.context.span_id
    delivery = one(spans, "job webhook attempt 1")
    assert delivery.kind == SpanKind.CONSUMER and parent_of(delivery) == publish.context.span_id
    assert delivery.attributes["longrun.job.id"].startswith("whd_")
    webhook = one(spans, "webhook attempt")
    assert webhook.kind == SpanKind.CLIENT and parent_of(webhook) == delivery.context.span_id
    assert webhook.attributes["http.response.status_code"] == 200
    assert webhook.attributes["longrun.webhook.event_type"] == "analysis.completed"
    assert webhook.attributes["server.address"] == "127.0.0.1"

    traced = [post, attempt, claude_call, saved, publish, delivery, webhook]
    assert {s.context.trace_id for s in traced} == {post.context.trace_id}
    (request,) = receiver.received
    assert request["headers"]["traceparent"] == traceparent(webhook)
    assert all(receiver.verified_by(request).values())  # still signed as before


async def _ended(exporter: InMemorySpanExporter, name: str) -> bool:
    return bool(named(exporter, name))


async def test_failed_attempts_are_recorded_on_their_spans_and_retries_stay_in_the_trace(
    spans, hook_settings, claude, receiver
):
    claude.script("500")
    receiver.script("503")
    async with api_client(hook_settings) as client, running_worker(hook_settings):
        await analysis_delivered(client, receiver)
        await eventually(lambda: _count(spans, "webhook attempt", 2))

    post = one(spans, ANALYSES_ROUTE)
    first, second = one(spans, "job analysis attempt 1"), one(spans, "job analysis attempt 2")
    assert parent_of(first) == parent_of(second) == post.context.span_id
    assert first.status.status_code == StatusCode.ERROR
    assert first.attributes["error.type"] == "claude_unavailable"
    assert first.attributes["longrun.job.outcome"] == "retrying"
    assert [e.name for e in first.events] == ["exception"]
    assert second.status.status_code == StatusCode.UNSET
    assert second.attributes["longrun.job.outcome"] == "succeeded"
    failed_call, ok_call = sorted(
        named(spans, "claude messages.create"), key=lambda s: s.start_time
    )
    assert parent_of(failed_call) == first.context.span_id
    assert failed_call.status.status_code == StatusCode.ERROR
    assert failed_call.attributes["error.type"] == "500"
    assert ok_call.status.status_code == StatusCode.UNSET

    refused, delivered = in_order(named(spans, "webhook attempt"))
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.attributes["error.type"] == "503"
    assert refused.attributes["http.response.status_code"] == 503
    assert delivered.status.status_code == StatusCode.UNSET
    delivery_attempts = named(spans, "job webhook attempt 1") + named(
        spans, "job webhook attempt 2"
    )
    assert [s.attributes["longrun.job.outcome"] for s in delivery_attempts] == [
        "retrying",
        "succeeded",
    ]
    assert [r["headers"]["traceparent"] for r in receiver.received] == [
        traceparent(refused),
        traceparent(delivered),
    ]
    retried = [first, second, failed_call, ok_call, refused, delivered, *delivery_attempts]
    assert {s.context.trace_id for s in retried} == {post.context.trace_id}


async def _count(exporter: InMemorySpanExporter, name: str, n: int) -> bool:
    return len(named(exporter, name)) >= n


async def test_an_export_traces_each_s3_call_of_its_multipart_upload(spans, settings):
    async with api_client(settings) as client, running_worker(settings):
        answer = await client.post(
            "/v1/exports", headers=ACME, json={"user_id": "u", "format": "zip"}
        )
        await eventually(lambda: _ended(spans, "job export attempt 1"))
    attempt = one(spans, "job export attempt 1")
    assert attempt.attributes["longrun.job.outcome"] == "succeeded"
    calls = [s for s in spans.get_finished_spans() if parent_of(s) == attempt.context.span_id]
    names = [s.name for s in in_order(calls) if s.name.startswith("s3 ")]
    assert names[0] == "s3 ListObjectsV2" and names[-1] == "s3 CompleteMultipartUpload"
    assert {"s3 CreateMultipartUpload", "s3 UploadPart"} <= set(names)
    (part,) = [s for s in calls if s.name == "s3 UploadPart"]
    assert part.attributes["aws.s3.part_number"] == 1
    assert part.attributes["aws.s3.upload_id"]
    assert part.attributes["aws.s3.key"] == f"exports/acme/{answer.json()['id']}.zip"
    # The worker's S3 warm-up at start runs under no request or job: no span of its own.
    assert not named(spans, "s3 HeadBucket")


async def test_a_callers_traceparent_is_continued(spans, hook_settings, claude, receiver):
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with api_client(hook_settings) as client, running_worker(hook_settings):
        await analysis_delivered(client, receiver, {"traceparent": caller})
        await eventually(lambda: _ended(spans, "webhook attempt"))
    post = one(spans, ANALYSES_ROUTE)
    assert f"{post.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert parent_of(post) == 0xB7AD6B7169203331
    assert one(spans, "webhook attempt").context.trace_id == post.context.trace_id


async def test_without_otel_variables_nothing_is_traced_and_the_record_has_no_trace_field(
    no_otel_variables, hook_settings, claude, receiver, redis, monkeypatch
):
    started: list[str] = []
    start_span = sdk_trace.Tracer.start_span

    def counted(self, name, *args, **kwargs):
        started.append(name)
        return start_span(self, name, *args, **kwargs)

    # Any SDK span started anywhere in this process, by longrun or a library, is counted.
    monkeypatch.setattr(sdk_trace.Tracer, "start_span", counted)
    assert tracing.configure_tracing("longrun-test") is False
    assert not tracing.enabled()
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    caller = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    async with api_client(hook_settings) as client, running_worker(hook_settings):
        job_id = await analysis_delivered(client, receiver, caller)
    assert started == []
    record = await redis.hgetall(f"lr:job:{job_id}")
    assert record[b"state"] == b"succeeded"
    assert not {b"traceparent", b"tracestate"} & set(record)
    assert all("traceparent" not in r["headers"] for r in receiver.received)


@pytest.mark.parametrize(
    ("variables", "exporters"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "longrun-x", "OTEL_TRACES_SAMPLER": "always_on"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "console, otlp"}, ["console", "otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, []),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, []),
    ],
)
def test_the_otel_variables_decide_whether_and_where_spans_go(variables, exporters):
    assert tracing.exporter_names(variables) == exporters


def test_an_exporter_this_image_does_not_carry_stops_the_process_naming_the_variable():
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER: zipkin"):
        tracing.exporter_names({"OTEL_TRACES_EXPORTER": "otlp,zipkin"})


def test_otlp_over_grpc_is_refused_naming_the_variable(no_otel_variables, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(SettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL: grpc"):
        tracing.configure_tracing("longrun-test")
    assert not tracing.enabled()


def test_an_otlp_endpoint_turns_tracing_on_with_the_default_service_name(
    no_otel_variables, monkeypatch
):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    provider = None
    try:
        assert tracing.configure_tracing("longrun-test") is True
        provider = tracing.provider()
        assert provider is not None and tracing.enabled()
        assert provider.resource.attributes["service.name"] == "longrun-test"
        assert "TraceIdRatioBased{0.25}" in provider.sampler.get_description()
        (processor,) = provider._active_span_processor._span_processors
        assert isinstance(processor, BatchSpanProcessor)
        exporter = processor._batch_processor._exporter
        assert isinstance(exporter, OTLPSpanExporter)
        # Not OpenTelemetry's global provider: libraries tracing on their own stay quiet.
        assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "elsewhere")
        assert tracing.configure_tracing("longrun-test") is True  # once on, it stays
        assert tracing.provider() is provider
    finally:
        tracing.use(None)
        if provider is not None:
            provider.shutdown()


@pytest.mark.slow
async def test_api_and_worker_processes_export_one_trace_over_otlp(
    no_otel_variables, hook_settings, claude, receiver, monkeypatch, tmp_path
):
    sink = OtlpSink().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    api = ApiServer(hook_settings, tmp_path / "api.log")
    worker = start_worker(hook_settings, tmp_path / "worker.log")
    try:
        async with httpx.AsyncClient(base_url=api.url) as client:
            await analysis_delivered(client, receiver)

        def exported(name: str) -> list[dict]:
            return [s for s in sink.received() if s["name"] == name]

        async def webhook_exported() -> bool:
            return bool(exported("webhook attempt"))

        await eventually(webhook_exported, timeout=30)
    finally:
        kill(worker, signal.SIGTERM)
        worker.wait(30)
        api.stop()
        sink.stop()
    (post,) = exported(ANALYSES_ROUTE)
    (attempt,) = exported("job analysis attempt 1")
    (webhook,) = exported("webhook attempt")
    assert post["service"] == "longrun-api"
    assert attempt["service"] == webhook["service"] == "longrun-worker"
    assert attempt["parent_id"] == post["span_id"]
    assert post["trace_id"] == attempt["trace_id"] == webhook["trace_id"]
    assert exported("claude messages.create")[0]["attributes"]["gen_ai.system"] == "anthropic"
    assert set(sink.paths) == {"/v1/traces"}
    worker_lines = (tmp_path / "worker.log").read_text()
    assert f'"trace_id": "{post["trace_id"]}"' in worker_lines


@pytest.mark.slow
async def test_spans_still_batched_are_exported_when_the_api_and_the_worker_stop(
    no_otel_variables, hook_settings, claude, receiver, monkeypatch, tmp_path
):
    sink = OtlpSink().start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", sink.endpoint)
    # Nothing goes out on the batch's schedule during the test: only what stopping sends.
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")
    api = ApiServer(hook_settings, tmp_path / "api.log")
    worker = start_worker(hook_settings, tmp_path / "worker.log")
    try:
        async with httpx.AsyncClient(base_url=api.url) as client:
            await analysis_delivered(client, receiver)
        assert sink.received() == []
    finally:
        # SIGTERM, as a deploy stops them: uvicorn ends by re-raising it, so the SDK's own
        # exit hook never runs there.
        kill(worker, signal.SIGTERM)
        worker.wait(30)
        api.stop()
        sink.stop()
    names = {s["name"] for s in sink.received()}
    assert {ANALYSES_ROUTE, "job analysis attempt 1", "webhook attempt"} <= names
    assert api.proc.returncode == -signal.SIGTERM
