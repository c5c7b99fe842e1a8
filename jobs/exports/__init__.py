"""User-data exports: every document of a user with its latest analysis, as a zip or
NDJSON archive in S3, with a download URL presigned at each lookup."""

from __future__ import annotations

from jobs.engine import Domain, JobKind, Periodic
from jobs.exports.job import FORMATS, build_export, export_key, present_export
from jobs.exports.uploads import abort_stale_uploads

__all__ = ["EXPORT", "EXPORTS", "FORMATS", "export_key"]

EXPORT = JobKind(
    "export",
    build_export,
    events=("export.completed", "export.failed"),
    present=present_export,
)

EXPORTS = Domain(
    "exports",
    kinds=[EXPORT],
    chores=[
        Periodic(
            "stale export uploads",
            lambda settings: settings.reconcile_interval_seconds * 6,
            lambda deps: abort_stale_uploads(deps.storage, deps.store),
        )
    ],
)
