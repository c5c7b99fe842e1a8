"""Analysis batches: thousands of documents analysed as one job, in one of two modes.

`standard`: each document is its own Messages API call, in steps under the fair queue and
the shared Claude budget (`standard.py`). `economy`: the documents go to Claude's Message
Batches API at half the price, and the job waits for them without holding a worker slot
(`economy.py`). Either way a batch is one job record; its documents' outcomes are a few
compact Redis keys (`state.py`), their analyses S3 objects.
"""

from __future__ import annotations

from jobs.analysis_batches.job import (
    KIND,
    MAX_DOCUMENTS,
    batch_overview,
    cancel_abandoned,
    create_batch,
    document_result,
    results_page,
    run_analysis_batch,
)
from jobs.claude import Claude, open_claude
from jobs.engine import Domain, JobKind, Periodic

__all__ = [
    "ANALYSIS_BATCH",
    "ANALYSIS_BATCHES",
    "MAX_DOCUMENTS",
    "batch_overview",
    "create_batch",
    "document_result",
    "results_page",
]

ANALYSIS_BATCH = JobKind(
    KIND,
    run_analysis_batch,
    events=("analysis_batch.completed", "analysis_batch.failed"),
)

ANALYSIS_BATCHES = Domain(
    "analysis_batches",
    kinds=[ANALYSIS_BATCH],
    resources=[(Claude, open_claude)],
    chores=[
        Periodic(
            "cancel abandoned Message Batches",
            lambda settings: settings.reconcile_interval_seconds * 2,
            cancel_abandoned,
        )
    ],
)
