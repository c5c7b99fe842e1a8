"""Prometheus metrics for API and worker (each process exposes its own; Prometheus sums).

Counters and histograms move where things happen; the queue gauges are read
from Redis when scraped (API) or every few seconds (worker).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

HTTP_REQUESTS = Counter(
    "longrun_http_requests", "HTTP requests answered", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "longrun_http_request_duration_seconds", "HTTP request latency", ["route", "method"]
)

JOBS_ENQUEUED = Counter("longrun_jobs_enqueued", "Jobs accepted and enqueued", ["kind"])
JOBS_STARTED = Counter("longrun_jobs_started", "Job attempts started", ["kind"])
JOBS_SUCCEEDED = Counter("longrun_jobs_succeeded", "Jobs that succeeded", ["kind"])
JOBS_FAILED = Counter("longrun_jobs_failed", "Jobs that failed for good", ["kind"])
JOBS_RETRIED = Counter("longrun_jobs_retried", "Job attempts that will be retried", ["kind"])
JOBS_DEAD_LETTERED = Counter("longrun_jobs_dead_lettered", "Dead letters written", ["kind"])
JOBS_CANCELLED = Counter("longrun_jobs_cancelled", "Jobs cancelled", ["kind"])
JOB_RUN_SECONDS = Histogram(
    "longrun_job_run_seconds",
    "Time one job attempt ran",
    ["kind"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
JOB_QUEUE_WAIT_SECONDS = Histogram(
    "longrun_job_queue_wait_seconds",
    "Time from a job being due to its attempt starting",
    ["kind"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)

QUEUE_JOBS = Gauge("longrun_queue_jobs", "Jobs in the queue by state", ["kind", "state"])
DEAD_LETTERS = Gauge("longrun_dead_letters", "Dead letters not yet replayed")
OLDEST_QUEUED_AGE = Gauge(
    "longrun_oldest_queued_age_seconds", "How long the oldest due job has waited"
)
WORKERS_ONLINE = Gauge("longrun_workers_online", "Workers with a live heartbeat")

CLAUDE_CALLS = Counter("longrun_claude_calls", "Claude API calls", ["model", "outcome"])
CLAUDE_TOKENS = Counter("longrun_claude_tokens", "Claude tokens", ["model", "direction"])
CLAUDE_BUDGET_WAITS = Counter(
    "longrun_claude_budget_waits",
    "Claude calls that waited for the shared budget (waited in the slot, or handed back)",
    ["outcome"],
)

S3_OPERATIONS = Counter("longrun_s3_operations", "S3 operations", ["operation", "outcome"])
S3_BYTES = Counter("longrun_s3_bytes", "Bytes to and from S3", ["direction"])

WEBHOOK_ATTEMPTS = Counter("longrun_webhook_attempts", "Webhook delivery attempts", ["outcome"])
WEBHOOK_LATENCY = Histogram(
    "longrun_webhook_delivery_latency_seconds", "Time a webhook receiver took to answer"
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "longrun_webhook_endpoints_disabled", "Webhook endpoints disabled (410 or failing too long)"
)
ALERTS = Counter("longrun_alerts", "Failure alerts posted to ALERT_WEBHOOK_URL", ["outcome"])
