"""The chaos run: a mixed load on a real stack while workers, Redis, S3 and a webhook
receiver fail on a seeded schedule; then the books must balance.

Nothing accepted is lost (every job ends, the failed ones exactly those Claude was told
to reject, each with a dead letter); nothing runs twice in effect, counted from outside
the product (`tests/support/effects.py`: the fake Claude's log per document, the
versions in a versioned bucket, what each receiver accepted, the usage increments),
with the repeats at-least-once allows counted apart; every injected fault left its
mark; and nothing leaks across accounts. Sizes and seed: CHAOS_ANALYSES (500),
CHAOS_EXPORTS (50), CHAOS_SEED; where Sentinel runs, Redis fails over instead of restarting
(CHAOS_FAILOVER=0: restart). Run it alone with `scripts/test.sh -m chaos -s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import random
import time
import zipfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any
from uuid import uuid4

import httpx
import pytest

from jobs.storage import open_storage
from tests.conftest import eventually
from tests.support.chaos import ACCOUNTS, ADMIN_KEY, ChaosStack
from tests.support.effects import (
    Ledger,
    accepted_deliveries,
    claude_calls,
    doc_token,
    interrupted_attempts,
    planned_calls,
    s3_writes,
)

pytestmark = [pytest.mark.chaos, pytest.mark.slow, pytest.mark.timeout(1500)]

N_ANALYSES = int(os.environ.get("CHAOS_ANALYSES", "500"))
N_EXPORTS = int(os.environ.get("CHAOS_EXPORTS", "50"))
SEED = int(os.environ.get("CHAOS_SEED", "20261201"))
LOAD_SECONDS = 36.0  # the submissions are spread over the whole fault schedule
USERS_PER_ACCOUNT = 4
TERMINAL = {"succeeded", "failed", "cancelled"}
# What the fake Claude answers per document, and how often; the rejected ones must fail.
CLAUDE_PLANS = [("", 0.70), ("529,529", 0.08), ("429:1", 0.05), ("500", 0.05),
                ("drop", 0.04), ("400*", 0.05), ("400:too_long*", 0.03)]  # fmt: skip
REJECTED = {"400*", "400:too_long*"}
# Each account's two endpoints: (receiver behaviour, events); "-" means every event. Each
# endpoint has a receiver of its own, which verifies with that endpoint's secret only.
ENDPOINTS = {
    "acme": {"all": ("steady", "-"), "exports": ("flaky", "export.*")},
    "globex": {"all": ("flaky", "-"), "exports": ("downed", "export.*")},
    "initech": {"all": ("downed", "-"), "exports": ("steady", "export.*")},
}
EVENTS = ["analysis.completed", "analysis.failed", "export.completed", "export.failed"]


@dataclass
class Submitted:
    job_id: str
    kind: str
    account: str
    expect: str  # "succeeded" or "failed"
    document_id: str | None = None
    user_id: str = ""
    plan: str = ""  # what the fake Claude answers its document, in order
    token: str = ""  # the document's token in Claude's log
    job: dict[str, Any] = field(default_factory=dict)


class Api:
    """A client that behaves like a careful customer: it retries 5xx and lost connections
    with the same Idempotency-Key until its request is accepted."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=60)
        self.retried = 0
        self.statuses: Counter[int] = Counter()

    async def call(
        self, method: str, path: str, key: str, *, body: Any = None, idem: str | None = None,
        ok: tuple[int, ...] = (200, 201, 202, 204), within: float = 180.0,
    ) -> httpx.Response:  # fmt: skip
        headers = {"Authorization": f"Bearer {key}"} | ({"Idempotency-Key": idem} if idem else {})
        deadline, tries = time.monotonic() + within, 0
        while True:
            try:
                answer = await self.http.request(method, path, json=body, headers=headers)
                self.statuses[answer.status_code] += 1
                if answer.status_code in ok:
                    return answer
                assert answer.status_code >= 500 or answer.status_code == 429, (
                    f"{method} {path}: {answer.status_code} {answer.text[:300]}"
                )
            except httpx.TransportError:
                pass
            tries += 1
            self.retried += 1
            assert time.monotonic() < deadline, f"{method} {path} not accepted in {within}s"
            await asyncio.sleep(min(2.0, 0.1 * 2**tries))  # the customer's own backoff

    async def job(self, item: Submitted) -> dict[str, Any]:
        return (await self.call("GET", f"/v1/jobs/{item.job_id}", ACCOUNTS[item.account])).json()

    async def pages(self, path: str, key: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            sep = "&" if "?" in path else "?"
            url = f"{path}{sep}limit=100" + (f"&cursor={cursor}" if cursor else "")
            page = (await self.call("GET", url, key)).json()
            items += page["data"]
            if not (cursor := page["next_cursor"]):
                return items


async def test_chaos_run_loses_nothing_duplicates_nothing_and_leaks_nothing(tmp_path):
    rng = random.Random(SEED)
    layout = {f"{a}-{sub}": behaviour for a, subs in ENDPOINTS.items()
              for sub, (behaviour, _) in subs.items()}  # fmt: skip
    stack = ChaosStack(tmp_path, layout)
    try:
        stack.start()  # inside: what started before a failure is stopped too
        assert stack.api is not None
        api = Api(stack.api.url)
        async with open_storage(stack.settings) as storage:
            await storage.ensure_bucket()
            # Every write stays as a version: a second write of one key is counted.
            await storage.client.put_bucket_versioning(
                Bucket=stack.settings.s3_bucket, VersioningConfiguration={"Status": "Enabled"}
            )
        await _wait_workers_online(api, 2)
        endpoints = await _register_endpoints(api, stack)
        submissions = await _create_documents(api, rng)
        plan = _load_plan(submissions, rng)
        started = time.monotonic()
        faults = stack.schedule(SEED)
        injecting = asyncio.create_task(stack.inject(faults, started))
        readiness: Counter[int] = Counter()
        probing = asyncio.create_task(_probe_readiness(api, readiness))
        jobs = await _submit(api, plan, started)
        await injecting
        probing.cancel()
        load_s = time.monotonic() - started
        await _wait_all_terminal(api, jobs)
        quiet_s = time.monotonic() - started
        books = await _check_books(api, stack, jobs, endpoints)
        books["faults"] = _check_faults_took_effect(stack, jobs, readiness)
        died = [(p.pid, p.returncode) for p in stack.workers if p.poll() is not None]
        assert not died, f"workers exited on their own (pid, code): {died}; see worker-*.log"
        await _wait_workers_online(api, 2)
        sigtermed = [p for p in stack.retired if p.returncode not in (-9,)]
        assert all(p.wait(30) == 0 for p in sigtermed), "a drained worker did not exit cleanly"
    finally:
        if stack.api is not None:
            await api.http.aclose()
        stack.stop()
    _print_summary(jobs, stack, books, api, load_s, quiet_s)


async def _probe_readiness(api: Api, seen: Counter[int]) -> None:
    """What `/health/ready` answers through the load (a 503 while S3 is away)."""
    while True:
        try:
            seen[(await api.http.get("/health/ready")).status_code] += 1
        except httpx.TransportError:
            seen[0] += 1
        await asyncio.sleep(0.5)


async def _wait_workers_online(api: Api, n: int) -> None:
    async def online() -> bool:
        return (await api.call("GET", "/health/queues", ADMIN_KEY)).json()["workers_online"] == n

    await eventually(online, timeout=60, interval=0.2)


async def _register_endpoints(api: Api, stack: ChaosStack) -> dict[str, dict[str, Any]]:
    """Two endpoints per account; returns them by the path their receiver sees."""
    endpoints = {}
    for account, subs in ENDPOINTS.items():
        for sub, (_behaviour, events) in subs.items():
            name = f"{account}-{sub}"
            path = f"/hooks/{name}"
            wanted = EVENTS if events == "-" else [e for e in EVENTS if e.startswith("export.")]
            url = stack.receiver_url(name).removesuffix("/hooks") + path
            created = (
                await api.call("POST", "/v1/webhook-endpoints", ACCOUNTS[account],
                               body={"url": url, "events": wanted})
            ).json()  # fmt: skip
            stack.receivers[name].secrets[:] = [created["secret"]]  # its own secret only
            endpoints[path] = {"id": created["id"], "account": account, "events": set(wanted),
                               "receiver": name}  # fmt: skip
    return endpoints


async def _create_documents(api: Api, rng: random.Random) -> list[Submitted]:
    """One document per analysis, each telling the fake Claude what to answer."""
    answers, weights = zip(*CLAUDE_PLANS, strict=True)
    limit = asyncio.Semaphore(16)

    async def create(i: int) -> Submitted:
        account = list(ACCOUNTS)[i % len(ACCOUNTS)]
        user = f"user-{(i // len(ACCOUNTS)) % USERS_PER_ACCOUNT}"
        script = rng.choices(answers, weights)[0]
        directive = f" fake-answers[doc{i}]={script}" if script else ""
        token = doc_token(i)
        text = f"Document {token} of {user} at {account}.{directive}\n" + "lorem ipsum " * 40
        async with limit:
            doc = (
                await api.call("POST", "/v1/documents", ACCOUNTS[account],
                               body={"user_id": user, "title": f"doc {i}", "text": text})
            ).json()  # fmt: skip
        expect = "failed" if script in REJECTED else "succeeded"
        return Submitted("", "analysis", account, expect, doc["id"], user, script, token)

    return list(await asyncio.gather(*(create(i) for i in range(N_ANALYSES))))


def _load_plan(analyses: list[Submitted], rng: random.Random) -> list[Submitted]:
    exports = []
    for j in range(N_EXPORTS):
        account = list(ACCOUNTS)[j % len(ACCOUNTS)]
        user = f"user-{(j // len(ACCOUNTS)) % USERS_PER_ACCOUNT}"
        exports.append(Submitted("", "zip" if j % 2 else "ndjson", account, "succeeded",
                                 user_id=user))  # fmt: skip
    plan = analyses + exports
    rng.shuffle(plan)
    return plan


async def _submit(api: Api, plan: list[Submitted], started: float) -> list[Submitted]:
    """Post every job at its time in the load window, each with its own Idempotency-Key;
    every tenth is posted twice, which must give the same job."""
    step = LOAD_SECONDS / len(plan)

    async def post(n: int, item: Submitted) -> Submitted:
        await asyncio.sleep(max(0.0, started + n * step - time.monotonic()))
        idem, key = str(uuid4()), ACCOUNTS[item.account]
        if item.kind == "analysis":
            path, body = f"/v1/documents/{item.document_id}/analyses", {"instructions": "Sum up."}
        else:
            path, body = "/v1/exports", {"user_id": item.user_id, "format": item.kind}
        item.job_id = (await api.call("POST", path, key, body=body, idem=idem)).json()["id"]
        if n % 10 == 0:
            again = await api.call("POST", path, key, body=body, idem=idem)
            assert again.json()["id"] == item.job_id
        item.kind = "analysis" if item.kind == "analysis" else "export"
        return item

    return list(await asyncio.gather(*(post(n, item) for n, item in enumerate(plan))))


async def _wait_all_terminal(api: Api, jobs: list[Submitted]) -> None:
    pending = {j.job_id: j for j in jobs}
    limit = asyncio.Semaphore(32)

    async def look(item: Submitted) -> None:
        async with limit:
            item.job = (
                await api.call("GET", f"/v1/jobs/{item.job_id}", ACCOUNTS[item.account])
            ).json()
        if item.job["state"] in TERMINAL:
            pending.pop(item.job_id, None)

    async def all_done() -> bool:
        await asyncio.gather(*(look(j) for j in list(pending.values())))
        return not pending

    await eventually(all_done, timeout=600, interval=1.0)


async def _check_books(
    api: Api, stack: ChaosStack, jobs: list[Submitted], endpoints: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    books: dict[str, Any] = {}
    by_id = {j.job_id: j for j in jobs}
    assert len(by_id) == len(jobs), "two submissions were given one job"
    # Every accepted job ended, and the failed ones are exactly the rejected ones.
    states = Counter(j.job["state"] for j in jobs)
    wrong = [(j.job_id, j.expect, j.job["state"], j.job["error"]) for j in jobs
             if j.job["state"] != j.expect]  # fmt: skip
    assert not wrong, f"{len(wrong)} jobs ended otherwise than planned: {wrong[:5]}"
    failed = {j.job_id for j in jobs if j.expect == "failed"}
    dead = await api.pages("/v1/dead-letters", ADMIN_KEY)
    assert {d["id"] for d in dead} == failed, "dead letters are not exactly the failed jobs"
    assert all(d["error"] and d["attempts"] and d["arguments"] for d in dead)
    # Each succeeded analysis has exactly one object, each export one archive, no upload open.
    async with open_storage(stack.settings) as storage:
        keys = await _all_keys(storage, stack.settings.s3_bucket)

        async def open_uploads() -> list[dict[str, Any]]:
            answer = await storage.client.list_multipart_uploads(Bucket=stack.settings.s3_bucket)
            return answer.get("Uploads", [])

        # An upload that could not be aborted while S3 was down goes with the janitor's
        # next pass (every 6 reconcile intervals).
        await eventually(lambda: _none(open_uploads), timeout=60, interval=1.0)
    analysis_objects = [k for k in keys if "/analyses/" in k]
    succeeded = {j.job_id for j in jobs if j.kind == "analysis" and j.expect == "succeeded"}
    assert sorted(k.rsplit("/", 1)[1].removesuffix(".json") for k in analysis_objects) == sorted(
        succeeded
    )
    per_doc = Counter(k.split("/analyses/")[1].split("/")[0] for k in analysis_objects)
    assert set(per_doc.values()) <= {1}
    exports = [j for j in jobs if j.kind == "export"]
    assert len([k for k in keys if k.startswith("exports/")]) == len(exports)
    docs_of = Counter((j.account, j.user_id) for j in jobs if j.kind == "analysis")
    async with httpx.AsyncClient(timeout=60) as plain:
        for item in exports:
            fresh = (
                await api.call("GET", f"/v1/jobs/{item.job_id}", ACCOUNTS[item.account])
            ).json()
            # An NDJSON export is served with `Content-Encoding: gzip`: httpx undoes it.
            archive = (await plain.get(fresh["result"]["download_url"])).content
            count = _check_archive(fresh["result"]["format"], archive, item.job_id)
            assert count == fresh["result"]["documents"] == docs_of[(item.account, item.user_id)]
    books["effects"] = effects = await _count_effects(api, stack, jobs)
    books["webhooks"], deliveries = await _check_webhooks(api, stack, by_id, endpoints)
    effects.append(deliveries)
    for ledger in effects:
        assert not ledger.missing, f"{ledger.name}: {ledger.examples[:5]}"
    duplicated = [e for ledger in effects for e in ledger.examples if e.startswith("dup")]
    assert sum(ledger.duplicated for ledger in effects) == 0, f"duplicated: {duplicated[:10]}"
    # Nothing leaks: each account lists exactly its own jobs and cannot read another's.
    for account, key in ACCOUNTS.items():
        listed = {j["id"] for j in await api.pages("/v1/jobs", key)}
        assert listed == {j.job_id for j in jobs if j.account == account}
        foreign = next(j for j in jobs if j.account != account)
        answer = await api.http.get(f"/v1/jobs/{foreign.job_id}",
                                    headers={"Authorization": f"Bearer {key}"})  # fmt: skip
        assert answer.status_code == 404
    books.update(states=states, dead=len(dead), analysis_objects=len(analysis_objects))
    return books


async def _count_effects(api: Api, stack: ChaosStack, jobs: list[Submitted]) -> list[Ledger]:
    """Each job's effects as the world saw them, against what one run of it does."""
    assert stack.settings is not None
    calls, paid = claude_calls(list(stack.claude.requests))
    async with open_storage(stack.settings) as storage:
        writes = await s3_writes(storage.client, stack.settings.s3_bucket)
    by_job: Counter[str] = Counter()
    for key, n in writes.items():
        if "/analyses/" in key or key.startswith("exports/"):
            by_job[key.rsplit("/", 1)[1].split(".", 1)[0]] += n
    known = {j.job_id for j in jobs}
    assert set(by_job) <= known, f"S3 writes for no job: {sorted(set(by_job) - known)[:5]}"
    all_calls, paid_calls = Ledger("Claude calls"), Ledger("paid Claude calls")
    s3, usage = Ledger("S3 writes"), Ledger("usage increments")
    for job in jobs:
        interrupted = interrupted_attempts(job.job)
        ok = job.expect == "succeeded"
        if job.kind == "analysis":
            what = f"{job.job_id} ({job.token}, plan {job.plan!r})"
            all_calls.add(what, calls[job.token], planned_calls(job.plan, ok), interrupted)
            paid_calls.add(what, paid[job.token], int(ok), interrupted)
        s3.add(job.job_id, by_job[job.job_id], int(ok), interrupted)
    # Each paid message has the same output tokens: an account's usage counts its increments.
    per_call = stack.claude.output_tokens
    for account, key in ACCOUNTS.items():
        used = (await api.call("GET", "/v1/usage", key)).json()["data"]
        tokens = sum(u["output_tokens"] for u in used)
        assert tokens % per_call == 0, f"{account}: {tokens} output tokens"
        once = sum(1 for j in jobs if j.account == account and j.kind == "analysis"
                   and j.expect == "succeeded")  # fmt: skip
        usage.add(account, tokens // per_call, once, 0)  # at-least-once allows no recount
    return [all_calls, paid_calls, s3, usage]


def _check_faults_took_effect(
    stack: ChaosStack, jobs: list[Submitted], readiness: Counter[int]
) -> dict[str, Any]:
    """Each injected fault left a mark outside the fault injector itself."""
    outcomes = Counter(a["outcome"] for j in jobs for a in j.job.get("attempts", []))
    answers = Counter(r["answer"] for r in list(stack.claude.requests))
    killed = [p for p in stack.retired if p.returncode == -9]
    downed = sum(stack.proxies[name].refused for name in stack.downed())
    refusing = sum(1 for r in stack.receivers.values() for q in r.received if q["answer"] == "500")
    evidence = {
        "workers killed (-9)": len(killed),
        "crashed attempts": outcomes["crashed"],
        "jobs retried": sum(1 for j in jobs if j.job["attempt"] > 1),
        "S3 connections refused while down": stack.proxies["s3"].refused,
        "/health/ready answers": dict(readiness),
        "receiver connections refused while down": downed,
        "flaky receivers' 500s": refusing,
        "Redis runs (run_id)": len(set(stack.redis_runs)),
        "Claude error answers": {a: n for a, n in answers.items() if a not in ("ok",)},
    }
    assert len(killed) == 3 and outcomes["crashed"] >= 1, evidence
    assert evidence["jobs retried"] > 0, evidence
    assert stack.proxies["s3"].refused > 0 and readiness[503] > 0, evidence
    assert downed > 0 and refusing > 0, evidence
    assert len(set(stack.redis_runs)) == 2 and stack.redis_connections() >= 3, evidence
    assert all(answers[a] for a in ("529", "500", "drop", "400")), evidence
    return evidence


async def _none(probe: Any) -> bool:
    return not await probe()


async def _all_keys(storage: Any, bucket: str) -> list[str]:
    keys: list[str] = []
    paginator = storage.client.get_paginator("list_objects_v2")
    async for page in paginator.paginate(Bucket=bucket):
        keys += [o["Key"] for o in page.get("Contents", [])]
    return keys


def _check_archive(fmt: str, data: bytes, job_id: str) -> int:
    """Open an export archive, check every entry against its manifest; its document count."""
    if fmt == "ndjson":
        # Served with Content-Encoding: gzip, so the download reads as NDJSON.
        lines = data.decode().splitlines()
        assert all(json.loads(line)["id"] for line in lines)
        return len(lines)
    archive = zipfile.ZipFile(io.BytesIO(data))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["job_id"] == job_id
    for entry in manifest["entries"]:
        assert hashlib.sha256(archive.read(entry["path"])).hexdigest() == entry["sha256"]
    assert len(archive.namelist()) == manifest["count"] + 1
    return manifest["count"]


async def _check_webhooks(
    api: Api, stack: ChaosStack, by_id: dict[str, Submitted], endpoints: dict[str, dict[str, Any]]
) -> tuple[dict[str, int], Ledger]:
    """Each event reached each subscribed endpoint of its account, under one webhook id."""
    expected = set()
    for job in by_id.values():
        event = f"{job.kind}.{'completed' if job.expect == 'succeeded' else 'failed'}"
        for path, endpoint in endpoints.items():
            if endpoint["account"] == job.account and event in endpoint["events"]:
                expected.add((path, event, job.job_id))

    def delivered() -> tuple[dict[tuple[str, str, str], set[str]], Counter[str]]:
        ids: dict[tuple[str, str, str], set[str]] = defaultdict(set)
        oks: Counter[str] = Counter()
        for receiver in stack.receivers.values():
            for request in list(receiver.received):
                body = request["json"]
                pair = (request["path"], body["type"], body["data"]["id"])
                ids[pair].add(request["headers"]["webhook-id"])
                assert request["verified"], "a signature did not verify"
                if request["answer"] == "ok":
                    oks[request["headers"]["webhook-id"]] += 1
        return ids, oks

    missing: list[tuple[str, str, str]] = []

    async def all_delivered() -> bool:
        ids, oks = delivered()
        missing[:] = [p for p in expected if not any(oks[w] for w in ids.get(p, ()))]
        return not missing

    try:
        await eventually(all_delivered, timeout=300, interval=1.0)
    except AssertionError:
        raise AssertionError(
            f"{len(missing)} events never reached their endpoint, e.g. "
            f"{await _describe(api, endpoints, missing[:3])}"
        ) from None
    ids, _ = delivered()
    assert set(ids) == expected, f"unexpected deliveries: {sorted(set(ids) - expected)[:5]}"
    assert all(len(w) == 1 for w in ids.values()), "an event had two webhook ids"
    assert len({next(iter(w)) for w in ids.values()}) == len(ids)
    # Each event's 2xx per endpoint: one, plus those whose answer the product never heard
    # (its worker killed, or Redis away, after the receiver accepted): at-least-once.
    ledger = Ledger("deliveries accepted")
    accepted = Counter()
    for receiver in stack.receivers.values():
        accepted += accepted_deliveries(list(receiver.received))
    for path, endpoint in endpoints.items():
        key = ACCOUNTS[endpoint["account"]]
        log = await api.pages(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", key)
        assert len(log) == sum(1 for p, _, _ in expected if p == path)
        assert {d["state"] for d in log} == {"succeeded"}, f"{path}: deliveries not all succeeded"
        for delivery in log:
            heard = sum(1 for a in delivery["attempts"] if 200 <= (a["status_code"] or 0) < 300)
            seen = accepted[(path, delivery["webhook_id"])]
            ledger.add(f"{path} {delivery['webhook_id']}", seen, 1, max(0, seen - heard))
    attempts = sum(len(r.received) for r in stack.receivers.values())
    return {"events": len(expected), "attempts": attempts,
            "refused": sum(1 for r in stack.receivers.values() for q in r.received
                           if q["answer"] != "ok")}, ledger  # fmt: skip


async def _describe(
    api: Api, endpoints: dict[str, dict[str, Any]], missing: list[tuple[str, str, str]]
) -> list[dict[str, Any]]:
    """What the delivery log says of events that never arrived."""
    described = []
    for path, event, job_id in missing:
        endpoint = endpoints[path]
        log = await api.pages(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries",
                              ACCOUNTS[endpoint["account"]])  # fmt: skip
        found = [d for d in log if d["event_type"] == event and job_id in json.dumps(d)]
        described.append({"path": path, "event": event, "job": job_id, "log": found[:1],
                          "deliveries of this endpoint": len(log)})  # fmt: skip
    return described


def _print_summary(
    jobs: list[Submitted], stack: ChaosStack, books: dict[str, Any], api: Api,
    load_s: float, quiet_s: float,
) -> None:  # fmt: skip
    kinds = Counter(j.kind for j in jobs)
    retries = sum(j.job["attempt"] - 1 for j in jobs)
    outcomes = Counter(a["outcome"] for j in jobs for a in j.job.get("attempts", []))
    causes = Counter(
        a["error"]["type"]
        for j in jobs
        for a in j.job.get("attempts", [])
        if a["outcome"] == "retrying" and a.get("error")
    )
    hooks = books["webhooks"]
    effects: list[Ledger] = books["effects"]
    rows = [
        ("seed", SEED),
        ("jobs accepted", f"{len(jobs)} ({kinds['analysis']} analyses, {kinds['export']} exports)"),
        ("ended", dict(books["states"])),
        ("faults", "; ".join(f"{t:.1f}s {name}" for t, name in stack.faults_done)),
        ("retries (attempt > 1)", retries),
        ("attempt outcomes", dict(outcomes)),
        ("retry causes", dict(causes.most_common())),
        ("client retries (5xx / connection)", api.retried),
        ("answers the client saw", dict(sorted(api.statuses.items()))),
        ("dead letters", books["dead"]),
        ("webhook events / receiver requests / refused",
         f"{hooks['events']} / {hooks['attempts']} / {hooks['refused']}"),
        ("faults took effect", books["faults"]),
        ("effects: expected / seen / allowed repeats / duplicated / missing", ""),
        *((f"  {ledger.name}", ledger.row()) for ledger in effects),
        ("lost (missing effects)", sum(ledger.missing for ledger in effects)),
        ("allowed repeats (at-least-once)", sum(ledger.allowed for ledger in effects)),
        ("duplicated effects", sum(ledger.duplicated for ledger in effects)),
        ("load window / until quiet", f"{load_s:.1f} s / {quiet_s:.1f} s"),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print("\n== chaos run ==")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
