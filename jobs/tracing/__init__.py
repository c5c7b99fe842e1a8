"""Tracing with OpenTelemetry: one trace from a POST, through the queue and every attempt of
its job, its Claude and S3 calls, to each webhook attempt that tells a customer about it.

Off unless the standard variables name somewhere to send spans: `OTEL_TRACES_EXPORTER`
(`otlp`, `console`, or both, comma-separated; `none` is off), or an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), which means `otlp`.
`OTEL_SDK_DISABLED=true` turns it off whatever else is set. The SDK reads the rest itself:
`OTEL_SERVICE_NAME` (default `longrun-api` or `longrun-worker`), `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` and `_ARG`, `OTEL_EXPORTER_OTLP_*` (headers, timeout, compression),
`OTEL_BSP_*`, `OTEL_PROPAGATORS`. OTLP goes over HTTP/protobuf (port 4318); a bad value
stops the process at start with a message naming the variable.

While off, `_tracer` is None: no SDK tracer provider exists, nothing exports, FastAPI is told
not to trace, the S3 client gets no hooks, and every helper here returns at its first test;
a job record carries no trace field. While on, the provider is handed to what traces
(FastAPI's request spans and the helpers here) and is not registered as OpenTelemetry's
global one: libraries that trace through the global provider on their own (the anthropic
SDK does) stay quiet, so one Claude call is one span, ours.

How the context crosses:
- into the API: FastAPI continues a caller's `traceparent` (`OTEL_PROPAGATORS`, W3C by
  default) under its SERVER span `POST /v1/documents/{doc_id}/analyses`;
- through the queue: `JobStore.create` writes the current span's context into the record,
  `traceparent` (and `tracestate` when there is one, W3C trace context), in the Lua step
  that writes the rest; each attempt is a CONSUMER span `job <kind> attempt <n>` under it;
- through the outbox: a finished job's PRODUCER span `job <kind> publish` is a child of the
  job's context, and the webhook deliveries it creates carry the publish span's;
- to the receiver: each `webhook attempt` CLIENT span's context goes out as `traceparent`.
Within an attempt: CLIENT spans `claude messages.create` (GenAI conventions) and
`s3 <Operation>` (S3 calls are traced only under a request or a job, never alone).

`config.py` reads the variables, `spans.py` holds the state and the spans every layer opens,
`calls.py` the spans of outgoing calls (Claude, S3, webhooks).
"""

from opentelemetry.trace import SpanKind

from jobs.tracing.calls import ClaudeCall, claude_call, instrument_s3, webhook_attempt
from jobs.tracing.config import configure_tracing, exporter_names
from jobs.tracing.spans import (
    NOT_TRACED,
    Traced,
    current,
    enabled,
    flush,
    inject_headers,
    job_enqueued,
    job_span,
    log_fields,
    provider,
    set_attribute,
    trace_fields,
    use,
)

CLIENT, CONSUMER, PRODUCER = SpanKind.CLIENT, SpanKind.CONSUMER, SpanKind.PRODUCER

__all__ = [
    "CLIENT", "CONSUMER", "NOT_TRACED", "PRODUCER", "ClaudeCall", "Traced", "claude_call",
    "configure_tracing", "current", "enabled", "exporter_names", "flush", "inject_headers",
    "instrument_s3", "job_enqueued", "job_span", "log_fields", "provider", "set_attribute",
    "trace_fields", "use", "webhook_attempt",
]  # fmt: skip
