"""The spans of outgoing calls: Claude's Messages API (the GenAI semantic conventions), S3
(through botocore's event hooks) and webhook attempts."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind

from jobs.tracing.spans import NOT_TRACED, Traced, open_span, tracer

_NOT_TRACED = nullcontext(NOT_TRACED)


class ClaudeCall(Traced):
    """The span of one Messages API call."""

    __slots__ = ()

    def answered(self, message: Any) -> None:
        """Record the answer: model, id, stop reason and usage. Anthropic's `input_tokens`
        leaves out cached input; the conventions' count includes it, with the cache reads
        and writes beside it."""
        if self.span is None:
            return
        usage = message.usage
        cache_read = usage.cache_read_input_tokens or 0
        cache_creation = usage.cache_creation_input_tokens or 0
        self.set(
            {
                "gen_ai.response.model": message.model,
                "gen_ai.response.id": message.id,
                "gen_ai.response.finish_reasons": [message.stop_reason or "unknown"],
                "gen_ai.usage.input_tokens": usage.input_tokens + cache_read + cache_creation,
                "gen_ai.usage.output_tokens": usage.output_tokens,
                "gen_ai.usage.cache_read.input_tokens": cache_read,
                "gen_ai.usage.cache_creation.input_tokens": cache_creation,
            }
        )


_NOT_CALLED = nullcontext(ClaudeCall(None))


@contextmanager
def _claude_span(request: Mapping[str, Any]) -> Iterator[ClaudeCall]:
    attributes = {
        "gen_ai.system": "anthropic",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.operation.name": "chat",
        "gen_ai.request.model": request.get("model"),
        "gen_ai.request.max_tokens": request.get("max_tokens"),
    }
    with open_span("claude messages.create", SpanKind.CLIENT, attributes, None) as traced:
        yield ClaudeCall(traced.span)


def claude_call(request: Mapping[str, Any]) -> AbstractContextManager[ClaudeCall]:
    """The span of a Messages API call with this request; `answered(message)` records the
    answer, and an exception leaving the block marks it failed."""
    if tracer() is None:
        return _NOT_CALLED
    return _claude_span(request)


def webhook_attempt(url: str, attributes: Mapping[str, Any]) -> AbstractContextManager[Traced]:
    """The span of one webhook POST to `url` (its address, never its path or query, which
    may carry a customer's token), current while the request is made."""
    if tracer() is None:
        return _NOT_TRACED
    parts = urlsplit(url)
    server = {
        "http.request.method": "POST",
        "url.scheme": parts.scheme,
        "server.address": parts.hostname,
        "server.port": parts.port or (443 if parts.scheme == "https" else 80),
    }
    return open_span("webhook attempt", SpanKind.CLIENT, {**server, **attributes}, None)


_S3_PARAMS = {
    "Bucket": "aws.s3.bucket",
    "Key": "aws.s3.key",
    "UploadId": "aws.s3.upload_id",
    "PartNumber": "aws.s3.part_number",
    "Prefix": "aws.s3.prefix",
}


def instrument_s3(client: Any) -> None:
    """Give every call of this (aio)botocore S3 client a CLIENT span `s3 <Operation>` under
    the current span, through botocore's event hooks; nothing while tracing is off. A call
    cut off by a cancellation leaves no span (botocore emits no event for it)."""
    if tracer() is None:
        return
    events = client.meta.events
    events.register("before-parameter-build.s3", _s3_params)
    events.register("before-call.s3", _s3_started)
    events.register("after-call.s3", _s3_answered)
    events.register("after-call-error.s3", _s3_failed)


def _s3_params(params: Mapping[str, Any], context: dict[str, Any], **_: Any) -> None:
    context["longrun.s3"] = {name: params[key] for key, name in _S3_PARAMS.items() if key in params}


def _s3_started(model: Any, context: dict[str, Any], **_: Any) -> None:
    current = tracer()
    if current is None or not trace.get_current_span().get_span_context().is_valid:
        return
    attributes = {
        "rpc.system": "aws-api",
        "rpc.service": "S3",
        "rpc.method": model.name,
        **context.get("longrun.s3", {}),
    }
    context["longrun.span"] = current.start_span(
        f"s3 {model.name}", kind=SpanKind.CLIENT, attributes=attributes
    )


def _s3_answered(http_response: Any, parsed: Mapping[str, Any], context: dict[str, Any],
                 **_: Any) -> None:  # fmt: skip
    started: Span | None = context.pop("longrun.span", None)
    if started is None:
        return
    status = http_response.status_code
    started.set_attribute("http.response.status_code", status)
    request_id = parsed.get("ResponseMetadata", {}).get("RequestId")
    if request_id:
        started.set_attribute("aws.request_id", request_id)
    if status >= 300:
        code = str(parsed.get("Error", {}).get("Code") or status)
        Traced(started).fail(code, f"S3 answered {code}")
    started.end()


def _s3_failed(exception: BaseException, context: dict[str, Any], **_: Any) -> None:
    started: Span | None = context.pop("longrun.span", None)
    if started is not None:
        Traced(started).fail(type(exception).__qualname__, exc=exception)
        started.end()
