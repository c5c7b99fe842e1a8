"""A Python client for the longrun API: sync (`LongrunClient`) and async
(`AsyncLongrunClient`), with idempotent retries, `wait()` on a job, and webhook
verification (`verify_webhook`).

    from longrun_client import LongrunClient

    with LongrunClient("https://longrun.example.com", api_key="...") as client:
        document = client.create_document("user-1", "Some text")
        job = client.wait(client.create_analysis(document.id), timeout=300)
"""

from longrun_client._version import __version__
from longrun_client.async_client import AsyncLongrunClient
from longrun_client.client import LongrunClient
from longrun_client.errors import (
    APIConnectionError,
    APIError,
    APITimeout,
    BadRequest,
    Conflict,
    Forbidden,
    InvalidResponse,
    InvalidWebhookSignature,
    JobCancelled,
    JobFailed,
    JobNotSucceeded,
    LongrunError,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    StaleWebhookTimestamp,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
    WaitTimeout,
    WebhookVerificationFailed,
)
from longrun_client.models import (
    FINISHED_STATES,
    BatchResult,
    DeadLetter,
    DeliveryAttempt,
    Document,
    Job,
    JobError,
    LatestAnalysis,
    ModelUsage,
    Page,
    Paused,
    Usage,
    WebhookDelivery,
    WebhookEndpoint,
)
from longrun_client.webhooks import WebhookEvent, verify_webhook

__all__ = [
    "FINISHED_STATES",
    "APIConnectionError",
    "APIError",
    "APITimeout",
    "AsyncLongrunClient",
    "BadRequest",
    "BatchResult",
    "Conflict",
    "DeadLetter",
    "DeliveryAttempt",
    "Document",
    "Forbidden",
    "InvalidResponse",
    "InvalidWebhookSignature",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotSucceeded",
    "LatestAnalysis",
    "LongrunClient",
    "LongrunError",
    "ModelUsage",
    "NotFound",
    "Page",
    "Paused",
    "PayloadTooLarge",
    "RateLimited",
    "ServerError",
    "ServiceUnavailable",
    "StaleWebhookTimestamp",
    "Unauthorized",
    "UnsupportedMediaType",
    "Usage",
    "ValidationFailed",
    "WaitTimeout",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookEvent",
    "WebhookVerificationFailed",
    "__version__",
    "verify_webhook",
]
