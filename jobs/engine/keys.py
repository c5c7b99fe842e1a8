"""Every Redis key of the engine, built here and nowhere else (arq's own keys live in
`jobs.engine.arq_adapter`). Domains name their keys with `domain_key`, under the same prefix.

    job:<id>                 hash: the job record
    job:<id>:attempts        list: one JSON entry per attempt
    acct:<account>:jobs      zset: an account's listed jobs -> created ms
    jobs:all                 zset: every listed job -> created ms (operators' list)
    active                   zset: unfinished jobs -> created ms (reconciler)
    waiting:<kind>           zset: queued and retrying jobs -> due ms (queue health)
    running:<kind>           zset: running jobs -> started ms
    kinds                    set: every kind ever enqueued
    dlq, dlq:open            zset: dead letters -> failed ms (all / not yet replayed)
    idem:<account>:<sha256>  string: an Idempotency-Key's job id and body fingerprint
    workers                  zset: worker id -> last heartbeat (s)
    worker:<id>:jobs         set: the jobs a worker runs (its lease)
    worker:<id>:fenced       string: the worker was declared dead while alive
    outbox, outbox:<worker>  list: finished jobs to publish / being published by a worker
    stats:<minute>           hash: jobs succeeded and failed in that minute
    wake:<queue>             pub/sub channel: an enqueue wakes idle workers
    reconciler:lock          string: one reconciler pass at a time
"""

from __future__ import annotations

import hashlib

PREFIX = "lr:"

ACTIVE = f"{PREFIX}active"
ALL_JOBS = f"{PREFIX}jobs:all"
KINDS = f"{PREFIX}kinds"
DLQ = f"{PREFIX}dlq"
DLQ_OPEN = f"{PREFIX}dlq:open"
WORKERS = f"{PREFIX}workers"
OUTBOX = f"{PREFIX}outbox"
RECONCILER_LOCK = f"{PREFIX}reconciler:lock"
NONE = f"{PREFIX}-"  # a key that is never written: a script's unused KEYS slot


def record(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def attempts(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}:attempts"


def account_jobs(account: str) -> str:
    return f"{PREFIX}acct:{account}:jobs"


def waiting(kind: str) -> str:
    return f"{PREFIX}waiting:{kind}"


def running(kind: str) -> str:
    return f"{PREFIX}running:{kind}"


def idempotency(account: str, key: str) -> str:
    return f"{PREFIX}idem:{account}:{hashlib.sha256(key.encode()).hexdigest()}"


def worker_jobs(worker: str) -> str:
    return f"{PREFIX}worker:{worker}:jobs"


def fence(worker: str) -> str:
    return f"{PREFIX}worker:{worker}:fenced"


def outbox_processing(worker: str) -> str:
    return f"{OUTBOX}:{worker}"


def stats(minute: int) -> str:
    return f"{PREFIX}stats:{minute}"


def wake(queue_name: str) -> str:
    return f"{PREFIX}wake:{queue_name}"


def domain_key(domain: str, *parts: str) -> str:
    """A key of a domain's own (`lr:<domain>:<part>:...`), under the engine's prefix."""
    return ":".join((f"{PREFIX}{domain}", *parts))
