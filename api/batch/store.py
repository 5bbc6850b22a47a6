"""The Redis records of the Batch API: files, batches and their lines' results.

Only the API reads and writes these (workers see a batch's lines as ordinary jobs on the
batch lane), so they live here rather than in shared/protocol/. Every key is durable like
the queue (AOF), readable by every API process, and expires: files after their retention,
a batch's keys once it has ended (MLXQ_BATCH_RETENTION).

    mlxq:file:{id}          hash  meta (the OpenAI file object, JSON), content (bytes)
    mlxq:files              zset  file id -> time stored (listing)
    mlxq:files:sizes        hash  file id -> bytes (the files budget; expired ones dropped)
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

FILES = "mlxq:files"
FILE_SIZES = "mlxq:files:sizes"
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


def _file_key(file_id: str) -> str:
    return f"mlxq:file:{file_id}"


def _batch_key(batch_id: str, part: str = "") -> str:
    return f"mlxq:batch:{batch_id}{part}"


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


# -- files -------------------------------------------------------------------------------------


_PUT_FILE = """
local sizes, budget, size = KEYS[3], tonumber(ARGV[1]), tonumber(ARGV[3])
local used = 0
local entries = redis.call('HGETALL', sizes)
for i = 1, #entries, 2 do
  if redis.call('EXISTS', ARGV[8] .. entries[i]) == 1 then
    used = used + tonumber(entries[i + 1])
  else
    redis.call('HDEL', sizes, entries[i])
  end
end
if budget >= 0 and used + size > budget then return used end
redis.call('HSET', KEYS[1], 'meta', ARGV[4], 'content', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[2])
redis.call('HSET', sizes, ARGV[2], size)
return -1
"""
"""Store a file if the files stored so far (those not expired) and it fit the budget (-1:
no budget); returns -1 when stored, else the bytes already in use. One script: two API
processes cannot both take the last room."""


async def put_file(
    connection: aioredis.Redis, meta: dict, content: bytes, ttl_s: int, budget: int = -1
) -> int | None:
    """Store a file for ``ttl_s`` seconds; None when stored, else (over ``budget``) the bytes
    the stored files already take."""
    stored_at = time.time()  # finer than created_at: keeps the listing's order
    used: Any = await connection.eval(
        _PUT_FILE,
        3,
        _file_key(meta["id"]),
        FILES,
        FILE_SIZES,
        budget,
        meta["id"],
        len(content),
        json.dumps(meta),
        content,
        ttl_s,
        stored_at,
        _file_key(""),
    )
    return None if int(used) < 0 else int(used)


async def file_meta(connection: aioredis.Redis, file_id: str) -> dict | None:
    raw = await connection.hget(_file_key(file_id), "meta")
    return json.loads(raw) if raw is not None else None


async def file_content(connection: aioredis.Redis, file_id: str) -> bytes | None:
    content: Any = await connection.hget(_file_key(file_id), "content")
    return content


async def keep_file_until(connection: aioredis.Redis, file_id: str, until: float) -> None:
    """A batch's input file lives at least as long as the batch may run."""
    key = _file_key(file_id)
    ttl = await connection.ttl(key)
    if ttl >= 0 and time.time() + ttl < until:
        await connection.expireat(key, int(until) + 1)
        meta = await file_meta(connection, file_id)
        if meta is not None:
            meta["expires_at"] = int(until) + 1
            await connection.hset(key, "meta", json.dumps(meta))


async def delete_file(connection: aioredis.Redis, file_id: str) -> bool:
    async with connection.pipeline(transaction=True) as pipeline:
        pipeline.delete(_file_key(file_id))
        pipeline.zrem(FILES, file_id)
        pipeline.hdel(FILE_SIZES, file_id)
        deleted, _, _ = await pipeline.execute()
    return bool(deleted)


async def list_files(connection: aioredis.Redis) -> list[dict]:
    """Every stored file, oldest first; ids of files that expired are dropped on the way."""
    ids = [str(_text(i)) for i in await connection.zrange(FILES, 0, -1)]
    async with connection.pipeline(transaction=False) as pipeline:
        for file_id in ids:
            pipeline.hget(_file_key(file_id), "meta")
        metas = await pipeline.execute()
    gone = [file_id for file_id, meta in zip(ids, metas, strict=True) if meta is None]
    if gone:
        await connection.zrem(FILES, *gone)
    return [json.loads(meta) for meta in metas if meta is not None]


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
