"""The canary job: a real end-to-end check that workers take jobs and reach S3.

An operator (or the dev demo) enqueues one; the worker writes a small object
to S3, reads it back, deletes it, and returns the round-trip time. A canary
that does not succeed within seconds means the pipeline is broken somewhere.
"""

from __future__ import annotations

import time
from typing import Any

from jobs.engine import Domain, JobKind, JobRun
from jobs.errors import TransientError

CANARY_ACCOUNT = "_operator"


async def run_canary(run: JobRun, args: dict[str, Any]) -> dict[str, Any]:
    """Write, read back and delete `canaries/<job id>`; transient on any S3 trouble."""
    storage = run.deps.storage
    key = f"canaries/{run.job_id}"
    payload = f"canary {run.job_id} attempt {run.attempt}".encode()
    clock = time.perf_counter()
    await run.progress(0.1, "writing")
    await storage.put_bytes(key, payload, "text/plain")
    await run.progress(0.5, "reading")
    if await storage.get_bytes(key) != payload:
        raise TransientError("S3 returned different bytes than were written", type="s3_mismatch")
    await storage.delete(key)
    return {"s3_round_trip_ms": round((time.perf_counter() - clock) * 1000, 1)}


CANARY = JobKind("canary", run_canary)
CANARIES = Domain("canaries", kinds=[CANARY])
