"""Analysis batches: what a 10,000-document batch costs, against the same as single jobs.

    .venv/bin/python -m bench.batches [--documents 10000] [--singles 10000]

On a private Redis, moto's S3 and the fake Messages API (a Message Batch `ended` after
`--batch-latency` seconds), in this process: the documents are stored once; then

- the API's answer time for `POST /v1/analysis-batches` with every id (in-process ASGI);
- an economy batch of them run to the end by one worker: wall time, Message Batches made,
  Redis memory of the batch's own keys (its record, its attempts, `lr:abatch:<job>:*`);
- a standard batch of them (`--standard`, one call each at `--delay` seconds);
- the same documents as single analyses (`--singles`): the memory of their own keys
  (records, attempts, kept answers, usage markers), after they all succeeded;
- the price ratio economy/standard from `GET /v1/usage` (`by_mode`, Sonnet's prices).

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from api.main import create_app
from jobs.documents import Documents
from jobs.domains import REGISTRY
from jobs.engine.arq_adapter import build_worker
from jobs.engine.lifecycle import worker_settings
from jobs.engine.store import JobStore
from jobs.settings import Settings
from jobs.storage import open_storage
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.services import S3_ACCESS_KEY, S3_SECRET_KEY, RedisServer, S3Server

KEY = "bench-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
# Sonnet's prices per million tokens: input, output, cache read, cache write (5 minutes).
PRICES = {"input_tokens": 3.0, "output_tokens": 15.0, "cache_read_input_tokens": 0.3,
          "cache_creation_input_tokens": 3.75}  # fmt: skip


async def keys_memory(redis: Redis, names: list[str]) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.memory_usage(name, samples=0)
        return sum(n or 0 for n in await pipe.execute())


async def own_memory(redis: Redis, patterns: list[str]) -> int:
    total = 0
    for pattern in patterns:
        async for key in redis.scan_iter(match=pattern, count=1000):
            total += await redis.memory_usage(key, samples=0) or 0
    return total


async def wait_done(store: JobStore, job_ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(job_ids)
    while pending and time.monotonic() < deadline:
        states = [await store.state(j) for j in pending[:500]]
        finished = {j for j, s in zip(pending, states, strict=False) if s and s.finished}
        pending = [j for j in pending if j not in finished]
        if pending:
            await asyncio.sleep(0.2)
    if pending:
        raise SystemExit(f"{len(pending)} job(s) not finished within {timeout_s}s")


def cost(rows: list[dict[str, Any]], mode: str) -> float:
    return sum(
        r[name] * PRICES[name] * r["price_factor"] / 1e6
        for r in rows
        if r["mode"] == mode
        for name in PRICES
    )


async def run_worker(settings: Settings) -> tuple[Any, asyncio.Task[Any]]:
    worker = build_worker(worker_settings(settings, REGISTRY), handle_signals=False)
    return worker, asyncio.create_task(worker.async_run())


async def stop_worker(worker: Any, task: asyncio.Task[Any]) -> None:
    await worker.close()
    task.cancel()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    redis_server, s3 = RedisServer().start(), S3Server().start()
    claude = FakeAnthropic(batch_latency_s=args.batch_latency, delay_s=args.delay).start()
    settings = Settings(
        environment="development", redis_url=redis_server.url, s3_endpoint_url=s3.url,
        s3_bucket="bench", aws_access_key_id=S3_ACCESS_KEY, aws_secret_access_key=S3_SECRET_KEY,
        api_keys={"bench": [f"plain:{KEY}"]}, anthropic_api_key="sk-ant-bench",
        anthropic_base_url=claude.url, worker_metrics_port=0, worker_concurrency=50,
        analysis_concurrency=64, analysis_batch_concurrency=32,
        analysis_batch_poll_seconds=0.5, analysis_batch_poll_max_seconds=2,
        worker_poll_delay_seconds=0.05,
    )  # fmt: skip
    out: dict[str, Any] = {"documents": args.documents}
    redis = Redis.from_url(settings.redis_url)
    try:
        async with open_storage(settings) as storage:
            await storage.ensure_bucket()
            documents = Documents(redis, storage, settings.max_document_bytes)
            ids: list[str] = []
            for start in range(0, args.documents, 200):
                made = await asyncio.gather(*(
                    documents.create("bench", "u-1", None, f"Document {n}: quarterly figures.")
                    for n in range(start, min(args.documents, start + 200))
                ))  # fmt: skip
                ids += [m.id for m in made]
        app = create_app(settings, REGISTRY)
        store = JobStore(redis, settings, REGISTRY)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://b") as api:
                modes = ["economy", *(["standard"] if args.standard else [])]
                for mode in modes:
                    body = {"document_ids": ids, "mode": mode}
                    clock = time.perf_counter()
                    answer = await api.post("/v1/analysis-batches", headers=HEADERS, json=body)
                    post_s = time.perf_counter() - clock
                    assert answer.status_code == 202, answer.text
                    job_id = answer.json()["id"]
                    queued = await own_memory(redis, [f"lr:abatch:{job_id}:*", f"lr:job:{job_id}*"])
                    worker, task = await run_worker(settings)
                    clock = time.perf_counter()
                    await wait_done(store, [job_id], 3600)
                    wall = time.perf_counter() - clock
                    await stop_worker(worker, task)
                    job = (await api.get(f"/v1/jobs/{job_id}", headers=HEADERS)).json()
                    out[mode] = {
                        "post_seconds": round(post_s, 3),
                        "wall_seconds": round(wall, 1),
                        "state": job["state"],
                        "succeeded": job["result"]["succeeded"],
                        "message_batches": len(
                            [e for e in claude.batch_log if e["op"] == "create"]
                        ),
                        "claude_calls": len(claude.requests),
                        "redis_own_bytes_queued": queued,
                        "redis_own_bytes_done": await own_memory(
                            redis, [f"lr:abatch:{job_id}:*", f"lr:job:{job_id}*"]
                        ),
                    }
                    claude.reset()
                if args.singles:
                    singles: list[str] = []
                    clock = time.perf_counter()
                    for doc_id in ids[: args.singles]:
                        answer = await api.post(
                            f"/v1/documents/{doc_id}/analyses", headers=HEADERS, json={}
                        )
                        singles.append(answer.json()["id"])
                    post_all = time.perf_counter() - clock
                    queued = await own_memory(redis, [f"lr:job:{j}*" for j in singles[:1]])
                    worker, task = await run_worker(settings)
                    clock = time.perf_counter()
                    await wait_done(store, singles, 3600)
                    wall = time.perf_counter() - clock
                    await stop_worker(worker, task)
                    names = [f"lr:job:{j}{s}" for j in singles for s in ("", ":attempts")]
                    done = await keys_memory(redis, names)
                    done += await own_memory(redis, ["lr:usage-counted:*", "lr:analysis-answer:*"])
                    out["singles"] = {
                        "jobs": len(singles),
                        "post_seconds_all": round(post_all, 1),
                        "wall_seconds": round(wall, 1),
                        "redis_own_bytes_one_queued": queued,
                        "redis_own_bytes_done": done,
                    }
                usage = (await api.get("/v1/usage", headers=HEADERS)).json()["by_mode"]
                out["usage_by_mode"] = usage
                # Per document: the standard ones are the singles and the standard batch.
                standard_docs = args.singles + (args.documents if args.standard else 0)
                if standard_docs and cost(usage, "standard"):
                    per_standard = cost(usage, "standard") / standard_docs
                    per_economy = cost(usage, "economy") / args.documents
                    out["price_ratio_economy_to_standard"] = round(per_economy / per_standard, 3)
    finally:
        await redis.aclose()
        claude.stop()
        s3.stop()
        redis_server.stop()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--singles", type=int, default=10_000)
    parser.add_argument("--standard", action="store_true")
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--batch-latency", type=float, default=3.0)
    print(json.dumps(asyncio.run(main(parser.parse_args())), indent=1))
