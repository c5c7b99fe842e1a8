"""The scale section: `bench/scale.py`'s `results/scale.json`.

How far one Redis carries: the drain rate as worker processes are added, the POST rate as
uvicorn workers are added, what each job costs the one Redis (commands and CPU, ours beside
raw arq and SAQ), and the ceiling of one Redis core that cost projects, without and with a
replica and `REDIS_MIN_REPLICAS=1`. No target: docs/scaling.md reads these figures against
the sizing the service is planned for.
"""

from __future__ import annotations

from bench.report import Panel, Section, SummaryRow, View
from bench.sections import side_table

DRAIN_SIDES = ("ours", "arq-tuned", "saq", "ours-replica")
PEERS = ("arq-tuned", "saq")
API_PATHS = (
    ("ours-api", "the API's POST and our worker"),
    ("ours-api-wait", "the same with a replica and REDIS_MIN_REPLICAS=1"),
)


def _counts(view: View, side: str) -> list[int]:
    """The worker counts `side` ran with (from the run's configurations)."""
    found = []
    for sid in view.settings.get("sides") or {}:
        name, _, workers = sid.rpartition("-w")
        if name == side and workers.isdigit():
            found.append(int(workers))
    return sorted(found)


def _most(view: View, side: str) -> str | None:
    counts = _counts(view, side)
    return f"{side}-w{counts[-1]}" if counts else None


def _series(view: View, side: str, suffix: str) -> str:
    """`n: median [min-max]` for each worker count `side` ran with."""
    return ", ".join(
        f"{n}: {view.fmt(f'{side}-w{n}.{suffix}')}"
        for n in _counts(view, side)
        if view.has(f"{side}-w{n}.{suffix}")
    )


def summary(view: View) -> SummaryRow:
    parts = [
        f"drain jobs/s by worker processes ({_series(view, 'ours', 'jobs_per_s')})",
        f"`POST /v1/exports` requests/s by uvicorn workers "
        f"({_series(view, 'http', 'requests_per_s')})",
    ]
    for name, what in API_PATHS:
        if view.has(f"{name}.ceiling_jobs_per_s"):
            parts.append(
                f"one Redis core's projected ceiling, {what}: "
                f"{view.fmt(f'{name}.ceiling_jobs_per_s')} jobs/s "
                f"({view.fmt(f'{name}.redis_cpu_us_per_job')} us of Redis CPU per job)"
            )
    peers = []
    for side in ("ours", *PEERS):
        sid = _most(view, side)
        if sid and view.has(f"{sid}.ceiling_jobs_per_s"):
            peers.append(
                f"{sid}: {view.fmt(f'{sid}.redis_cpu_us_per_job')} us and "
                f"{view.fmt(f'{sid}.redis_commands_per_job')} Redis commands per job, ceiling "
                f"{view.fmt(f'{sid}.ceiling_jobs_per_s')} jobs/s"
            )
    return SummaryRow(
        "how far one Redis carries: drain and POST rate as processes are added, Redis CPU "
        "per job and one Redis core's projected ceiling",
        "; ".join(parts),
        "enqueue and drain, in-process enqueue: " + "; ".join(peers),
    )


