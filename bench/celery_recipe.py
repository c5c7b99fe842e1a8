"""The Celery recipe's analysis task, for `bench.analysis_throughput` to compare against.

It mirrors the "FastAPI + Celery + Redis" recipe this service replaces
(/work/shared/000_9f83a0fd0028a42b.txt): a Redis broker (db 0) and result backend
(db 1), JSON everywhere, `task_acks_late=True`, `worker_prefetch_multiplier=1`, soft and
hard time limits of 600 s and 900 s, and `analyze_user_document`, which calls Claude through
the synchronous `anthropic.Anthropic` client and retries any error with
`self.retry(countdown=2 ** self.request.retries * 30)`. The only change is its argument:
the document's text instead of an id to look up in a database.

It runs in its own virtualenv (`bench/.venv-celery`: Celery 5 wants redis-py >= 6, arq
0.28 wants < 6), so it imports nothing from this project. The worker:

    bench/.venv-celery/bin/celery -A bench.celery_recipe worker --pool=prefork \\
        --concurrency=2 --loglevel=warning

and the load generator, which enqueues with `.delay(...)` and waits for every result:

    bench/.venv-celery/bin/python -m bench.celery_recipe --jobs 200 --text-file PATH

For the drain-rate and latency benchmarks, the same app has two trivial tasks: `noop`
(one `INCR bench:done`) and `mark` (push the wall-clock time it started on `bench:marks`),
and the generator two more modes: `--noop N` enqueues N `noop` tasks and exits;
`--probes K --gap-min A --gap-max B` sends K `mark` tasks one at a time on an idle system
(each after the previous one started, plus a random gap) and prints each enqueue time with
its start time. For the fairness benchmark, `--plan FILE` enqueues a noisy account's
backlog of analyses at once, then a quiet account's at their offsets, and prints when each
quiet one was sent; it does not wait for any result.

Environment: `CELERY_BROKER_URL`, `CELERY_RESULT_BACKEND`, `ANTHROPIC_BASE_URL`,
`ANTHROPIC_API_KEY`, `ANALYSIS_MODEL`, `ANALYSIS_MAX_TOKENS`. With `BENCH_TIMES_URL` set,
the task also appends `{"pid", "started", "finished"}` (epoch seconds) to the Redis list
`BENCH_TIMES_KEY` (default `bench:celery:times`), so the benchmark can time the runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import redis
from anthropic import Anthropic
from celery import Celery

logger = logging.getLogger(__name__)

TIMES_KEY = os.getenv("BENCH_TIMES_KEY", "bench:celery:times")
ENQUEUED_KEY = "bench:celery:enqueued"
DONE_KEY = "bench:done"
MARKS_KEY = "bench:marks"

celery_app = Celery(
    "app",
    broker=os.getenv("CELERY_BROKER_URL", "redis://localhost:6379/0"),
    backend=os.getenv("CELERY_RESULT_BACKEND", "redis://localhost:6379/1"),
)

celery_app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    timezone="UTC",
    enable_utc=True,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    task_soft_time_limit=600,
    task_time_limit=900,
)

_times: redis.Redis | None = None


def _times_client() -> redis.Redis | None:
    """One Redis client per worker process (made after the fork), only when benchmarking."""
    global _times
    url = os.getenv("BENCH_TIMES_URL")
    if url and _times is None:
        _times = redis.Redis.from_url(url)
    return _times


@celery_app.task(bind=True, max_retries=5)
def analyze_user_document(self: Any, document_text: str) -> str | None:
    """Call Claude about one document; retry network/API errors with exponential backoff."""
    started = time.time()
    try:
        if not document_text:
            raise ValueError("the document is empty")
        client = Anthropic(
            base_url=os.getenv("ANTHROPIC_BASE_URL"),
            api_key=os.getenv("ANTHROPIC_API_KEY"),
            max_retries=0,
        )
        with client:
            response = client.messages.create(
                model=os.getenv("ANALYSIS_MODEL", "claude-sonnet-5-5"),
                max_tokens=int(os.getenv("ANALYSIS_MAX_TOKENS", "1024")),
                messages=[{"role": "user", "content": f"Analyze this: {document_text}"}],
            )
        analysis = response.content[0].text
    except ValueError as e:
        # Don't retry validation errors
        logger.error(f"Validation error: {e}")
        return None
    except Exception as e:
        # Retry network/API errors with exponential backoff
        logger.warning(f"Attempt {self.request.retries + 1} failed: {e}")
        raise self.retry(exc=e, countdown=2**self.request.retries * 30) from e
    times = _times_client()
    if times is not None:
        mark = {"pid": os.getpid(), "started": started, "finished": time.time()}
        times.rpush(TIMES_KEY, json.dumps(mark))
    return analysis


@celery_app.task
def noop() -> None:
    """The trivial job of the drain-rate benchmark: one INCR."""
    times = _times_client()
    if times is not None:
        times.incr(DONE_KEY)


@celery_app.task
def mark() -> None:
    """The latency probe: push the wall-clock time it started."""
    started = time.time()
    times = _times_client()
    if times is not None:
        times.rpush(MARKS_KEY, repr(started))


def enqueue_noops(jobs: int) -> dict[str, Any]:
    """Enqueue `jobs` trivial tasks and return at once."""
    clock = time.monotonic()
    for _ in range(jobs):
        noop.delay()
    return {"enqueued": jobs, "seconds": time.monotonic() - clock}


def probe_latency(probes: int, gap_min: float, gap_max: float, timeout_s: float) -> dict:
    """Send `probes` `mark` tasks one at a time; each after the previous one started and a
    random gap in [gap_min, gap_max] s, so every one meets an idle worker."""
    times = _times_client()
    assert times is not None, "BENCH_TIMES_URL is needed"
    times.delete(MARKS_KEY)
    rng = random.Random(1)
    samples = []
    for _ in range(probes):
        time.sleep(rng.uniform(gap_min, gap_max))
        sent = time.time()
        mark.delay()
        answer = times.blpop([MARKS_KEY], timeout=timeout_s)
        if answer is None:
            raise TimeoutError(f"a probe did not start within {timeout_s:g}s")
        samples.append([sent, float(answer[1])])
    return {"samples": samples}


def enqueue_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """The fairness benchmark's load: `plan["noisy"]["count"]` analyses of
    `plan["noisy"]["text"]` enqueued at once, then each of `plan["quiet"]` (`{"token",
    "text", "offset_s"}`) `offset_s` after the backlog was in. Returns the backlog's enqueue
    time and, per quiet task, its token and the wall-clock time just before its `.delay`."""
    noisy = plan.get("noisy") or {}
    clock = time.monotonic()
    for _ in range(int(noisy.get("count", 0))):
        analyze_user_document.delay(noisy["text"])
    noisy_s = time.monotonic() - clock
    start = time.monotonic()
    sent = []
    for item in plan.get("quiet") or []:
        time.sleep(max(0.0, start + float(item["offset_s"]) - time.monotonic()))
        at = time.time()
        analyze_user_document.delay(item["text"])
        sent.append([item["token"], at])
    return {"noisy_enqueue_s": noisy_s, "quiet_sent": sent}


def generate_load(jobs: int, text: str, timeout_s: float) -> dict[str, Any]:
    """Enqueue `jobs` tasks, say so in Redis, then wait (bounded) for every result."""
    results = [analyze_user_document.delay(text) for _ in range(jobs)]
    enqueued_at = time.time()
    times = _times_client()
    if times is not None:
        times.set(ENQUEUED_KEY, len(results))
    deadline = time.monotonic() + timeout_s
    states: dict[str, int] = {}
    sample: str | None = None
    for result in results:
        remaining = deadline - time.monotonic()
        try:
            value = result.get(timeout=max(0.1, remaining), propagate=False)
        except Exception as exc:  # a timeout: count it and move on, bounded by the deadline
            name = f"error:{type(exc).__name__}"
            states[name] = states.get(name, 0) + 1
            continue
        states[result.state] = states.get(result.state, 0) + 1
        if sample is None and isinstance(value, str):
            sample = value
    return {
        "enqueued_at": enqueued_at,
        "done_at": time.time(),
        "states": states,
        "sample": sample,
        "cpu_s": time.process_time(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--text-file", type=Path)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--noop", type=int, help="only enqueue this many `noop` tasks")
    parser.add_argument("--probes", type=int, help="only send this many latency probes")
    parser.add_argument("--plan", type=Path, help="only enqueue the fairness plan in this file")
    parser.add_argument("--gap-min", type=float, default=0.05)
    parser.add_argument("--gap-max", type=float, default=0.25)
    args = parser.parse_args()
    if args.noop is not None:
        summary = enqueue_noops(args.noop)
    elif args.plan is not None:
        summary = enqueue_plan(json.loads(args.plan.read_text()))
    elif args.probes is not None:
        summary = probe_latency(args.probes, args.gap_min, args.gap_max, min(args.timeout, 30))
    elif args.text_file is None:
        parser.error("--text-file is needed to enqueue analyses")
    else:
        summary = generate_load(args.jobs, args.text_file.read_text(), args.timeout)
    json.dump(summary, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    # Run the module's own copy, so the task's name is `bench.celery_recipe....`, as the
    # worker registers it, and not `__main__....`.
    from bench.celery_recipe import main as run

    run()
