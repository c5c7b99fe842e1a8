"""A real Redis failover under load: a primary, two replicas and three Sentinels, the API
under uvicorn and two `arq` workers, all on Sentinel with `REDIS_MIN_REPLICAS=1`; the
primary is killed (`kill -9`) while analyses are being posted.

Every analysis answered 202 must succeed, each calling Claude exactly once; no answer is
a 500, and every 503 carries `Retry-After`; both workers survive and take jobs from the
promoted replica. The failover's figures are printed: kill to the Sentinels' agreement,
to the first 202, to the first job run wholly after the kill; and the 503s. It runs with
`REDIS_RETRY_SECONDS` at 20 (requests wait through the switch) and at 1 (they give up and
answer 503, and jobs meet Redis errors). Run it alone
with `.venv/bin/pytest tests/test_failover.py -s`.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from uuid import uuid4

import httpx
import pytest

from jobs.engine import keys
from jobs.settings import Settings
from jobs.storage import open_storage
from tests.conftest import ACME_KEY, ADMIN_KEY, eventually, make_settings
from tests.support.api_server import ApiServer
from tests.support.fake_anthropic import FakeAnthropic
from tests.support.processes import kill, start_worker
from tests.support.sentinel import SentinelDeployment, node
from tests.support.services import S3Server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

N_ANALYSES = 240
LOAD_S = 12.0  # the analyses are posted evenly over this window
KILL_AT_S = 4.0  # into the load
MARKER = re.compile(r"failover-doc-(\d+)\b")
WORKER = "jobs.worker.WorkerSettings"
ACME = {"Authorization": f"Bearer {ACME_KEY}"}


@dataclass
class Answer:
    sent: float  # monotonic
    answered: float
    status: int  # 0: no answer (the connection failed)
    retry_after: str | None = None


@dataclass
class Posted:
    doc: int
    document_id: str
    job_id: str = ""
    answers: list[Answer] = field(default_factory=list)
    job: dict = field(default_factory=dict)


@dataclass
class Stack:
    workdir: Path
    retry_s: float
    deployment: SentinelDeployment = field(default_factory=SentinelDeployment)
    s3: S3Server = field(default_factory=S3Server)
    claude: FakeAnthropic = field(default_factory=FakeAnthropic)
    api: ApiServer | None = None
    workers: list = field(default_factory=list)
    settings: Settings | None = None

    def start(self) -> Stack:
        self.deployment.start()
        self.s3.start()
        self.claude.delay_s = 0.05
        self.claude.start()
        self.settings = failover_settings(
            self.deployment, self.s3.url, self.claude.url, self.retry_s
        )
        self.api = ApiServer(self.settings, self.workdir / "api.log")
        self.workers = [
            start_worker(
                self.settings, self.workdir / f"worker-{n}.log", "jobs.worker.WorkerSettings"
            )
            for n in range(2)
        ]
        return self

    def stop(self) -> None:
        for worker in self.workers:
            kill(worker)
        if self.api is not None:
            self.api.stop()
        self.claude.stop()
        self.s3.stop()
        self.deployment.stop()


def failover_settings(
    deployment: SentinelDeployment, s3_url: str, claude_url: str, retry_s: float
) -> Settings:
    """The API's and workers' settings: Redis through the Sentinels only (REDIS_URL's host
    is a closed port, to show it is not used), WAIT for one replica before a 202."""
    return make_settings(
        "redis://127.0.0.1:9/0",
        s3_url,
        redis_sentinels=deployment.addresses,
        redis_min_replicas=1,
        redis_replica_timeout_seconds=1.0,
        redis_retry_seconds=retry_s,
        anthropic_api_key="sk-ant-failover",
        anthropic_base_url=claude_url,
        worker_lease_seconds=3.0,
        worker_poll_delay_seconds=0.05,
        job_retry_base_seconds=0.5,
        job_retry_max_seconds=2.0,
        job_timeout_seconds=30.0,
    )


# 20 s (the default): requests wait for the new primary; 1 s: they give up first, and the
# API answers 503 with Retry-After, the workers' Redis calls fail under their jobs.
@pytest.mark.parametrize("retry_s", [20.0, 1.0], ids=["redis-retry-20s", "redis-retry-1s"])
async def test_a_primary_killed_mid_load_loses_no_acknowledged_job_and_answers_no_500(
    tmp_path, retry_s
):
    stack = Stack(tmp_path, retry_s).start()
    assert stack.api is not None and stack.settings is not None
    http = httpx.AsyncClient(base_url=stack.api.url, timeout=60)
    try:
        async with open_storage(stack.settings) as storage:
            await storage.ensure_bucket()
        await _wait_workers_online(http, 2)
        posted = await _create_documents(http)
        started = time.monotonic()
        loading = asyncio.create_task(_post_all(http, posted, started))
        await asyncio.sleep(max(0.0, started + KILL_AT_S - time.monotonic()))
        killed_port = await asyncio.to_thread(stack.deployment.kill_primary)
        kill_mono, kill_wall = time.monotonic(), time.time()
        new_port = await asyncio.to_thread(stack.deployment.wait_promoted, 60.0)
        agreed_s = time.monotonic() - kill_mono
        await loading
        await _wait_all_ended(http, posted)

        answers = [a for p in posted for a in p.answers]
        statuses = Counter(a.status for a in answers)
        assert not [a for a in answers if a.status >= 500 and a.status != 503], statuses
        assert all(a.retry_after for a in answers if a.status == 503), "a 503 without Retry-After"
        wrong = [(p.job_id, p.job["state"], p.job.get("error")) for p in posted
                 if p.job["state"] != "succeeded"]  # fmt: skip
        assert not wrong, f"{len(wrong)} acknowledged analyses did not succeed: {wrong[:5]}"
        calls = Counter(
            int(m.group(1))
            for r in stack.claude.requests
            if (m := MARKER.search(json.dumps(r["body"])))
        )
        assert {p.doc: calls[p.doc] for p in posted} == {p.doc: 1 for p in posted}, (
            f"analyses calling Claude other than once: "
            f"{ {d: n for d, n in calls.items() if n != 1} }"
        )
        # Both workers lived through it, and listen for wake-ups on the new primary.
        assert [w.poll() for w in stack.workers] == [None, None], "a worker exited"
        wake = keys.wake(stack.settings.queue_name)
        await eventually(lambda: _subscribers(new_port, wake, 2), timeout=30)
        await _wait_workers_online(http, 2)
        first_202 = min(a.answered for a in answers if a.status == 202 and a.sent > kill_mono)
        after = [
            _epoch(p.job["finished_at"]) for p in posted if _epoch(p.job["started_at"]) > kill_wall
        ]
    finally:
        await http.aclose()
        stack.stop()
    figures = {
        "REDIS_RETRY_SECONDS": retry_s,
        "primary killed (port)": killed_port,
        "promoted (port)": new_port,
        "analyses acknowledged (202)": len(posted),
        "kill -> Sentinels agree": f"{agreed_s:.2f} s",
        "kill -> first 202 (request sent after the kill)": f"{first_202 - kill_mono:.2f} s",
        "kill -> first job run wholly after the kill finished": f"{min(after) - kill_wall:.2f} s",
        "answers by status": dict(sorted(statuses.items())),
        "503s": statuses.get(503, 0),
    }
    print("\n== Sentinel failover ==")
    for name, value in figures.items():
        print(f"{name:<52}  {value}")


async def _wait_workers_online(http: httpx.AsyncClient, n: int) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_KEY}"}

    async def online() -> bool:
        answer = await http.get("/health/queues", headers=admin)
        return answer.status_code == 200 and answer.json()["workers_online"] == n

    await eventually(online, timeout=60, interval=0.2)


async def _create_documents(http: httpx.AsyncClient) -> list[Posted]:
    limit = asyncio.Semaphore(16)

    async def create(i: int) -> Posted:
        body = {"user_id": "u1", "title": f"doc {i}",
                "text": f"failover-doc-{i} says hello.\n" + "lorem ipsum " * 20}  # fmt: skip
        async with limit:
            answer = await http.post("/v1/documents", json=body, headers=ACME)
        assert answer.status_code == 201, answer.text
        return Posted(i, answer.json()["id"])

    return list(await asyncio.gather(*(create(i) for i in range(N_ANALYSES))))


async def _post_all(http: httpx.AsyncClient, posted: list[Posted], started: float) -> None:
    """Post each analysis at its time; like a careful client, retry a 503 (after its
    Retry-After, at most a second here) or a lost connection with the same Idempotency-Key."""
    step = LOAD_S / len(posted)

    async def post(n: int, item: Posted) -> None:
        await asyncio.sleep(max(0.0, started + n * step - time.monotonic()))
        headers = ACME | {"Idempotency-Key": str(uuid4())}
        path = f"/v1/documents/{item.document_id}/analyses"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            sent = time.monotonic()
            try:
                answer = await http.post(path, json={"instructions": "Sum up."}, headers=headers)
            except httpx.TransportError:
                item.answers.append(Answer(sent, time.monotonic(), 0))
                await asyncio.sleep(0.2)
                continue
            retry_after = answer.headers.get("retry-after")
            item.answers.append(Answer(sent, time.monotonic(), answer.status_code, retry_after))
            if answer.status_code == 202:
                item.job_id = answer.json()["id"]
                return
            if answer.status_code != 503:
                raise AssertionError(f"POST {path}: {answer.status_code} {answer.text[:300]}")
            await asyncio.sleep(min(1.0, float(retry_after or 1)))
        raise AssertionError(f"POST {path} not accepted within 90 s")

    await asyncio.gather(*(post(n, item) for n, item in enumerate(posted)))


async def _wait_all_ended(http: httpx.AsyncClient, posted: list[Posted]) -> None:
    pending = {p.job_id: p for p in posted}
    limit = asyncio.Semaphore(16)

    async def look(item: Posted) -> None:
        async with limit:
            answer = await http.get(f"/v1/jobs/{item.job_id}", headers=ACME)
        if answer.status_code == 200:
            item.job = answer.json()
            if item.job["state"] in ("succeeded", "failed", "cancelled"):
                pending.pop(item.job_id, None)

    async def all_ended() -> bool:
        await asyncio.gather(*(look(p) for p in list(pending.values())))
        return not pending

    await eventually(all_ended, timeout=90, interval=0.5)


async def _subscribers(port: int, channel: str, n: int) -> bool:
    with node(port) as client:
        return dict(client.pubsub_numsub(channel)).get(channel) == n


def _epoch(stamp: str | None) -> float:
    return datetime.fromisoformat(stamp).timestamp() if stamp else 0.0
