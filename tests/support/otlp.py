"""A stand-in OpenTelemetry Collector: an OTLP/HTTP receiver on a free port that decodes
each `POST /v1/traces` (protobuf, as the SDK's exporter sends it) and keeps its spans."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tests.support.threaded import ThreadedServer


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass
class OtlpSink:
    """Spans received, each a dict: `service`, `name`, `trace_id`, `span_id`, `parent_id`
    (hex, '' for a root), `kind` (the protobuf enum's number) and `attributes`."""

    port: int = 0
    spans: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _runner: ThreadedServer | None = None

    @property
    def endpoint(self) -> str:
        """What `OTEL_EXPORTER_OTLP_ENDPOINT` is set to."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OtlpSink:
        self._runner = ThreadedServer(self._handle, self.port, "otlp-sink")
        self.port = self._runner.start()
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.spans)

    def _keep(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        {
                            "service": resource.get("service.name"),
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                            "kind": span.kind,
                            "attributes": {a.key: _value(a.value) for a in span.attributes},
                        }
                    )
        with self._lock:
            self.spans.extend(found)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = line.decode().split(" ")[1]
                with self._lock:
                    self.paths.append(path)
                status = 404
                if path == "/v1/traces":
                    self._keep(body)
                    status = 200
                answer = ExportTraceServiceResponse().SerializeToString()
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: application/x-protobuf\r\n"
                    f"content-length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
