"""Whether and where this process traces, from the standard `OTEL_*` variables (the rules
are in `jobs.tracing`'s docstring)."""

from __future__ import annotations

import os
from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

from jobs.settings import SettingsError
from jobs.tracing import spans

EXPORTERS = ("otlp", "console", "none")
# The OTLP protocol this image carries (no gRPC wheels).
OTLP_PROTOCOL = "http/protobuf"


def _variable(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def exporter_names(environ: Mapping[str, str]) -> list[str]:
    """The exporters the variables ask for: `OTEL_TRACES_EXPORTER`'s, or `otlp` when only an
    OTLP endpoint is set; [] when tracing is off. `SettingsError` for a name not carried."""
    if _variable(environ, "OTEL_SDK_DISABLED").lower() == "true":
        return []
    named = _variable(environ, "OTEL_TRACES_EXPORTER").lower()
    if not named:
        endpoints = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        return ["otlp"] if any(_variable(environ, name) for name in endpoints) else []
    names = [n.strip() for n in named.split(",") if n.strip()]
    unknown = [n for n in names if n not in EXPORTERS]
    if unknown:
        raise SettingsError(
            f"invalid configuration:\n  OTEL_TRACES_EXPORTER: {', '.join(unknown)} is not "
            f"carried; use {', '.join(EXPORTERS)} (comma-separated)"
        )
    return [n for n in names if n != "none"]


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        return ConsoleSpanExporter()
    for variable in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = _variable(environ, variable)
        if protocol and protocol != OTLP_PROTOCOL:
            raise SettingsError(
                f"invalid configuration:\n  {variable}: {protocol} is not carried; use "
                f"{OTLP_PROTOCOL} (the collector's port 4318)"
            )
        if protocol:
            break
    # Endpoint, headers, timeout, compression and certificates come from OTEL_EXPORTER_OTLP_*.
    return OTLPSpanExporter()


def build_provider(default_service_name: str, exporters: list[SpanExporter]) -> TracerProvider:
    """An SDK tracer provider batching spans to `exporters`; its resource, sampler and batch
    sizes come from the environment as the SDK reads it."""
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": default_service_name}))
    built = TracerProvider(resource=resource)
    for exporter in exporters:
        built.add_span_processor(BatchSpanProcessor(exporter))
    return built


def configure_tracing(default_service_name: str) -> bool:
    """Trace when the `OTEL_*` variables ask for it (see the module's docstring); whether
    this process traces. Called at start by the API and the worker; once on, later calls
    change nothing. A bad value raises `SettingsError`, naming the variable."""
    if spans.enabled():
        return True
    names = exporter_names(os.environ)
    if not names:
        return False
    spans.use(build_provider(default_service_name, [_exporter(n, os.environ) for n in names]))
    return True