def body(view: View) -> list[str]:
    s = view.settings
    lines = [
        f"**Drain**: {s.get('jobs', '?')} trivial jobs ({s.get('job', '?')}) enqueued "
        "in-process, then drained by the worker processes started at once.",
        "",
        *side_table(
            view,
            [
                ("jobs/s", "jobs_per_s", None),
                ("Redis commands/job", "redis_commands_per_job", None),
                ("Redis CPU us/job", "redis_cpu_us_per_job", None),
                ("of which enqueue", "enqueue_redis_cpu_us_per_job", None),
                ("of which drain", "drain_redis_cpu_us_per_job", None),
                ("Redis busy while draining, % of a core", "drain_redis_busy_percent", None),
                ("one Redis core's ceiling, jobs/s", "ceiling_jobs_per_s", None),
                ("Redis CPU per job in GET round trips", "get_equivalents_per_job", None),
                ("Redis memory per finished job, bytes", "retained_bytes_per_job", None),
            ],
        ),
        "",
        f"**`POST /v1/exports`** under wrk ({s.get('wrk', '?')}), no worker running:",
        "",
        *side_table(
            view,
            [
                ("requests/s", "requests_per_s", None),
                ("p99 ms", "p99_ms", None),
                ("Redis commands/request", "redis_commands_per_request", None),
                ("Redis CPU us/request", "redis_cpu_us_per_request", None),
                ("Redis busy, % of a core", "redis_busy_percent", None),
            ],
        ),
        "",
        "Redis CPU is `used_cpu_sys + used_cpu_user` of `INFO cpu` and commands are "
        "`INFO commandstats` (Lua's inner calls included), read around each phase; the "
        "benchmark's own progress polls are taken out. A side's ceiling is one second of one "
        "Redis core over its Redis CPU per job, enqueue and drain: Redis runs commands on one "
        "thread, and its CPU per command falls as load batches replies, so a cost measured "
        "below saturation projects a conservative ceiling.",
    ]
    if view.has("redis.idle_cpu_percent"):
        lines[-1] += (
            f" Redis with nothing to do used {view.fmt('redis.idle_cpu_percent')} % of a core; "
            "that housekeeping is in every phase's CPU, so in the per-job figures too."
        )
    if view.has("redis.get_cpu_us"):
        lines[-1] += (
            f" One `GET` round trip cost this Redis {view.fmt('redis.get_cpu_us')} us of CPU "
            "(median of each repetition's measurements): a job's cost in GET round trips "
            "carries the projection to another machine, whose Redis serves a known rate of "
            "unpipelined GETs per core."
        )
    lines[-1] += (
        " Memory per finished job is `MEMORY USAGE` of every key after the drain, per job: "
        "what each side keeps of a finished job (ours: the record, its attempts and index "
        "entries, for JOB_RETENTION_SECONDS; arq: its result; SAQ: its job), without the "
        "allocator's own overhead."
    )
    paths = s.get("api_paths") or {}
    projected = [
        f"- {what} (`{paths[name][0]}` per request plus `{paths[name][1]}`'s drain per job): "
        f"{view.fmt(f'{name}.redis_cpu_us_per_job')} us of Redis CPU per job, ceiling "
        f"{view.fmt(f'{name}.ceiling_jobs_per_s')} jobs/s"
        for name, what in API_PATHS
        if name in paths and view.has(f"{name}.ceiling_jobs_per_s")
    ]
    if projected:
        lines += ["", "One Redis core's projected ceiling on the production path:", "", *projected]
    ratios = [
        f"uvicorn --workers {n}: {view.fmt(f'ratio.w{n}.wait_over_plain')}"
        for n in _counts(view, "http-wait")
        if view.has(f"ratio.w{n}.wait_over_plain")
    ]
    if ratios:
        lines += [
            "",
            "What `WAIT` costs the POST rate (with a replica and REDIS_MIN_REPLICAS=1, over "
            "without, within each repetition): " + "; ".join(ratios) + ".",
        ]
    lines += ["", "What these figures say and the plan past one Redis: docs/scaling.md."]
    return lines


def charts(view: View) -> list[Panel]:
    sides = list(view.settings.get("sides") or {})
    drains = [sid for sid in sides if sid.rpartition("-w")[0] in DRAIN_SIDES]
    https = [sid for sid in sides if sid.rpartition("-w")[0] in ("http", "http-wait")]
    ceilings = [f"{sid}.ceiling_jobs_per_s" for sid in drains] + [
        f"{name}.ceiling_jobs_per_s" for name, _ in API_PATHS
    ]
    return [
        Panel("jobs/s drained", tuple(f"{sid}.jobs_per_s" for sid in drains)),
        Panel("POST requests/s", tuple(f"{sid}.requests_per_s" for sid in https)),
        Panel("Redis CPU us per job", tuple(f"{sid}.redis_cpu_us_per_job" for sid in drains)),
        Panel("one Redis core's ceiling, jobs/s", tuple(ceilings)),
    ]


SECTION = Section(
    name="scale",
    title="How far one Redis carries",
    source="bench/scale.py",
    order=85,
    summary=summary,
    body=body,
    charts=charts,
)
