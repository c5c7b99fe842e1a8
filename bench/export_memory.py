"""Export memory: one user's export of N documents (~2 KB of text each) through ONE worker
process; documents/s and the worker's peak RSS growth during the export, for each N.

    .venv/bin/python -m bench.export_memory [--docs 10000 100000] [--reps 3]
        [--format zip|ndjson] [--export-timeout S] [--out PATH] [--quick]

Setup (all on 127.0.0.1, free ports): a private `redis-server` and moto's S3 server. For
each size, in the order given (smallest first by default), both are emptied and the
documents seeded once (step 1); then each of `--reps` repetitions exports them again
(steps 2-5, a new worker each time):

1. Seeding, fast but faithful to `jobs.documents.Documents.create`: the S3 object at
   `document_key(account, user_id, doc_id)` with the body
   `{"id","account","user_id","title","size_bytes","created_at","text"}` and the Redis hash
   `lr:doc:<id>` with the same fields except the text, ids `doc_` + ULID, written 64 at a
   time through aioboto3. The text is ~2 KB of words drawn at random from a fixed
   vocabulary (so it compresses like prose, not like one repeated sentence). A warm-up user
   with `WARMUP_DOCS` documents is seeded too.
2. ONE worker, `arq jobs.worker.WorkerSettings`, starts; a thread samples its VmRSS from
   /proc/<pid>/status every 50 ms for its whole life.
3. Once it is online, a warm-up export (the warm-up user) runs, so that first-use costs
   (lazy imports, S3 client caches) are not counted as export growth. Then, after 1 s
   idle, the measured export is enqueued with `JobStore.create(kind="export", ...)`.
4. RSS growth = peak VmRSS sampled between the record's started_at and finished_at minus
   the last VmRSS sampled before started_at: the figure the memory target is judged on.
   VmHWM (the kernel's own high-water mark of the process's whole life, which also sees
   spikes between samples) minus the same baseline is recorded beside it, labelled as such.
   documents/s = N / (finished_at - started_at).
5. The archive is downloaded and checked: zip: every CRC (`testzip`), manifest count == N,
   its ids == the seeded ids, 100 random entries' SHA-256 and text; ndjson: N lines with
   the seeded ids, 100 random texts.

With `--model-zipfile`, the script also models in this process, with tracemalloc, what the
zip writer used before commit 7dc32c7 (`zipfile.ZipFile` plus a manifest list in memory,
serialized with `indent=1` at the end) kept per document, which explains the growth with N
measured on that code. The commit measured (and any uncommitted change under jobs/ or api/)
is recorded at the start and the end of the run.

`JOB_TIMEOUT_SECONDS` is raised to 7200 for the worker so a long export is not cut at the
default 300 s; everything else is at its default. Every wait has a deadline; every process
started here is stopped by its pid in a `finally`. If the measured export passes
`--export-timeout`, what was measured so far (documents done, RSS growth so far) is
reported with an extrapolation. The figures go to `bench/results/export_memory.json` (zip;
`export_memory_ndjson.json` for ndjson) through `bench.common.Recorder`, each size's
repetitions as the values of `docs-<N>.<figure>`; RSS timelines are thinned to
`TIMELINE_POINTS` points.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aioboto3
import boto3
from botocore.config import Config
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from ulid import ULID

from bench.analysis_throughput import (
    machine_busy_s,
    process_cpu_s,
    start_process,
    stop_process,
    worker_env,
)
from bench.common import Recorder, add_common_args, exit_on_sigterm, log, our_versions
from jobs.documents import doc_index_key, document_key
from jobs.domains import REGISTRY
from jobs.engine import keys
from jobs.engine.records import JobRecord, now_ms
from jobs.engine.store import JobStore
from jobs.exports import export_key
from jobs.exports.uploads import PartSink
from jobs.settings import Settings
from jobs.storage import open_storage
from tests.support.services import RedisServer, S3Server

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
LOG_DIR = RESULTS / "export_memory_logs"
OUR_BIN = Path(sys.executable).parent
ACCOUNT = "bench"
BUCKET = "bench"
TEXT_BYTES = 2048
WARMUP_DOCS = 200
SEED_CONCURRENCY = 64
SEED_CHUNK = 2048
SAMPLE_EVERY_S = 0.05
POLL_S = 0.2
JOB_TIMEOUT_S = 7200
TARGET_MIB = 64
SPOT_CHECKS = 100
TIMELINE_POINTS = 200


# --------------------------------------------------------------------------- data

_VOCAB_RNG = random.Random(7)
VOCAB = [
    "".join(_VOCAB_RNG.choices("abcdefghijklmnopqrstuvwxyz", k=_VOCAB_RNG.randint(2, 10)))
    for _ in range(2000)
]


def document_text(user_id: str, index: int) -> str:
    """About TEXT_BYTES of words, the same for the same (user, index), different otherwise."""
    rng = random.Random(f"{user_id}:{index}")
    return " ".join(rng.choices(VOCAB, k=TEXT_BYTES // 4))[:TEXT_BYTES]


@dataclass
class Seeded:
    user_id: str
    ids: list[str] = field(default_factory=list)  # in seeding order; index = text index
    seconds: float = 0.0


async def seed_user(settings: Settings, user_id: str, docs: int) -> Seeded:
    """Write `docs` documents exactly as `Documents.create` stores them, many at a time."""
    assert settings.aws_access_key_id and settings.aws_secret_access_key
    config = Config(
        max_pool_connections=SEED_CONCURRENCY,
        s3={"addressing_style": "path"},
        signature_version="s3v4",
        retries={"max_attempts": 5, "mode": "standard"},
    )
    seeded = Seeded(user_id)
    clock = time.monotonic()
    redis = AsyncRedis.from_url(settings.redis_url)
    gate = asyncio.Semaphore(SEED_CONCURRENCY)
    try:
        async with aioboto3.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            aws_access_key_id=settings.aws_access_key_id.get_secret_value(),
            aws_secret_access_key=settings.aws_secret_access_key.get_secret_value(),
            config=config,
        ) as s3:

            async def put(meta: dict[str, Any], text: str) -> None:
                async with gate:
                    await s3.put_object(
                        Bucket=settings.s3_bucket,
                        Key=document_key(ACCOUNT, user_id, meta["id"]),
                        Body=json.dumps({**meta, "text": text}).encode(),
                        ContentType="application/json",
                    )

            for start in range(0, docs, SEED_CHUNK):
                metas: list[tuple[dict[str, Any], str]] = []
                for index in range(start, min(docs, start + SEED_CHUNK)):
                    text = document_text(user_id, index)
                    meta = {
                        "id": f"doc_{ULID()}",
                        "account": ACCOUNT,
                        "user_id": user_id,
                        "title": f"Document {index}",
                        "size_bytes": len(text.encode()),
                        "created_at": now_ms(),
                    }
                    seeded.ids.append(meta["id"])
                    metas.append((meta, text))
                await asyncio.gather(*(put(meta, text) for meta, text in metas))
                async with redis.pipeline(transaction=False) as pipe:
                    for meta, _ in metas:
                        pipe.hset(doc_index_key(meta["id"]), mapping=meta)
                    await pipe.execute()
                done = len(seeded.ids)
                if done % 20480 == 0 or done == docs:
                    rate = done / (time.monotonic() - clock)
                    log(f"seeded {done}/{docs} documents of {user_id} ({rate:.0f}/s)")
    finally:
        await redis.aclose()
    seeded.seconds = time.monotonic() - clock
    return seeded


# ------------------------------------------------------------------------ sampling


def proc_status_kib(pid: int, field_name: str) -> int | None:
    """One `kB` field of /proc/<pid>/status (VmRSS, VmHWM), or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler(threading.Thread):
    """(time, VmRSS KiB) of one process every `interval_s`, until stopped or it exits."""

    def __init__(self, pid: int, interval_s: float = SAMPLE_EVERY_S) -> None:
        super().__init__(daemon=True, name=f"rss-{pid}")
        self.pid = pid
        self.interval_s = interval_s
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            kib = proc_status_kib(self.pid, "VmRSS")
            if kib is None:
                return
            self.samples.append((time.time(), kib))
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def last_before(self, moment: float) -> tuple[float, int] | None:
        before = [s for s in list(self.samples) if s[0] < moment]
        return before[-1] if before else None

    def peak_between(self, start: float, end: float) -> tuple[float, int] | None:
        inside = [s for s in list(self.samples) if start <= s[0] <= end]
        return max(inside, key=lambda s: s[1]) if inside else None


