"""The operator dashboard in a real browser (Debian's Chromium, driven by Playwright)."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
import tempfile
import time
from http.cookies import SimpleCookie
from pathlib import Path

import httpx
import pytest
from playwright.async_api import async_playwright, expect

from api.sessions import COOKIE, SESSION_SECONDS, Sessions
from jobs.engine.store import JobStore
from tests.conftest import (
    ADMIN_KEY,
    api_client,
    eventually,
    make_settings,
    operator_session,
    running_worker,
)
from tests.support.api_server import ApiServer
from tests.support.kinds import BROKEN_FLAG, TEST_REGISTRY
from tests.support.sessions import review_cookie

ROOT = Path(__file__).resolve().parents[1]
# The README's screenshots are rewritten only on request (SCREENSHOTS=1 scripts/test.sh
# tests/test_dashboard.py); other runs put them in a scratch directory so the tree stays clean.
DOCS = (
    ROOT / "docs"
    if os.environ.get("SCREENSHOTS") == "1"
    else Path(tempfile.mkdtemp(prefix="longrun-screenshots-"))
)
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def api(settings, tmp_path):
    server = ApiServer(settings, tmp_path / "api.log")
    yield server
    server.stop()


@pytest.fixture
def chromium() -> str:
    assert Path(CHROMIUM).exists(), "Chromium is missing: apt-get install -y chromium"
    return CHROMIUM


@pytest.fixture
async def page(chromium):
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=FLAGS)
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        # What the browser refused under the Content-Security-Policy, if anything.
        page.csp_violations = []  # type: ignore[attr-defined]
        page.on(
            "console",
            lambda m: "Content Security Policy" in m.text and page.csp_violations.append(m.text),
        )
        yield page
        assert page.csp_violations == [], "the dashboard broke its own CSP"
        await browser.close()


async def log_in(page, api) -> None:
    await page.goto(f"{api.url}/dashboard")
    await expect(page).to_have_url(f"{api.url}/dashboard/login")
    await page.fill("#key", ADMIN_KEY)
    await page.click("button[type=submit]")
    await expect(page).to_have_url(f"{api.url}/dashboard")


async def test_operator_logs_in_watches_the_queue_inspects_a_failure_and_replays_it(
    settings, redis, api, page
):
    store = JobStore(redis, settings, TEST_REGISTRY)
    await page.goto(f"{api.url}/dashboard/login")
    await page.fill("#key", "not-an-operator-key")
    await page.click("button[type=submit]")
    await expect(page.locator("#error")).to_contain_text("not an operator key")

    await log_in(page, api)
    cookie = next(c for c in await page.context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert not cookie["secure"]  # development: plain http on this machine
    await expect(page.locator("#fig-queued")).to_have_text("0")
    for _ in range(3):
        await store.create(kind="test.sleepy", account="acme", args={"seconds": 0.1})
    await expect(page.locator("#fig-queued")).to_have_text("3", timeout=15000)

    await redis.set(BROKEN_FLAG, 1)
    failed = (await store.create(kind="test.broken", account="acme", args={"doc": 7})).job_id
    async with running_worker(settings):
        await eventually(lambda: _state(store, failed, "failed"))
        await page.goto(f"{api.url}/dashboard/dead-letters")
        await expect(page.locator(f"#dead-{failed}")).to_contain_text("bad_document")
        await page.screenshot(path=str(DOCS / "dashboard-dead-letters.png"), full_page=True)
        # Purge asks first, from the page's nonce'd script (CSP forbids inline handlers):
        # dismissed, nothing is purged.
        asked: list[str] = []

        async def dismiss(dialog) -> None:
            asked.append(dialog.message)
            await dialog.dismiss()

        page.once("dialog", dismiss)
        await page.click(f"#dead-{failed} button.purge")
        assert asked == ["Purge this dead letter for good?"]
        assert await store.get_dead_letter(failed) is not None
        await page.click(f"#dead-{failed} a")
        await expect(page.locator("#error")).to_contain_text("the input cannot be processed")
        await expect(page.locator("#traceback")).to_contain_text("InvalidInput")
        await page.screenshot(path=str(DOCS / "dashboard-job.png"), full_page=True)

        await redis.delete(BROKEN_FLAG)  # the bug is fixed
        async with page.expect_navigation():
            await page.click("#replay")
        await expect(page).not_to_have_url(f"{api.url}/dashboard/jobs/{failed}")
        replay_id = page.url.rsplit("/", 1)[1]
        replay = await eventually(lambda: _state(store, replay_id, "succeeded"))
        assert replay.replay_of == failed
        await page.reload()
        await expect(page.locator("#state")).to_have_text("succeeded")

    await page.goto(f"{api.url}/dashboard/jobs?state=succeeded")
    await expect(page.locator("table")).to_contain_text(replay_id)
    await page.screenshot(path=str(DOCS / "dashboard-jobs.png"), full_page=True)
    await page.goto(f"{api.url}/dashboard")
    await page.wait_for_function(
        "[...document.querySelectorAll('#chart rect')].some(r => +r.getAttribute('height') > 0)"
    )
    await page.screenshot(path=str(DOCS / "dashboard-overview.png"), full_page=True)

    # Logging out ends the session in Redis: the cookie, replayed, opens nothing.
    async with page.expect_navigation():
        await page.click("header button")
    await expect(page).to_have_url(f"{api.url}/dashboard/login")
    async with httpx.AsyncClient(base_url=api.url, cookies={COOKIE: cookie["value"]}) as http:
        replayed = await http.get("/dashboard")
    assert replayed.status_code == 303 and replayed.headers["location"] == "/dashboard/login"


async def _state(store, job_id, state):
    job = await store.get(job_id)
    return job if job and job.state == state else None


async def test_forged_or_expired_cookies_and_missing_csrf_are_refused(settings, api, redis):
    sessions = Sessions(redis, settings)
    operator = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    forged = secrets.token_urlsafe(32)
    expired = await sessions.open(operator, now=time.time() - SESSION_SECONDS - 1)
    async with httpx.AsyncClient(base_url=api.url) as http:
        for token in ("", forged, expired, "admin.9999999999"):
            answer = await http.get("/dashboard", cookies={COOKIE: token})
            assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
        good = {COOKIE: await operator_session(settings)}
        assert (await http.get("/dashboard", cookies=good)).status_code == 200
        store = JobStore(redis, settings, TEST_REGISTRY)
        job = (await store.create(kind="test.flaky", account="acme", args={})).job_id
        no_csrf = await http.post(f"/dashboard/dead-letters/{job}/purge", cookies=good)
        assert no_csrf.status_code >= 400 and no_csrf.status_code < 500
        assert (await store.get(job)) is not None


async def test_webhook_pages_show_delivery_logs_and_retry_a_delivery(settings, api, page):
    from jobs.engine.store import JobStore
    from jobs.webhooks import DeliveryLog, EndpointStore
    from tests.support.kinds import TEST_REGISTRY
    from tests.support.receiver import Receiver

    receiver = Receiver().start()
    hooked = settings.model_copy(update={"webhook_allow_private_networks": True})
    redis = await _redis(settings)
    endpoints = EndpointStore(redis, hooked)
    webhooks = DeliveryLog(JobStore(redis, hooked, TEST_REGISTRY), endpoints)
    try:
        endpoint, _ = await endpoints.create("acme", receiver.url, ["export.completed"])
        receiver.script("500")
        await webhooks.publish("acme", "export.completed", "evt_dash", {"n": 1})
        async with running_worker(hooked):
            # the attempt log, not the receiver, says when the page can show an attempt
            await eventually(lambda: _attempts_logged(webhooks, endpoint.id, 1))
            await log_in(page, api)
            await page.goto(f"{api.url}/dashboard/webhooks")
            await page.click(f"text={endpoint.id}")
            await expect(page.locator("table")).to_contain_text("500")
            # the form posts and redirects back here: reloading mid-way detaches the page
            async with page.expect_navigation():
                await page.click("button:has-text('Retry')")
            await eventually(lambda: _attempts_logged(webhooks, endpoint.id, 2))
            assert len(receiver.received) == 2
            await page.reload()
            await expect(page.locator("table")).to_contain_text("200")
            await page.screenshot(path=str(DOCS / "dashboard-webhook.png"), full_page=True)
    finally:
        receiver.stop()


async def _redis(settings):
    from redis.asyncio import Redis

    return Redis.from_url(settings.redis_url)


async def _attempts_logged(webhooks, endpoint_id, n) -> bool:
    deliveries, _ = await webhooks.list(endpoint_id, 10, None)
    return sum(1 for d in deliveries for a in d.attempts if "outcome" in a) >= n


async def test_operator_pauses_and_resumes_an_account_from_the_overview(settings, redis, api, page):
    store = JobStore(redis, settings, TEST_REGISTRY)
    for _ in range(3):
        await store.create(kind="test.flaky", account="acme", args={})
    await log_in(page, api)
    accounts = page.locator("#accounts")
    await expect(accounts).to_contain_text("acme")
    async with page.expect_navigation():
        await accounts.locator("tr", has_text="acme").locator("button").click()
    await expect(accounts.locator("tr", has_text="acme")).to_contain_text("paused")
    assert await redis.smembers("lr:q:paused:accounts") == {b"acme"}
    async with running_worker(settings) as worker:
        # A worker online and past a few looks at the queue: the paused jobs stayed queued.
        await eventually(lambda: _polled(worker, redis))
        listed = await store.list_account_jobs("acme", limit=10)
        assert [r.state for r in listed.items] == ["queued"] * 3
        async with page.expect_navigation():
            await accounts.locator("tr", has_text="acme").locator("button").click()
        await expect(accounts).not_to_contain_text("paused")

        async def all_ran() -> bool:
            page_ = await store.list_account_jobs("acme", limit=10)
            return all(r.state == "succeeded" for r in page_.items)

        await eventually(all_ran)
    await page.screenshot(path=str(DOCS / "dashboard-overview.png"), full_page=True)


async def _polled(worker, redis) -> bool:
    wake = worker.ctx.get("wake")
    return wake is not None and not wake.is_set() and await redis.zcard("lr:workers") > 0


# Sessions and headers, over ASGI


SECOND_ADMIN_KEY = "second-admin-key"


def with_settings(settings, **overrides):
    """These test settings with `overrides`, built afresh (a model copy would keep the key
    digests already computed)."""
    return make_settings(settings.redis_url, settings.s3_endpoint_url, **overrides)


def cookie(session: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={session}"}


def set_session(answer: httpx.Response) -> str:
    """The session id a login answer sets."""
    return SimpleCookie(answer.headers["set-cookie"])[COOKIE].value


async def test_the_reviews_computed_cookie_opens_nothing(settings):
    # The review's attack: a stack on the built-in SECRETS_KEY, a cookie computed from the
    # source. With no operator key there is no dashboard at all; with one, the cookie is
    # not a session.
    for admin_keys, status in (([], 404), ([f"plain:{ADMIN_KEY}"], 303)):
        built_in = with_settings(settings, secrets_key=None, admin_api_keys=admin_keys)
        async with api_client(built_in) as client:
            for path in ("/dashboard", "/dashboard/summary.json"):
                answer = await client.get(path, headers=cookie(review_cookie()))
                assert answer.status_code == status, (admin_keys, path, answer.text)


async def test_without_operator_keys_there_is_no_dashboard(settings, redis):
    async with api_client(with_settings(settings, admin_api_keys=[])) as client:
        answers = [
            await client.get("/dashboard/login"),
            await client.post("/dashboard/login", data={"key": ADMIN_KEY}),
            await client.get("/dashboard", headers=cookie(await operator_session(settings))),
        ]
    assert [a.status_code for a in answers] == [404, 404, 404]
    assert all(a.headers["content-type"] == "application/problem+json" for a in answers)


async def test_logging_out_ends_the_session_for_good(settings, redis):
    async with api_client(settings) as client:
        session = set_session(await client.post("/dashboard/login", data={"key": ADMIN_KEY}))
        client.cookies.clear()
        assert (await client.get("/dashboard", headers=cookie(session))).status_code == 200
        out = await client.post("/dashboard/logout", headers=cookie(session))
        assert out.status_code == 303 and out.headers["location"] == "/dashboard/login"
        client.cookies.clear()
        replayed = await client.get("/dashboard", headers=cookie(session))
    assert replayed.status_code == 303 and replayed.headers["location"] == "/dashboard/login"
    assert not await redis.exists(Sessions(redis, settings).storage_key(session))


async def test_removing_an_operator_key_ends_the_sessions_it_opened(settings, redis):
    both = with_settings(
        settings, admin_api_keys=[f"plain:{ADMIN_KEY}", f"plain:{SECOND_ADMIN_KEY}"]
    )
    first_only = with_settings(settings, admin_api_keys=[f"plain:{ADMIN_KEY}"])
    kept = await operator_session(both, ADMIN_KEY)
    removed = await operator_session(both, SECOND_ADMIN_KEY)
    async with api_client(first_only) as client:  # restarted without the second key
        assert not await redis.exists(Sessions(redis, both).storage_key(removed))
        # Opened meanwhile by a process that still has the key (a rolling deploy).
        late = await operator_session(both, SECOND_ADMIN_KEY)
        for session in (removed, late):
            answer = await client.get("/dashboard", headers=cookie(session))
            assert answer.status_code == 303 and answer.headers["location"] == "/dashboard/login"
        assert not await redis.exists(Sessions(redis, both).storage_key(late))
        assert (await client.get("/dashboard", headers=cookie(kept))).status_code == 200


async def test_the_session_cookie_is_secure_outside_development(settings):
    digest = hashlib.sha256(ADMIN_KEY.encode()).hexdigest()
    production = with_settings(
        settings, environment="production", api_keys={}, admin_api_keys=[f"sha256:{digest}"]
    )
    # Plain http, as behind a proxy that ends TLS: the cookie is Secure all the same.
    for given, secure in ((production, True), (settings, False)):
        async with api_client(given) as client:
            answer = await client.post("/dashboard/login", data={"key": ADMIN_KEY})
        assert answer.status_code == 303
        flags = {part.strip().lower() for part in answer.headers["set-cookie"].split(";")}
        assert ("secure" in flags) is secure, (given.environment, flags)
        assert {"httponly", "samesite=strict", "path=/dashboard"} <= flags


def _nonce(policy: str) -> str:
    found = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", policy)
    assert found, policy
    return found.group(1)


async def test_every_dashboard_answer_forbids_framing_caching_and_foreign_scripts(settings):
    async with api_client(settings) as client:
        session = cookie(await operator_session(settings))
        answers = {
            "login form": await client.get("/dashboard/login"),
            "failed login": await client.post("/dashboard/login", data={"key": "nope"}),
            "overview": await client.get("/dashboard", headers=session),
            "summary": await client.get("/dashboard/summary.json", headers=session),
            "dead letters": await client.get("/dashboard/dead-letters", headers=session),
            "to login": await client.get("/dashboard/jobs"),
        }
        again = await client.get("/dashboard", headers=session)
    for name, answer in answers.items():
        policy = answer.headers.get("content-security-policy", "")
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, name
        assert "unsafe-inline" not in policy and "unsafe-eval" not in policy, name
        assert answer.headers["x-frame-options"] == "DENY", name
        assert answer.headers["cache-control"] == "no-store", name
    for name in ("login form", "overview", "dead letters"):
        page, nonce = answers[name].text, _nonce(answers[name].headers["content-security-policy"])
        tags = re.findall(r"<(?:script|style)\b[^>]*>", page)
        assert tags and all(f'nonce="{nonce}"' in tag for tag in tags), (name, tags)
        assert not re.search(r"\son[a-z]+\s*=", page), f"{name}: an inline event handler"
    assert _nonce(again.headers["content-security-policy"]) != _nonce(
        answers["overview"].headers["content-security-policy"]
    )
