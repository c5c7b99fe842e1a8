"""A worker with the test kinds, for `arq tests.support.worker.WorkerSettings` subprocesses."""

from __future__ import annotations

from typing import Any

from jobs.settings import load_settings
from jobs.worker import settings_class
from tests.support.kinds import TEST_KINDS


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        return settings_class(load_settings(), TEST_KINDS)
    raise AttributeError(name)
