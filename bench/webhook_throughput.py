"""Webhook throughput: deliveries per second from ONE worker process to local receivers
that answer 200 at once.

    .venv/bin/python -m bench.webhook_throughput [--events 1000] [--endpoints 10]
        [--concurrency 20 200] [--reps 3] [--out PATH]

Setup (all on 127.0.0.1, free ports): a private `redis-server`, and one tiny HTTP/1.1
receiver per endpoint (raw asyncio streams in this process: it parses the head, reads the
body, counts it, notes the time and the `webhook-id`, and answers `200` with keep-alive;
no signature check). Per repetition and WORKER_CONCURRENCY, with Redis flushed first:

1. `--endpoints` endpoints for one account (`EndpointStore.create(account, url,
   ["export.completed"])`), then `--events` events published with
   `DeliveryLog.publish(account, "export.completed", f"evt_{i}", {"i": i})`, all BEFORE the
   worker starts (so events x endpoints deliveries are due at once, their attempt-1 arq
   jobs queued).
2. ONE worker, `arq jobs.worker.WorkerSettings`, starts with
   `WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`, `WORKER_CONCURRENCY` as given, the rest default.
   The worker builds an S3 client at start but never calls it (dummy endpoint).
3. The script waits (bounded) until every delivery has reached a receiver and ended, then
   checks every delivery with `DeliveryLog.get`: `succeeded`, one attempt, 200.

deliveries/s = deliveries / (last received - first received), on this host's clock;
wall = last received - worker spawn (the worker's start-up included). CPU seconds of the
worker, Redis and this process (receivers and polling) are read from /proc. Repetitions
interleave the concurrency settings. Every wait has a deadline; every process started here
is stopped by its pid in a `finally`. The figures go to
`bench/results/webhook_throughput.json` (`bench.common.Recorder`), each concurrency's
repetitions as the values of `c<N>.<figure>`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redis.asyncio import Redis as AsyncRedis

from bench.analysis_throughput import (
    machine_busy_s,
    process_cpu_s,
    spread,
    start_process,
    stop_process,
    worker_env,
)
from bench.common import Recorder, add_common_args, exit_on_sigterm, log, our_versions
from jobs.domains import REGISTRY
from jobs.engine import keys
from jobs.engine.store import JobStore
from jobs.settings import Settings
from jobs.webhooks import DeliveryLog, EndpointStore
from jobs.webhooks.deliveries import KIND
from jobs.webhooks.endpoints import endpoint_deliveries_key
from tests.support.services import RedisServer

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DEFAULT_OUT = RESULTS / "webhook_throughput.json"
LOG_DIR = RESULTS / "webhook_throughput_logs"
OUR_BIN = Path(sys.executable).parent
ACCOUNT = "bench"
EVENT_TYPE = "export.completed"
PUBLISH_CONCURRENCY = 32
VERIFY_CHUNK = 500
POLL_S = 0.1
IN_FLIGHT_EVERY_S = 0.02
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


# ----------------------------------------------------------------------- receivers


@dataclass
class Receivers:
    """One minimal HTTP/1.1 server per endpoint, all on the running event loop."""

    count: int
    ports: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    webhook_ids: list[str] = field(default_factory=list)
    per_endpoint: list[int] = field(default_factory=list)
    connections: int = 0
    open_now: int = 0
    max_open: int = 0
    malformed: int = 0
    _servers: list[asyncio.Server] = field(default_factory=list)

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}/hooks/{index}"

    async def start(self) -> None:
        self.per_endpoint = [0] * self.count
        for index in range(self.count):
            server = await asyncio.start_server(
                lambda r, w, i=index: self._handle(i, r, w), "127.0.0.1", 0
            )
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        for server in self._servers:
            await asyncio.wait_for(server.wait_closed(), 5)

    async def _handle(
        self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        self.open_now += 1
        self.max_open = max(self.max_open, self.open_now)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                length, webhook_id = 0, ""
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"webhook-id":
                        webhook_id = value.strip().decode()
                if length:
                    await reader.readexactly(length)
                if not webhook_id:
                    self.malformed += 1
                self.times.append(time.time())
                self.webhook_ids.append(webhook_id)
                self.per_endpoint[index] += 1
                writer.write(RESPONSE)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            self.open_now -= 1
            writer.close()


# ---------------------------------------------------------------------------- runs


def bench_settings(redis_url: str, concurrency: int) -> Settings:
    return Settings(
        _env_file=None,
        environment="development",
        redis_url=redis_url,
        # The worker builds an S3 client at start; webhook deliveries never call it.
        s3_endpoint_url="http://127.0.0.1:9",
        s3_bucket="bench",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
        worker_metrics_port=0,
        webhook_allow_private_networks=True,
        worker_concurrency=concurrency,
    )


async def publish_all(
    store: DeliveryLog, receivers: Receivers, events: int
) -> tuple[list[str], float]:
    """Register the endpoints and publish the events; the endpoint ids and the seconds taken."""
    clock = time.monotonic()
    endpoint_ids = []
    for index in range(receivers.count):
        endpoint, _secret = await store.endpoints.create(
            ACCOUNT, receivers.url(index), [EVENT_TYPE]
        )
        endpoint_ids.append(endpoint.id)
    gate = asyncio.Semaphore(PUBLISH_CONCURRENCY)

    async def publish(i: int) -> int:
        async with gate:
            return await store.publish(ACCOUNT, EVENT_TYPE, f"evt_{i}", {"i": i})

    created = sum(await asyncio.gather(*(publish(i) for i in range(events))))
    if created != events * receivers.count:
        raise RuntimeError(f"publish created {created} deliveries, not {events * receivers.count}")
    return endpoint_ids, time.monotonic() - clock


async def delivery_ids(redis: AsyncRedis, endpoint_ids: list[str]) -> list[str]:
    found: list[str] = []
    for endpoint_id in endpoint_ids:
        found += [
            m.decode() for m in await redis.zrange(endpoint_deliveries_key(endpoint_id), 0, -1)
        ]
    return found


async def states(redis: AsyncRedis, ids: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    async with redis.pipeline(transaction=False) as pipe:
        for delivery_id in ids:
            pipe.hget(keys.record(delivery_id), "state")
        for value in await pipe.execute():
            state = value.decode() if value else "missing"
            if state in ("queued", "running", "retrying"):
                state = "pending"  # as the delivery log shows a delivery's job
            counts[state] = counts.get(state, 0) + 1
    return counts


async def verify(store: DeliveryLog, ids: list[str]) -> dict[str, Any]:
    """Every delivery through `DeliveryLog.get`: succeeded, one attempt, a 200."""
    by_state: dict[str, int] = {}
    attempts_hist: dict[int, int] = {}
    latencies: list[int] = []
    bad: list[str] = []
    for start in range(0, len(ids), VERIFY_CHUNK):
        chunk = ids[start : start + VERIFY_CHUNK]
        for delivery_id, delivery in zip(
            chunk, await asyncio.gather(*(store.get(d) for d in chunk)), strict=True
        ):
            if delivery is None:
                by_state["missing"] = by_state.get("missing", 0) + 1
                bad.append(delivery_id)
                continue
            by_state[delivery.state] = by_state.get(delivery.state, 0) + 1
            attempts_hist[len(delivery.attempts)] = attempts_hist.get(len(delivery.attempts), 0) + 1
            last = delivery.attempts[-1] if delivery.attempts else {}
            if last.get("latency_ms") is not None:
                latencies.append(last["latency_ms"])
            if delivery.state != "succeeded" or last.get("status_code") != 200:
                bad.append(delivery_id)
    latencies.sort()
    return {
        "checked": len(ids),
        "states": by_state,
        "attempts": {str(k): v for k, v in sorted(attempts_hist.items())},
        "ok": not bad and by_state.get("succeeded", 0) == len(ids),
        "bad_sample": bad[:10],
        "attempt_latency_ms": {
            "median": statistics.median(latencies),
            "p99": latencies[int(0.99 * (len(latencies) - 1))],
            "max": latencies[-1],
        }
        if latencies
        else None,
    }


async def wait_online(redis: AsyncRedis, proc: Any, timeout_s: float) -> float:
    deadline = time.monotonic() + timeout_s
    while not await redis.zcard(keys.WORKERS):
        if proc.poll() is not None:
            raise RuntimeError(f"the worker exited ({proc.returncode}) before coming online")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the worker was not online after {timeout_s:g}s")
        await asyncio.sleep(0.05)
    return time.time()


async def sample_in_flight(redis: AsyncRedis, into: list[tuple[float, int]]) -> None:
    """(time, deliveries running in the worker) every IN_FLIGHT_EVERY_S, until cancelled:
    a running delivery is in the engine's running index of its kind."""
    key = keys.running(KIND)
    while True:
        into.append((time.time(), await redis.zcard(key)))
        await asyncio.sleep(IN_FLIGHT_EVERY_S)


