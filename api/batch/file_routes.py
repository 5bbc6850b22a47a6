"""``/v1/files``: OpenAI's Files API, for the input and output files of batches.

Files are kept in Redis (durable with AOF like the queue, readable by every API process),
up to MLXQ_MAX_FILE_BYTES each, for MLXQ_BATCH_RETENTION seconds (or the ``expires_after``
the client asks for).
"""

from typing import Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from starlette.datastructures import UploadFile

from api.batch import store
from api.batch.files_budget import over_budget, room_for
from api.batch.records import new_file_meta
from api.deps import AsyncRedisDep, SettingsDep
from api.dialects.openai.answers import ERROR_RESPONSES
from shared.errors import InvalidRequest, NotFound, PayloadTooLarge

router = APIRouter(prefix="/v1", tags=["batch"])


FORM_FIELDS = frozenset({"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"})
MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 2_592_000
"""OpenAI's bounds for ``expires_after.seconds``."""


@router.post("/files", responses=ERROR_RESPONSES)
async def create_file(request: Request, redis: AsyncRedisDep, settings: SettingsDep) -> dict:
    """Upload a batch input file (multipart: ``file``, ``purpose=batch``)."""
    form = await request.form(max_files=1, max_fields=len(FORM_FIELDS))
    unknown = sorted(set(form) - FORM_FIELDS)
    if unknown:
        raise InvalidRequest(f"Unknown form field(s) {unknown}; expected {sorted(FORM_FIELDS)}.")
    purpose = form.get("purpose")
    if purpose != "batch":
        raise InvalidRequest(
            f"purpose must be 'batch', not {purpose!r}: mlxq keeps files for the Batch API only."
        )
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise InvalidRequest("Send the file as the multipart field 'file'.")
    content = await upload.read(settings.max_file_bytes + 1)
    if len(content) > settings.max_file_bytes:
        raise PayloadTooLarge(
            f"The file is larger than {settings.max_file_bytes} bytes (MLXQ_MAX_FILE_BYTES)."
        )
    ttl_s = _expiry(form.get("expires_after[anchor]"), form.get("expires_after[seconds]"))
    ttl_s = ttl_s or settings.batch_retention
    budget = await room_for(redis, settings, len(content))
    meta = new_file_meta(upload.filename or "upload.jsonl", "batch", len(content), ttl_s)
    used = await store.put_file(redis, meta, content, ttl_s, budget)
    if used is not None:
        raise over_budget(len(content), used, budget)
    return meta


def _expiry(anchor: object, seconds: object) -> int | None:
    """``expires_after`` as OpenAI defines it (anchor ``created_at``, 1 hour to 30 days)."""
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest("expires_after.anchor must be 'created_at'.")
    if not isinstance(seconds, str) or not seconds.isdigit():
        raise InvalidRequest("expires_after.seconds must be a whole number of seconds.")
    if not MIN_EXPIRY_S <= int(seconds) <= MAX_EXPIRY_S:
        raise InvalidRequest(
            f"expires_after.seconds must be between {MIN_EXPIRY_S} and {MAX_EXPIRY_S}."
        )
    return int(seconds)


def refuse_unknown_query(request: Request, known: set[str]) -> None:
    """A query parameter this route does not read is a 400, not silently ignored."""
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        raise InvalidRequest(f"Unknown query parameter(s) {unknown}; accepted: {sorted(known)}.")


@router.get("/files", responses=ERROR_RESPONSES)
async def list_files(
    request: Request,
    redis: AsyncRedisDep,
    purpose: str | None = None,
    limit: int = Query(10_000, ge=1, le=10_000),
    order: Literal["asc", "desc"] = "desc",
    after: str | None = None,
) -> dict:
    refuse_unknown_query(request, {"purpose", "limit", "order", "after"})
    files = await store.list_files(redis)
    if purpose is not None:
        files = [f for f in files if f["purpose"] == purpose]
    if order == "desc":
        files.reverse()
    if after is not None:
        ids = [f["id"] for f in files]
        files = files[ids.index(after) + 1 :] if after in ids else []
    page = files[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(files) > limit,
    }


@router.get("/files/{file_id}", responses=ERROR_RESPONSES)
async def retrieve_file(file_id: str, redis: AsyncRedisDep) -> dict:
    meta = await store.file_meta(redis, file_id)
    if meta is None:
        raise NotFound(f"No file {file_id!r} (it may have expired).")
    return meta


@router.get("/files/{file_id}/content", responses=ERROR_RESPONSES)
async def file_content(file_id: str, redis: AsyncRedisDep) -> Response:
    content = await store.file_content(redis, file_id)
    if content is None:
        raise NotFound(f"No file {file_id!r} (it may have expired).")
    return Response(content, media_type="application/octet-stream")


@router.delete("/files/{file_id}", responses=ERROR_RESPONSES)
async def delete_file(file_id: str, redis: AsyncRedisDep) -> dict:
    if not await store.delete_file(redis, file_id):
        raise NotFound(f"No file {file_id!r} (it may have expired).")
    return {"id": file_id, "object": "file", "deleted": True}
