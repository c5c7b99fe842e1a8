"""The operator dashboard: server-rendered pages for admin keys, a little JavaScript for
live figures. Login opens a session held in Redis (`api/sessions.py`), named by an
HTTP-only, `SameSite=Strict` cookie (`Secure` outside development); every form carries a
CSRF token bound to the session. With no operator key configured there is no dashboard
(404). Every answer under `/dashboard` is sent with a strict Content-Security-Policy
(scripts and styles only with the page's nonce, no framing), `X-Frame-Options: DENY` and
`Cache-Control: no-store` (`DashboardHeaders`)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.deps import ACCOUNT_ID_PATH, JOB_ID_PATTERN, KIND_PATH, RedisDep, SettingsDep, StoreDep
from api.failures import count_failure
from api.problems import too_many_failures
from api.sessions import COOKIE, SESSION_SECONDS, Sessions, operator_key_digest
from jobs.analysis_batches import ANALYSIS_BATCH, batch_overview
from jobs.engine.health import queue_health
from jobs.engine.presenter import attempt_resource
from jobs.engine.records import JobRecord, JobState, rfc3339
from jobs.engine.scheduler import Scheduler
from jobs.errors import Forbidden, NotFound
from jobs.webhooks import DeliveryLog, EndpointStore

PREFIX = "/dashboard"


async def _dashboard_enabled(request: Request) -> None:
    if not request.app.state.settings.admin_api_keys:
        raise NotFound("there is no dashboard: no operator key is configured")


router = APIRouter(
    prefix=PREFIX, include_in_schema=False, dependencies=[Depends(_dashboard_enabled)]
)
templates = Jinja2Templates(directory=FilePath(__file__).resolve().parents[1] / "templates")
templates.env.filters["time"] = rfc3339


class LoginRequired(Exception):
    """No valid session: send the browser to the login page."""


def _sessions(request: Request) -> Sessions:
    state = request.app.state
    if getattr(state, "sessions", None) is None:
        state.sessions = Sessions(state.redis, state.settings)
    return state.sessions  # type: ignore[no-any-return]


async def _session(request: Request) -> str:
    """The caller's session id; `LoginRequired` unless it names a live session."""
    session_id = request.cookies.get(COOKIE)
    if not await _sessions(request).valid(session_id):
        raise LoginRequired()
    return session_id or ""


