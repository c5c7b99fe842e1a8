"""RFC 9457 problem details: every error the API answers, mapped once from the error tree."""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.deps import KeyRefused, identify
from api.failures import count_failure
from jobs.engine.retry import as_service_error, internal_detail
from jobs.errors import ServiceError, TooManyRequests, TransientError, Unauthorized

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("api.errors")

_HTTP_TYPES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 409: "conflict",
    413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_input",
    429: "too_many_requests",
}  # fmt: skip


def problem(
    status: int,
    type: str,
    title: str,
    detail: str | None = None,
    *,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """A problem+json response; `type` is a short code, also given as `code`."""
    body: dict[str, Any] = {
        "type": f"https://longrun.dev/problems/{type.replace('_', '-')}",
        "title": title,
        "status": status,
        "code": type,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def service_error_response(request: Request, exc: ServiceError) -> JSONResponse:
    """The one mapping from the error tree to HTTP."""
    headers: dict[str, str] = {}
    if isinstance(exc, TransientError):
        headers["Retry-After"] = str(max(1, round(exc.retry_after or 5)))
    if isinstance(exc, TooManyRequests):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
        headers.update(exc.headers)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="longrun"'
    return problem(
        exc.status,
        exc.type,
        exc.title,
        exc.message if exc.message != exc.title else None,
        instance=request.url.path,
        headers=headers,
        **{k: v for k, v in exc.extra.items() if v is not None},
    )


def too_many_failures(request: Request, retry_after: int) -> JSONResponse:
    """The 429 for a client past its limit of failed key checks."""
    return problem(
        429,
        "too_many_failures",
        "Too many failed attempts",
        f"too many wrong keys from this address; try again in {retry_after} s",
        instance=request.url.path,
        headers={"Retry-After": str(retry_after)},
    )


async def refusal_response(request: Request, exc: ServiceError) -> JSONResponse:
    """`service_error_response`, except that a refused key is counted against the client's
    address, and past its limit answered with a 429."""
    if isinstance(exc, KeyRefused) and (wait := await count_failure(request)) is not None:
        return too_many_failures(request, wait)
    return service_error_response(request, exc)


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo the input back: it may be huge or hold secrets.
    return [
        {
            "loc": [str(p) for p in err.get("loc", ())],
            "msg": err.get("msg"),
            "type": err.get("type"),
        }
        for err in exc.errors()[:20]
    ]


async def _unauthenticated(request: Request) -> JSONResponse | None:
    """The 401 for a /v1 request without a valid key, else None. FastAPI parses the body
    before any dependency checks the key, so a body it cannot parse would otherwise tell a
    caller without a key more than that it needs one."""
    if not request.url.path.startswith("/v1/"):
        return None
    try:
        identify(request.headers.get("authorization"), request.app.state.settings)
    except Unauthorized as exc:
        return await refusal_response(request, exc)
    return None


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error, FastAPI's own included, a problem+json answer."""

    @app.exception_handler(ServiceError)
    async def _service(request: Request, exc: ServiceError) -> JSONResponse:
        return await refusal_response(request, exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        if (refused := await _unauthenticated(request)) is not None:
            return refused
        return problem(
            422,
            "invalid_input",
            "The request is not valid",
            "; ".join(f"{'.'.join(e['loc'])}: {e['msg']}" for e in _validation_errors(exc))[:500],
            instance=request.url.path,
            errors=_validation_errors(exc),
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # FastAPI's answer to a body it cannot even decode: for clients it is just
            # another invalid body.
            if (refused := await _unauthenticated(request)) is not None:
                return refused
            return problem(
                422, "invalid_json", "The request is not valid", "the body is not valid JSON",
                instance=request.url.path,
            )  # fmt: skip
        code = _HTTP_TYPES.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem(
            exc.status_code,
            code,
            code.replace("_", " ").capitalize(),
            detail,
            instance=request.url.path,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        error = as_service_error(exc)
        if isinstance(error, TransientError):
            log.warning("dependency unavailable: %s", internal_detail(exc))
            return service_error_response(request, error)
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal_error", "Internal error", instance=request.url.path)


PROBLEM_SCHEMA = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
    },
    "additionalProperties": True,
}
_DOCUMENTED_ERRORS = {
    "401": "Missing or invalid API key",
    "403": "This key may not use this route",
    "404": "Not found, or owned by another account",
    "422": "The request is not valid",
    "429": "Too many requests (or wrong keys from this address); retry after Retry-After",
    "500": "Internal error",
    "503": "A dependency is unavailable; retry after Retry-After",
}


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Describe every error answer in the OpenAPI document as problem+json."""
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            public = path.startswith("/health") or path == "/metrics"
            for status, description in _DOCUMENTED_ERRORS.items():
                if public and status in ("401", "403", "404", "422", "429"):
                    continue
                responses.setdefault(status, {"description": description})
            if "requestBody" in operation:
                responses.setdefault("413", {"description": "The request body is too large"})
            for status, response in responses.items():
                if status[0] in "45":
                    response["content"] = content
    return schema
