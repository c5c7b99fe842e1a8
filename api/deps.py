"""FastAPI dependencies: settings, clients, the caller's identity, and owned resources."""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Path, Request
from redis.asyncio import Redis

from api.events import JobEvents
from jobs.documents import DocumentMeta, Documents
from jobs.engine.limits import AccountLimiter
from jobs.engine.presenter import JobPresenter
from jobs.engine.records import JobRecord
from jobs.engine.store import JobStore
from jobs.errors import Forbidden, NotFound, Unauthorized
from jobs.settings import Settings
from jobs.storage import Storage
from jobs.webhooks import DeliveryLog, EndpointStore

JOB_ID_PATTERN = re.compile(r"job_[0-9A-HJKMNP-TV-Z]{26}")
# Path parameters naming an account or a job kind (operators' queue controls).
# (pydantic's patterns use Rust's regex: `$` is the very end there, no `\Z`.)
ACCOUNT_ID_PATH = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
KIND_PATH = r"^[a-z][a-z0-9_.-]{0,63}$"


@dataclass(frozen=True)
class Services:
    """The app's clients and stores, made once in the lifespan (`app.state.services`)."""

    settings: Settings
    redis: Redis
    store: JobStore
    storage: Storage
    presenter: JobPresenter
    endpoints: EndpointStore
    deliveries: DeliveryLog
    documents: Documents
    events: JobEvents
    limiter: AccountLimiter


async def get_services(request: Request) -> Services:
    return request.app.state.services


# The getters are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread
# pool, a thread hop per dependency per request for what is an attribute lookup.
async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_redis(request: Request) -> Redis:
    return request.app.state.redis


async def get_store(request: Request) -> JobStore:
    return request.app.state.store


async def get_storage(request: Request) -> Storage:
    return request.app.state.storage


async def get_presenter(request: Request) -> JobPresenter:
    return request.app.state.presenter


async def get_job_events(request: Request) -> JobEvents:
    return request.app.state.events


# Each dependency costs FastAPI's solver ~15-20 us a request: the enqueueing routes, the
# hottest, take all the services as one.
ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
JobEventsDep = Annotated[JobEvents, Depends(get_job_events)]
PresenterDep = Annotated[JobPresenter, Depends(get_presenter)]
RedisDep = Annotated[Redis, Depends(get_redis)]
StoreDep = Annotated[JobStore, Depends(get_store)]
StorageDep = Annotated[Storage, Depends(get_storage)]


class KeyRefused(Unauthorized):
    """A bearer key was given and matched none: a failure the API counts per address."""


@dataclass(frozen=True)
class Caller:
    """Who is calling: an account's key, or an operator's (admin) key."""

    account: str | None
    admin: bool


def identify(authorization: str | None, settings: Settings) -> Caller:
    """Match a bearer key against the configured digests in constant time."""
    if not authorization:
        raise Unauthorized("send Authorization: Bearer <key>")
    scheme, _, key = authorization.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise Unauthorized("send Authorization: Bearer <key>")
    digest = hashlib.sha256(key.encode()).hexdigest()
    account = None
    for known, owner in settings.account_key_digests:
        if hmac.compare_digest(known, digest):
            account = owner
    admin = False
    for known in settings.admin_key_digests:
        if hmac.compare_digest(known, digest):
            admin = True
    if account is None and not admin:
        raise KeyRefused("the API key is not valid")
    return Caller(account=account, admin=admin)


AuthorizationHeader = Annotated[str | None, Header()]


# Each of these reads the header itself rather than depending on `get_caller`: one
# dependency fewer for FastAPI to solve on every request.
async def _admit(request: Request, account: str) -> None:
    """Count an account's request against its `requests_per_second` (429 above it); the
    RateLimit headers go on the answer."""
    rate = await request.app.state.limiter.admit_request(account)
    if rate is not None:
        request.scope.setdefault("state", {})["ratelimit_headers"] = rate.headers()


async def get_caller(request: Request, authorization: AuthorizationHeader = None) -> Caller:
    caller = identify(authorization, request.app.state.settings)
    if caller.account is not None and not caller.admin:
        await _admit(request, caller.account)
    return caller


async def get_account(request: Request, authorization: AuthorizationHeader = None) -> str:
    """The caller's account, counted against its `requests_per_second` (429 above it)."""
    caller = identify(authorization, request.app.state.settings)
    if caller.account is None:
        raise Forbidden("this route needs an account key, not an operator key")
    await _admit(request, caller.account)
    return caller.account


async def require_admin(request: Request, authorization: AuthorizationHeader = None) -> Caller:
    caller = identify(authorization, request.app.state.settings)
    if not caller.admin:
        raise Forbidden("this route is for operator (admin) keys")
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
AccountDep = Annotated[str, Depends(get_account)]
AdminDep = Annotated[Caller, Depends(require_admin)]


async def get_visible_job(
    job_id: Annotated[str, Path(max_length=64)], caller: CallerDep, store: StoreDep
) -> JobRecord:
    """The job, if the caller may see it: its own account's, or any for an operator. An
    account's request counts against its `requests_per_second`."""
    if not JOB_ID_PATTERN.fullmatch(job_id):
        raise NotFound("no such job")
    record = await store.get(job_id)
    if record is None or not (caller.admin or record.account == caller.account):
        raise NotFound("no such job")
    return record


VisibleJob = Annotated[JobRecord, Depends(get_visible_job)]


async def get_owned_document(
    doc_id: Annotated[str, Path(max_length=64)], account: AccountDep, services: ServicesDep
) -> DocumentMeta:
    """The document, if this account owns it; else 404."""
    meta = await services.documents.get(doc_id)
    if meta is None or meta.account != account:
        raise NotFound("no such document")
    return meta


OwnedDocument = Annotated[DocumentMeta, Depends(get_owned_document)]


IdempotencyKeyDep = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="repeat a request safely: the same key and body return the same job "
        "for 24 hours (visible ASCII, at most 255 characters)",
    ),
]
