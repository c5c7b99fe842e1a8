"""Turn finished jobs into webhook deliveries: the webhooks domain's outbox listener."""

from __future__ import annotations

from jobs.engine import JobKind, WorkerDeps
from jobs.engine.presenter import job_resource
from jobs.engine.records import JobRecord, JobState
from jobs.webhooks.deliveries import DeliveryLog
from jobs.webhooks.endpoints import EndpointStore


async def publish_job_event(deps: WorkerDeps, record: JobRecord, kind: JobKind) -> None:
    """Publish a finished job's event (`<kind>.completed` or `<kind>.failed`, as its kind
    declares) to the account's subscribed endpoints, once per endpoint."""
    if kind.events is None or record.state not in (JobState.SUCCEEDED, JobState.FAILED):
        return
    event_type = kind.events[0] if record.state == JobState.SUCCEEDED else kind.events[1]
    log = DeliveryLog(deps.store, EndpointStore(deps.redis, deps.settings))
    # The job as its record has it; each attempt presents it afresh, so an export's
    # presigned URL is never stored and never stale on a late retry.
    await log.publish(
        record.account, event_type, f"evt_{record.id}", job_resource(record), record.request_id
    )
