"""What the service holds, read back from Redis and S3: snapshots to prove that a request
changed nothing, and every stored value, to look for what must never be stored."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from jobs.storage import Storage


@dataclass(frozen=True)
class KeyState:
    type: str
    digest: str
    ttl_ms: int  # -1: no expiry


def _read(pipe: Any, key: bytes, kind: str) -> None:
    if kind == "string":
        pipe.get(key)
    elif kind == "hash":
        pipe.hgetall(key)
    elif kind == "list":
        pipe.lrange(key, 0, -1)
    elif kind == "set":
        pipe.smembers(key)
    elif kind == "zset":
        pipe.zrange(key, 0, -1, withscores=True)
    elif kind == "stream":
        pipe.xrange(key)
    else:
        raise AssertionError(f"unexpected Redis type {kind} at {key!r}")


def _as_values(kind: str, reply: Any) -> list[bytes]:
    if kind == "string":
        return [reply or b""]
    if kind == "hash":
        return [part for pair in sorted(reply.items()) for part in pair]
    if kind == "set":
        return sorted(reply)
    if kind == "zset":
        return [part for m, s in reply for part in (m, repr(s).encode())]
    if kind == "stream":
        return [repr(e).encode() for e in reply]
    return list(reply)


async def redis_items(redis: Redis) -> list[tuple[bytes, str, list[bytes], int]]:
    """Every key with its type, its values (a hash as field, value, field, ...; a sorted set
    as member, score, ...) and its time to live in ms (-1: none)."""
    keys = [key async for key in redis.scan_iter(count=1000)]
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.type(key)
        kinds = [k.decode() for k in await pipe.execute()]
    present = [(key, kind) for key, kind in zip(keys, kinds, strict=True) if kind != "none"]
    # A running worker may delete a key between the two reads: each key's type is read
    # again with its value in one MULTI/EXEC, and a key gone (or retyped) is left out.
    async with redis.pipeline(transaction=True) as pipe:
        for key, kind in present:
            pipe.type(key)
            _read(pipe, key, kind)
            pipe.pttl(key)
        replies = await pipe.execute(raise_on_error=False)
    return [
        (key, kind, _as_values(kind, reply), ttl)
        for (key, kind), now, reply, ttl in zip(
            present, replies[::3], replies[1::3], replies[2::3], strict=True
        )
        if now.decode() == kind
    ]


async def redis_snapshot(redis: Redis) -> dict[bytes, KeyState]:
    """Every key: its type, a digest of its whole value, and its time to live."""
    return {
        key: KeyState(kind, hashlib.sha256(b"\0".join(values)).hexdigest(), ttl)
        for key, kind, values, ttl in await redis_items(redis)
    }


async def s3_snapshot(storage: Storage) -> dict[str, Any]:
    """Every object (key, ETag, size) and every open multipart upload in the bucket."""
    client, bucket = storage.client, storage.bucket
    objects: dict[str, tuple[str, int]] = {}
    async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            objects[item["Key"]] = (item["ETag"], item["Size"])
    uploads = await client.list_multipart_uploads(Bucket=bucket)
    return {"objects": objects, "uploads": sorted(u["Key"] for u in uploads.get("Uploads", []))}


def redis_changes(before: dict[bytes, KeyState], after: dict[bytes, KeyState]) -> list[str]:
    """What differs between two snapshots; a time to live may only have run down."""
    changes = [f"added {k!r} ({after[k].type})" for k in after.keys() - before.keys()]
    changes += [f"removed {k!r}" for k in before.keys() - after.keys()]
    for key in before.keys() & after.keys():
        old, new = before[key], after[key]
        if (old.type, old.digest) != (new.type, new.digest):
            changes.append(f"changed {key!r}")
        elif (old.ttl_ms < 0) != (new.ttl_ms < 0) or new.ttl_ms > old.ttl_ms:
            changes.append(f"expiry of {key!r} changed: {old.ttl_ms} -> {new.ttl_ms} ms")
    return sorted(changes)


async def stored_values(redis: Redis) -> list[tuple[bytes, bytes]]:
    """(key, element) for every element stored: a string's value, each hash field and
    value, each list item, set member and sorted-set member."""
    return [(key, v) for key, _, values, _ in await redis_items(redis) for v in values]


async def s3_objects(storage: Storage) -> dict[str, bytes]:
    """Every object in the bucket, read whole (tests keep them small)."""
    keys = (await s3_snapshot(storage))["objects"]
    return {key: await storage.get_bytes(key) for key in keys}
