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

The fair scheduler's (see `jobs/engine/scheduler.py`):

    q:<kind>                 zset, all scores 0: "<account>|<due ms, 13 digits>|<job id>"
                             for every waiting job, so an account's jobs sort by due time
    q:<kind>:ring            zset: accounts with a due job -> their place in the turn
    q:<kind>:sleep           zset: accounts whose jobs are all due later -> earliest due
    q:<kind>:claimed         zset: jobs a worker claimed and has not started -> claimed ms
    q:turn                   hash: the next place in each kind's turn, and the kinds' turn
    q:running                zset, all scores 0: "<account>|<job id>" claimed or running
    q:backlog                zset: account -> its waiting jobs (the busiest, for health)
    q:limits                 hash: account (or "*") -> max_running (ACCOUNT_LIMITS)
    q:paused:kinds, q:paused:accounts   sets: what operators paused
    acct:<account>:unfinished  zset: the account's listed jobs not yet ended -> created ms
    rate:<account>           string: the account's API request rate (GCRA)
    streams:<account>        zset: the account's open event streams -> expiry ms
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


FAIR_TURN = f"{PREFIX}q:turn"
FAIR_RUNNING = f"{PREFIX}q:running"
FAIR_BACKLOG = f"{PREFIX}q:backlog"
FAIR_LIMITS = f"{PREFIX}q:limits"
PAUSED_KINDS = f"{PREFIX}q:paused:kinds"
PAUSED_ACCOUNTS = f"{PREFIX}q:paused:accounts"


def fair_queue(kind: str) -> str:
    return f"{PREFIX}q:{kind}"


def fair_ring(kind: str) -> str:
    return f"{PREFIX}q:{kind}:ring"


def fair_sleep(kind: str) -> str:
    return f"{PREFIX}q:{kind}:sleep"


def fair_claimed(kind: str) -> str:
    return f"{PREFIX}q:{kind}:claimed"


def unfinished(account: str) -> str:
    return f"{PREFIX}acct:{account}:unfinished"


def request_rate(account: str) -> str:
    """The account's API request rate (GCRA's theoretical arrival time)."""
    return f"{PREFIX}rate:{account}"


def stream_slots(account: str) -> str:
    """The account's open event streams (zset: stream -> expiry ms)."""
    return f"{PREFIX}streams:{account}"


def domain_key(domain: str, *parts: str) -> str:
    """A key of a domain's own (`lr:<domain>:<part>:...`), under the engine's prefix."""
    return ":".join((f"{PREFIX}{domain}", *parts))
