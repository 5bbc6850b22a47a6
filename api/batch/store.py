"""The Redis records of the Batch API's batches and their lines' results (files are
api/batch/file_store.py's).

Only the API reads and writes these (workers see a batch's lines as ordinary jobs on the
batch lane), so they live here rather than in shared/protocol/. Every key is durable like
the queue (AOF), readable by every API process, and expires once the batch has ended
(MLXQ_BATCH_RETENTION). A batch belongs to the key that made it (``owner`` in its record).

    mlxq:batch:{id}         hash  record (the static fields, JSON), status, <status>_at,
                                  output_file_id, error_file_id, errors (JSON)
    mlxq:batch:{id}:out     hash  line number -> output line (JSON)
    mlxq:batch:{id}:err     hash  line number -> error line (JSON)
    mlxq:batch:{id}:jobs    hash  line number -> job id of its running attempt
    mlxq:batch:{id}:lease   str   the API process driving the batch (expires unless renewed)
    mlxq:batches            zset  batch id -> time created (listing)
    mlxq:batches:active     set   batches not yet ended, for any API process to drive
"""

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

BATCHES = "mlxq:batches"
ACTIVE_BATCHES = "mlxq:batches:active"

TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)
FINAL_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


def _batch_key(batch_id: str, part: str = "") -> str:
    return f"mlxq:batch:{batch_id}{part}"


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


# -- batches -----------------------------------------------------------------------------------


@dataclass
class BatchState:
    """A batch as stored: its static record, where it stands, and its lines' counts."""

    record: dict
    status: str
    times: dict[str, int]
    output_file_id: str | None
    error_file_id: str | None
    errors: list[dict]
    completed: int
    failed: int

    @property
    def id(self) -> str:
        return self.record["id"]

    @property
    def total(self) -> int:
        return self.record["total"]

    @property
    def owner(self) -> str | None:
        """The key that made the batch (None: made without a key)."""
        return self.record.get("owner")

    @property
    def ended(self) -> bool:
        return self.status in FINAL_STATUSES

    def as_openai(self) -> dict[str, Any]:
        """OpenAI's Batch object."""
        record = self.record
        return {
            "id": record["id"],
            "object": "batch",
            "endpoint": record["endpoint"],
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": record["input_file_id"],
            "completion_window": record["completion_window"],
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": record["created_at"],
            "expires_at": record["expires_at"],
            **{name: self.times.get(name) for name in TIMESTAMPS},
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": record["metadata"],
        }


async def create_batch(
    connection: aioredis.Redis,
    record: dict,
    errors: list[dict],
    error_lines: dict[Any, Any],
) -> None:
    """Store a new batch, with the lines that failed validation already in its error lines."""
    batch_id = record["id"]
    async with connection.pipeline(transaction=True) as pipeline:
        pipeline.hset(
            _batch_key(batch_id),
            mapping={"record": json.dumps(record), "status": "in_progress"},
        )
        pipeline.hset(_batch_key(batch_id), "in_progress_at", record["created_at"])
        if errors:
            pipeline.hset(_batch_key(batch_id), "errors", json.dumps(errors))
        if error_lines:
            pipeline.hset(_batch_key(batch_id, ":err"), mapping=error_lines)
        pipeline.zadd(BATCHES, {batch_id: time.time()})
        pipeline.sadd(ACTIVE_BATCHES, batch_id)
        await pipeline.execute()


async def batch_state(connection: aioredis.Redis, batch_id: str) -> BatchState | None:
    return (await batch_states(connection, [batch_id]))[0]


async def batch_states(connection: aioredis.Redis, batch_ids: list[str]) -> list[BatchState | None]:
    """The batches as stored, in one round trip (None for one that no longer exists)."""
    async with connection.pipeline(transaction=False) as pipeline:
        for batch_id in batch_ids:
            pipeline.hgetall(_batch_key(batch_id))
            pipeline.hlen(_batch_key(batch_id, ":out"))
            pipeline.hlen(_batch_key(batch_id, ":err"))
        replies = await pipeline.execute()
    return [_state(*replies[i : i + 3]) for i in range(0, len(replies), 3)]


def _state(fields: dict, completed: int, failed: int) -> BatchState | None:
    if not fields:
        return None
    fields = {_text(k): v for k, v in fields.items()}
    return BatchState(
        record=json.loads(fields["record"]),
        status=str(_text(fields["status"])),
        times={name: int(fields[name]) for name in TIMESTAMPS if name in fields},
        output_file_id=_text(fields.get("output_file_id")),
        error_file_id=_text(fields.get("error_file_id")),
        errors=json.loads(fields["errors"]) if "errors" in fields else [],
        completed=completed,
        failed=failed,
    )


