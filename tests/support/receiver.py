"""A customer's webhook receiver over HTTP, verifying signatures independently.

Each request is checked two ways against every secret the test gave it: with
the `svix` package's verifier, and with a hand-written Standard Webhooks
check (HMAC-SHA256 of "{id}.{timestamp}.{body}" with the base64-decoded
secret), neither of which is the signing code under test. Answers are
scripted in order: "ok" (200, the default), "500", "302", "410", "429:N"
(retry-after N), "slow:N" (200 after N seconds), "dribble:N" (a 200 whose N-byte
body comes a byte every 0.25 s).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from svix.webhooks import Webhook as SvixWebhook

from tests.support.threaded import ThreadedServer


def standard_webhooks_valid(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The Standard Webhooks check, written from the spec."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [s.split(",", 1)[1] for s in headers["webhook-signature"].split(" ") if "," in s]
    return any(hmac.compare_digest(expected, o) for o in offered)


@dataclass
class Receiver:
    port: int = 0
    secrets: list[str] = field(default_factory=list)
    received: list[dict[str, Any]] = field(default_factory=list)
    _script: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _runner: ThreadedServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def script(self, *answers: str) -> None:
        with self._lock:
            self._script.extend(answers)

    def verified_by(self, request: dict[str, Any]) -> dict[str, bool]:
        """For each known secret: does the request verify (both checks agree)?"""
        results = {}
        for secret in self.secrets:
            manual = standard_webhooks_valid(secret, request["headers"], request["body"])
            try:
                SvixWebhook(secret).verify(request["body"], request["headers"])
                svix = True
            except Exception:
                svix = False
            assert manual == svix, "the two verifiers disagree"
            results[secret] = manual
        return results

    @staticmethod
    async def _dribble(writer: asyncio.StreamWriter, n: int) -> None:
        """A 200 whose body of `n` bytes comes one byte every 0.25 s."""
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {n}\r\n\r\n".encode())
        for _ in range(n):
            await writer.drain()
            await asyncio.sleep(0.25)
            writer.write(b".")
        await writer.drain()

    def _answer_for(self, headers: dict[str, str]) -> str:
        """The answer when nothing is scripted; subclasses vary it."""
        return "ok"

    def start(self) -> Receiver:
        self._runner = ThreadedServer(self._handle, self.port, "webhook-receiver")
        self.port = self._runner.start()
        return self

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                headers: dict[str, str] = {}
                while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = raw.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                with self._lock:
                    scripted = self._script.pop(0) if self._script else None
                answer = scripted or self._answer_for(headers)
                request = {
                    "headers": headers, "body": body, "answer": answer, "at": time.time(),
                    "path": line.decode().split(" ")[1] if b" " in line else "",
                    "json": json.loads(body) if body else None,
                }  # fmt: skip
                # Checked on arrival too, while the timestamp is within svix's tolerance.
                request["verified"] = any(self.verified_by(request).values())
                with self._lock:
                    self.received.append(request)
                status, extra = 200, {}
                if answer.startswith("dribble:"):
                    await self._dribble(writer, int(answer.split(":")[1]))
                    continue
                if answer.startswith("slow:"):
                    await asyncio.sleep(float(answer.split(":")[1]))
                elif answer.startswith("429:"):
                    status, extra = 429, {"retry-after": answer.split(":")[1]}
                elif answer == "302":
                    status, extra = 302, {"location": "http://127.0.0.1:1/elsewhere"}
                elif answer != "ok":
                    status = int(answer)
                data = json.dumps({"answer": answer}).encode()
                head = [
                    f"HTTP/1.1 {status} X",
                    "content-type: application/json",
                    f"content-length: {len(data)}",
                    *(f"{k}: {v}" for k, v in extra.items()),
                ]
                writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + data)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
