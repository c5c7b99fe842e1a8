"""The fake's server: its options, its state for tests to read, and its routes."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from tests.support.fake_anthropic.answers import Answer, AnswerBook, error_body, message_body
from tests.support.fake_anthropic.batches import EXPIRES_AFTER_S, MAX_BYTES, MAX_REQUESTS, Batches
from tests.support.fake_anthropic.cache import MIN_CACHE_TOKENS, CacheUse, PromptCache
from tests.support.fake_anthropic.limits import RateLimiter, RateLimits
from tests.support.fake_anthropic.tokens import Prompt, PromptError, read_prompt, validate_params
from tests.support.fake_anthropic.wire import Request, Response, encode, read_request, request_id
from tests.support.threaded import ThreadedServer

MAX_REQUEST_BYTES = 32 * 1024 * 1024
BATCHES = "/v1/messages/batches"


class FakeAnthropic:
    """A fake Messages API over HTTP; `url` is its base URL once started.

    Tests read `requests` (each Messages call: its headers, body, answer,
    time and whether the rate limits refused it), `max_in_flight` (the most
    calls answered at once), `answered_ok` and `answered_429` (Messages calls
    answered 200 and 429, scripted or limited), `admitted_at` (the wall-clock
    time of each call the rate limits let through, to compare the rate
    achieved with the limit) and `batch_log` (Message Batch operations).
    `delay_s`, `answer_model`, `output_tokens`, `min_cache_tokens` and
    `batch_latency_s` can be changed at any time; `reset()` restores them.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        delay_s: float = 0.0,
        answer_model: str | None = None,
        output_tokens: int = 7,
        limits: RateLimits | None = None,
        min_cache_tokens: int = MIN_CACHE_TOKENS,
        batch_latency_s: float = 1.0,
        batch_cancel_latency_s: float = 0.1,
        max_batch_requests: int = MAX_REQUESTS,
        max_batch_bytes: int = MAX_BYTES,
        batch_expire_after_s: float = EXPIRES_AFTER_S,
    ) -> None:
        """`delay_s` is how long each answer takes; `answer_model` the `model` of every
        answer (default: the one requested); `output_tokens` how much each answer
        writes (at most the call's `max_tokens`); `limits` the rate limits (default:
        none, though the headers are always sent); `min_cache_tokens` the shortest
        prefix prompt caching keeps; `batch_latency_s` how long a Message Batch stays
        `in_progress`, `batch_cancel_latency_s` how long `canceling`;
        `max_batch_requests` and `max_batch_bytes` the largest batch accepted (the
        real API's by default); `batch_expire_after_s` when a Message Batch still
        running expires what it has left (24 hours, as the real API)."""
        self.host = host
        self.port = port
        self.max_batch_bytes = max_batch_bytes
        self.requests: list[dict[str, Any]] = []
        self.admitted_at: list[float] = []
        self._defaults = {
            "delay_s": delay_s,
            "answer_model": answer_model,
            "output_tokens": output_tokens,
            "limits": limits or RateLimits(),
            "min_cache_tokens": min_cache_tokens,
            "batch_latency_s": batch_latency_s,
            "batch_expire_after_s": batch_expire_after_s,
        }
        self._lock = threading.Lock()
        self._answers = AnswerBook()
        self._generation = 0
        self._runner: ThreadedServer | None = None
        self._batches = Batches(
            self._batch_result,
            self._lock,
            latency_s=batch_latency_s,
            cancel_latency_s=batch_cancel_latency_s,
            max_requests=max_batch_requests,
            expire_after_s=batch_expire_after_s,
        )
        self._restore()

    def _restore(self) -> None:
        """The options as constructed, full buckets, an empty cache, zero counters."""
        defaults = self._defaults
        self.delay_s: float = defaults["delay_s"]
        self.answer_model: str | None = defaults["answer_model"]
        self.output_tokens: int = defaults["output_tokens"]
        self._limiter = RateLimiter(defaults["limits"])
        self._cache = PromptCache(defaults["min_cache_tokens"])
        self._batches.latency_s = defaults["batch_latency_s"]
        self._batches.expire_after_s = defaults["batch_expire_after_s"]
        self.answered_ok = self.answered_429 = 0
        self.max_in_flight = self._in_flight = 0

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    @property
    def min_cache_tokens(self) -> int:
        """The shortest prefix prompt caching keeps (1024 tokens, as on most models)."""
        return self._cache.min_tokens

    @min_cache_tokens.setter
    def min_cache_tokens(self, tokens: int) -> None:
        self._cache.min_tokens = tokens

    @property
    def batch_latency_s(self) -> float:
        """How long a new Message Batch stays `in_progress`."""
        return self._batches.latency_s

    @batch_latency_s.setter
    def batch_latency_s(self, seconds: float) -> None:
        self._batches.latency_s = seconds

    @property
    def batch_expire_after_s(self) -> float:
        """How long after its creation a Message Batch still running expires the rest."""
        return self._batches.expire_after_s

    @batch_expire_after_s.setter
    def batch_expire_after_s(self, seconds: float) -> None:
        self._batches.expire_after_s = seconds

    def script(self, *answers: str) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._answers.script.extend(answers)

    def limit(
        self,
        *,
        requests_per_minute: int | None = None,
        input_tokens_per_minute: int | None = None,
        output_tokens_per_minute: int | None = None,
        burst_requests: int | None = None,
        burst_input_tokens: int | None = None,
        burst_output_tokens: int | None = None,
    ) -> None:
        """Replace the rate limits (None: unlimited; a burst defaults to a minute's
        worth); the buckets start full."""
        limits = RateLimits(
            requests_per_minute,
            input_tokens_per_minute,
            output_tokens_per_minute,
            burst_requests,
            burst_input_tokens,
            burst_output_tokens,
        )
        with self._lock:
            self._limiter = RateLimiter(limits)

    def reset(self) -> None:
        """Forget the script, the logs, the counters, the cache and the batches, and
        restore the options given at construction (with full buckets)."""
        self._batches.clear(self._runner.loop if self._runner else None)
        with self._lock:
            self._answers.clear()
            self.requests.clear()
            self.admitted_at.clear()
            self._restore()
            # Requests still running from an earlier test no longer count.
            self._generation += 1

    def start(self) -> FakeAnthropic:
        """Serve from a thread; returns self, with `port` set."""
        self._runner = ThreadedServer(
            self._serve, self.port, "fake-anthropic", host=self.host, backlog=1024
        )
        self.port = self._runner.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            self._runner.stop()

    @property
    def batch_log(self) -> list[dict[str, Any]]:
        """`{"op": "create" | "cancel" | "delete" | "results", "batch_id", "at"}` per
        batch operation, in order; a creation also has its `requests` as sent."""
        return self._batches.log

    def batch_submissions(self) -> list[dict[str, Any]]:
        """Every request submitted in a Message Batch, in order, with its batch's id:
        `{"batch_id", "custom_id", "params"}`."""
        with self._lock:
            creations = [e for e in self._batches.log if e["op"] == "create"]
        return [{"batch_id": e["batch_id"], **r} for e in creations for r in e["requests"]]

    def batch_progress(self, batch_id: str) -> tuple[int, int]:
        """(entries answered, entries in all) of a Message Batch, which the API itself
        does not show before the batch ends."""
        return self._batches.progress(batch_id)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (request := await read_request(reader, self._max_body_bytes)) is not None:
                response = await self._route(request)
                if response.status:
                    writer.write(encode(response, self._headers()))
                    await writer.drain()
                if response.close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return  # the client went away, or sent something that is not HTTP
        finally:
            writer.close()

    def _max_body_bytes(self, path: str) -> int:
        return self.max_batch_bytes if path == BATCHES else MAX_REQUEST_BYTES

    def _headers(self) -> dict[str, str]:
        now = time.monotonic()
        with self._lock:
            limits = self._limiter.headers(now)
        return {"request-id": request_id(), **limits}

    async def _route(self, request: Request) -> Response:
        if request.body is None:
            limit = self._max_body_bytes(request.path)
            message = f"Request exceeds the maximum allowed number of bytes ({limit:,})."
            return self._error(413, "request_too_large", message)
        try:
            if request.method == "POST" and request.path == "/v1/messages":
                return await self._create_message(request)
            if request.method == "POST" and request.path == "/v1/messages/count_tokens":
                return self._count_tokens(request)
            if request.path == BATCHES or request.path.startswith(BATCHES + "/"):
                parts = [p for p in request.path[len(BATCHES) :].split("/") if p]
                return self._batches.route(request, parts)
        except (ValueError, PromptError) as exc:  # JSONDecodeError is a ValueError
            return self._error(400, "invalid_request_error", str(exc))
        return self._error(404, "not_found_error", f"{request.method} {request.path}")

    @staticmethod
    def _error(status: int, error_type: str, message: str, **headers: str) -> Response:
        return Response.of(status, error_body(error_type, message), headers)

    def _count_tokens(self, request: Request) -> Response:
        payload = request.json()
        validate_params(payload, creating=False)
        return Response.of(200, {"input_tokens": read_prompt(payload).tokens})

    async def _create_message(self, request: Request) -> Response:
        payload = request.json()
        validate_params(payload)
        prompt = read_prompt(payload)
        admitted = self._admit(request, payload, prompt)
        if isinstance(admitted, Response):
            return admitted
        answer, use, limiter, generation = admitted
        try:
            delay = answer.delay_s if answer.delay_s is not None else self.delay_s
            if delay:
                await asyncio.sleep(delay)
            if answer.kind == "drop":
                return Response.drop()
            if answer.kind == "error":
                extra = {"retry-after": answer.retry_after} if answer.retry_after else {}
                with self._lock:
                    if generation == self._generation:
                        self.answered_429 += answer.status == 429
                return self._error(answer.status, answer.error_type, answer.error_message, **extra)
            message = self._message(payload, prompt, use)
            with self._lock:
                written = message["usage"]["output_tokens"]
                limiter.settle_output(payload["max_tokens"], written, time.monotonic())
                if generation == self._generation:
                    self.answered_ok += 1
            return Response.of(200, message)
        finally:
            with self._lock:
                if generation == self._generation:
                    self._in_flight -= 1

    def _admit(
        self, request: Request, payload: dict[str, Any], prompt: Prompt
    ) -> Response | tuple[Answer, CacheUse, RateLimiter, int]:
        """Log the call and choose its answer, or refuse it when the rate limits cannot
        cover it. The limits come first: a refused call consumes no scripted answer,
        and an error answer consumes no budget."""
        assert request.body is not None
        max_tokens = payload["max_tokens"]
        now = time.monotonic()
        with self._lock:
            limiter = self._limiter  # `limit()` may replace it while this call runs
            use = self._cache.look_up(prompt, now)
            input_tokens = prompt.tokens - use.read
            refusal = limiter.check(input_tokens, max_tokens, now)
            if refusal is None:
                word = self._answers.next(request.body.decode("utf-8", "replace"))
            else:
                word = f"429:{refusal.retry_after_s}"
            logged = {"headers": request.headers, "body": payload, "answer": word}
            self.requests.append({**logged, "at": time.time(), "limited": refusal is not None})
            if refusal is not None:
                self.answered_429 += 1
                retry_after = {"retry-after": str(refusal.retry_after_s)}
                return self._error(429, "rate_limit_error", refusal.message, **retry_after)
            answer = Answer.parse(word)
            if answer.kind in ("error", "drop"):
                use = CacheUse()
            else:
                limiter.charge(input_tokens, max_tokens)
                self._cache.commit(use, now)
                self.admitted_at.append(time.time())
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            return answer, use, limiter, self._generation

    def _batch_result(self, params: dict[str, Any], text: str) -> dict[str, Any]:
        """One batch entry's `result`, by the same answers as a single call (scripted
        answers and directives in `text` alike), without rate limits."""
        try:
            validate_params(params)
            prompt = read_prompt(params)
        except PromptError as exc:
            return errored("invalid_request_error", str(exc))
        now = time.monotonic()
        with self._lock:
            word = self._answers.next(text)
            try:
                answer = Answer.parse(word)
            except ValueError as exc:
                return errored("invalid_request_error", str(exc))
            use = CacheUse()
            if answer.kind == "message":
                use = self._cache.look_up(prompt, now)
                self._cache.commit(use, now)
        if answer.kind == "expired":
            return {"type": "expired"}
        if answer.kind == "drop":
            return errored("api_error", "fake api_error: the request was dropped")
        if answer.kind == "error":
            return errored(answer.error_type, answer.error_message)
        return {"type": "succeeded", "message": self._message(params, prompt, use, "batch")}

    def _message(
        self, payload: dict[str, Any], prompt: Prompt, use: CacheUse, tier: str = "standard"
    ) -> dict[str, Any]:
        written = min(self.output_tokens, payload["max_tokens"])
        usage = use.usage(prompt, written, tier)
        stop = "end_turn" if written < payload["max_tokens"] else "max_tokens"
        model = self.answer_model or payload["model"]
        return message_body(model, f"Analysis of {prompt.chars} characters.", usage, stop)


def errored(error_type: str, message: str) -> dict[str, Any]:
    """An `errored` batch result: the error response as a single call would get it."""
    return {"type": "errored", "error": error_body(error_type, message, request_id())}
