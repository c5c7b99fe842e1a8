"""A fake of the Anthropic Messages API that speaks the real wire format over HTTP.

It runs its own asyncio HTTP/1.1 server in a thread, so the real `anthropic`
SDK talks to it through `ANTHROPIC_BASE_URL`, from this process or from
worker subprocesses. Tests script its answers in order with `script(...)`:

    "ok"            a normal message (the default once the script is used up)
    "429:7"         rate limited, with `retry-after: 7`
    "529"           overloaded_error
    "500"           api_error
    "400"           invalid_request_error
    "400:too_long"  invalid_request_error: prompt is too long
    "401"           authentication_error
    "slow:3"        a normal message after 3 s
    "drop"          close the connection without answering

Without a script, a request whose body holds `fake-answers[<key>]=<a>,<b>,...`
(put in a document's text) gets those answers in order, counted per key, then
"ok"; an answer ending in `*` repeats forever (`fake-answers[d7]=400*`). So a
load of many concurrent jobs can say, per document, what Claude will answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ulid import ULID

from tests.support.threaded import ThreadedServer

ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
DIRECTIVE = re.compile(r"fake-answers\[([\w.-]+)\]=([\w:.,*]+)")
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
           404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
           529: "Overloaded"}  # fmt: skip


@dataclass
class FakeAnthropic:
    """The server; `url` is its base URL once started."""

    port: int = 0
    delay_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    max_in_flight: int = 0
    _in_flight: int = 0
    _generation: int = 0
    _script: list[str] = field(default_factory=list)
    _per_key: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _runner: ThreadedServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, *answers: str) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._script.extend(answers)

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self._per_key.clear()
            self.requests.clear()
            self.delay_s = 0.0
            self.max_in_flight = 0
            # Requests still running from an earlier test no longer count.
            self._in_flight = 0
            self._generation += 1

    def start(self) -> FakeAnthropic:
        self._runner = ThreadedServer(self._handle, self.port, "fake-anthropic")
        self.port = self._runner.start()
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    def _next_answer(self, body: bytes) -> str:
        with self._lock:
            if self._script:
                return self._script.pop(0)
            found = DIRECTIVE.search(body.decode("utf-8", "replace"))
            if not found:
                return "ok"
            key, answers = found.group(1), found.group(2).split(",")
            n = self._per_key[key] = self._per_key.get(key, 0) + 1
            if n <= len(answers):
                return answers[n - 1].rstrip("*")
            return answers[-1].rstrip("*") if answers[-1].endswith("*") else "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                request_line = await reader.readline()
                if not request_line:
                    return
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                if not await self._respond(request_line.decode(), headers, body, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _respond(
        self, request_line: str, headers: dict[str, str], body: bytes, writer: asyncio.StreamWriter
    ) -> bool:
        method, path, _ = request_line.split(" ", 2)
        if method != "POST" or not path.startswith("/v1/messages"):
            await self._send(writer, 404, {"type": "error", "error": {
                "type": "not_found_error", "message": f"{method} {path}"}})  # fmt: skip
            return True
        payload = json.loads(body or b"{}")
        answer = self._next_answer(body)
        with self._lock:
            self.requests.append({"headers": headers, "body": payload, "answer": answer,
                                  "at": time.time()})  # fmt: skip
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            generation = self._generation
        try:
            delay = self.delay_s
            if answer.startswith("slow:"):
                delay, answer = float(answer.split(":")[1]), "ok"
            if delay:
                await asyncio.sleep(delay)
            if answer == "drop":
                return False
            if answer == "ok":
                await self._send(writer, 200, self._message(payload))
                return True
            code, _, extra = answer.partition(":")
            status = int(code)
            message = "prompt is too long: 250000 tokens > 200000 maximum" if extra == "too_long" \
                else f"fake {ERRORS.get(status, 'error')}"  # fmt: skip
            more = {"retry-after": extra} if status == 429 and extra else {}
            await self._send(writer, status, {"type": "error", "error": {
                "type": ERRORS.get(status, "api_error"), "message": message}}, more)  # fmt: skip
            return True
        finally:
            with self._lock:
                if generation == self._generation:
                    self._in_flight -= 1

    @staticmethod
    def _message(payload: dict[str, Any]) -> dict[str, Any]:
        text = json.dumps(payload.get("messages", []))
        return {
            "id": f"msg_{ULID()}",
            "type": "message",
            "role": "assistant",
            "model": payload.get("model", "claude"),
            "content": [{"type": "text", "text": f"Analysis of {len(text)} characters."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": len(text) // 4 + 10, "output_tokens": 7},
        }

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        status: int,
        body: dict[str, Any],
        extra_headers: dict[str, str] | None = None,
    ) -> None:
        data = json.dumps(body).encode()
        head = [
            f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
            "content-type: application/json",
            f"content-length: {len(data)}",
            f"request-id: req_{ULID()}",
            *(f"{k}: {v}" for k, v in (extra_headers or {}).items()),
        ]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
        await writer.drain()