def _render(
    request: Request, name: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    nonce = request.scope.get("state", {}).get("csp_nonce", "")
    return templates.TemplateResponse(
        request, name, {"nonce": nonce, **context}, status_code=status_code
    )


def _page(request: Request, name: str, session: str, **context: Any) -> HTMLResponse:
    csrf = _sessions(request).csrf_token(session)
    return _render(request, name, {"csrf": csrf, "page": name, **context})


def _check_csrf(request: Request, session: str, token: str | None) -> None:
    if not _sessions(request).csrf_valid(session, token):
        raise Forbidden("the form is stale; reload the page", type="csrf_failed")


class DashboardHeaders:
    """ASGI middleware for every answer under `/dashboard`: a fresh CSP nonce for the page
    (`request.state.csp_nonce`), the CSP itself, no framing, no caching, no sniffing."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path != PREFIX and not path.startswith(PREFIX + "/"):
            await self.app(scope, receive, send)
            return
        nonce = secrets.token_urlsafe(18)
        scope.setdefault("state", {})["csp_nonce"] = nonce
        policy = (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; "
            "frame-ancestors 'none'"
        )
        extra = [
            (b"content-security-policy", policy.encode()),
            (b"x-frame-options", b"DENY"),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"no-referrer"),
        ]

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.get("headers", [])
                kept = [(k, v) for k, v in headers if k.lower() != b"cache-control"]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        await self.app(scope, receive, send_secured)


def install_dashboard(app: Any) -> None:
    """Register the login redirect for dashboard pages and the dashboard's headers."""

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> Response:
        response = RedirectResponse(f"{PREFIX}/login", status_code=303)
        response.delete_cookie(COOKIE, path=PREFIX)
        return response

    app.add_middleware(DashboardHeaders)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return _render(request, "login.html", {"error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request, settings: SettingsDep, key: Annotated[str, Form(max_length=512)] = ""
) -> Response:
    """Open a session for an operator key. A wrong key counts against the client's address
    (`api/failures.py`): past the limit, a 429 problem with `Retry-After`."""
    digest = operator_key_digest(settings, key)
    if digest is None:
        if (wait := await count_failure(request)) is not None:
            return too_many_failures(request, wait)
        return _render(
            request, "login.html", {"error": "That is not an operator key."}, status_code=401
        )
    response = RedirectResponse(PREFIX, status_code=303)
    response.set_cookie(
        COOKIE,
        await _sessions(request).open(digest),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        # Not left to the scheme uvicorn sees: behind a TLS-terminating proxy it is http.
        secure=settings.environment != "development",
        path=PREFIX,
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """End the session for good. No CSRF token is asked for: the cookie is SameSite=Strict,
    and the worst a forged logout could do is log the operator out."""
    await _sessions(request).end(request.cookies.get(COOKIE))
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE, path=PREFIX)
    return response


async def _summary(redis: Any, settings: Any, store: Any) -> dict[str, Any]:
    health = (await queue_health(redis, settings)).as_dict()
    return {"health": health, "throughput": await store.throughput(60)}


@router.post("/queues/{what}/{name}/{action}")
async def queue_control(
    request: Request,
    what: Literal["kinds", "accounts"],
    name: Annotated[str, Path(max_length=64)],
    action: Literal["pause", "resume"],
    settings: SettingsDep,
    redis: RedisDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """Pause or resume a job kind or an account (see /v1/queues)."""
    _check_csrf(request, await _session(request), csrf)
    pattern = KIND_PATH if what == "kinds" else ACCOUNT_ID_PATH
    if re.fullmatch(pattern, name):
        scheduler = Scheduler(redis, settings, [])
        target = {"kind": name} if what == "kinds" else {"account": name}
        await (scheduler.pause if action == "pause" else scheduler.resume)(**target)
    return RedirectResponse("/dashboard", status_code=303)


@router.get("", response_class=HTMLResponse)
async def overview(
    request: Request, settings: SettingsDep, redis: RedisDep, store: StoreDep
) -> HTMLResponse:
    session = await _session(request)
    summary = await _summary(redis, settings, store)
    failed = await store.list_dead_letters(limit=5)
    return _page(request, "overview.html", session, **summary, failures=failed.items)


@router.get("/summary.json")
async def summary(
    request: Request, settings: SettingsDep, redis: RedisDep, store: StoreDep
) -> JSONResponse:
    await _session(request)
    return JSONResponse(await _summary(redis, settings, store))


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    store: StoreDep,
    q: Annotated[str, Query(max_length=64)] = "",
    state: Annotated[str, Query(max_length=16)] = "",
    kind: Annotated[str, Query(max_length=64)] = "",
    account: Annotated[str, Query(max_length=64)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    session = await _session(request)
    if q and JOB_ID_PATTERN.fullmatch(q.strip()):
        found = await store.get(q.strip())
        items, next_cursor = ([found] if found else []), None
    else:
        page = await store.list_jobs(
            limit=50,
            cursor=cursor,
            state=state if state in {s.value for s in JobState} else None,
            kind=kind or None,
            account=account or q or None,
        )
        items, next_cursor = page.items, page.next_cursor
    filters = {"q": q, "state": state, "kind": kind, "account": account}
    return _page(request, "jobs.html", session, jobs=items, next_cursor=next_cursor, **filters)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(request: Request, job_id: str, store: StoreDep) -> HTMLResponse:
    session = await _session(request)
    record = await store.get(job_id) if JOB_ID_PATTERN.fullmatch(job_id) else None
    if record is None:
        return _page(request, "missing.html", session, what=f"job {job_id[:64]}")
    attempts = [attempt_resource(a) for a in reversed(record.attempts)]
    batch = None
    if record.kind == ANALYSIS_BATCH.name:
        batch = await batch_overview(store.redis, record.id)
    return _page(request, "job.html", session, job=record, attempts=attempts, batch=batch)


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(
    request: Request,
    store: StoreDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    session = await _session(request)
    page = await store.list_dead_letters(limit=50, cursor=cursor)
    return _page(
        request, "dead_letters.html", session, dead=page.items, next_cursor=page.next_cursor
    )


async def _posted_dead_letter(
    request: Request, store: Any, job_id: str, csrf: str
) -> JobRecord | None:
    """For a form post on a dead letter: check the session and CSRF token, find it."""
    _check_csrf(request, await _session(request), csrf)
    return await store.get_dead_letter(job_id) if JOB_ID_PATTERN.fullmatch(job_id) else None


@router.post("/dead-letters/{job_id}/replay")
async def replay(
    request: Request,
    job_id: str,
    store: StoreDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    record = await _posted_dead_letter(request, store, job_id, csrf)
    if record is None:
        return RedirectResponse("/dashboard/dead-letters", status_code=303)
    enqueued = await store.replay(record)
    return RedirectResponse(f"/dashboard/jobs/{enqueued.job_id}", status_code=303)


@router.post("/dead-letters/{job_id}/purge")
async def purge(
    request: Request,
    job_id: str,
    store: StoreDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    record = await _posted_dead_letter(request, store, job_id, csrf)
    if record is not None:
        await store.purge_dead_letter(record)
    return RedirectResponse("/dashboard/dead-letters", status_code=303)


def _endpoints(request: Request) -> EndpointStore:
    return request.app.state.endpoints


def _deliveries(request: Request) -> DeliveryLog:
    return request.app.state.deliveries


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(request: Request) -> HTMLResponse:
    session = await _session(request)
    endpoints = await _endpoints(request).list(None)
    return _page(request, "webhooks.html", session, endpoints=endpoints)


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def webhook_page(request: Request, endpoint_id: str) -> HTMLResponse:
    session = await _session(request)
    endpoint = await _endpoints(request).get(endpoint_id[:64])
    if endpoint is None:
        return _page(request, "missing.html", session, what=f"endpoint {endpoint_id[:64]}")
    deliveries, _ = await _deliveries(request).list(endpoint.id, 50, None)
    return _page(
        request,
        "webhook.html",
        session,
        endpoint=endpoint,
        deliveries=[d.public() for d in deliveries],
    )


@router.post("/deliveries/{delivery_id}/retry")
async def retry_delivery(
    request: Request,
    delivery_id: str,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    session = await _session(request)
    _check_csrf(request, session, csrf)
    log = _deliveries(request)
    delivery = await log.get(delivery_id[:64])
    if delivery is None:
        return RedirectResponse("/dashboard/webhooks", status_code=303)
    await log.retry(delivery)
    return RedirectResponse(f"/dashboard/webhooks/{delivery.endpoint_id}", status_code=303)
