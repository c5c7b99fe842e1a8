"""The demo that `scripts/dev.sh` runs: the service's main job, through its public API.

With the Python client (`longrun_client`), as a customer would: register a webhook endpoint
that points at a receiver on this machine, store a document, have it analysed (Claude, or
the local stand-in that `dev.sh` starts without ANTHROPIC_API_KEY), receive the
`analysis.completed` webhook and verify it with the endpoint's secret (`verify_webhook`),
then export the user's documents and read the archive's manifest. Each step prints one or
two lines; a failure says which step and returns False.

It runs again against a stack that `scripts/dev.sh` keeps running:

    .venv/bin/python scripts/demo.py [--url http://127.0.0.1:8000] [--key dev-demo-key]

The receiver listens on 127.0.0.1, so the API must allow private networks for webhooks
(`WEBHOOK_ALLOW_PRIVATE_NETWORKS=true`, which `dev.sh` sets, for development only).
"""

from __future__ import annotations

import argparse
import io
import json
import queue
import secrets
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from longrun_client import (
    LongrunClient,
    LongrunError,
    ValidationFailed,
    WebhookEvent,
    verify_webhook,
)

STAND_IN_MODEL = "local-stand-in (not Claude)"
"""The `model` that the local stand-in of the Messages API names in its answers."""
WAIT_S = 120.0
"""How long the demo waits for a job, or for its webhook."""
SHOWN_LINES = 12
"""How many lines of an analysis the demo prints."""
SHOWN_ENTRIES = 5
"""How many of the export's entries the demo names."""
DOCUMENT = """\
Quarterly note, Q3.
Revenue grew 12% over the second quarter, driven by the new export service.
Support tickets fell by a third after the webhook retries shipped.
Two risks remain: the Redis failover drill is overdue, and one customer still polls
for job status every 100 ms instead of following the event stream.
Next quarter: batch analyses at half price, and a dashboard for dead letters.
"""

Say = Callable[[str], None]


def say(message: str) -> None:
    """One line of the demo's output."""
    print(f"[demo] {message}", flush=True)


@dataclass(frozen=True)
class Received:
    """One webhook request as the receiver got it, and what verifying it said."""

    event: WebhookEvent | None
    error: str | None


class WebhookReceiver:
    """A customer's webhook receiver on 127.0.0.1: each request is verified on arrival with
    the endpoint's secret (`verify_webhook`), answered 204 (verified) or 400 (not), and
    queued for the demo to read."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.arrivals: queue.Queue[Received] = queue.Queue()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = dict(self.headers.items())
                try:
                    if receiver.secret is None:
                        raise ValueError("no secret yet")
                    arrival = Received(verify_webhook(body, headers, receiver.secret), None)
                except (LongrunError, ValueError) as exc:
                    arrival = Received(None, f"{type(exc).__name__}: {exc}")
                self.send_response(204 if arrival.event else 400)
                self.send_header("content-length", "0")
                self.end_headers()
                receiver.arrivals.put(arrival)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the demo prints what it received."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="demo-webhook-receiver", daemon=True
        )

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks"

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def wait_for(self, event_type: str, job_id: str, timeout: float) -> Received | None:
        """The first arrival about this job with this event type (or that failed to verify),
        None when none comes within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                arrival = self.arrivals.get(timeout=left)
            except queue.Empty:
                return None
            if arrival.event is None:
                return arrival
            if arrival.event.type == event_type and arrival.event.data.get("id") == job_id:
                return arrival
        return None


def indented(text: str, limit: int = SHOWN_LINES) -> str:
    """`text` as indented lines, at most `limit` of them."""
    lines = text.strip().splitlines() or [""]
    shown = [f"    | {line}" for line in lines[:limit]]
    if len(lines) > limit:
        shown.append(f"    | ... ({len(lines) - limit} more lines)")
    return "\n".join(shown)


def run(base_url: str, api_key: str, say: Say = say) -> bool:
    """The demo against the API at `base_url` with an account's key; True when every step
    worked."""
    user_id = f"demo-user-{secrets.token_hex(3)}"
    with LongrunClient(base_url, api_key) as client, WebhookReceiver() as receiver:
        try:
            return _steps(client, receiver, user_id, say)
        except LongrunError as exc:
            say(f"FAILED: the API answered {type(exc).__name__}: {exc}")
            return False