def mib(kib: float) -> float:
    return round(kib / 1024, 1)


# --------------------------------------------------------------------------- runs


def bench_settings(redis_url: str, s3_url: str) -> Settings:
    return Settings(
        _env_file=None,
        environment="development",
        redis_url=redis_url,
        s3_endpoint_url=s3_url,
        s3_bucket=BUCKET,
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        worker_metrics_port=0,
        job_timeout_seconds=JOB_TIMEOUT_S,
    )


async def prepare(settings: Settings, docs: int, user_id: str) -> tuple[Seeded, Seeded]:
    async with open_storage(settings) as storage:
        await storage.ensure_bucket()
    warmup = await seed_user(settings, "warmup", WARMUP_DOCS)
    log(f"seeding {docs} documents for {user_id} ({SEED_CONCURRENCY} at a time)")
    return warmup, await seed_user(settings, user_id, docs)


async def enqueue_export(settings: Settings, user_id: str, fmt: str) -> str:
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        created = await JobStore(redis, settings, REGISTRY).create(
            kind="export", account=ACCOUNT, args={"user_id": user_id, "format": fmt}
        )
        return created.job_id
    finally:
        await redis.aclose()


async def read_record(settings: Settings, job_id: str) -> JobRecord | None:
    redis = AsyncRedis.from_url(settings.redis_url)
    try:
        return await JobStore(redis, settings, REGISTRY).get(job_id)
    finally:
        await redis.aclose()


