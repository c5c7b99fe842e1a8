"""Webhook endpoints, their secrets, and the delivery log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import AccountDep, ServicesDep
from jobs.domains import REGISTRY
from jobs.errors import NotFound
from jobs.webhooks import DeliveryLog, Endpoint, EndpointStore

router = APIRouter(tags=["webhooks"])
# An answer that carries a secret is kept by no cache, the browser's included.
NO_STORE = {"Cache-Control": "no-store"}

EVENT_TYPES = tuple(REGISTRY.event_types())
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


class EndpointCreate(BaseModel):
    url: str = Field(max_length=2048, description="https URL that receives the events")
    events: list[EventType] = Field(min_length=1, max_length=len(EVENT_TYPES))


class EndpointPublic(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: str | None
    disabled: bool
    disabled_at: str | None
    disabled_reason: str | None


class EndpointWithSecret(EndpointPublic):
    secret: str = Field(description="the signing secret; shown only here")


class DeliveryPublic(BaseModel):
    id: str
    endpoint_id: str
    event_type: str
    event_id: str
    webhook_id: str
    state: str
    created_at: str | None
    next_attempt_at: str | None
    attempts: list[dict[str, Any]]


async def get_endpoints(request: Request) -> EndpointStore:
    return request.app.state.endpoints


async def get_deliveries(request: Request) -> DeliveryLog:
    return request.app.state.deliveries


EndpointsDep = Annotated[EndpointStore, Depends(get_endpoints)]
DeliveriesDep = Annotated[DeliveryLog, Depends(get_deliveries)]


async def get_owned_endpoint(
    endpoint_id: Annotated[str, Path(max_length=64)], account: AccountDep, endpoints: EndpointsDep
) -> Endpoint:
    endpoint = await endpoints.get(endpoint_id)
    if endpoint is None or endpoint.account != account:
        raise NotFound("no such webhook endpoint")
    return endpoint


OwnedEndpoint = Annotated[Endpoint, Depends(get_owned_endpoint)]


@router.post("/v1/webhook-endpoints", status_code=201, response_model=EndpointWithSecret)
async def create_endpoint(
    body: EndpointCreate, account: AccountDep, endpoints: EndpointsDep
) -> JSONResponse:
    """Register an endpoint; the answer carries its `whsec_` secret, shown this once. The
    URL must be https and resolve to public addresses (unless private networks are
    allowed)."""
    endpoint, secret = await endpoints.create(account, body.url, body.events)
    return JSONResponse(
        {**endpoint.public(), "secret": secret},
        status_code=201,
        headers={"Location": f"/v1/webhook-endpoints/{endpoint.id}", **NO_STORE},
    )


@router.get("/v1/webhook-endpoints")
async def list_endpoints(account: AccountDep, endpoints: EndpointsDep) -> dict[str, Any]:
    """The account's endpoints, newest first (without secrets)."""
    found = await endpoints.list(account)
    return {"data": [e.public() for e in found], "next_cursor": None}


@router.get("/v1/webhook-endpoints/{endpoint_id}", response_model=EndpointPublic)
async def get_endpoint(endpoint: OwnedEndpoint) -> dict[str, Any]:
    """One endpoint (without its secret)."""
    return endpoint.public()


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint: OwnedEndpoint, services: ServicesDep) -> Response:
    """Delete an endpoint and its delivery log; deliveries still waiting end `failed` (one
    in flight finishes its attempt and makes no other)."""
    deliveries = await services.endpoints.delete(endpoint)
    await services.deliveries.end_pending(deliveries)
    return Response(status_code=204)


@router.post("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
async def rotate_secret(endpoint: OwnedEndpoint, endpoints: EndpointsDep) -> JSONResponse:
    """A new secret, shown once; the previous one keeps signing (both signatures are sent)
    for WEBHOOK_SECRET_OVERLAP_SECONDS, 24 hours by default."""
    secret = await endpoints.rotate_secret(endpoint)
    return JSONResponse({**endpoint.public(), "secret": secret}, headers=NO_STORE)


@router.get("/v1/webhook-endpoints/{endpoint_id}/deliveries")
async def list_deliveries(
    endpoint: OwnedEndpoint,
    deliveries: DeliveriesDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, each with its attempts (newest first)."""
    found, next_cursor = await deliveries.list(endpoint.id, limit, cursor)
    return {"data": [d.public() for d in found], "next_cursor": next_cursor}


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryPublic,
    responses={409: {"description": "the endpoint is disabled"}},
)
async def retry_delivery(
    delivery_id: Annotated[str, Path(max_length=64)],
    account: AccountDep,
    deliveries: DeliveriesDep,
) -> JSONResponse:
    """Make one more attempt of a delivery now: a waiting one becomes due (its schedule goes
    on), an ended one gets one more attempt. 409 when its endpoint is disabled or deleted,
    or while an attempt runs."""
    delivery = await deliveries.get(delivery_id)
    if delivery is None or delivery.account != account:
        raise NotFound("no such delivery")
    await deliveries.retry(delivery)
    refreshed = await deliveries.get(delivery_id)
    return JSONResponse((refreshed or delivery).public(), status_code=202)