def _steps(client: LongrunClient, receiver: WebhookReceiver, user_id: str, say: Say) -> bool:
    try:
        endpoint = client.create_webhook_endpoint(receiver.url, ["analysis.completed"])
    except ValidationFailed as exc:
        say(f"FAILED: the webhook endpoint was refused: {exc}")
        say("   (the demo's receiver is on 127.0.0.1: WEBHOOK_ALLOW_PRIVATE_NETWORKS=true lets it)")
        return False
    if endpoint.secret is None:
        say(f"FAILED: the new endpoint {endpoint.id} came without its secret")
        return False
    receiver.secret = endpoint.secret
    say(f"1. webhook endpoint {endpoint.id} for analysis.completed -> {receiver.url}")
    say(f"   (a receiver in this process; it verifies with the secret {endpoint.secret[:10]}...)")
    try:
        return _analyse_and_export(client, receiver, user_id, say)
    finally:
        # The receiver stops with the demo: a stack left running should not keep
        # delivering to it.
        try:
            client.delete_webhook_endpoint(endpoint.id)
        except LongrunError as exc:
            say(f"could not delete the webhook endpoint {endpoint.id}: {exc}")


def _analyse_and_export(
    client: LongrunClient, receiver: WebhookReceiver, user_id: str, say: Say
) -> bool:
    document = client.create_document(user_id, DOCUMENT, title="Quarterly note")
    say(f"2. document {document.id} of {user_id} stored in S3 ({document.size_bytes} bytes)")

    job = client.create_analysis(document.id)
    say(f"3. analysis {job.id} {job.state}; waiting for it")
    job = client.wait(job, timeout=WAIT_S)
    if not job.succeeded:
        say(f"FAILED: the analysis ended {job.state}: {job.error}")
        return False
    result = job.result
    model = result["model"]
    usage = result.get("usage") or {}
    tokens = f"{usage.get('input_tokens', '?')} tokens in, {usage.get('output_tokens', '?')} out"
    say(f"   {job.state}: model {model!r}, {tokens}")
    stand_in = model == STAND_IN_MODEL
    say(
        "   the analysis (made up by the LOCAL STAND-IN, not Claude):"
        if stand_in
        else "   the analysis:"
    )
    print(indented(result["analysis"]), flush=True)

    arrival = receiver.wait_for("analysis.completed", job.id, WAIT_S)
    if arrival is None:
        say(f"FAILED: no analysis.completed webhook within {WAIT_S:g}s")
        return False
    if arrival.event is None:
        say(f"FAILED: a webhook did not verify: {arrival.error}")
        return False
    say(f"4. webhook {arrival.event.type} for {arrival.event.job.id} received: signature")
    say("   verified with the endpoint's secret (verify_webhook)")

    export = client.create_export(user_id, "zip")
    say(f"5. export {export.id} of {user_id}'s documents {export.state}; waiting for it")
    export = client.wait(export, timeout=WAIT_S)
    if not export.succeeded:
        say(f"FAILED: the export ended {export.state}: {export.error}")
        return False
    try:
        answer = httpx.get(export.result["download_url"], timeout=30)
        answer.raise_for_status()
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(answer.content)).read("manifest.json"))
    except (httpx.HTTPError, zipfile.BadZipFile, KeyError, ValueError) as exc:
        say(f"FAILED: reading the export's archive: {type(exc).__name__}: {exc}")
        return False
    count = manifest["count"]
    say(f"   {export.state}: downloaded {len(answer.content):,} bytes from its download_url;")
    say(f"   manifest.json: {count} {'entry' if count == 1 else 'entries'}")
    for entry in manifest["entries"][:SHOWN_ENTRIES]:
        say(f"     {entry['path']} ({entry['size_bytes']:,} bytes)")
    if count > SHOWN_ENTRIES:
        say(f"     ... and {count - SHOWN_ENTRIES} more")
    return True


def main() -> int:
    """Run the demo against a running stack."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the API")
    parser.add_argument("--key", default="dev-demo-key", help="an account's API key")
    options = parser.parse_args()
    return 0 if run(options.url, options.key) else 1


if __name__ == "__main__":
    sys.exit(main())
