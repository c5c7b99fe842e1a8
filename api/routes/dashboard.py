"""The operator dashboard: server-rendered pages for admin keys, a little JavaScript for
live figures. Login sets a signed, HTTP-only session cookie; every form carries a CSRF
token bound to the session."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from api.deps import ACCOUNT_ID_PATH, JOB_ID_PATTERN, KIND_PATH, RedisDep, SettingsDep, StoreDep
from api.sessions import COOKIE, SESSION_SECONDS, csrf_token, csrf_valid, new_session, session_valid
from jobs.engine.health import queue_health
from jobs.engine.presenter import attempt_resource
from jobs.engine.records import JobRecord, JobState, rfc3339
from jobs.engine.scheduler import Scheduler
from jobs.errors import Forbidden
from jobs.webhooks import DeliveryLog, EndpointStore

router = APIRouter(prefix="/dashboard", include_in_schema=False)
templates = Jinja2Templates(directory=FilePath(__file__).resolve().parents[1] / "templates")
templates.env.filters["time"] = rfc3339


class LoginRequired(Exception):
    """No valid session: send the browser to the login page."""


def _session(request: Request, settings: SettingsDep) -> str:
    token = request.cookies.get(COOKIE)
    if not session_valid(settings, token):
        raise LoginRequired()
    return token or ""


def _page(request: Request, name: str, session: str, **context: Any) -> HTMLResponse:
    settings = request.app.state.settings
    return templates.TemplateResponse(
        request, name, {"csrf": csrf_token(settings, session), "page": name, **context}
    )


def _check_csrf(request: Request, session: str, token: str | None) -> None:
    if not csrf_valid(request.app.state.settings, session, token):
        raise Forbidden("the form is stale; reload the page", type="csrf_failed")


def install_dashboard(app: Any) -> None:
    """Register the login redirect for dashboard pages."""

    @app.exception_handler(LoginRequired)
    async def _to_login(request: Request, exc: LoginRequired) -> Response:
        response = RedirectResponse("/dashboard/login", status_code=303)
        response.delete_cookie(COOKIE, path="/dashboard")
        return response


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return templates.TemplateResponse(request, "login.html", {"error": None})


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request, settings: SettingsDep, key: Annotated[str, Form(max_length=512)] = ""
) -> Response:
    digest = hashlib.sha256(key.encode()).hexdigest()
    admin = False
    for known in settings.admin_key_digests:
        if hmac.compare_digest(known, digest):
            admin = True
    if not admin:
        return templates.TemplateResponse(
            request, "login.html", {"error": "That is not an operator key."}, status_code=401
        )
    response = RedirectResponse("/dashboard", status_code=303)
    response.set_cookie(
        COOKIE,
        new_session(settings),
        max_age=SESSION_SECONDS,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/dashboard",
    )
    return response


@router.post("/logout")
async def logout() -> Response:
    response = RedirectResponse("/dashboard/login", status_code=303)
    response.delete_cookie(COOKIE, path="/dashboard")
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
    _check_csrf(request, _session(request, settings), csrf)
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
    session = _session(request, settings)
    summary = await _summary(redis, settings, store)
    failed = await store.list_dead_letters(limit=5)
    return _page(request, "overview.html", session, **summary, failures=failed.items)


@router.get("/summary.json")
async def summary(
    request: Request, settings: SettingsDep, redis: RedisDep, store: StoreDep
) -> JSONResponse:
    _session(request, settings)
    return JSONResponse(await _summary(redis, settings, store))


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    q: Annotated[str, Query(max_length=64)] = "",
    state: Annotated[str, Query(max_length=16)] = "",
    kind: Annotated[str, Query(max_length=64)] = "",
    account: Annotated[str, Query(max_length=64)] = "",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    session = _session(request, settings)
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
async def job_page(
    request: Request, job_id: str, settings: SettingsDep, store: StoreDep
) -> HTMLResponse:
    session = _session(request, settings)
    record = await store.get(job_id) if JOB_ID_PATTERN.fullmatch(job_id) else None
    if record is None:
        return _page(request, "missing.html", session, what=f"job {job_id[:64]}")
    attempts = [attempt_resource(a) for a in reversed(record.attempts)]
    return _page(request, "job.html", session, job=record, attempts=attempts)


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(
    request: Request,
    settings: SettingsDep,
    store: StoreDep,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> HTMLResponse:
    session = _session(request, settings)
    page = await store.list_dead_letters(limit=50, cursor=cursor)
    return _page(
        request, "dead_letters.html", session, dead=page.items, next_cursor=page.next_cursor
    )


async def _posted_dead_letter(
    request: Request, settings: Any, store: Any, job_id: str, csrf: str
) -> JobRecord | None:
    """For a form post on a dead letter: check the session and CSRF token, find it."""
    _check_csrf(request, _session(request, settings), csrf)
    return await store.get_dead_letter(job_id) if JOB_ID_PATTERN.fullmatch(job_id) else None


@router.post("/dead-letters/{job_id}/replay")
async def replay(
    request: Request,
    job_id: str,
    settings: SettingsDep,
    store: StoreDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    record = await _posted_dead_letter(request, settings, store, job_id, csrf)
    if record is None:
        return RedirectResponse("/dashboard/dead-letters", status_code=303)
    enqueued = await store.replay(record)
    return RedirectResponse(f"/dashboard/jobs/{enqueued.job_id}", status_code=303)


@router.post("/dead-letters/{job_id}/purge")
async def purge(
    request: Request,
    job_id: str,
    settings: SettingsDep,
    store: StoreDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    record = await _posted_dead_letter(request, settings, store, job_id, csrf)
    if record is not None:
        await store.purge_dead_letter(record)
    return RedirectResponse("/dashboard/dead-letters", status_code=303)


def _endpoints(request: Request) -> EndpointStore:
    return request.app.state.endpoints


def _deliveries(request: Request) -> DeliveryLog:
    return request.app.state.deliveries


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(request: Request, settings: SettingsDep) -> HTMLResponse:
    session = _session(request, settings)
    endpoints = await _endpoints(request).list(None)
    return _page(request, "webhooks.html", session, endpoints=endpoints)


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def webhook_page(request: Request, endpoint_id: str, settings: SettingsDep) -> HTMLResponse:
    session = _session(request, settings)
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
    settings: SettingsDep,
    csrf: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    session = _session(request, settings)
    _check_csrf(request, session, csrf)
    log = _deliveries(request)
    delivery = await log.get(delivery_id[:64])
    if delivery is None:
        return RedirectResponse("/dashboard/webhooks", status_code=303)
    await log.retry(delivery)
    return RedirectResponse(f"/dashboard/webhooks/{delivery.endpoint_id}", status_code=303)
