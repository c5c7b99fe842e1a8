"""Lua scripts called through typed wrappers: named keys and named arguments.

Each script's header names its KEYS and ARGV in order (`-- KEYS: record, attempts, ...`,
`-- ARGV: id, state, ...`; a trailing `*name` takes the rest). Its wrapper is a pair of
frozen dataclasses whose fields are those names in that order, so a call reads
`await FINISH(redis, FinishKeys(record=..., ...), FinishArgs(state=..., ...))` instead of
a dozen positional values, and `tests/test_scripts.py` fails if a header and its
dataclasses drift apart. Every key a script touches comes in through KEYS.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, TypeVar

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

K = TypeVar("K")
A = TypeVar("A")
_HEADER = re.compile(r"^-- (KEYS|ARGV): (.+?)$", re.MULTILINE)


def _flatten(values: Any) -> list[Any]:
    """A wrapper dataclass's fields in order; a final tuple field is spread."""
    out: list[Any] = []
    for name in values.__dataclass_fields__:
        value = getattr(values, name)
        if isinstance(value, tuple | list):
            out.extend(value)
        else:
            out.append(value)
    return out


class LuaScript(Generic[K, A]):
    """One Lua script file with its keys and arguments dataclasses, called by EVALSHA (and
    loaded on the first call, or again after Redis lost its script cache)."""

    def __init__(self, package: str, name: str, keys: type[K], args: type[A]) -> None:
        self.name = name
        self.keys_type = keys
        self.args_type = args
        self.source = resources.files(package).joinpath(f"lua/{name}.lua").read_text()
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def header(self) -> dict[str, list[str]]:
        """The KEYS and ARGV names the script's header declares, in order."""
        found: dict[str, list[str]] = {"KEYS": [], "ARGV": []}
        for which, names in _HEADER.findall(self.source):
            found[which] += [n.strip() for n in names.split(",") if n.strip()]
        return found

    def fields(self) -> dict[str, list[str]]:
        """The wrapper dataclasses' field names, `*`-marked where a tuple is spread."""
        return {
            "KEYS": _field_names(self.keys_type),
            "ARGV": _field_names(self.args_type),
        }

    async def __call__(self, redis: Redis, keys: K, args: A) -> Any:
        flat_keys = _flatten(keys)
        flat_args = _flatten(args)
        try:
            return await redis.evalsha(self.sha, len(flat_keys), *flat_keys, *flat_args)
        except NoScriptError:
            await redis.script_load(self.source)
            return await redis.evalsha(self.sha, len(flat_keys), *flat_keys, *flat_args)


def _field_names(cls: type) -> list[str]:
    names = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spread = "tuple" in str(f.type) or "list" in str(f.type)
        names.append(f"*{f.name}" if spread else f.name)
    return names


def _engine(name: str, keys: type[K], args: type[A]) -> LuaScript[K, A]:
    return LuaScript("jobs.engine", name, keys, args)


@dataclass(frozen=True, slots=True)
class EnqueueKeys:
    record: str
    listing: str
    all_jobs: str
    active: str
    waiting: str
    kinds: str
    arq_job: str
    arq_queue: str
    idempotency: str
    replayed_record: str
    replayed_attempts: str
    dlq_open: str


@dataclass(frozen=True, slots=True)
class EnqueueArgs:
    id: str
    kind: str
    created_ms: int
    due_ms: int
    arq_payload: str
    arq_ttl_ms: int
    retention_s: int
    idempotency_ttl_s: int
    fingerprint: str
    replay_of: str
    listed: str
    in_all_jobs: str
    wake_channel: str
    fields_json: str


@dataclass(frozen=True, slots=True)
class StartKeys:
    record: str
    attempts: str
    waiting: str
    running: str
    workers: str
    worker_jobs: str


@dataclass(frozen=True, slots=True)
class StartArgs:
    id: str
    now_ms: int
    worker: str
    lease_ms: int
    retention_s: int


@dataclass(frozen=True, slots=True)
class JobKeys:
    """The keys a final transition touches (finish and reap share them)."""

    record: str
    attempts: str
    waiting: str
    running: str
    active: str
    dlq: str
    dlq_open: str
    worker_jobs: str
    arq_job: str
    arq_in_progress: str
    arq_retry: str
    arq_abort: str
    arq_queue: str
    outbox: str
    stats: str


@dataclass(frozen=True, slots=True)
class FinishArgs:
    id: str
    state: str
    now_ms: int
    entry_json: str
    retention_s: int
    due_ms: int
    guard: str
    undo_attempt: str
    to_outbox: str
    dead_letter: str
    wake_channel: str
    fields: tuple[str | int | float, ...] = ()


@dataclass(frozen=True, slots=True)
class ReapArgs:
    id: str
    dead_worker: str
    now_ms: int
    crash_cap: int
    retention_s: int
    dead_letter: str
    to_outbox: str
    wake_channel: str
    crashed: str


@dataclass(frozen=True, slots=True)
class CancelKeys:
    record: str
    attempts: str
    waiting: str
    active: str
    arq_job: str
    arq_in_progress: str
    arq_retry: str
    arq_abort: str
    arq_queue: str


@dataclass(frozen=True, slots=True)
class CancelArgs:
    id: str
    now_ms: int
    retention_s: int


@dataclass(frozen=True, slots=True)
class BeatKeys:
    workers: str
    fence: str
    claims: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BeatArgs:
    worker: str
    now_s: float
    claim_ttl_ms: int


@dataclass(frozen=True, slots=True)
class ClaimKeys:
    queue: str
    claims: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimArgs:
    now_ms: int
    claim_ttl_ms: int
    room: int
    ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProgressKeys:
    record: str


@dataclass(frozen=True, slots=True)
class ProgressArgs:
    progress: float
    now_ms: int
    stage: str
    has_stage: str


@dataclass(frozen=True, slots=True)
class RateKeys:
    window: str


@dataclass(frozen=True, slots=True)
class RateArgs:
    now_ms: int
    window_ms: int
    limit: int
    member: str


@dataclass(frozen=True, slots=True)
class ReopenKeys:
    record: str
    active: str
    waiting: str
    arq_job: str
    arq_queue: str


@dataclass(frozen=True, slots=True)
class ReopenArgs:
    id: str
    now_ms: int
    arq_payload: str
    arq_ttl_ms: int
    retention_s: int
    wake_channel: str


ENQUEUE = _engine("enqueue", EnqueueKeys, EnqueueArgs)
START = _engine("start", StartKeys, StartArgs)
FINISH = _engine("finish", JobKeys, FinishArgs)
REAP = _engine("reap", JobKeys, ReapArgs)
CANCEL = _engine("cancel", CancelKeys, CancelArgs)
BEAT = _engine("beat", BeatKeys, BeatArgs)
CLAIM = _engine("claim", ClaimKeys, ClaimArgs)
PROGRESS = _engine("progress", ProgressKeys, ProgressArgs)
RATE = _engine("rate", RateKeys, RateArgs)
REOPEN = _engine("reopen", ReopenKeys, ReopenArgs)
ENGINE_SCRIPTS = (ENQUEUE, START, FINISH, REAP, CANCEL, BEAT, CLAIM, PROGRESS, RATE, REOPEN)
