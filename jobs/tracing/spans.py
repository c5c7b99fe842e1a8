"""The state of tracing in this process and the spans every layer opens: a span around a
block, the current span's attributes, and a job's trace context in and out of its record
(`jobs.tracing` says how it fits together)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import MappingProxyType
from typing import Any, Protocol

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

NOTHING: Mapping[str, str] = MappingProxyType({})
FLUSH_TIMEOUT_S = 5.0
_W3C = TraceContextTextMapPropagator()

_provider: TracerProvider | None = None
_tracer: Tracer | None = None


def enabled() -> bool:
    """Whether this process traces."""
    return _tracer is not None


def provider() -> TracerProvider | None:
    """The tracer provider while tracing is on (to hand to FastAPI), else None."""
    return _provider


def tracer() -> Tracer | None:
    """The tracer while tracing is on, else None."""
    return _tracer


def use(new: TracerProvider | None) -> None:
    """Trace with this provider from now on (None: stop tracing). `configure_tracing` calls
    it; tests call it with a provider of their own (an in-memory exporter)."""
    global _provider, _tracer
    _provider = new
    _tracer = new.get_tracer("longrun") if new is not None else None


def flush(timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
    """Export the spans still batched, waiting at most `timeout_s`; whether all went out.
    The API and the worker call it as they stop: the SDK's own exit hook never runs in a
    process that ends by its signal (uvicorn re-raises SIGTERM once it has shut down), and
    the batch's last spans (up to `OTEL_BSP_SCHEDULE_DELAY`, 5 s by default) were lost."""
    if _provider is None:
        return True
    return _provider.force_flush(int(timeout_s * 1000))


class Traced:
    """A span while tracing is on; while it is off every method does nothing."""

    __slots__ = ("span",)

    def __init__(self, span: Span | None) -> None:
        self.span = span

    def set(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes (None values are left out)."""
        if self.span is not None:
            self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def fail(
        self, error_type: str, description: str | None = None, exc: BaseException | None = None
    ) -> None:
        """Mark the span failed: `error.type`, an ERROR status, and the exception if any."""
        if self.span is None:
            return
        if exc is not None:
            self.span.record_exception(exc)
        self.span.set_attribute("error.type", error_type)
        self.span.set_status(Status(StatusCode.ERROR, (description or str(exc or ""))[:500]))


NOT_TRACED = Traced(None)
_NOT_TRACED = nullcontext(NOT_TRACED)


def error_type(exc: BaseException) -> str:
    """`error.type` of an exception: our error's type, an HTTP status, or the class name."""
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return str(status)
    ours = getattr(exc, "type", None)
    return ours if isinstance(ours, str) else type(exc).__qualname__


@contextmanager
def open_span(
    name: str, kind: SpanKind, attributes: Mapping[str, Any], parent: Context | None
) -> Iterator[Traced]:
    """A span around a block, current within it, under `parent` (default: the current
    span); an exception leaving the block marks it failed. Only while tracing is on."""
    assert _tracer is not None
    with _tracer.start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes={k: v for k, v in attributes.items() if v is not None},
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        traced = Traced(current)
        try:
            yield traced
        except Exception as exc:  # not CancelledError: a cancel is an outcome, not a failure
            traced.fail(error_type(exc), exc=exc)
            raise


def current() -> Traced:
    """The current span (what a helper adds attributes to), or `NOT_TRACED`."""
    if _tracer is None:
        return NOT_TRACED
    return Traced(trace.get_current_span())


def set_attribute(name: str, value: str | int) -> None:
    """Set an attribute on the current span (e.g. the request id on the request's span)."""
    if _tracer is not None:
        trace.get_current_span().set_attribute(name, value)


def trace_fields() -> Mapping[str, str]:
    """The current span's context as W3C trace context fields (`traceparent`, and
    `tracestate` when there is one), for a job record; empty while not tracing."""
    if _tracer is None:
        return NOTHING
    fields: dict[str, str] = {}
    _W3C.inject(fields)
    return fields


class Job(Protocol):
    """What a job span needs of a job record."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def account(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def traceparent(self) -> str | None: ...
    @property
    def tracestate(self) -> str | None: ...


def job_span(job: Job, action: str, kind: SpanKind) -> AbstractContextManager[Traced]:
    """`job <kind> <action>` under the context the job's record carries (a root span when
    it carries none), with the job's id, kind, account and attempt."""
    if _tracer is None:
        return _NOT_TRACED
    carrier = {"traceparent": job.traceparent or "", "tracestate": job.tracestate or ""}
    parent = _W3C.extract(carrier) if job.traceparent else Context()
    attributes = {
        "longrun.job.id": job.id,
        "longrun.job.kind": job.kind,
        "longrun.account": job.account,
        "longrun.job.attempt": job.attempt,
    }
    return open_span(f"job {job.kind} {action}", kind, attributes, parent)


def job_enqueued(job_id: str, kind: str, status: str) -> None:
    """A `job enqueued` event on the current span: the job's id and kind, and what the
    enqueue did (`created`, `replayed` for an Idempotency-Key seen before, ...)."""
    if _tracer is not None:
        trace.get_current_span().add_event(
            "job enqueued",
            {"longrun.job.id": job_id, "longrun.job.kind": kind, "longrun.enqueue": status},
        )


def log_fields() -> Mapping[str, str]:
    """`trace_id` and `span_id` for a log line written under a span; empty otherwise."""
    if _tracer is None:
        return NOTHING
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return NOTHING
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def inject_headers(headers: dict[str, str]) -> None:
    """Add the current span's context to an outgoing request's headers (`traceparent`)."""
    if _tracer is not None:
        propagate.inject(headers)