async def list_batches(connection: aioredis.Redis) -> list[BatchState]:
    """Every stored batch, newest first; ids of expired batches are dropped on the way."""
    ids = [str(_text(i)) for i in await connection.zrevrange(BATCHES, 0, -1)]
    states = await batch_states(connection, ids)
    gone = [batch_id for batch_id, state in zip(ids, states, strict=True) if state is None]
    if gone:
        await connection.zrem(BATCHES, *gone)
    return [state for state in states if state is not None]


async def set_status(connection: aioredis.Redis, batch_id: str, status: str, **fields: Any) -> None:
    """Move the batch to ``status`` (its timestamp set now) with other fields alongside."""
    mapping: dict[Any, Any] = {"status": status, f"{status}_at": int(time.time()), **fields}
    await connection.hset(_batch_key(batch_id), mapping=mapping)


async def request_cancel(connection: aioredis.Redis, batch_id: str) -> bool:
    """Ask the batch's driver to stop it; False when the batch has already ended."""
    script = """
    local status = redis.call('HGET', KEYS[1], 'status')
    if status ~= 'in_progress' and status ~= 'validating' then return 0 end
    redis.call('HSET', KEYS[1], 'status', 'cancelling', 'cancelling_at', ARGV[1])
    return 1
    """
    changed = await connection.eval(script, 1, _batch_key(batch_id), int(time.time()))
    return bool(changed)


async def status_of(connection: aioredis.Redis, batch_id: str) -> str | None:
    return _text(await connection.hget(_batch_key(batch_id), "status"))


async def done_lines(connection: aioredis.Redis, batch_id: str) -> set[int]:
    """Lines that have their output or error line."""
    async with connection.pipeline(transaction=False) as pipeline:
        pipeline.hkeys(_batch_key(batch_id, ":out"))
        pipeline.hkeys(_batch_key(batch_id, ":err"))
        out, err = await pipeline.execute()
    return {int(n) for n in [*out, *err]}


async def record_result(
    connection: aioredis.Redis, batch_id: str, line: int, text: str, ok: bool
) -> None:
    """A line's output (or error) line, kept once: a line answered twice (an attempt that
    was thought lost) keeps its first answer."""
    async with connection.pipeline(transaction=True) as pipeline:
        pipeline.hsetnx(_batch_key(batch_id, ":out" if ok else ":err"), str(line), text)
        pipeline.hdel(_batch_key(batch_id, ":jobs"), str(line))
        await pipeline.execute()


async def note_attempt(connection: aioredis.Redis, batch_id: str, line: int, job_id: str) -> None:
    await connection.hset(_batch_key(batch_id, ":jobs"), str(line), job_id)


async def attempts(connection: aioredis.Redis, batch_id: str) -> dict[int, str]:
    """Job ids of the lines' attempts in flight (those of a driver that may have died)."""
    raw = await connection.hgetall(_batch_key(batch_id, ":jobs"))
    return {int(line): str(_text(job_id)) for line, job_id in raw.items()}


async def results(connection: aioredis.Redis, batch_id: str, ok: bool) -> list[str]:
    """The output (or error) lines, in line order."""
    raw = await connection.hgetall(_batch_key(batch_id, ":out" if ok else ":err"))
    return [str(_text(raw[k])) for k in sorted(raw, key=int)]


async def active_batches(connection: aioredis.Redis) -> list[str]:
    return sorted(str(_text(i)) for i in await connection.smembers(ACTIVE_BATCHES))


async def take_lease(connection: aioredis.Redis, batch_id: str, owner: str, ttl_s: float) -> bool:
    taken = await connection.set(
        _batch_key(batch_id, ":lease"), owner, nx=True, px=int(ttl_s * 1000)
    )
    return bool(taken)


async def renew_lease(connection: aioredis.Redis, batch_id: str, owner: str, ttl_s: float) -> bool:
    """Extend the lease if this process still holds it; False when another took it over."""
    script = """
    if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return 1
    """
    renewed = await connection.eval(
        script, 1, _batch_key(batch_id, ":lease"), owner, int(ttl_s * 1000)
    )
    return bool(renewed)


async def end_batch(
    connection: aioredis.Redis, batch_id: str, status: str, retention_s: int, **fields: Any
) -> None:
    """The batch has ended: its final status, and every key of it expires after retention."""
    now = int(time.time())
    async with connection.pipeline(transaction=True) as pipeline:
        mapping: dict[Any, Any] = {"status": status, f"{status}_at": now, **fields}
        pipeline.hset(_batch_key(batch_id), mapping=mapping)
        for part in ("", ":out", ":err", ":jobs"):
            pipeline.expire(_batch_key(batch_id, part), retention_s)
        pipeline.delete(_batch_key(batch_id, ":lease"))
        pipeline.srem(ACTIVE_BATCHES, batch_id)
        await pipeline.execute()
