"""Webhook endpoints, their secrets, and the delivery log."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api.deps import AccountDep
from jobs.errors import NotFound
from jobs.webhooks import EVENT_TYPES, Endpoint, WebhookStore

router = APIRouter(tags=["webhooks"])


EventType = Literal["analysis.completed", "analysis.failed", "export.completed", "export.failed"]


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


async def get_webhooks(request: Request) -> WebhookStore:
    return request.app.state.webhooks


WebhooksDep = Annotated[WebhookStore, Depends(get_webhooks)]


async def get_owned_endpoint(
    endpoint_id: Annotated[str, Path(max_length=64)], account: AccountDep, webhooks: WebhooksDep
) -> Endpoint:
    endpoint = await webhooks.get_endpoint(endpoint_id) if endpoint_id.startswith("we_") else None
    if endpoint is None or endpoint.account != account:
        raise NotFound("no such webhook endpoint")
    return endpoint


OwnedEndpoint = Annotated[Endpoint, Depends(get_owned_endpoint)]


@router.post("/v1/webhook-endpoints", status_code=201, response_model=EndpointWithSecret)
async def create_endpoint(
    body: EndpointCreate, account: AccountDep, webhooks: WebhooksDep
) -> JSONResponse:
    """Register an endpoint; the answer carries its `whsec_` secret, shown this once. The
    URL must be https and resolve to public addresses (unless private networks are
    allowed)."""
    endpoint, secret = await webhooks.create_endpoint(account, body.url, body.events)
    return JSONResponse(
        {**endpoint.public(), "secret": secret},
        status_code=201,
        headers={"Location": f"/v1/webhook-endpoints/{endpoint.id}"},
    )


@router.get("/v1/webhook-endpoints")
async def list_endpoints(account: AccountDep, webhooks: WebhooksDep) -> dict[str, Any]:
    """The account's endpoints, newest first (without secrets)."""
    endpoints = await webhooks.list_endpoints(account)
    return {"data": [e.public() for e in endpoints], "next_cursor": None}


@router.get("/v1/webhook-endpoints/{endpoint_id}", response_model=EndpointPublic)
async def get_endpoint(endpoint: OwnedEndpoint) -> dict[str, Any]:
    """One endpoint (without its secret)."""
    return endpoint.public()


@router.delete("/v1/webhook-endpoints/{endpoint_id}", status_code=204)
async def delete_endpoint(endpoint: OwnedEndpoint, webhooks: WebhooksDep) -> Response:
    """Delete an endpoint; deliveries still pending end `failed`."""
    await webhooks.delete_endpoint(endpoint)
    return Response(status_code=204)


@router.post("/v1/webhook-endpoints/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret)
async def rotate_secret(endpoint: OwnedEndpoint, webhooks: WebhooksDep) -> dict[str, Any]:
    """A new secret, shown once; the previous one keeps signing (both signatures are sent)
    for WEBHOOK_SECRET_OVERLAP_SECONDS, 24 hours by default."""
    secret = await webhooks.rotate_secret(endpoint)
    return {**endpoint.public(), "secret": secret}


@router.get("/v1/webhook-endpoints/{endpoint_id}/deliveries")
async def list_deliveries(
    endpoint: OwnedEndpoint,
    webhooks: WebhooksDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=20, pattern=r"^\d+$")] = None,
) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, each with its attempts (newest first)."""
    deliveries, next_before = await webhooks.list_deliveries(
        endpoint.id, limit, int(cursor) if cursor else None
    )
    return {
        "data": [d.public() for d in deliveries],
        "next_cursor": str(next_before) if next_before else None,
    }


@router.post(
    "/v1/webhook-deliveries/{delivery_id}/retry",
    status_code=202,
    response_model=DeliveryPublic,
    responses={409: {"description": "the endpoint is disabled"}},
)
async def retry_delivery(
    delivery_id: Annotated[str, Path(max_length=64)], account: AccountDep, webhooks: WebhooksDep
) -> JSONResponse:
    """Make one more attempt of a delivery now."""
    delivery = await webhooks.get_delivery(delivery_id) if delivery_id.startswith("whd_") else None
    if delivery is None or delivery.account != account:
        raise NotFound("no such delivery")
    await webhooks.retry_delivery(delivery)
    refreshed = await webhooks.get_delivery(delivery_id)
    return JSONResponse((refreshed or delivery).public(), status_code=202)
