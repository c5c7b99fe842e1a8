"""The storage layer (jobs/storage.py) against each S3 server: objects, the errors it
translates, and the listing of a user's documents by prefix."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.documents import analysis_key, document_key
from jobs.errors import NotFound, ServiceError, TransientError
from jobs.exports.job import count_documents, user_document_keys
from jobs.storage import Storage, open_storage
from tests.conftest import make_settings

pytestmark = pytest.mark.s3_servers


async def test_objects_are_written_read_and_deleted(settings):
    data = '{"text": "héllo"}'.encode()
    async with open_storage(settings) as storage:
        await storage.check()
        await storage.put_bytes("a/b.json", data, "application/json")
        assert await storage.get_bytes("a/b.json") == data
        head = await storage.client.head_object(Bucket=settings.s3_bucket, Key="a/b.json")
        assert head["ContentType"] == "application/json" and head["ContentLength"] == len(data)
        await storage.delete("a/b.json")
        await storage.delete("a/b.json")  # already gone: no error
        with pytest.raises(NotFound) as missing:
            await storage.get_bytes("a/b.json")
    assert missing.value.type == "s3_not_found"


async def test_a_missing_bucket_fails_the_check(settings):
    async with open_storage(settings.model_copy(update={"s3_bucket": "lr-missing"})) as storage:
        with pytest.raises(ServiceError) as failed:
            await storage.check()
    assert "lr-missing" in failed.value.message and not failed.value.retryable


async def test_wrong_credentials_are_refused_for_good(settings, redis_server, s3_server):
    if not s3_server.verifies_signatures:
        pytest.skip("moto accepts any credentials")
    for wrong in ({"aws_secret_access_key": "not-the-secret"}, {"aws_access_key_id": "nobody"}):
        refused = make_settings(redis_server.url, s3_server.url, **wrong)
        async with open_storage(refused) as storage:
            with pytest.raises(ServiceError) as check:
                await storage.check()
            with pytest.raises(ServiceError) as put:
                await storage.put_bytes("a/b.json", b"{}")
        # A 403, not an outage: the job fails for good instead of retrying on a bad key.
        for error in (check.value, put.value):
            assert not isinstance(error, TransientError) and error.type == "s3_error"
    async with open_storage(settings) as storage:
        listed = await storage.client.list_objects_v2(Bucket=settings.s3_bucket)
    assert listed["KeyCount"] == 0  # nothing was written


class SmallPages:
    """An S3 client whose listings come two keys a page, to cross page boundaries."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get_paginator(self, name: str) -> Any:
        paginator = self.client.get_paginator(name)

        class Paged:
            def paginate(self, **kwargs: Any) -> Any:
                return paginator.paginate(**kwargs, PaginationConfig={"PageSize": 2})

        return Paged()


async def test_a_users_documents_are_listed_by_prefix_in_key_order(settings):
    # User ids may hold '@', ':' and '.', and one user's id may begin another's.
    counts = {("acme", "u-1"): 5, ("acme", "u-10"): 2, ("acme", "a.b@c:d"): 3, ("globex", "u-1"): 1}
    async with open_storage(settings) as storage:
        expected: dict[tuple[str, str], list[str]] = {}
        for (account, user), n in counts.items():
            keys = [document_key(account, user, f"doc_{i:02d}") for i in range(n)]
            for key in reversed(keys):
                await storage.put_bytes(key, b"{}", "application/json")
            expected[(account, user)] = keys
        # An analysis lies under the same user prefix, not under documents/.
        await storage.put_bytes(analysis_key("acme", "u-1", "doc_00", "job_1"), b"{}")
        paged = Storage(SmallPages(storage.client), storage.bucket)
        for (account, user), keys in expected.items():
            assert [k async for k in user_document_keys(storage, account, user)] == keys
            assert [k async for k in user_document_keys(paged, account, user)] == keys
            assert await count_documents(paged, account, user) == len(keys)
        assert [k async for k in user_document_keys(paged, "acme", "nobody")] == []
