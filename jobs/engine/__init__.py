"""The job engine: records, runner, retry, leases, claims and the arq adapter.

It knows no domain. A domain declares its job kinds (`JobKind`) in a `Domain`; the
service's `Registry` of domains is handed to the engine, whose runner, presenter and
outbox read it.
"""

from jobs.engine.context import Continue, HandBack, JobRun, WorkerDeps
from jobs.engine.registry import Domain, JobKind, Periodic, Registry

__all__ = [
    "Continue",
    "Domain",
    "HandBack",
    "JobKind",
    "JobRun",
    "Periodic",
    "Registry",
    "WorkerDeps",
]
