"""The worker: `arq jobs.worker.WorkerSettings` starts it.

The settings are read, and arq's CLI pointed at the engine's worker class, only when
the CLI asks for `WorkerSettings`, so importing this module needs no environment.
"""

from __future__ import annotations

from typing import Any

from jobs.domains import REGISTRY
from jobs.engine.arq_adapter import use_longrun_worker
from jobs.engine.lifecycle import worker_settings
from jobs.engine.registry import Registry
from jobs.settings import Settings, load_settings


def settings_class(settings: Settings, registry: Registry = REGISTRY) -> type:
    """A flat WorkerSettings class (arq ignores inherited attributes)."""
    return type("WorkerSettings", (), worker_settings(settings, registry))


def __getattr__(name: str) -> Any:
    if name == "WorkerSettings":
        use_longrun_worker()
        return settings_class(load_settings())
    raise AttributeError(name)