async def run_rep(
    redis_server: RedisServer, events: int, endpoints: int, concurrency: int, rep: int
) -> dict[str, Any]:
    label = f"c{concurrency}-{rep}"
    settings = bench_settings(redis_server.url, concurrency)
    expected = events * endpoints
    receivers = Receivers(endpoints)
    redis = AsyncRedis.from_url(settings.redis_url)
    log_path = LOG_DIR / f"{label}.log"
    log_path.unlink(missing_ok=True)
    proc = sampler = None
    in_flight: list[tuple[float, int]] = []
    try:
        await redis.flushall()
        await receivers.start()
        store = DeliveryLog(JobStore(redis, settings, REGISTRY), EndpointStore(redis, settings))
        endpoint_ids, publish_s = await publish_all(store, receivers, events)
        ids = await delivery_ids(redis, endpoint_ids)
        queued = await redis.zcard(settings.queue_name)
        log(f"{label}: {len(ids)} deliveries published in {publish_s:.1f}s ({queued} arq jobs)")
        if len(ids) != expected or queued != expected:
            raise RuntimeError(f"{label}: {len(ids)} deliveries, {queued} queued jobs")
        pids = {"redis": redis_server.proc.pid if redis_server.proc else 0}
        cpu_start = {name: process_cpu_s(pid) for name, pid in pids.items()}
        own_start, machine_start = time.process_time(), machine_busy_s()
        proc = start_process(
            [str(OUR_BIN / "arq"), "jobs.worker.WorkerSettings"], worker_env(settings), log_path
        )
        spawned = time.time()
        online = await wait_online(redis, proc, 60)
        worker_cpu_online_s = process_cpu_s(proc.pid)
        sampler = asyncio.create_task(sample_in_flight(redis, in_flight))
        timeout_s = 60 + expected / 10
        deadline = time.monotonic() + timeout_s
        while len(receivers.times) < expected:
            if proc.poll() is not None:
                raise RuntimeError(f"{label}: the worker exited ({proc.returncode}); {log_path}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{label}: {len(receivers.times)}/{expected} received after {timeout_s:g}s"
                )
            await asyncio.sleep(POLL_S)
        worker_cpu_s = process_cpu_s(proc.pid)
        sampler.cancel()
        cpu = {name: process_cpu_s(pid) - cpu_start[name] for name, pid in pids.items()}
        cpu["worker"] = worker_cpu_s
        cpu["receivers_and_driver"] = time.process_time() - own_start
        cpu["other"] = max(0.0, machine_busy_s() - machine_start - sum(cpu.values()))
        # Each delivery's record is written just after its answer: wait for the last ones.
        settle_deadline = time.monotonic() + 60
        while (counts := await states(redis, ids)).get("succeeded", 0) < expected:
            if set(counts) - {"succeeded", "pending"} or time.monotonic() > settle_deadline:
                break
            await asyncio.sleep(POLL_S)
        checked = await verify(store, ids)
    finally:
        if sampler is not None:
            sampler.cancel()
        if proc is not None:
            await asyncio.to_thread(stop_process, proc)
        await receivers.stop()
        await redis.aclose()
    first, last = min(receivers.times), max(receivers.times)
    received = len(receivers.times)
    running = [n for t, n in in_flight if first <= t <= last] or [0]
    result = {
        "worker_concurrency": concurrency,
        "rep": rep,
        "events": events,
        "endpoints": endpoints,
        "deliveries": expected,
        "published_before_worker_start": True,
        "publish_s": round(publish_s, 2),
        "received": received,
        "duplicates": received - len(set(receivers.webhook_ids)),
        "malformed": receivers.malformed,
        "per_endpoint": receivers.per_endpoint,
        "deliveries_per_s": expected / (last - first),
        "span_s": last - first,
        "wall_s": last - spawned,
        "worker_online_s": online - spawned,
        "first_received_after_spawn_s": first - spawned,
        "receiver_connections": receivers.connections,
        "receiver_max_open_connections": receivers.max_open,
        "cpu_s": {name: round(value, 2) for name, value in cpu.items()},
        "worker_cpu_ms_per_delivery": round(1000 * cpu["worker"] / expected, 3),
        # Without the worker's start-up (imports, clients): its CPU from online to the end.
        "worker_cpu_ms_per_delivery_after_start": round(
            1000 * (worker_cpu_s - worker_cpu_online_s) / expected, 3
        ),
        "in_flight": {
            "max": max(running),
            "mean": round(statistics.fmean(running), 1),
            "samples": len(running),
        },
        "verified": checked,
        "log": str(log_path.relative_to(ROOT)),
    }
    log(
        f"{label}: {result['deliveries_per_s']:.1f} deliveries/s, span {result['span_s']:.1f}s, "
        f"wall {result['wall_s']:.1f}s, connections {receivers.connections} "
        f"(max open {receivers.max_open}), CPU s {result['cpu_s']}, "
        f"verified {checked['ok']} {checked['states']}"
    )
    if not checked["ok"] or received != expected or result["duplicates"]:
        raise RuntimeError(f"{label}: delivery check failed: {checked}; see {log_path}")
    return result