def wait_online(settings: Settings, proc: subprocess.Popen, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    with Redis.from_url(settings.redis_url) as client:
        while not client.zcard(keys.WORKERS):
            if proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({proc.returncode}) before coming online")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker was not online after {timeout_s:g}s")
            time.sleep(0.05)
    return time.time()


@dataclass
class Watch:
    """What the waiting loop saw: the record at the end, CPU seconds during the job."""

    record: JobRecord | None
    timed_out: bool
    cpu_s: dict[str, float]


def wait_job(
    settings: Settings,
    job_id: str,
    proc: subprocess.Popen,
    timeout_s: float,
    cpu_pids: dict[str, int] | None = None,
) -> Watch:
    """Poll the record until it finishes (or the deadline); CPU seconds of `cpu_pids` (and
    the machine) from when the record shows it started to when it shows it finished."""
    deadline = time.monotonic() + timeout_s
    pids = cpu_pids or {}

    def cpu_now() -> dict[str, float]:
        return {name: process_cpu_s(pid) for name, pid in pids.items()} | {
            "machine": machine_busy_s()
        }

    first: dict[str, float] | None = None
    last_log = time.monotonic()
    record = None
    while True:
        record = asyncio.run(read_record(settings, job_id))
        if record is not None and record.started_at and first is None:
            first = cpu_now()
        if record is not None and record.state.finished:
            break
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}) during {job_id}")
        if time.monotonic() > deadline:
            return Watch(record, True, _cpu_delta(first, cpu_now()))
        if time.monotonic() - last_log > 30 and record is not None:
            log(f"{job_id}: {record.state.value}, {record.stage}")
            last_log = time.monotonic()
        time.sleep(POLL_S)
    return Watch(record, False, _cpu_delta(first, cpu_now()))


