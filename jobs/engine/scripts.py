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

    def __init__(
        self,
        package: str,
        name: str,
        keys: type[K],
        args: type[A],
        prelude: tuple[str, ...] = (),
    ) -> None:
        self.name = name
        self.keys_type = keys
        self.args_type = args
        files = resources.files(package).joinpath("lua")
        self.main = files.joinpath(f"{name}.lua").read_text()
        # Shared Lua functions (`lua/<prelude>.lua`) go first: Lua has no includes.
        self.source = "\n".join(
            [*(files.joinpath(f"{p}.lua").read_text() for p in prelude), self.main]
        )
        self.sha = hashlib.sha1(self.source.encode()).hexdigest()

    def header(self) -> dict[str, list[str]]:
        """The KEYS and ARGV names the script's header declares, in order."""
        found: dict[str, list[str]] = {"KEYS": [], "ARGV": []}
        for which, names in _HEADER.findall(self.main):
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


def _engine(
    name: str, keys: type[K], args: type[A], prelude: tuple[str, ...] = ()
) -> LuaScript[K, A]:
    return LuaScript("jobs.engine", name, keys, args, prelude)


@dataclass(frozen=True, slots=True)
class FairKeys:
    """A kind's fair queue: the queue, its ring and sleepers, the turn counter, and the
    accounts' backlog."""

    queue: str
    ring: str
    sleep: str
    turn: str
    backlog: str


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
    unfinished: str
    queue: str
    ring: str
    sleep: str
    turn: str
    backlog: str


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
    counted: str
    wake_channel: str
    max_queued: int
    bucket: str
    account: str
    fields_json: str


@dataclass(frozen=True, slots=True)
class StartKeys:
    record: str
    attempts: str
    waiting: str
    running: str
    workers: str
    worker_jobs: str
    claimed: str
    fair_running: str


@dataclass(frozen=True, slots=True)
class StartArgs:
    id: str
    now_ms: int
    worker: str
    lease_ms: int
    retention_s: int
    run_token: str


@dataclass(frozen=True, slots=True)
class JobKeys:
    """The keys an outcome touches (finish and reap share them)."""

    record: str
    attempts: str
    waiting: str
    running: str
    active: str
    dlq: str
    dlq_open: str
    worker_jobs: str
    arq_job: str
    arq_retry: str
    arq_abort: str
    arq_queue: str
    outbox: str
    stats: str
    unfinished: str
    queue: str
    ring: str
    sleep: str
    turn: str
    backlog: str
    fair_running: str


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
    bucket: str
    drop_entry: str = ""
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
    bucket: str


@dataclass(frozen=True, slots=True)
class CancelKeys:
    record: str
    attempts: str
    waiting: str
    active: str
    arq_job: str
    arq_retry: str
    arq_abort: str
    arq_queue: str
    claimed: str
    unfinished: str
    queue: str
    backlog: str


@dataclass(frozen=True, slots=True)
class CancelArgs:
    id: str
    now_ms: int
    retention_s: int


@dataclass(frozen=True, slots=True)
class BeatKeys:
    workers: str
    fence: str


@dataclass(frozen=True, slots=True)
class BeatArgs:
    worker: str
    now_s: float


@dataclass(frozen=True, slots=True)
class ClaimKeys:
    turn: str
    running: str
    backlog: str
    limits: str
    paused_kinds: str
    paused_accounts: str
    per_kind: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ClaimArgs:
    now_ms: int
    slots: int
    scan_limit: int
    kinds: tuple[str, ...] = ()


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
    claimed: str
    queue: str
    ring: str
    sleep: str
    turn: str
    backlog: str


@dataclass(frozen=True, slots=True)
class ReopenArgs:
    id: str
    now_ms: int
    arq_payload: str
    arq_ttl_ms: int
    retention_s: int
    wake_channel: str
    bucket: str


@dataclass(frozen=True, slots=True)
class RequeueKeys:
    record: str
    claimed: str
    waiting: str
    queue: str
    ring: str
    sleep: str
    turn: str
    backlog: str
    fair_running: str


@dataclass(frozen=True, slots=True)
class RequeueArgs:
    id: str
    now_ms: int
    bucket: str


@dataclass(frozen=True, slots=True)
class GcraKeys:
    tat: str


@dataclass(frozen=True, slots=True)
class GcraArgs:
    now_ms: int
    interval_ms: float
    burst: int


@dataclass(frozen=True, slots=True)
class SlotsKeys:
    slots: str


@dataclass(frozen=True, slots=True)
class SlotsArgs:
    now_ms: int
    limit: int
    member: str
    expires_ms: int


FAIR = ("fair",)
ENQUEUE = _engine("enqueue", EnqueueKeys, EnqueueArgs, FAIR)
START = _engine("start", StartKeys, StartArgs)
FINISH = _engine("finish", JobKeys, FinishArgs, FAIR)
REAP = _engine("reap", JobKeys, ReapArgs, FAIR)
CANCEL = _engine("cancel", CancelKeys, CancelArgs, FAIR)
BEAT = _engine("beat", BeatKeys, BeatArgs)
CLAIM = _engine("claim", ClaimKeys, ClaimArgs)
PROGRESS = _engine("progress", ProgressKeys, ProgressArgs)
RATE = _engine("rate", RateKeys, RateArgs)
REOPEN = _engine("reopen", ReopenKeys, ReopenArgs, FAIR)
REQUEUE = _engine("requeue", RequeueKeys, RequeueArgs, FAIR)
GCRA = _engine("gcra", GcraKeys, GcraArgs)
SLOTS = _engine("slots", SlotsKeys, SlotsArgs)
ENGINE_SCRIPTS = (
    ENQUEUE, START, FINISH, REAP, CANCEL, BEAT, CLAIM, PROGRESS, RATE, REOPEN, REQUEUE, GCRA,
    SLOTS,
)  # fmt: skip
