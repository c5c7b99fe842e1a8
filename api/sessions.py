"""Operator dashboard sessions, held in Redis, and their CSRF tokens.

The cookie carries only a random session id (256 bits); nothing in it is computed from a
key, so knowing the source (or `SECRETS_KEY`) does not make one. Redis holds the session
under an HMAC of its id (a copy of Redis yields no cookie) for at most `SESSION_SECONDS`,
with a fingerprint of the operator key that opened it (an HMAC of the key's digest, so the
digest itself is never stored). A session is good while its record exists and its key is
still in `ADMIN_API_KEYS`: logging out deletes the record; a session whose key was removed
is deleted when it is next presented, and at every API start (`end_orphaned_sessions`).
CSRF tokens are an HMAC of the session id. The HMAC key is `SECRETS_KEY`'s `sessions` key
(`jobs/crypto.py`), so rotating `SECRETS_KEY` also ends every session.

Comparisons are made on bytes, in constant time: a value that is not ASCII is simply wrong.

    lr:dash:session:<ref>   hash: key (fingerprint), expires_at (ms); expires with it
    lr:dash:sessions        zset: ref -> expires_at (ms), to find sessions by their key
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import re
import secrets
import time

from redis.asyncio import Redis

from jobs.crypto import SESSIONS, purpose_key
from jobs.engine.keys import domain_key
from jobs.settings import Settings

COOKIE = "lr_session"
SESSION_SECONDS = 8 * 3600
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{43}")
SESSION_INDEX = domain_key("dash", "sessions")
log = logging.getLogger("api.sessions")


def same_secret(expected: str, given: str | None) -> bool:
    """Compare a secret in constant time, as UTF-8 bytes: any `given` string (not ASCII,
    lone surrogates included) is a plain mismatch, never an exception."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def operator_key_digest(settings: Settings, key: str) -> str | None:
    """The SHA-256 digest of `key` if it is one of `ADMIN_API_KEYS`, else None; every
    configured key is compared, in constant time."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    found = None
    for known in settings.admin_key_digests:
        if same_secret(known, digest):
            found = known
    return found


def _session_key(ref: str) -> str:
    return domain_key("dash", "session", ref)


class Sessions:
    """Open, check and end dashboard sessions."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis
        self._key = purpose_key(settings, SESSIONS)
        self._operators = {self.fingerprint(d) for d in settings.admin_key_digests}

    def _mac(self, label: str, value: str) -> str:
        message = f"{label}:{value}".encode("utf-8", "surrogatepass")
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def storage_key(self, session_id: str) -> str:
        """The Redis key that holds the session with this id."""
        return _session_key(self._mac("session", session_id))

    def fingerprint(self, key_digest: str) -> str:
        """What a session records of the operator key that opened it."""
        return self._mac("operator-key", key_digest)

    async def open(self, key_digest: str, now: float | None = None) -> str:
        """A new session for the operator whose key has this digest; returns its id (the
        cookie's value)."""
        session_id = secrets.token_urlsafe(32)
        ref = self._mac("session", session_id)
        expires_ms = int(((time.time() if now is None else now) + SESSION_SECONDS) * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                _session_key(ref),
                mapping={"key": self.fingerprint(key_digest), "expires_at": expires_ms},
            )
            pipe.pexpireat(_session_key(ref), expires_ms)
            pipe.zadd(SESSION_INDEX, {ref: expires_ms})
            await pipe.execute()
        return session_id

    async def valid(self, session_id: str | None) -> bool:
        """Whether the id names a live session whose operator key is still configured; a
        session whose key was removed is ended on the spot."""
        if not session_id or not SESSION_ID.fullmatch(session_id):
            return False
        ref = self._mac("session", session_id)
        key, expires = await self.redis.hmget(_session_key(ref), ["key", "expires_at"])
        if key is None or expires is None or int(expires) <= time.time() * 1000:
            return False
        if key.decode() not in self._operators:
            await self._end(ref)
            return False
        return True

    async def end(self, session_id: str | None) -> None:
        """End a session for good (logging out)."""
        if session_id and SESSION_ID.fullmatch(session_id):
            await self._end(self._mac("session", session_id))

    async def _end(self, ref: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(_session_key(ref))
            pipe.zrem(SESSION_INDEX, ref)
            await pipe.execute()

    async def end_orphaned(self) -> int:
        """End every session whose operator key is no longer configured (and forget expired
        ones); returns how many were ended."""
        await self.redis.zremrangebyscore(SESSION_INDEX, "-inf", time.time() * 1000)
        refs = [r.decode() for r in await self.redis.zrange(SESSION_INDEX, 0, -1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref in refs:
                pipe.hget(_session_key(ref), "key")
            keys = await pipe.execute()
        orphaned = [
            ref
            for ref, key in zip(refs, keys, strict=True)
            if key is None or key.decode() not in self._operators
        ]
        for ref in orphaned:
            await self._end(ref)
        return len(orphaned)

    def csrf_token(self, session_id: str) -> str:
        """The form token that goes with a session."""
        return self._mac("csrf", session_id)

    def csrf_valid(self, session_id: str, token: str | None) -> bool:
        """Whether `token` is the session's form token (any string may be given)."""
        return bool(token) and same_secret(self.csrf_token(session_id), token)


async def end_orphaned_sessions(redis: Redis, settings: Settings, timeout_s: float = 2.0) -> None:
    """At start: end the sessions of operator keys removed from `ADMIN_API_KEYS`. Best
    effort: with Redis away, a removed key's sessions are still refused when presented."""
    try:
        async with asyncio.timeout(timeout_s):
            ended = await Sessions(redis, settings).end_orphaned()
    except Exception:
        log.warning("dashboard sessions of removed operator keys not swept", exc_info=True)
        return
    if ended:
        log.info("ended %d dashboard session(s) of removed operator keys", ended)