def _cpu_delta(first: dict[str, float] | None, last: dict[str, float]) -> dict[str, float]:
    if first is None:
        return {}
    used = {name: last[name] - first[name] for name in last}
    machine = used.pop("machine")
    used["other"] = max(0.0, machine - sum(used.values()))
    return {name: round(value, 2) for name, value in used.items()}


def download(settings: Settings, key: str, path: Path) -> int:
    """Stream the archive to `path` (plain boto3, outside the code under test); its size."""
    assert settings.aws_access_key_id and settings.aws_secret_access_key
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        aws_access_key_id=settings.aws_access_key_id.get_secret_value(),
        aws_secret_access_key=settings.aws_secret_access_key.get_secret_value(),
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    try:
        client.download_file(settings.s3_bucket, key, str(path))
    finally:
        client.close()
    return path.stat().st_size


def verify_archive(settings: Settings, job_id: str, fmt: str, seeded: Seeded) -> dict[str, Any]:
    """Download the archive and check it against what was seeded."""
    index_of = {doc_id: i for i, doc_id in enumerate(seeded.ids)}
    rng = random.Random(11)
    with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp:
        path = Path(tmp) / "archive"
        size = download(settings, export_key(ACCOUNT, job_id, fmt), path)
        problems: list[str] = []
        if fmt == "zip":
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                if bad is not None:
                    problems.append(f"CRC mismatch in {bad}")
                names = archive.namelist()
                manifest = json.loads(archive.read("manifest.json"))
                entries = {e["id"]: e for e in manifest["entries"]}
                if manifest["count"] != len(seeded.ids) or len(entries) != len(seeded.ids):
                    problems.append(f"manifest count {manifest['count']}, {len(entries)} entries")
                if set(entries) != set(index_of):
                    problems.append("manifest ids differ from the seeded ids")
                if len(names) != len(seeded.ids) + 1:
                    problems.append(f"{len(names)} files in the archive")
                for doc_id in rng.sample(sorted(entries), min(SPOT_CHECKS, len(entries))):
                    entry = entries[doc_id]
                    data = archive.read(entry["path"])
                    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                        problems.append(f"{doc_id}: SHA-256 differs from the manifest")
                    if json.loads(data)["text"] != document_text(seeded.user_id, index_of[doc_id]):
                        problems.append(f"{doc_id}: text differs from the seeded one")
            count = manifest["count"]
        else:
            texts: dict[str, str] = {}
            checked = set(rng.sample(seeded.ids, min(SPOT_CHECKS, len(seeded.ids))))
            ids: list[str] = []
            with gzip.open(path, "rt", encoding="utf-8") as lines:
                for line in lines:
                    doc = json.loads(line)
                    ids.append(doc["id"])
                    if doc["id"] in checked:
                        texts[doc["id"]] = doc["text"]
            count = len(ids)
            if count != len(seeded.ids) or set(ids) != set(index_of):
                problems.append(f"{count} lines, ids differ from the seeded ones")
            for doc_id, text in texts.items():
                if text != document_text(seeded.user_id, index_of[doc_id]):
                    problems.append(f"{doc_id}: text differs from the seeded one")
    return {"archive_bytes": size, "count": count, "ok": not problems, "problems": problems[:20]}


