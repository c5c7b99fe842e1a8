"""The API's request spans: FastAPI's own telemetry, given the provider of `jobs.tracing`.

FastAPI makes one SERVER span per request, named by its route template (`POST
/v1/documents/{doc_id}/analyses`), continuing a caller's `traceparent`; `RequestContext`
adds the request id to it. Its metrics and logs stay off (Prometheus and the JSON logs
have them), and so do its per-operation spans (dependencies, serialization). Probes and
scrapes (`/health/...`, `/metrics`) are not traced. While tracing is off FastAPI is told
to do nothing at all, so a request pays for no telemetry.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi.telemetry import TelemetryConfig

from jobs import tracing

UNTRACED_PREFIXES = ("/health/", "/metrics")


def untraced(scope: MutableMapping[str, Any]) -> bool:
    """Whether a request is a probe or a scrape, left out of the traces."""
    return str(scope.get("path", "")).startswith(UNTRACED_PREFIXES)


def request_telemetry() -> TelemetryConfig:
    """`FastAPI(telemetry=...)` for this process: request spans while tracing, else none."""
    provider = tracing.provider()
    if provider is None:
        return {"tracing": False, "metrics": False, "logs": False, "auto_configure": False}
    return {
        "tracer_provider": provider,
        "tracing": True,
        "metrics": False,
        "logs": False,
        "operation_spans": False,
        "auto_configure": False,
        "exclude": untraced,
    }
