"""HTTP/1.1 as much as the SDK needs: keep-alive requests with a content-length, JSON answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit
from uuid import uuid4

DRAIN_CHUNK = 1 << 20


def reason(status: int) -> str:
    """The reason phrase of a status line; 529 is Anthropic's own."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Overloaded"


@dataclass
class Request:
    """One request; `body` is None when it was too large to read (the answer is a 413)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes | None

    def json(self) -> Any:
        """The body as JSON (`{}` when empty); raises ValueError when it is not JSON."""
        return json.loads(self.body or b"{}")


@dataclass
class Response:
    """An answer; `close` ends the connection after it (or instead of it, with no status)."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False

    @classmethod
    def of(cls, status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
        """A JSON answer."""
        return cls(status, json.dumps(body).encode(), headers=headers or {})

    @classmethod
    def drop(cls) -> Response:
        """No answer at all: the connection is closed."""
        return cls(0, close=True)


async def read_request(
    reader: asyncio.StreamReader, max_body_bytes: Callable[[str], int]
) -> Request | None:
    """The next request on a connection, or None at its end.

    `max_body_bytes(path)` is the largest body accepted on `path`; a larger one
    is read and thrown away (so the client reads the 413 instead of a reset).
    """
    request_line = await reader.readline()
    if not request_line:
        return None
    method, target, _ = request_line.decode("latin-1").split(" ", 2)
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    url = urlsplit(target)
    length = int(headers.get("content-length", "0"))
    body: bytes | None = None
    if length <= max_body_bytes(url.path):
        body = await reader.readexactly(length)
    else:
        while length > 0:
            length -= len(await reader.readexactly(min(length, DRAIN_CHUNK)))
    return Request(method, url.path, dict(parse_qsl(url.query)), headers, body)


def encode(response: Response, headers: dict[str, str]) -> bytes:
    """The bytes of `response`, with `headers` (rate limits, request id) added."""
    head = [
        f"HTTP/1.1 {response.status} {reason(response.status)}",
        f"content-type: {response.content_type}",
        f"content-length: {len(response.body)}",
        *(f"{k}: {v}" for k, v in {**headers, **response.headers}.items()),
    ]
    if response.close:
        head.append("connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + response.body


def request_id() -> str:
    """A fresh `request-id`, shaped like Anthropic's."""
    return f"req_{uuid4().hex[:24]}"
