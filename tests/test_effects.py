"""The chaos run's outside books (`tests/support/effects.py`) can tell a duplicate from a
repeat that at-least-once allows, and from nothing at all."""

from __future__ import annotations

from tests.support.effects import (
    Ledger,
    accepted_deliveries,
    claude_calls,
    doc_token,
    interrupted_attempts,
    planned_calls,
)


def test_repeats_beyond_the_interrupted_attempts_are_duplicates():
    ledger = Ledger("S3 writes")
    ledger.add("once", seen=1, expected=1, interrupted=0)
    ledger.add("rerun after a crash", seen=2, expected=1, interrupted=1)
    ledger.add("run twice, nothing interrupted", seen=2, expected=1, interrupted=0)
    ledger.add("never written", seen=0, expected=1, interrupted=0)
    assert (ledger.expected, ledger.seen) == (4, 5)
    assert (ledger.allowed, ledger.duplicated, ledger.missing) == (1, 1, 1)
    assert ledger.examples == [
        "duplicated 1: run twice, nothing interrupted",
        "missing 1: never written",
    ]


def _call(n: int, answer: str, limited: bool = False) -> dict:
    text = f"Document {doc_token(n)} of u at acme."
    block = {"type": "document", "source": {"type": "text", "data": text}}
    return {"body": {"messages": [{"content": [block]}]}, "answer": answer, "limited": limited}


def test_claude_calls_are_counted_per_document_and_paid_only_for_a_message():
    log = [_call(1, "529"), _call(1, "ok"), _call(1, "ok"), _call(2, "drop"),
           _call(2, "429:3", limited=True), _call(2, "slow:1"), _call(12, "400")]  # fmt: skip
    calls, paid = claude_calls(log)
    assert calls == {"chaos-doc-1": 3, "chaos-doc-2": 2, "chaos-doc-12": 1}
    assert paid == {"chaos-doc-1": 2, "chaos-doc-2": 1}
    assert planned_calls("529,529", True) == 3 and planned_calls("", True) == 1
    assert planned_calls("400*", False) == 1


def test_only_attempts_that_may_have_stopped_after_an_effect_allow_a_repeat():
    job = {
        "attempts": [
            {"outcome": "retrying", "error": {"type": "claude_overloaded"}},
            {"outcome": "handed_back", "reason": "Claude asked every caller to wait"},
            {"outcome": "crashed"},
            {"outcome": "retrying", "error": {"type": "s3_unavailable"}},
            {"outcome": "handed_back", "reason": "Redis is unreachable"},
            {"outcome": "interrupted"},
            {"outcome": "retrying", "error": {"type": "claude_timeout"}},
            {"outcome": "succeeded"},
        ]
    }
    assert interrupted_attempts(job) == 5


def test_deliveries_are_counted_per_endpoint_and_webhook_id_when_accepted():
    def request(path: str, webhook_id: str, answer: str) -> dict:
        return {"path": path, "headers": {"webhook-id": webhook_id}, "answer": answer}

    received = [request("/a", "msg_1", "500"), request("/a", "msg_1", "ok"),
                request("/a", "msg_1", "ok"), request("/b", "msg_1", "ok")]  # fmt: skip
    assert accepted_deliveries(received) == {("/a", "msg_1"): 2, ("/b", "msg_1"): 1}
