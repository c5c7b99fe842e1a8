"""The service's domains, composed: the registry the API and the worker hand the engine."""

from __future__ import annotations

from jobs.analyses import ANALYSES
from jobs.analysis_batches import ANALYSIS_BATCHES
from jobs.canaries import CANARIES
from jobs.engine import Registry
from jobs.exports import EXPORTS
from jobs.webhooks import WEBHOOKS

REGISTRY = Registry([ANALYSES, ANALYSIS_BATCHES, EXPORTS, WEBHOOKS, CANARIES])
