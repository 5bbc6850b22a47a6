"""``GET /usage``: answered requests and tokens per key and day, for the web page.

A made key sees its own usage; an admin key (and anyone on an open service) sees every
key's. ``mlxq usage`` prints the same figures from Redis.
"""

import asyncio
import datetime as dt

from fastapi import APIRouter, Query

from api.deps import IdentityDep, RedisDep
from api.dialects.ask.schemas import ErrorBody
from shared.errors import InvalidRequest
from shared.usage import read_usage, today, totals

router = APIRouter(tags=["usage"])

DEFAULT_DAYS = 30
"""How far back the usage goes when ``since`` is not given."""


@router.get("/usage", responses={status: {"model": ErrorBody} for status in (400, 401, 503)})
async def usage(
    identity: IdentityDep,
    redis: RedisDep,
    since: str | None = Query(
        None,
        pattern=r"^\d{4}-\d{2}-\d{2}$",
        description="First day (YYYY-MM-DD, UTC); default: 30 days",
    ),
) -> dict:
    until = today()
    first = _day(since) if since else until - dt.timedelta(days=DEFAULT_DAYS - 1)
    rows = await asyncio.to_thread(read_usage, redis, first, until)
    if not identity.sees_all:
        rows = [row for row in rows if row.key == identity.name]
    record = identity.record
    return {
        "key": identity.name,
        "admin": identity.sees_all,
        "limits": record.model_dump(include={"rpm", "tpm", "max_concurrent", "files_bytes"})
        if record is not None
        else None,
        "since": first.isoformat(),
        "until": until.isoformat(),
        "days": [row.as_dict() for row in rows],
        "totals": [row.as_dict() for row in totals(rows)],
    }


def _day(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise InvalidRequest(f"since must be a date (YYYY-MM-DD), not {text!r}.") from None