# ------------------------------------------------------------------------- report


def declare(recorder: Recorder, concurrencies: list[int]) -> None:
    """The figures of this benchmark, in the order the report lists them."""
    for n in concurrencies:
        side = f"c{n}"
        recorder.figure(f"{side}.deliveries_per_s", f"concurrency {n}: deliveries/s",
                        "deliveries/s", "higher")  # fmt: skip
        recorder.figure(f"{side}.wall_s", f"concurrency {n}: wall, start-up included", "s",
                        "lower")  # fmt: skip
        recorder.figure(f"{side}.worker_cpu_ms_per_delivery_after_start",
                        f"concurrency {n}: worker CPU per delivery after start-up", "ms",
                        "lower", digits=2)  # fmt: skip
        recorder.figure(f"{side}.in_flight_max", f"concurrency {n}: deliveries in flight, max",
                        "deliveries", None, digits=0)  # fmt: skip
        recorder.figure(f"{side}.other_cpu_s", f"concurrency {n}: CPU of other processes", "s",
                        None, digits=1)  # fmt: skip


def record(recorder: Recorder, result: dict[str, Any]) -> None:
    side = f"c{result['worker_concurrency']}"
    recorder.add(f"{side}.deliveries_per_s", result["deliveries_per_s"])
    recorder.add(f"{side}.wall_s", result["wall_s"])
    recorder.add(
        f"{side}.worker_cpu_ms_per_delivery_after_start",
        result["worker_cpu_ms_per_delivery_after_start"],
    )
    recorder.add(f"{side}.in_flight_max", result["in_flight"]["max"])
    recorder.add(f"{side}.other_cpu_s", result["cpu_s"]["other"])


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[int, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(run["worker_concurrency"], []).append(run)
    return [
        {
            "worker_concurrency": concurrency,
            "runs": len(group),
            "deliveries_per_s": spread([r["deliveries_per_s"] for r in group]),
            "wall_s": spread([r["wall_s"] for r in group]),
            "worker_cpu_ms_per_delivery_after_start": spread(
                [r["worker_cpu_ms_per_delivery_after_start"] for r in group]
            ),
            "all_succeeded": all(r["verified"]["ok"] for r in group),
        }
        for concurrency, group in sorted(groups.items())
    ]


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| WORKER_CONCURRENCY | runs | deliveries/s median [min-max] | wall s median [min-max] "
        "| worker CPU ms/delivery (after start-up) | all succeeded |",
        "|---:|---:|---|---|---:|---|",
    ]
    for row in rows:
        d, w = row["deliveries_per_s"], row["wall_s"]
        lines.append(
            f"| {row['worker_concurrency']} | {row['runs']} "
            f"| {d['median']:.1f} [{d['min']:.1f}-{d['max']:.1f}] "
            f"| {w['median']:.1f} [{w['min']:.1f}-{w['max']:.1f}] "
            f"| {row['worker_cpu_ms_per_delivery_after_start']['median']:.2f} "
            f"| {'yes' if row['all_succeeded'] else 'NO'} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[20, 200])
    parser.add_argument("--reps", type=int, default=3)
    add_common_args(parser, DEFAULT_OUT)
    args = parser.parse_args()
    exit_on_sigterm()
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    defaults = Settings(_env_file=None, environment="development")
    concurrencies = list(dict.fromkeys(args.concurrency))
    recorder = Recorder(
        "webhook_throughput",
        args.out,
        quick=args.quick,
        settings={
            "events": args.events,
            "endpoints": args.endpoints,
            "deliveries": args.events * args.endpoints,
            "reps": args.reps,
            "published": "all events before the worker starts",
            "receivers": "one local HTTP receiver per endpoint, answering 200 at once",
            "worker_settings": {
                "WEBHOOK_ALLOW_PRIVATE_NETWORKS": True,
                "WORKER_POLL_DELAY_SECONDS": defaults.worker_poll_delay_seconds,
                "rest": "defaults",
            },
            "sides": {f"c{n}": f"WORKER_CONCURRENCY={n}" for n in concurrencies},
        },
        versions=our_versions(),
    )
    declare(recorder, concurrencies)
    runs: list[dict[str, Any]] = []
    redis_server = RedisServer()
    try:
        redis_server.start()
        log(f"redis {redis_server.url}")
        for rep in range(1, args.reps + 1):
            for concurrency in concurrencies:
                result = asyncio.run(
                    run_rep(redis_server, args.events, args.endpoints, concurrency, rep)
                )
                runs.append(result)
                record(recorder, result)
                recorder.run(result)
    finally:
        redis_server.stop()
    recorder.finish()
    print(f"\n{args.events} events x {args.endpoints} endpoints = "
          f"{args.events * args.endpoints} deliveries, published before the worker starts, "
          "ONE worker process, receivers answering 200 at once\n")  # fmt: skip
    print(table(summarize(runs)))
    print(f"\nresults: {args.out}")


if __name__ == "__main__":
    main()
