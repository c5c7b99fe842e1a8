"""The Message Batches API: create, retrieve, list, cancel, delete, and results as JSONL.

A batch runs in the background on the server's loop: its entries are answered
in order, spread evenly over `latency_s` (so a cancel finds the later ones
unprocessed; a batch still running `expire_after_s` after its creation, 24 hours
by default, ends with what is left `expired`), each by the same answer logic
as a single call but without the rate limits. While it runs, `request_counts` shows every entry as
`processing`, as the real API does; the other counts appear when it ends.
The results file lists the entries in a shuffled order, since the real API
promises none. Creations, cancels, deletions and result downloads are logged.

Handlers and the background tasks run on the server's loop; the lock guards
what the test's thread reads (`log`) or resets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from ulid import ULID

from tests.support.fake_anthropic.answers import error_body
from tests.support.fake_anthropic.wire import Request, Response

MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1024 * 1024
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
EXPIRES_AFTER_S = 24 * 3600
CHUNK = 100  # entries answered between two yields to the loop (about 10 ms)
OUTCOMES = ("succeeded", "errored", "canceled", "expired")
DIRECTIVE_MARK = b"fake-answers["

# (params, the text searched for `fake-answers[...]` directives) -> the entry's result
Decide = Callable[[dict[str, Any], str], dict[str, Any]]


@dataclass
class Batch:
    """One Message Batch and its entries' results (None while unprocessed)."""

    id: str
    entries: list[tuple[str, dict[str, Any]]]
    created_at: float
    latency_s: float = 1.0  # this batch's, as the store's was at its creation
    expire_after_s: float = EXPIRES_AFTER_S
    expired: bool = False  # it ran past expire_after_s: what was left expired
    directives: bool = True  # whether any entry may hold a `fake-answers[...]` directive
    status: str = "in_progress"
    processed: int = 0
    results: list[dict[str, Any] | None] = field(default_factory=list)
    cancel_initiated_at: float | None = None
    ended_at: float | None = None
    counts: Counter[str] = field(default_factory=Counter)
    lines: list[bytes] = field(default_factory=list)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def resource(self, base_url: str) -> dict[str, Any]:
        """The MessageBatch object, with its results URL on `base_url` once ended."""
        ended = self.status == "ended"
        counts = {o: self.counts[o] if ended else 0 for o in OUTCOMES}
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status,
            "request_counts": {"processing": 0 if ended else len(self.entries), **counts},
            "created_at": timestamp(self.created_at),
            "expires_at": timestamp(self.created_at + self.expire_after_s),
            "ended_at": timestamp(self.ended_at),
            "cancel_initiated_at": timestamp(self.cancel_initiated_at),
            "archived_at": None,
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


class BatchStore:
    """Batches by id and in creation order, so a page costs its length, not the store's."""

    def __init__(self) -> None:
        self._batches: dict[str, Batch] = {}
        self._order: list[str | None] = []  # None where a batch was deleted
        self._position: dict[str, int] = {}

    def add(self, batch: Batch) -> None:
        self._batches[batch.id] = batch
        self._position[batch.id] = len(self._order)
        self._order.append(batch.id)

    def get(self, batch_id: str) -> Batch | None:
        return self._batches.get(batch_id)

    def remove(self, batch_id: str) -> None:
        del self._batches[batch_id]
        self._order[self._position.pop(batch_id)] = None

    def all(self) -> list[Batch]:
        return list(self._batches.values())

    def page(
        self, limit: int, after_id: str | None, before_id: str | None
    ) -> tuple[list[Batch], bool]:
        """Newest first: the `limit` batches after (older than) `after_id`, or before
        (newer than) `before_id`; and whether more lie beyond them."""
        cursor = after_id or before_id
        if cursor is not None and cursor not in self._position:
            raise KeyError(cursor)
        step = 1 if before_id else -1
        n = self._position[cursor] + step if cursor else len(self._order) - 1
        found: list[Batch] = []
        while 0 <= n < len(self._order) and len(found) <= limit:
            batch_id = self._order[n]
            if batch_id is not None:
                found.append(self._batches[batch_id])
            n += step
        page = found[:limit]
        return (page[::-1] if before_id else page), len(found) > limit


