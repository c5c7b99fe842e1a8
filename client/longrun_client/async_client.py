"""`AsyncLongrunClient`: the asyncio client, on `httpx.AsyncClient`; the twin of
`LongrunClient`, method for method."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import TypeVar

import httpx

from longrun_client import _routes as routes
from longrun_client._core import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TIMEOUT_S,
    STREAM_READ_TIMEOUT_S,
    ClientCore,
    Upload,
    Waiter,
    connection_error,
    job_from_event,
    read_upload,
    stream_failure_falls_back,
    upload_filename,
)
from longrun_client._routes import BatchMode, Call, EventType, ExportFormat, JobState
from longrun_client._sse import EventStreamParser
from longrun_client.errors import LongrunError
from longrun_client.models import (
    BatchResult,
    DeadLetter,
    Document,
    Job,
    Page,
    Paused,
    Usage,
    WebhookDelivery,
    WebhookEndpoint,
)

T = TypeVar("T")


class AsyncLongrunClient:
    """An asyncio client of the longrun API: `LongrunClient`'s twin, awaited.

    Args:
        base_url: where the API is, e.g. `https://longrun.example.com`.
        api_key: an account's key (or an operator's, for the dead-letter and canary
            routes), sent as `Authorization: Bearer <key>`.
        timeout: seconds (or an `httpx.Timeout`) for one request.
        max_retries: how many times one call is sent again after a 429 or 503 (after
            `Retry-After`), or after a connection failure when that is safe.
        http_client: an `httpx.AsyncClient` to send through (the caller closes it);
            requests still go to `base_url`.
        transport: an httpx transport for the client's own `httpx.AsyncClient`.
        headers: more headers to send with every request.

    Use it as an async context manager, or await `close()`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        max_retries: int = DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if http_client is not None and transport is not None:
            raise ValueError("give http_client or transport, not both")
        self._core = ClientCore(
            base_url, api_key, timeout=timeout, max_retries=max_retries, headers=headers
        )
        self._owns_http = http_client is None
        self._http = http_client or httpx.AsyncClient(transport=transport, follow_redirects=False)

    async def close(self) -> None:
        """Close the connections (not those of an `http_client` given to the client)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncLongrunClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    # Documents

    async def create_document(
        self, user_id: str, text: str, *, title: str | None = None
    ) -> Document:
        """Store a document (UTF-8 text) of the end user `user_id`."""
        return await self._call(routes.create_document(user_id, text, title))

    async def upload_document(
        self,
        user_id: str,
        file: Upload,
        *,
        filename: str | None = None,
        title: str | None = None,
        content_type: str = "text/plain; charset=utf-8",
    ) -> Document:
        """Store a document uploaded as a file (bytes, a binary file object or a path);
        its title is `title`, else the file's name."""
        content = file if isinstance(file, bytes) else await asyncio.to_thread(read_upload, file)
        call = routes.upload_document(
            user_id, content, upload_filename(file, filename), title, content_type
        )
        return await self._call(call)

    async def get_document(self, document_id: str) -> Document:
        """A document, with its latest analysis."""
        return await self._call(routes.get_document(document_id))

    async def delete_document(self, document_id: str) -> None:
        """Delete a document with its text and every analysis of it (`NotFound` when it is
        not there); an export already written keeps its copy until the export expires."""
        await self._call(routes.delete_document(document_id))

    async def create_analysis(
        self,
        document_id: str,
        *,
        instructions: str | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Enqueue an analysis of the document by Claude; the job's `result.analysis` holds
        it. The Idempotency-Key is `idempotency_key`, else a fresh one (`job.idempotency_key`)."""
        return await self._call(routes.create_analysis(document_id, instructions, idempotency_key))

    # Analysis batches

    async def create_analysis_batch(
        self,
        document_ids: Sequence[str] | None = None,
        *,
        user_id: str | None = None,
        instructions: str | None = None,
        mode: BatchMode = "standard",
        idempotency_key: str | None = None,
    ) -> Job:
        """Enqueue one job analysing many documents: those given (1 to 10,000), or every
        document of `user_id`. `standard` makes one Messages API call each; `economy` uses
        Claude's Message Batches (half the price, answers within hours). The job's result
        counts them; `iter_batch_results` reads each document's analysis."""
        return await self._call(
            routes.create_analysis_batch(document_ids, user_id, instructions, mode, idempotency_key)
        )

    async def list_batch_results(
        self, job_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[BatchResult]:
        """One page of a batch's results, one entry per document in the order given."""
        return await self._call(routes.list_batch_results(job_id, limit, cursor))

    def iter_batch_results(
        self, job_id: str, *, page_size: int = 200
    ) -> AsyncIterator[BatchResult]:
        """Every document's result in a batch, a page at a time."""
        return self._pages(lambda cursor: routes.list_batch_results(job_id, page_size, cursor))

    # Exports

    async def create_export(
        self, user_id: str, format: ExportFormat, *, idempotency_key: str | None = None
    ) -> Job:
        """Enqueue an export of every document of `user_id` (`zip` or `ndjson`); the
        finished job's `result["download_url"]` reads the archive."""
        return await self._call(routes.create_export(user_id, format, idempotency_key))

    # Jobs

    async def get_job(self, job_id: str) -> Job:
        """A job as it is now."""
        return await self._call(routes.get_job(job_id))

    async def list_jobs(
        self,
        *,
        state: JobState | None = None,
        kind: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[Job]:
        """One page of the account's jobs, newest first."""
        return await self._call(routes.list_jobs(state, kind, limit, cursor))

    def iter_jobs(
        self, *, state: JobState | None = None, kind: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Job]:
        """Every job of the account, newest first, a page at a time."""
        return self._pages(lambda cursor: routes.list_jobs(state, kind, page_size, cursor))

    async def cancel_job(self, job_id: str) -> Job:
        """Cancel a job: a waiting one at once, a running one within about a second.
        `Conflict` when it already ended."""
        return await self._call(routes.cancel_job(job_id))

    async def job_events(self, job_id: str) -> AsyncIterator[Job]:
        """The job's snapshots from its event stream, now and at every change, until it
        finishes. The connection stays open while the iterator is read."""
        async with self._event_stream(job_id, STREAM_READ_TIMEOUT_S) as snapshots:
            async for snapshot in snapshots:
                if snapshot is not None:
                    yield snapshot

    async def wait(
        self,
        job: Job | str,
        *,
        timeout: float | None = None,
        raise_on_failure: bool = False,
        use_events: bool = True,
    ) -> Job:
        """Wait for a job to finish and return its final snapshot.

        It follows the job's event stream; when the stream cannot be opened or breaks
        (or with `use_events=False`) it polls the job instead, as often as the API's
        `Retry-After` says.

        Args:
            job: the job, or its id.
            timeout: seconds to wait in all (None: no limit); then `WaitTimeout`, with the
                latest snapshot. On the event stream the deadline is checked at each
                event and keep-alive, so it may pass by up to 15 s.
            raise_on_failure: raise `JobFailed` or `JobCancelled` instead of returning a
                job that did not succeed.
            use_events: False to poll from the start.
        """
        waiter = Waiter(job, timeout, raise_on_failure)
        if waiter.finished:
            return waiter.outcome()
        if use_events:
            try:
                async with self._event_stream(
                    waiter.job_id, waiter.stream_read_timeout()
                ) as snapshots:
                    async for snapshot in snapshots:
                        if snapshot is not None and waiter.observe(snapshot):
                            return waiter.outcome()
                        if waiter.expired():
                            raise waiter.timed_out()
            except LongrunError as exc:
                if not stream_failure_falls_back(exc):
                    raise
        while not waiter.expired():
            snapshot = await self.get_job(waiter.job_id)
            if waiter.observe(snapshot):
                return waiter.outcome()
            await asyncio.sleep(waiter.poll_delay(snapshot))
        raise waiter.timed_out()

    # Webhooks

    async def create_webhook_endpoint(
        self, url: str, events: Sequence[EventType]
    ) -> WebhookEndpoint:
        """Register an https endpoint for these events; keep the answer's `secret`, it is
        shown only now."""
        return await self._call(routes.create_webhook_endpoint(url, events))

    async def list_webhook_endpoints(self) -> Page[WebhookEndpoint]:
        """The account's endpoints, newest first (without secrets)."""
        return await self._call(routes.list_webhook_endpoints())

    async def get_webhook_endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        """One endpoint (without its secret)."""
        return await self._call(routes.get_webhook_endpoint(endpoint_id))

    async def delete_webhook_endpoint(self, endpoint_id: str) -> None:
        """Delete an endpoint; its pending deliveries end `failed`."""
        await self._call(routes.delete_webhook_endpoint(endpoint_id))

    async def rotate_webhook_secret(self, endpoint_id: str) -> WebhookEndpoint:
        """A new secret (in `secret`, shown only now); the old one keeps signing beside
        it for a while (24 hours by default)."""
        return await self._call(routes.rotate_webhook_secret(endpoint_id))

    async def list_deliveries(
        self, endpoint_id: str, *, limit: int | None = None, cursor: str | None = None
    ) -> Page[WebhookDelivery]:
        """One page of an endpoint's deliveries, newest first, each with its attempts."""
        return await self._call(routes.list_deliveries(endpoint_id, limit, cursor))

    def iter_deliveries(
        self, endpoint_id: str, *, page_size: int = 100
    ) -> AsyncIterator[WebhookDelivery]:
        """Every delivery of an endpoint, newest first, a page at a time."""
        return self._pages(lambda cursor: routes.list_deliveries(endpoint_id, page_size, cursor))

    async def retry_delivery(self, delivery_id: str) -> WebhookDelivery:
        """Make one more attempt of a delivery now; `Conflict` if its endpoint is disabled."""
        return await self._call(routes.retry_delivery(delivery_id))

    # Usage

    async def get_usage(self) -> Usage:
        """Claude tokens used by the account's analyses, per model."""
        return await self._call(routes.get_usage())

    # Operators (an admin key)

    async def list_dead_letters(
        self,
        *,
        kind: str | None = None,
        account: str | None = None,
        limit: int | None = None,
        cursor: str | None = None,
    ) -> Page[DeadLetter]:
        """One page of dead letters (jobs that failed for good), newest first."""
        return await self._call(routes.list_dead_letters(kind, account, limit, cursor))

    def iter_dead_letters(
        self, *, kind: str | None = None, account: str | None = None, page_size: int = 100
    ) -> AsyncIterator[DeadLetter]:
        """Every dead letter, newest first, a page at a time."""
        return self._pages(
            lambda cursor: routes.list_dead_letters(kind, account, page_size, cursor)
        )

    async def get_dead_letter(self, job_id: str) -> DeadLetter:
        """One dead letter, with its traceback and attempts."""
        return await self._call(routes.get_dead_letter(job_id))

    async def replay_dead_letter(self, job_id: str) -> Job:
        """Run a dead job again as a new job of its account (`replay_of` set); `Conflict`
        once it has been replayed."""
        return await self._call(routes.replay_dead_letter(job_id))

    async def create_canary(self, *, idempotency_key: str | None = None) -> Job:
        """Enqueue a canary job: a worker round-trips a small object through S3."""
        return await self._call(routes.create_canary(idempotency_key))

    async def get_paused(self) -> Paused:
        """The job kinds and accounts that are paused."""
        return await self._call(routes.get_paused())

    async def pause_kind(self, kind: str) -> Paused:
        """Stop starting jobs of `kind` (they stay queued; running ones finish)."""
        return await self._call(routes.queue_action("kinds", kind, "pause"))

    async def resume_kind(self, kind: str) -> Paused:
        """Start jobs of `kind` again."""
        return await self._call(routes.queue_action("kinds", kind, "resume"))

    async def pause_account(self, account: str) -> Paused:
        """Stop starting the jobs of `account` (they stay queued; running ones finish)."""
        return await self._call(routes.queue_action("accounts", account, "pause"))

    async def resume_account(self, account: str) -> Paused:
        """Start the jobs of `account` again."""
        return await self._call(routes.queue_action("accounts", account, "resume"))

    # The machinery

    async def _call(self, call: Call[T]) -> T:
        """Send `call`, again after a retryable failure as the retry policy says, and read
        its answer."""
        retry = 0
        while True:
            request = self._core.build(self._http, call)
            try:
                response = await self._http.send(request)
            except httpx.TransportError as exc:
                delay = self._core.retry.after_error(exc, retry, call.repeatable)
                if delay is None:
                    raise connection_error(exc) from exc
            else:
                delay = self._core.retry.after_response(response, retry, call.repeatable)
                if delay is None:
                    return self._core.read(call, response)
            await asyncio.sleep(delay)
            retry += 1

    async def _pages(self, page: Callable[[str | None], Call[Page[T]]]) -> AsyncIterator[T]:
        cursor: str | None = None
        while True:
            current = await self._call(page(cursor))
            for item in current.data:
                yield item
            if not current.next_cursor:
                return
            cursor = current.next_cursor

    @contextlib.asynccontextmanager
    async def _event_stream(
        self, job_id: str, read_timeout: float
    ) -> AsyncIterator[AsyncIterator[Job | None]]:
        """Open the job's event stream; the iterator yields its `job` snapshots, and None
        for each other line (a keep-alive), so a reader can check its deadline."""
        request = self._core.stream_request(
            self._http, routes.job_events_path(job_id), read_timeout
        )
        try:
            response = await self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
        try:
            if response.is_error:
                await response.aread()
            self._core.check_stream(response)
            async with contextlib.aclosing(self._snapshots(response)) as snapshots:
                yield snapshots
        finally:
            await response.aclose()

    @staticmethod
    async def _snapshots(response: httpx.Response) -> AsyncGenerator[Job | None, None]:
        parser = EventStreamParser()
        try:
            async for line in response.aiter_lines():
                event = parser.feed(line)
                yield job_from_event(event) if event is not None else None
        except httpx.TransportError as exc:
            raise connection_error(exc) from exc