def model_zip_bookkeeping(docs: int) -> dict[str, Any]:
    """What `zipfile.ZipFile` (its central directory: filelist and NameToInfo) and an in-memory
    manifest list keep per document, built as `_write_archive` built them before commit
    7dc32c7, measured with tracemalloc in this process; plus the peak while the manifest was
    serialized with `json.dumps(..., indent=1)` at the end."""
    sink = PartSink()
    manifest: list[dict[str, Any]] = []
    data = json.dumps({"id": "x", "text": "y" * 64}).encode()
    tracemalloc.start()
    try:
        with zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive:  # type: ignore[arg-type]
            for _ in range(docs):
                doc_id = f"doc_{ULID()}"
                path = f"documents/{doc_id}.json"
                archive.writestr(path, data)
                manifest.append(
                    {"id": doc_id, "path": path,
                     "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
                )  # fmt: skip
                sink.take()  # the upload drains the sink as it goes
            retained = tracemalloc.get_traced_memory()[0]
            tracemalloc.reset_peak()
            text = json.dumps({"count": docs, "entries": manifest}, indent=1)  # as it was
            archive.writestr("manifest.json", text)
            manifest_chars = len(text)
            del text
            sink.take()
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return {
        "docs": docs,
        "retained_bytes": retained,
        "retained_bytes_per_doc": round(retained / max(docs, 1)),
        "peak_with_manifest_bytes": peak,
        "manifest_json_chars": manifest_chars,
    }


# The documents seeded for the last size, so that a repetition of the same size (`--docs
# 10000 10000 10000`) exports them again instead of seeding them again (moto takes ~140
# documents/s).
_SEEDED: dict[int, tuple[Seeded, Seeded]] = {}


def run_size(
    redis_server: RedisServer,
    s3_server: S3Server,
    docs: int,
    fmt: str,
    timeout_s: float,
    rep: int = 1,
) -> dict[str, Any]:
    settings = bench_settings(redis_server.url, s3_server.url)
    user_id = f"u{docs}"
    label = f"{fmt}-{docs}-{rep}"
    if docs not in _SEEDED:
        _SEEDED.clear()
        with Redis.from_url(redis_server.url) as client:
            client.flushall()
        s3_server.reset()
        _SEEDED[docs] = asyncio.run(prepare(settings, docs, user_id))
        log(f"{label}: seeded {docs} documents in {_SEEDED[docs][1].seconds:.1f}s")
    else:
        log(f"{label}: exporting the {docs} documents seeded for the previous run again")
    warmup, seeded = _SEEDED[docs]
    log_path = LOG_DIR / f"{label}.log"
    log_path.unlink(missing_ok=True)
    proc = sampler = None
    try:
        proc = start_process(
            [str(OUR_BIN / "arq"), "jobs.worker.WorkerSettings"], worker_env(settings), log_path
        )
        spawned = time.time()
        sampler = RssSampler(proc.pid)
        sampler.start()
        online = wait_online(settings, proc, 60)
        log(f"{label}: worker pid {proc.pid} online after {online - spawned:.2f}s; warm-up")
        idle_before_warmup = proc_status_kib(proc.pid, "VmRSS")
        warm_id = asyncio.run(enqueue_export(settings, warmup.user_id, fmt))
        warm = wait_job(settings, warm_id, proc, 120)
        if warm.timed_out or warm.record is None or warm.record.state.value != "succeeded":
            raise RuntimeError(f"{label}: the warm-up export did not succeed; see {log_path}")
        time.sleep(1.0)
        job_id = asyncio.run(enqueue_export(settings, user_id, fmt))
        log(f"{label}: export {job_id} enqueued; waiting up to {timeout_s:.0f}s")
        pids = {"worker": proc.pid}
        for name, server in (("redis", redis_server), ("s3_moto", s3_server)):
            if server.proc is not None:
                pids[name] = server.proc.pid
        watch = wait_job(settings, job_id, proc, timeout_s, pids)
        time.sleep(3 * SAMPLE_EVERY_S)
        hwm_kib = proc_status_kib(proc.pid, "VmHWM")
        sampler.stop()
    finally:
        if sampler is not None:
            sampler.stop()
        stop_process(proc)
    record = watch.record
    if record is None or record.started_at is None:
        raise RuntimeError(f"{label}: the export never started; see {log_path}")
    started = record.started_at / 1000
    ended = record.finished_at / 1000 if record.finished_at else time.time()
    base = sampler.last_before(started)
    peak = sampler.peak_between(started, ended)
    if base is None or peak is None:
        raise RuntimeError(f"{label}: no RSS samples around the export")
    elapsed = ended - started
    result: dict[str, Any] = {
        "docs": docs,
        "rep": rep,
        "format": fmt,
        "job_id": job_id,
        "state": record.state.value,
        "attempt": record.attempt,
        "timed_out": watch.timed_out,
        "seed_s": round(seeded.seconds, 1),
        "seed_docs_per_s": round(docs / seeded.seconds, 1),
        "worker_online_s": round(online - spawned, 2),
        "export_s": round(elapsed, 2),
        "rss_idle_before_warmup_mib": mib(idle_before_warmup or 0),
        "rss_before_mib": mib(base[1]),
        "rss_peak_mib": mib(peak[1]),
        "rss_growth_mib": mib(peak[1] - base[1]),
        "peak_at_s_into_export": round(peak[0] - started, 2),
        "vmhwm_mib": mib(hwm_kib or 0),
        "vmhwm_growth_mib": mib((hwm_kib or 0) - base[1]),
        "rss_end_mib": mib(sampler.samples[-1][1]),
        "cpu_s": watch.cpu_s,
        "samples": len(sampler.samples),
        "rss_timeline": timeline(sampler.samples, started),
        "log": str(log_path.relative_to(ROOT)),
    }
    if record.state.value == "succeeded":
        result["documents_per_s"] = round(docs / elapsed, 1)
        result["result"] = record.result
        result["verified"] = verify_archive(settings, job_id, fmt, seeded)
        log(f"{label}: archive verified: {result['verified']['ok']}")
    else:
        done = _documents_done(record.stage)
        result["documents_done"] = done
        result["documents_per_s"] = round(done / elapsed, 1) if done else None
        result["extrapolated_export_s"] = round(docs * elapsed / done) if done else None
        result["error"] = record.error
    log(
        f"{label}: {record.state.value} in {elapsed:.1f}s, {result['documents_per_s']} docs/s, "
        f"RSS {result['rss_before_mib']} -> {result['rss_peak_mib']} MiB "
        f"(+{result['rss_growth_mib']}), VmHWM +{result['vmhwm_growth_mib']}, CPU {watch.cpu_s}"
    )
    return result


def _documents_done(stage: str | None) -> int | None:
    try:
        return int((stage or "").split("/", 1)[0])
    except ValueError:
        return None


def timeline(samples: list[tuple[float, int]], start: float) -> list[list[float]]:
    """[seconds from the export's start, RSS MiB], thinned to about TIMELINE_POINTS."""
    step = max(1, len(samples) // TIMELINE_POINTS)
    return [[round(t - start, 2), mib(kib)] for t, kib in samples[::step]]


# ------------------------------------------------------------------------- report


def declare(recorder: Recorder, sizes: list[int]) -> None:
    """The figures of this benchmark, in the order the report lists them."""
    for docs in sizes:
        side = f"docs-{docs}"
        recorder.figure(f"{side}.documents_per_s", f"{docs} documents: documents/s",
                        "documents/s", "higher")  # fmt: skip
        recorder.figure(f"{side}.rss_growth_mib", f"{docs} documents: RSS growth (sampled)",
                        "MiB", "lower", digits=1)  # fmt: skip
        recorder.figure(f"{side}.vmhwm_growth_mib",
                        f"{docs} documents: VmHWM growth (kernel peak, whole life)", "MiB",
                        "lower", digits=1)  # fmt: skip
        recorder.figure(f"{side}.export_s", f"{docs} documents: export", "s", "lower")
        recorder.figure(f"{side}.other_cpu_s", f"{docs} documents: CPU of other processes",
                        "s", None, digits=1)  # fmt: skip


def record(recorder: Recorder, result: dict[str, Any]) -> None:
    side = f"docs-{result['docs']}"
    if result.get("documents_per_s") is not None:
        recorder.add(f"{side}.documents_per_s", result["documents_per_s"])
    recorder.add(f"{side}.rss_growth_mib", result["rss_growth_mib"])
    recorder.add(f"{side}.vmhwm_growth_mib", result["vmhwm_growth_mib"])
    recorder.add(f"{side}.export_s", result["export_s"])
    recorder.add(f"{side}.other_cpu_s", result["cpu_s"].get("other", 0.0))


def redis_server_version() -> str:
    answer = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True, timeout=10, check=False
    )
    return answer.stdout.strip()


def table(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| documents | rep | format | export s | documents/s | RSS before MiB | peak RSS MiB "
        "| RSS growth MiB | VmHWM growth MiB | archive MiB | verified | growth < 64 MiB |",
        "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in runs:
        verified = r.get("verified", {})
        archive = verified.get("archive_bytes")
        lines.append(
            f"| {r['docs']} | {r['rep']} | {r['format']} | {r['export_s']:.1f}"
            f"{' (timed out)' if r['timed_out'] else ''} | {r['documents_per_s']} "
            f"| {r['rss_before_mib']} | {r['rss_peak_mib']} | {r['rss_growth_mib']} "
            f"| {r['vmhwm_growth_mib']} | {archive / 2**20 if archive else 0:.1f} "
            f"| {'yes' if verified.get('ok') else 'NO'} "
            f"| {'yes' if r['rss_growth_mib'] < TARGET_MIB else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--reps", type=int, default=3, help="exports per size")
    parser.add_argument("--format", choices=("zip", "ndjson"), default="zip")
    parser.add_argument(
        "--export-timeout", type=float, default=1800.0, help="deadline of one export (s)"
    )
    parser.add_argument(
        "--model-zipfile",
        action="store_true",
        help="also model, with tracemalloc, what zipfile.ZipFile and an in-memory manifest keep "
        "per document (the zip writer before commit 7dc32c7)",
    )
    add_common_args(parser, RESULTS / "export_memory.json")
    args = parser.parse_args()
    out = args.out
    if args.format != "zip" and out == RESULTS / "export_memory.json":
        out = RESULTS / f"export_memory_{args.format}.json"
    exit_on_sigterm()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    sizes = list(dict.fromkeys(args.docs))
    recorder = Recorder(
        "export_memory",
        out,
        quick=args.quick,
        settings={
            "format": args.format,
            "sizes": sizes,
            "reps": args.reps,
            "text_bytes": TEXT_BYTES,
            "warmup_docs": WARMUP_DOCS,
            "target_mib": TARGET_MIB,
            "worker_settings": {"JOB_TIMEOUT_SECONDS": JOB_TIMEOUT_S, "rest": "defaults"},
            "rss_sample_interval_s": SAMPLE_EVERY_S,
            "sides": {f"docs-{docs}": f"{docs} documents, {args.format}" for docs in sizes},
        },
        versions=our_versions(),
    )
    declare(recorder, sizes)
    runs: list[dict[str, Any]] = []
    redis_server = RedisServer()
    s3_server = S3Server()
    try:
        redis_server.start()
        s3_server.start()
        log(f"redis {redis_server.url}, S3 {s3_server.url}")
        for docs in sizes:
            for rep in range(1, args.reps + 1):
                result = run_size(
                    redis_server, s3_server, docs, args.format, args.export_timeout, rep
                )
                runs.append(result)
                record(recorder, result)
                recorder.run(result)
    finally:
        with contextlib.suppress(Exception):
            s3_server.stop()
        redis_server.stop()
    if args.format == "zip" and args.model_zipfile:
        recorder.data["zip_bookkeeping_model"] = [model_zip_bookkeeping(d) for d in sizes]
    recorder.finish()
    print(f"\nexport of N documents (~{TEXT_BYTES} B of text each), format {args.format}, "
          "ONE worker process\n")  # fmt: skip
    print(table(runs))
    for model in recorder.data.get("zip_bookkeeping_model", []):
        print(
            f"\nmodel, {model['docs']} documents: the zip central directory + manifest list "
            f"keep {model['retained_bytes'] / 2**20:.1f} MiB "
            f"({model['retained_bytes_per_doc']} B/document); serializing the manifest "
            f"({model['manifest_json_chars'] / 2**20:.1f} MiB of JSON) peaks at "
            f"{model['peak_with_manifest_bytes'] / 2**20:.1f} MiB"
        )
    print(f"\nresults: {out}")


if __name__ == "__main__":
    main()