class Batches:
    """The batch routes; `decide(params, text)` answers one entry with a batch `result`."""

    def __init__(
        self,
        decide: Decide,
        lock: threading.Lock,
        *,
        latency_s: float,
        cancel_latency_s: float,
        max_requests: int = MAX_REQUESTS,
        expire_after_s: float = EXPIRES_AFTER_S,
    ) -> None:
        self.decide = decide
        self.latency_s = latency_s
        self.expire_after_s = expire_after_s
        self.cancel_latency_s = cancel_latency_s
        self.max_requests = max_requests
        self.log: list[dict[str, Any]] = []
        self._lock = lock
        self._store = BatchStore()
        self._tasks: set[asyncio.Task[None]] = set()

    def clear(self, loop: asyncio.AbstractEventLoop | None) -> None:
        """Forget every batch and the log, and stop processing them (on `loop`, the
        server's, from any thread)."""
        with self._lock:
            self._store = BatchStore()
            self.log.clear()
            tasks, self._tasks = self._tasks, set()
        for task in tasks:
            if loop is not None:
                loop.call_soon_threadsafe(task.cancel)

    def _forget(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.discard(task)

    def progress(self, batch_id: str) -> tuple[int, int]:
        """(entries answered, entries in all); KeyError for an unknown batch."""
        batch = self._store.get(batch_id)
        if batch is None:
            raise KeyError(batch_id)
        return batch.processed, len(batch.entries)

    def route(self, request: Request, parts: list[str]) -> Response:
        """`parts`: the path after `/v1/messages/batches`, split on '/'."""
        base_url = f"http://{request.headers.get('host', 'localhost')}"
        method = request.method
        if not parts and method == "POST":
            return self._create(request, base_url)
        if not parts and method == "GET":
            return self._list(request, base_url)
        batch = self._store.get(parts[0]) if parts else None
        if batch is None:
            return error(404, "not_found_error", f"no Message Batch {'/'.join(parts)!r}")
        if len(parts) == 1 and method == "GET":
            return Response.of(200, batch.resource(base_url))
        if len(parts) == 1 and method == "DELETE":
            return self._delete(batch)
        if parts[1:] == ["cancel"] and method == "POST":
            return self._cancel(batch, base_url)
        if parts[1:] == ["results"] and method == "GET":
            return self._results(batch)
        return error(404, "not_found_error", f"{method} {request.path}")

    def _create(self, request: Request, base_url: str) -> Response:
        payload = request.json()
        entries = payload.get("requests") if isinstance(payload, dict) else None
        if not isinstance(entries, list) or not entries:
            return error(400, "invalid_request_error", "requests: at least one is required")
        if len(entries) > self.max_requests:
            return error(
                400,
                "invalid_request_error",
                f"requests: at most {self.max_requests:,} per batch, got {len(entries):,}",
            )
        seen: set[str] = set()
        for n, entry in enumerate(entries):
            custom_id = entry.get("custom_id") if isinstance(entry, dict) else None
            if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
                problem = "custom_id: 1 to 64 letters, digits, '-' or '_'"
            elif custom_id in seen:
                problem = f"custom_id: duplicate {custom_id!r}"
            elif not isinstance(entry.get("params"), dict):
                problem = "params: Field required"
            else:
                seen.add(custom_id)
                continue
            return error(400, "invalid_request_error", f"requests.{n}.{problem}")
        batch = Batch(
            id=f"msgbatch_{ULID()}",
            entries=[(e["custom_id"], e["params"]) for e in entries],
            created_at=time.time(),
            latency_s=self.latency_s,
            expire_after_s=self.expire_after_s,
            directives=DIRECTIVE_MARK in (request.body or b""),
        )
        batch.results = [None] * len(batch.entries)
        with self._lock:
            self._store.add(batch)
            self.log.append(
                {"op": "create", "batch_id": batch.id, "at": batch.created_at, "requests": entries}
            )
            task = asyncio.create_task(self._run(batch))
            self._tasks.add(task)
        task.add_done_callback(self._forget)
        return Response.of(200, batch.resource(base_url))

    def _list(self, request: Request, base_url: str) -> Response:
        after_id, before_id = request.query.get("after_id"), request.query.get("before_id")
        if after_id and before_id:
            return error(400, "invalid_request_error", "give after_id or before_id, not both")
        try:
            limit = int(request.query.get("limit", "20"))
            if not 1 <= limit <= 1000:
                raise ValueError
            batches, has_more = self._store.page(limit, after_id, before_id)
        except ValueError:
            return error(400, "invalid_request_error", "limit: an integer from 1 to 1000")
        except KeyError as exc:
            return error(400, "invalid_request_error", f"no Message Batch {exc.args[0]!r}")
        page = {
            "data": [b.resource(base_url) for b in batches],
            "has_more": has_more,
            "first_id": batches[0].id if batches else None,
            "last_id": batches[-1].id if batches else None,
        }
        return Response.of(200, page)

    def _cancel(self, batch: Batch, base_url: str) -> Response:
        with self._lock:
            self.log.append({"op": "cancel", "batch_id": batch.id, "at": time.time()})
        if batch.status == "in_progress":
            batch.status = "canceling"
            batch.cancel_initiated_at = time.time()
            batch.wake.set()
        return Response.of(200, batch.resource(base_url))

    def _delete(self, batch: Batch) -> Response:
        if batch.status != "ended":
            message = f"Message Batch {batch.id} has not ended: cancel it and let it end first"
            return error(400, "invalid_request_error", message)
        with self._lock:
            self._store.remove(batch.id)
            self.log.append({"op": "delete", "batch_id": batch.id, "at": time.time()})
        return Response.of(200, {"id": batch.id, "type": "message_batch_deleted"})

    def _results(self, batch: Batch) -> Response:
        if batch.status != "ended":
            return error(404, "not_found_error", f"Message Batch {batch.id} has not ended yet")
        with self._lock:
            self.log.append({"op": "results", "batch_id": batch.id, "at": time.time()})
        return Response(200, b"".join(batch.lines), content_type="application/binary")

    async def _run(self, batch: Batch) -> None:
        """Answer the entries as they fall due, until all are done, a cancel comes, or the
        batch expires (what is left then is `expired`, as after Claude's 24 hours)."""
        loop = asyncio.get_running_loop()
        started, total = loop.time(), len(batch.entries)
        latency = batch.latency_s
        while batch.processed < total and batch.status == "in_progress":
            elapsed = loop.time() - started
            if elapsed >= batch.expire_after_s:
                batch.expired = True
                break
            due = total if elapsed >= latency else int(total * elapsed / latency)
            if due <= batch.processed:
                next_due = min(
                    started + latency * (batch.processed + 1) / total,
                    started + batch.expire_after_s,
                )
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.001, next_due - loop.time())):
                        await batch.wake.wait()
                continue
            end = min(due, batch.processed + CHUNK)
            for n in range(batch.processed, end):
                params = batch.entries[n][1]
                text = json.dumps(params) if batch.directives else ""
                batch.results[n] = self.decide(params, text)
            batch.processed = end
            await asyncio.sleep(0)
        if batch.status == "canceling":
            await asyncio.sleep(self.cancel_latency_s)
        await self._end(batch)

    async def _end(self, batch: Batch) -> None:
        left = {"type": "expired"} if batch.expired else {"type": "canceled"}
        results = [r if r is not None else left for r in batch.results]
        order = list(range(len(results)))
        random.Random(batch.id).shuffle(order)
        for start in range(0, len(order), CHUNK):
            for n in order[start : start + CHUNK]:
                line = {"custom_id": batch.entries[n][0], "result": results[n]}
                batch.lines.append(json.dumps(line).encode() + b"\n")
            await asyncio.sleep(0)
        batch.counts = Counter(r["type"] for r in results)
        batch.ended_at = time.time()
        batch.status = "ended"


def error(status: int, error_type: str, message: str) -> Response:
    return Response.of(status, error_body(error_type, message))


def timestamp(at: float | None) -> str | None:
    """RFC 3339 in UTC with microseconds, as the API writes its batch times."""
    if at is None:
        return None
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
