"""Logging for API and worker: one JSON object per line on stderr.

Each line carries the context it was logged in: the request id (set by the
API for each request, and by the worker from the job's record, so the id of
the POST that enqueued a job follows it into the worker), and the job id,
kind, account and attempt while a job runs; while tracing, the trace and span ids of the
span it was logged under. Secrets are masked on the way out.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from jobs import tracing

REQUEST_ID_VAR: ContextVar[str | None] = ContextVar("request_id", default=None)
JOB_CONTEXT_VAR: ContextVar[dict[str, Any] | None] = ContextVar("job_context", default=None)

# Attributes every LogRecord has; anything else was passed in `extra` and is logged as a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
_SECRETS = re.compile(
    r"(whsec_[A-Za-z0-9+/=]{8,}|sk-ant-[A-Za-z0-9_-]{4,}|(?i:bearer)\s+[^\s\"',]+"
    r"|(?i:x-api-key|authorization|secret|password)([\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+)"
)


# Every match of _SECRETS contains one of these (lower-cased); most lines contain none, and
# looking for them is ~20x cheaper than running the regex over the line.
_SECRET_HINTS = ("whsec_", "sk-ant-", "bearer", "x-api-key", "authorization", "secret", "password")


def mask_secrets(text: str) -> str:
    """Replace anything that looks like a key, token or secret with a mask."""
    lowered = text.lower()
    if not any(hint in lowered for hint in _SECRET_HINTS):
        return text
    return _SECRETS.sub(lambda m: m.group(0)[:6] + "[masked]", text)


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line with its context and `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = REQUEST_ID_VAR.get()
        if request_id:
            entry["request_id"] = request_id
        entry.update(JOB_CONTEXT_VAR.get() or {})
        entry.update(tracing.log_fields())
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return mask_secrets(json.dumps(entry, default=str))


_ARQ_SUCCESS_LINE = "%6.2fs \u2190 %s \u25cf %s"  # arq 0.28's "  0.01s ← id:kind ● "


class DropArqSuccessLines(logging.Filter):
    """arq logs every job twice (`→` at its start, `←` at its success). Our runner's `job
    succeeded` line says the latter with the job's context, so arq's is dropped: a third
    of a busy worker's log lines, and of its logging CPU."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != _ARQ_SUCCESS_LINE


def configure_logging(level: str = "INFO") -> None:
    """Send every logger's records to stderr as JSON lines."""
    root = logging.getLogger()
    root.setLevel(level.upper())
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    # Replace plain console handlers; keep others (a test runner's capture, say).
    root.handlers[:] = [h for h in root.handlers if type(h) is not logging.StreamHandler]
    root.addHandler(handler)
    for name in ("arq", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if name == "uvicorn.access" and not logger.handlers and not logger.propagate:
            continue  # `uvicorn --no-access-log` switched it off: keep it off
        logger.handlers[:] = []
        logger.propagate = True
    arq_worker = logging.getLogger("arq.worker")
    if not any(isinstance(f, DropArqSuccessLines) for f in arq_worker.filters):
        arq_worker.addFilter(DropArqSuccessLines())
    logging.getLogger("botocore").setLevel("WARNING")
    logging.getLogger("aiobotocore").setLevel("WARNING")
    logging.getLogger("httpx").setLevel("WARNING")
