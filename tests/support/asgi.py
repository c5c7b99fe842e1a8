"""Send a request straight to an ASGI app, byte for byte.

An HTTP client normalises what a hostile one would not: httpx removes `..`
segments from paths, refuses control characters in headers and always frames
the body. Here the path is given raw (percent-decoded into `scope["path"]` the
way uvicorn does it), headers are any bytes, and the body can arrive in chunks
without a Content-Length, as with `Transfer-Encoding: chunked`.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

CHUNK = 64 * 1024


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(
    app: Any,
    method: str,
    target: str | bytes,
    headers: list[tuple[bytes, bytes]] | tuple[tuple[bytes, bytes], ...] = (),
    body: bytes = b"",
    chunked: bool = False,
) -> RawAnswer:
    """One request to `app`; `target` is the request target as sent (path and query)."""
    raw = target.encode("latin-1") if isinstance(target, str) else target
    raw_path, _, query = raw.partition(b"?")
    framing = [] if chunked else [(b"content-length", str(len(body)).encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(raw_path.decode("latin-1")),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(b"host", b"test"), *framing, *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("test", 80),
    }
    pieces = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)] if chunked else [body]
    pieces = pieces or [b""]
    done = asyncio.Event()
    start: dict[str, Any] = {}
    received: list[bytes] = []

    async def receive() -> dict[str, Any]:
        if pieces:
            piece = pieces.pop(0)
            return {"type": "http.request", "body": piece, "more_body": bool(pieces)}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            start.update(message)
        elif message["type"] == "http.response.body":
            received.append(message.get("body", b""))
            if not message.get("more_body"):
                done.set()

    await app(scope, receive, send)
    done.set()
    names = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in start["headers"]}
    return RawAnswer(status=start["status"], headers=names, body=b"".join(received))
