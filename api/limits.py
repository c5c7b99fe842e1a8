"""Request body limits, enforced before a route reads the body.

FastAPI reads and parses a JSON body whole before any dependency runs (the API
key check included), so without a cap anyone could make the API buffer and
parse as much as they send. Every route takes at most `BODY_LIMIT_BYTES`; a
document upload takes what its largest legitimate form needs (the route then
checks the document itself against MAX_DOCUMENT_BYTES). A declared
Content-Length over the limit is refused at once; a body without one
(chunked) is cut off as soon as it passes the limit. Both answer 413.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.problems import problem

BODY_LIMIT_BYTES = 64 * 1024
# An analysis batch names up to 10,000 document ids (about 33 bytes each in JSON).
BATCH_BODY_LIMIT_BYTES = 1024 * 1024

LimitFor = Callable[[Scope], int]


class BodyLimit:
    """ASGI middleware: refuse request bodies over `limit_for(scope)` bytes with a 413."""

    def __init__(self, app: ASGIApp, limit_for: LimitFor) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await too_large(limit, scope["path"])(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Raised where the route reads the body; the problem handlers answer it.
                    raise HTTPException(413, f"the request body is over {limit} bytes")
            return message

        await self.app(scope, limited, send)


def too_large(limit: int, path: str) -> Any:
    """The 413 problem for a body over `limit` bytes."""
    return problem(
        413,
        "payload_too_large",
        "Payload too large",
        f"the request body is over {limit} bytes",
        instance=path,
    )


def body_limits(document_body_bytes: int) -> LimitFor:
    """The limit per request: `document_body_bytes` for document uploads, 1 MiB for an
    analysis batch's id list, else the default."""

    def limit_for(scope: Scope) -> int:
        if scope["method"] == "POST" and scope["path"] == "/v1/documents":
            return document_body_bytes
        if scope["method"] == "POST" and scope["path"] == "/v1/analysis-batches":
            return BATCH_BODY_LIMIT_BYTES
        return BODY_LIMIT_BYTES

    return limit_for
