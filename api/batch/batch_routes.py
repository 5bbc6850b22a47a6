"""``/v1/batches``: OpenAI's Batch API on the queue (docs/batches.md).

A batch's lines are validated here, as live requests would be; lines that fail go to its
error file at once. The valid ones are run by a ``BatchDriver`` (api/batch/driver.py) as
jobs on the model's batch lane, which workers serve only with slots interactive requests
leave free.
"""

import asyncio
import re
import time
import uuid
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.batch import store
from api.batch.file_routes import refuse_unknown_query
from api.batch.lines import ENDPOINTS, BadLine, Line, parse_lines
from api.batch.records import bad_line_error
from api.core.models import resolve_model
from api.deps import AsyncRedisDep, RedisDep, SettingsDep
from api.dialects.openai.answers import ERROR_RESPONSES
from shared.errors import InvalidRequest, ModelNotFound, NotFound
from shared.settings import Settings

router = APIRouter(prefix="/v1", tags=["batch"])


WINDOW = re.compile(r"^([1-9][0-9]{0,3})h$")
"""A completion window in hours ("24h" is OpenAI's only one; any whole number is honoured)."""


class OutputExpiresAfter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    anchor: Literal["created_at"]
    seconds: int = Field(ge=3600, le=2_592_000)


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input_file_id: str
    endpoint: str
    completion_window: str = Field(description="Hours the batch may take, e.g. '24h'.")
    metadata: dict[str, str] | None = None
    output_expires_after: OutputExpiresAfter | None = None

    @field_validator("endpoint")
    @classmethod
    def _known_endpoint(cls, value: str) -> str:
        if value not in ENDPOINTS:
            raise ValueError(f"mlxq runs batches of {sorted(ENDPOINTS)}, not {value!r}")
        return value

    @field_validator("completion_window")
    @classmethod
    def _hours(cls, value: str) -> str:
        if not WINDOW.match(value):
            raise ValueError("must be a whole number of hours, such as '24h'")
        return value

    @field_validator("metadata")
    @classmethod
    def _openai_metadata(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and (
            len(value) > 16 or any(len(k) > 64 or len(v) > 512 for k, v in value.items())
        ):
            raise ValueError("at most 16 pairs, keys up to 64 and values up to 512 characters")
        return value


@router.post("/batches", responses=ERROR_RESPONSES)
async def create_batch(
    body: BatchCreate, redis: AsyncRedisDep, fleet: RedisDep, settings: SettingsDep
) -> dict:
    meta = await store.file_meta(redis, body.input_file_id)
    content = await store.file_content(redis, body.input_file_id)
    if meta is None or content is None:
        raise NotFound(f"No file {body.input_file_id!r} (it may have expired).")
    if meta["purpose"] != "batch":
        raise InvalidRequest(f"File {body.input_file_id!r} is not a batch input file.")
    lines = await asyncio.to_thread(parse_lines, content, body.endpoint, settings)
    lines, models = await _resolve_models(lines, fleet, settings)
    now = int(time.time())
    window_match = WINDOW.match(body.completion_window)
    assert window_match is not None  # validated
    record: dict[str, Any] = {
        "id": f"batch_{uuid.uuid4().hex}",
        "endpoint": body.endpoint,
        "input_file_id": body.input_file_id,
        "completion_window": body.completion_window,
        "created_at": now,
        "expires_at": now + int(window_match.group(1)) * 3600,
        "metadata": body.metadata,
        "total": len(lines),
        "output_ttl_s": body.output_expires_after.seconds if body.output_expires_after else None,
        "models": models,
    }
    bad = [line for line in lines if isinstance(line, BadLine)]
    errors = [
        {"code": "invalid_request", "message": b.message, "param": None, "line": b.number + 1}
        for b in bad
    ]
    await store.keep_file_until(
        redis, body.input_file_id, record["expires_at"] + settings.batch_retention
    )
    await store.create_batch(redis, record, errors, {b.number: bad_line_error(b) for b in bad})
    return await _batch(redis, record["id"])


async def _resolve_models(
    lines: list[Line | BadLine], fleet: RedisDep, settings: Settings
) -> tuple[list[Line | BadLine], dict[str, str]]:
    """The served id each line's model name stands for (an alias is resolved now, once, and
    kept in the batch's record); a line for a model no worker serves fails (as the live
    request would, with a 404)."""
    unserved: dict[str, str] = {}
    models: dict[str, str] = {}
    for name in {line.model for line in lines if isinstance(line, Line)}:
        try:
            models[name] = await resolve_model(fleet, settings, name)
        except ModelNotFound as exc:
            unserved[name] = exc.message
    checked = [
        BadLine(line.number, line.custom_id, f"Line {line.number + 1}: {unserved[line.model]}")
        if isinstance(line, Line) and line.model in unserved
        else line
        for line in lines
    ]
    return checked, models


@router.get("/batches/{batch_id}", responses=ERROR_RESPONSES)
async def retrieve_batch(batch_id: str, redis: AsyncRedisDep) -> dict:
    return await _batch(redis, batch_id)


@router.get("/batches", responses=ERROR_RESPONSES)
async def list_batches(
    request: Request,
    redis: AsyncRedisDep,
    limit: int = Query(20, ge=1, le=100),
    after: str | None = None,
) -> dict:
    """Newest first, as OpenAI lists them."""
    refuse_unknown_query(request, {"limit", "after"})
    batches = [state.as_openai() for state in await store.list_batches(redis)]
    if after is not None:
        ids = [b["id"] for b in batches]
        batches = batches[ids.index(after) + 1 :] if after in ids else []
    page = batches[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0]["id"] if page else None,
        "last_id": page[-1]["id"] if page else None,
        "has_more": len(batches) > limit,
    }


@router.post("/batches/{batch_id}/cancel", responses=ERROR_RESPONSES)
async def cancel_batch(batch_id: str, redis: AsyncRedisDep) -> dict:
    """Stop the lines not yet answered (within seconds); the answered ones are kept in the
    output file. The batch is "cancelling" until its driver has stopped them."""
    state = await store.batch_state(redis, batch_id)
    if state is None:
        raise NotFound(f"No batch {batch_id!r} (it may have expired).")
    if state.status != "cancelling" and not await store.request_cancel(redis, batch_id):
        raise InvalidRequest(f"Batch {batch_id!r} has already ended ({state.status}).")
    return await _batch(redis, batch_id)


async def _batch(redis: AsyncRedisDep, batch_id: str) -> dict:
    state = await store.batch_state(redis, batch_id)
    if state is None:
        raise NotFound(f"No batch {batch_id!r} (it may have expired).")
    return state.as_openai()
