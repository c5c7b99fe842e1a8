"""Metrics, alert rules, structured logs and failure alerts."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobs.engine.store import JobStore
from tests.conftest import ACME, ACME_KEY, ADMIN_KEY, eventually, running_worker
from tests.support.api_server import ApiServer
from tests.support.kinds import TEST_REGISTRY
from tests.support.processes import kill, start_worker
from tests.support.receiver import Receiver
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = [
    "longrun_http_requests", "longrun_http_request_duration_seconds", "longrun_jobs_enqueued",
    "longrun_jobs_started", "longrun_jobs_succeeded", "longrun_jobs_failed",
    "longrun_jobs_retried", "longrun_jobs_dead_lettered", "longrun_jobs_cancelled",
    "longrun_job_run_seconds", "longrun_job_queue_wait_seconds", "longrun_queue_jobs",
    "longrun_dead_letters", "longrun_oldest_queued_age_seconds", "longrun_workers_online",
    "longrun_claude_calls", "longrun_claude_tokens", "longrun_s3_operations",
    "longrun_s3_bytes", "longrun_webhook_attempts", "longrun_webhook_delivery_latency_seconds",
    "longrun_webhook_endpoints_disabled",
]  # fmt: skip


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def families(text: str) -> set[str]:
    return {f.name for f in text_string_to_metric_families(text)}


def value(text: str, name: str, **labels) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def test_alert_rules_pass_promtool_check_and_unit_tests():
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install -y prometheus"
    rules = ROOT / "deploy" / "prometheus"
    check = subprocess.run([promtool, "check", "rules", "alerts.yml"], cwd=rules,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "7 rules found" in check.stdout
    test = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=rules,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert test.returncode == 0, test.stdout + test.stderr


async def test_api_metrics_expose_every_family_and_counters_move(settings, client, worker):
    before = (await client.get("/metrics")).text
    assert set(FAMILIES) <= families(before) | {"longrun_queue_jobs"}
    answer = await client.post("/v1/exports", headers=ACME, json={"user_id": "m", "format": "zip"})

    async def done():
        j = (await client.get(answer.headers["Location"], headers=ACME)).json()
        return j["state"] == "succeeded"

    await eventually(done)
    after = (await client.get("/metrics")).text
    enqueued = "longrun_jobs_enqueued_total"
    assert value(after, enqueued, kind="export") == value(before, enqueued, kind="export") + 1
    route = {"route": "/v1/exports", "method": "POST", "status": "202"}
    requests = "longrun_http_requests_total"
    assert value(after, requests, **route) == value(before, requests, **route) + 1
    # The worker runs in this process here, so its counters show too.
    succeeded = "longrun_jobs_succeeded_total"
    assert value(after, succeeded, kind="export") == value(before, succeeded, kind="export") + 1
    assert value(after, "longrun_workers_online") == 1
    assert value(after, "longrun_s3_operations_total", operation="upload_part", outcome="ok") >= 1


async def test_worker_metrics_port_exposes_families_and_counters_move(
    settings, redis, client, tmp_path
):
    port = free_port()
    proc = start_worker(settings.model_copy(update={"worker_metrics_port": port}),
                        tmp_path / "w.log")  # fmt: skip

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            return answer.read().decode()

    try:
        from tests.support.services import wait_until

        before = wait_until(scrape, 30, "the worker's metrics port")
        assert set(FAMILIES) - {
            "longrun_http_requests",
            "longrun_http_request_duration_seconds",
        } <= (families(before) | {"longrun_queue_jobs"})
        store = JobStore(redis, settings, TEST_REGISTRY)
        await store.create(kind="test.flaky", account="acme", args={"fail_times": 1})
        after = await eventually(
            lambda: _scraped_when(scrape, "longrun_jobs_succeeded_total", kind="test.flaky")
        )
    finally:
        kill(proc)
    assert value(after, "longrun_jobs_started_total", kind="test.flaky") == 2
    assert value(after, "longrun_jobs_retried_total", kind="test.flaky") == 1
    assert value(after, "longrun_job_run_seconds_count", kind="test.flaky") == 2


async def _scraped_when(scrape, name, **labels):
    text = scrape()
    return text if value(text, name, **labels) >= 1 else None


def log_lines(path: Path) -> list[dict]:
    lines = []
    for line in path.read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return lines


@pytest.mark.slow
async def test_job_logs_carry_the_request_id_and_no_secret_is_ever_logged(
    settings, claude, tmp_path
):
    receiver = Receiver().start()
    hooked = settings.model_copy(update={"webhook_allow_private_networks": True})
    api = ApiServer(hooked, tmp_path / "api.log")
    worker = start_worker(hooked, tmp_path / "worker.log")
    secrets = [ACME_KEY, ADMIN_KEY, "sk-ant-test-key", hooked.secrets_key.get_secret_value()]
    try:
        import httpx

        async with httpx.AsyncClient(base_url=api.url, headers=ACME) as http:
            endpoint = (await http.post("/v1/webhook-endpoints", json={
                "url": receiver.url, "events": ["analysis.completed"]})).json()  # fmt: skip
            rotated = (await http.post(
                f"/v1/webhook-endpoints/{endpoint['id']}/rotate-secret")).json()  # fmt: skip
            secrets += [endpoint["secret"], rotated["secret"]]
            doc = (await http.post("/v1/documents", json={"user_id": "u", "text": "t"})).json()
            job = (await http.post(f"/v1/documents/{doc['id']}/analyses", json={},
                                   headers={"X-Request-ID": "trace-obs-1"})).json()  # fmt: skip
            await http.get("/v1/jobs", headers={"Authorization": "Bearer wrong-key-123"})
            await eventually(lambda: _count(receiver, 1), timeout=30)
    finally:
        kill(worker)
        api.stop()
        receiver.stop()
    worker_lines = log_lines(tmp_path / "worker.log")
    job_lines = [line for line in worker_lines if line.get("job_id") == job["id"]]
    assert job_lines and all(line["request_id"] == "trace-obs-1" for line in job_lines)
    assert all({"kind", "account", "attempt"} <= set(line) for line in job_lines)
    webhook_lines = [line for line in worker_lines if line.get("delivery_id")]
    assert webhook_lines and webhook_lines[0]["request_id"] == "trace-obs-1"
    everything = (tmp_path / "api.log").read_text() + (tmp_path / "worker.log").read_text()
    for secret in [*secrets, "wrong-key-123"]:
        assert secret not in everything
        assert secret.removeprefix("whsec_") not in everything


async def _count(receiver, n) -> bool:
    return len(receiver.received) >= n


async def test_dead_letter_posts_one_alert_and_a_burst_is_rate_limited(settings, redis):
    alerts = Receiver().start()
    try:
        alerting = settings.model_copy(
            update={"alert_webhook_url": alerts.url, "alert_max_per_minute": 5}
        )
        store = JobStore(redis, alerting, TEST_REGISTRY)
        await redis.set("test:broken", 1)
        async with running_worker(alerting):
            first = (await store.create(kind="test.broken", account="acme", args={})).job_id
            await eventually(lambda: _count(alerts, 1))
            assert first in alerts.received[0]["json"]["text"]
            assert "dead letter" in alerts.received[0]["json"]["text"]
            for _ in range(50):
                await store.create(kind="test.broken", account="acme", args={})

            async def all_dead():
                return await redis.zcard("lr:dlq") == 51

            await eventually(all_dead, timeout=60)
            await eventually(lambda: _outbox_empty(redis), timeout=30)
    finally:
        alerts.stop()
    times = sorted(r["at"] for r in alerts.received)
    assert len(times) > 1
    # Never more than the limit in any 60 seconds (a fixed per-minute counter lets twice
    # the limit through across a minute boundary).
    assert all(sum(t <= u < t + 60 for u in times) <= 5 for t in times), times


async def _outbox_empty(redis) -> bool:
    return await redis.llen("lr:outbox") == 0


async def test_worker_whose_metrics_port_is_taken_still_runs_jobs(settings, redis):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = settings.model_copy(update={"worker_metrics_port": taken.getsockname()[1]})
        store = JobStore(redis, busy, TEST_REGISTRY)
        async with running_worker(busy):
            job_id = (await store.create(kind="test.flaky", account="acme", args={})).job_id

            async def succeeded():
                return (await store.get(job_id)).state == "succeeded"

            await eventually(succeeded, timeout=30)
