"""Webhooks to customer systems, the way Standard Webhooks, Svix and Stripe do them.

`endpoints.py` registers endpoints and keeps their secrets and health; `publisher.py`
turns each finished job into one delivery per subscribed endpoint; `deliveries.py` runs
each delivery as a job of the engine, one HTTP attempt (`attempt.py`) per job attempt;
`ssrf.py` keeps deliveries off private networks, and `transport.py` sends each attempt to
the address it checked.
"""

from __future__ import annotations

from jobs.engine import Domain, JobKind
from jobs.webhooks.deliveries import KIND, DeliveryLog, deliver, schedule_backoff
from jobs.webhooks.endpoints import Endpoint, EndpointStore
from jobs.webhooks.publisher import publish_job_event
from jobs.webhooks.transport import WebhookClient, open_webhook_client

__all__ = ["DELIVERY", "WEBHOOKS", "DeliveryLog", "Endpoint", "EndpointStore"]

DELIVERY = JobKind(
    KIND,
    deliver,
    listed=False,
    dead_letters=False,
    max_attempts=lambda settings: len(settings.webhook_retry_schedule),
    backoff=schedule_backoff,
    retention_s=lambda settings: settings.webhook_log_retention_seconds,
)

WEBHOOKS = Domain(
    "webhooks",
    kinds=[DELIVERY],
    resources=[(WebhookClient, open_webhook_client)],
    listeners=[publish_job_event],
)
