"""What the fake answers: the script, `fake-answers[...]` directives, and the bodies it sends.

An answer is a short word (see the package docstring); `Answer.parse` reads it.
`AnswerBook` holds the script and the per-key directive counters; it is not
thread-safe, its owner holds a lock around it.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
DIRECTIVE = re.compile(r"fake-answers\[([\w.-]+)\]=([\w:.,*]+)")
TOO_LONG = "prompt is too long: 250000 tokens > 200000 maximum"


@dataclass(frozen=True)
class Answer:
    """A parsed answer: a message (after `delay_s`), an error, a dropped connection or,
    in a batch, an expired entry."""

    kind: str  # "message", "error", "drop" or "expired"
    status: int = 200
    detail: str = ""
    delay_s: float | None = None

    @classmethod
    def parse(cls, word: str) -> Answer:
        """`ok`, `slow:3`, `drop`, `expired`, `529`, `429:7`, `400:too_long` ..."""
        if word == "drop":
            return cls("drop", 0)
        if word == "expired":
            return cls("expired")
        if word.startswith("slow:"):
            return cls("message", delay_s=float(word.split(":", 1)[1]))
        if word == "ok":
            return cls("message")
        code, _, detail = word.partition(":")
        if not code.isdigit():
            raise ValueError(f"the fake has no answer {word!r}")
        return cls("error", int(code), detail)

    @property
    def error_type(self) -> str:
        return ERRORS.get(self.status, "api_error")

    @property
    def error_message(self) -> str:
        if self.detail == "too_long":
            return TOO_LONG
        return f"fake {self.error_type}"

    @property
    def retry_after(self) -> str | None:
        """The `retry-after` of a scripted 429 (`429:7`)."""
        return self.detail if self.status == 429 and self.detail else None


class AnswerBook:
    """The scripted answers, then the directives found in request bodies, then "ok"."""

    def __init__(self) -> None:
        self.script: deque[str] = deque()
        self.per_key: dict[str, int] = {}

    def clear(self) -> None:
        self.script.clear()
        self.per_key.clear()

    def next(self, body: str) -> str:
        """The answer to the request whose body is `body`, consuming it."""
        if self.script:
            return self.script.popleft()
        found = DIRECTIVE.search(body)
        if not found:
            return "ok"
        key, answers = found.group(1), found.group(2).split(",")
        n = self.per_key[key] = self.per_key.get(key, 0) + 1
        if n <= len(answers):
            return answers[n - 1].rstrip("*")
        return answers[-1].rstrip("*") if answers[-1].endswith("*") else "ok"


def error_body(error_type: str, message: str, request_id: str | None = None) -> dict[str, Any]:
    """An error as the API sends it (and as a batch result nests it)."""
    body: dict[str, Any] = {"type": "error", "error": {"type": error_type, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def message_body(model: str, text: str, usage: dict[str, Any], stop_reason: str) -> dict[str, Any]:
    """A Message as the API answers it."""
    return {
        "id": f"msg_{uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
