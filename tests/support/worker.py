"""A worker with the test kinds, for `arq tests.support.worker.WorkerSettings` subprocesses."""

from __future__ import annotations

from typing import Any

from jobs.engine.arq_adapter import use_longrun_worker
from jobs.settings import load_settings
from jobs.worker import settings_class
from tests.support.kinds import TEST_REGISTRY


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        use_longrun_worker()
        return settings_class(load_settings(), TEST_REGISTRY)
    raise AttributeError(name)
