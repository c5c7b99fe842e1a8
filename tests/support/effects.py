"""Effects counted from outside the product, for the chaos run's books.

What the product did is read where it landed, not from its own records: every Messages
call the fake Claude received (per document token, and whether it was answered with a
paid message), every write to the S3 bucket (the bucket is versioned, so an object
written twice has two versions), every delivery a receiver accepted (per endpoint and
`webhook-id`), and every usage increment (each paid message has `output_tokens` tokens,
so the account's usage counts its increments).

Each job is held against what one run of it should do. What is over is either allowed
by at-least-once (an attempt that was interrupted after the effect and before its
outcome was recorded: a `kill -9`, or a failure after Claude had answered; or a 2xx
the product never heard of) or a duplicated effect, which nothing explains. A `Ledger`
keeps the four numbers per kind of effect.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tests.support.fake_anthropic.answers import Answer

TOKEN = re.compile(r"chaos-doc-(\d+)\b")
# A failed or retried attempt whose error came from Claude's answer made no paid call
# (a timed-out call may have been answered after the worker stopped waiting).
_CLAUDE_ANSWERED_NOTHING = re.compile(r"^claude_(?!timeout)|^document_too_long$")


def doc_token(n: int) -> str:
    """The token that names document `n` in its text, found again in Claude's log."""
    return f"chaos-doc-{n}"


@dataclass
class Ledger:
    """One kind of effect: what one run of each job should do, what was seen, and the
    repeats beyond it, allowed or duplicated; `missing` when fewer were seen."""

    name: str
    expected: int = 0
    seen: int = 0
    allowed: int = 0
    duplicated: int = 0
    missing: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, what: str, seen: int, expected: int, interrupted: int) -> None:
        """Book one job's (or one event's) effects; `interrupted` bounds the repeats that
        at-least-once allows."""
        self.expected += expected
        self.seen += seen
        extra = seen - expected
        if extra < 0:
            self.missing -= extra
            self.examples.append(f"missing {-extra}: {what}")
            return
        allowed = min(extra, interrupted)
        self.allowed += allowed
        self.duplicated += extra - allowed
        if extra > allowed:
            self.examples.append(f"duplicated {extra - allowed}: {what}")

    def row(self) -> str:
        """`expected / seen / allowed repeats / duplicated / missing`, for the summary."""
        return (
            f"{self.expected} / {self.seen} / {self.allowed} / {self.duplicated} / {self.missing}"
        )


def claude_calls(requests: Iterable[dict[str, Any]]) -> tuple[Counter[str], Counter[str]]:
    """Per document token: every Messages call the fake received (the ones its own rate
    limits refused left out: they never reach a planned answer), and the paid ones,
    answered with a message."""
    calls: Counter[str] = Counter()
    paid: Counter[str] = Counter()
    for request in requests:
        if request["limited"]:
            continue
        found = TOKEN.search(_document_text(request["body"]))
        if not found:
            continue
        token = doc_token(int(found.group(1)))
        calls[token] += 1
        if Answer.parse(request["answer"]).kind == "message":
            paid[token] += 1
    return calls, paid


def _document_text(body: dict[str, Any]) -> str:
    for message in body.get("messages", []):
        for block in message.get("content", []):
            if isinstance(block, dict) and block.get("type") == "document":
                return str(block["source"].get("data", ""))
    return ""


async def s3_writes(client: Any, bucket: str) -> Counter[str]:
    """Per key: how many versions were written to the (versioned) bucket."""
    writes: Counter[str] = Counter()
    paginator = client.get_paginator("list_object_versions")
    async for page in paginator.paginate(Bucket=bucket):
        for version in page.get("Versions", []):
            writes[version["Key"]] += 1
    return writes


def accepted_deliveries(received: Iterable[dict[str, Any]]) -> Counter[tuple[str, str]]:
    """Per (endpoint path, `webhook-id`): the deliveries a receiver accepted with a 2xx."""
    accepted: Counter[tuple[str, str]] = Counter()
    for request in received:
        if request["answer"] == "ok" or request["answer"].startswith("slow:"):
            accepted[(request["path"], request["headers"]["webhook-id"])] += 1
    return accepted


def interrupted_attempts(job: dict[str, Any]) -> int:
    """Attempts that may have stopped after an effect and before their outcome was
    recorded: crashed ones (`kill -9`), ones interrupted by a drain, failed or retried
    ones whose error did not come from Claude's answer (S3 or Redis away after Claude had
    answered), and ones handed back because Redis went away (not for Claude's budget)."""
    count = 0
    for attempt in job.get("attempts", []):
        outcome = attempt.get("outcome")
        if outcome in ("crashed", "interrupted"):
            count += 1
        elif outcome in ("retrying", "failed"):
            error_type = (attempt.get("error") or {}).get("type", "")
            count += not _CLAUDE_ANSWERED_NOTHING.search(error_type)
        elif outcome == "handed_back":
            count += "Claude" not in str(attempt.get("reason", ""))
    return count


def planned_calls(plan: str, succeeds: bool) -> int:
    """The Messages calls one run of an analysis makes when Claude answers by `plan`
    (`529,529`: two overloaded answers, then the message; `400*`: refused for good)."""
    errors = [a for a in plan.split(",") if a] if plan else []
    if not succeeds:
        return len(errors)
    return len(errors) + 1
