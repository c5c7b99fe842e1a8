"""Documents: JSON or a multipart upload of a UTF-8 text file, stored in S3; read; deleted."""

from __future__ import annotations

import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile

from api.deps import AccountDep, OwnedDocument, ServicesDep, SettingsDep
from api.schemas import rfc3339
from jobs.analysis_batches import ANALYSIS_BATCH, document_result
from jobs.documents import USER_ID_PATTERN, DocumentMeta, Documents, analysis_key
from jobs.engine.store import JobStore
from jobs.errors import InvalidInput, PayloadTooLarge, ServiceError, UnsupportedMediaType
from jobs.storage import Storage

router = APIRouter(prefix="/v1/documents", tags=["documents"])

# Room for JSON escaping and multipart framing around the document itself.
BODY_OVERHEAD = 64 * 1024


def document_body_limit(max_document_bytes: int) -> int:
    """The largest body a document upload may need: its text JSON-escaped (at most six
    bytes a byte, as `\\u00XX`) and the other fields."""
    return max_document_bytes * 6 + BODY_OVERHEAD


class DocumentCreate(BaseModel):
    user_id: str = Field(pattern=USER_ID_PATTERN, description="the end user the document is of")
    title: str | None = Field(None, max_length=500)
    text: str = Field(description="UTF-8 text")

    @field_validator("title", "text")
    @classmethod
    def _encodable(cls, value: str | None) -> str | None:
        # JSON's "\ud800" (or a multipart field in UTF-7) decodes to a lone surrogate,
        # which no UTF-8 store can hold.
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode text (no lone surrogates)") from None
        return value


class LatestAnalysis(BaseModel):
    job_id: str
    state: str
    analysis: str | None = None
    model: str | None = None


class DocumentPublic(BaseModel):
    id: str
    user_id: str
    title: str | None
    size_bytes: int
    created_at: str
    latest_analysis: LatestAnalysis | None = None


async def get_documents(request: Request) -> Documents:
    return request.app.state.documents


DocumentsDep = Annotated[Documents, Depends(get_documents)]


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the request body is over {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the request body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _validated(data: Any) -> DocumentCreate:
    try:
        return DocumentCreate.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_input=False)) from None


async def _from_multipart(request: Request, max_bytes: int) -> DocumentCreate:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes + BODY_OVERHEAD:
        raise PayloadTooLarge(f"the upload is over {max_bytes} bytes (MAX_DOCUMENT_BYTES)")
    async with request.form(max_files=1, max_fields=10) as form:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise InvalidInput("send the document as a multipart file field named 'file'")
        raw = await upload.read(max_bytes + 1)
        if len(raw) > max_bytes:
            raise PayloadTooLarge(f"the file is over {max_bytes} bytes (MAX_DOCUMENT_BYTES)")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput("the file must be UTF-8 text", type="invalid_encoding") from None
        title = form.get("title") or upload.filename
        return _validated({"user_id": form.get("user_id"), "title": title, "text": text})


async def batch_analysis(
    meta: DocumentMeta, store: JobStore, storage: Storage | None, job_id: str
) -> LatestAnalysis | None:
    """A document's latest analysis made by an analysis batch: its own result there."""
    entry = await document_result(store.redis, job_id, meta.id)
    if entry is None:
        return None
    analysis = None
    if entry["state"] == "succeeded" and storage is not None:
        key = analysis_key(meta.account, meta.user_id, meta.id, job_id)
        with contextlib.suppress(ServiceError):  # S3 down: the state and model still show
            analysis = json.loads(await storage.get_bytes(key)).get("analysis")
    return LatestAnalysis(
        job_id=job_id, state=entry["state"], analysis=analysis, model=entry.get("model")
    )


async def document_public(
    meta: DocumentMeta, store: JobStore | None, storage: Storage | None = None
) -> DocumentPublic:
    latest = None
    if meta.latest_analysis_job and store is not None:
        record = await store.get(meta.latest_analysis_job)
        if record is not None and record.kind == ANALYSIS_BATCH.name:
            latest = await batch_analysis(meta, store, storage, record.id)
        elif record is not None:
            result = record.result or {}
            latest = LatestAnalysis(
                job_id=record.id,
                state=record.state.value,
                analysis=result.get("analysis"),
                model=result.get("model"),
            )
    return DocumentPublic(
        id=meta.id,
        user_id=meta.user_id,
        title=meta.title,
        size_bytes=meta.size_bytes,
        created_at=rfc3339(meta.created_at) or "",
        latest_analysis=latest,
    )


UPLOAD_SCHEMA = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": DocumentCreate.model_json_schema()},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["user_id", "file"],
                    "properties": {
                        "user_id": {"type": "string", "pattern": USER_ID_PATTERN},
                        "title": {"type": "string", "maxLength": 500},
                        "file": {"type": "string", "format": "binary"},
                    },
                }
            },
        },
    }
}


@router.post(
    "",
    status_code=201,
    response_model=DocumentPublic,
    openapi_extra=UPLOAD_SCHEMA,
    responses={413: {"description": "over MAX_DOCUMENT_BYTES"}, 503: {"description": "S3 down"}},
)
async def create_document(
    request: Request, account: AccountDep, settings: SettingsDep, documents: DocumentsDep
) -> JSONResponse:
    """Store a document: JSON `{user_id, title?, text}` or a multipart upload of a UTF-8 text
    file with `user_id`. Above MAX_DOCUMENT_BYTES: 413 and nothing is stored; while S3 is
    down: 503 with Retry-After."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = settings.max_document_bytes
    if content_type == "multipart/form-data":
        body = await _from_multipart(request, limit)
    elif content_type in ("application/json", ""):
        raw = await read_body(request, document_body_limit(limit))
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested too deep
            raise InvalidInput("the body is not valid JSON", type="invalid_json") from None
        body = _validated(data)
    else:
        raise UnsupportedMediaType("send application/json or multipart/form-data")
    meta = await documents.create(account, body.user_id, body.title, body.text)
    public = await document_public(meta, None)
    return JSONResponse(
        public.model_dump(mode="json"),
        status_code=201,
        headers={"Location": f"/v1/documents/{meta.id}"},
    )


@router.get("/{doc_id}", response_model=DocumentPublic)
async def get_document(document: OwnedDocument, services: ServicesDep) -> DocumentPublic:
    """The document's metadata with its latest analysis, if any."""
    return await document_public(document, services.store, services.storage)


@router.delete("/{doc_id}", status_code=204, responses={503: {"description": "S3 down"}})
async def delete_document(document: OwnedDocument, services: ServicesDep) -> Response:
    """Delete a document with its text and every analysis of it; an export already written
    keeps its copy until the export expires. While S3 is down: 503 with Retry-After (the
    document is already gone for every reader; a retry of the DELETE finishes the job)."""
    await services.documents.delete(document)
    return Response(status_code=204)
