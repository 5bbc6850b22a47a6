"""The Redis records of the Files API: batch input files and batches' output files.

Only the API reads and writes these. Every file is durable like the queue (AOF), readable by
every API process, and expires after its retention. A file belongs to the key that stored it
(its ``owner``; none on an open service): other keys are told it does not exist.

    mlxq:file:{id}              hash  meta (the OpenAI file object, JSON), content (bytes),
                                      owner (the key's name, "" for none)
    mlxq:files                  zset  file id -> time stored (listing)
    mlxq:files:sizes            hash  file id -> bytes (the files budget; expired ones dropped)
    mlxq:files:sizes:{owner}    hash  file id -> bytes, one key's files (its stored-bytes limit)
"""

import json
import time
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

FILES = "mlxq:files"
FILE_SIZES = "mlxq:files:sizes"


def _file_key(file_id: str) -> str:
    return f"mlxq:file:{file_id}"


def _owner_sizes_key(owner: str | None) -> str:
    return f"{FILE_SIZES}:{owner or ''}"


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


_PUT_FILE = """
local function in_use(sizes)
  local used, soonest = 0, -1
  local entries = redis.call('HGETALL', sizes)
  for i = 1, #entries, 2 do
    local ttl = redis.call('PTTL', ARGV[8] .. entries[i])
    if ttl == -2 then
      redis.call('HDEL', sizes, entries[i])
    else
      used = used + tonumber(entries[i + 1])
      if ttl >= 0 and (soonest < 0 or ttl < soonest) then soonest = ttl end
    end
  end
  return used, soonest
end
local budget, size, owner_limit = tonumber(ARGV[1]), tonumber(ARGV[3]), tonumber(ARGV[9])
local used = in_use(KEYS[3])
if budget >= 0 and used + size > budget then return {1, used, 0} end
if owner_limit >= 0 then
  local owned, soonest = in_use(KEYS[4])
  if owned + size > owner_limit then return {2, owned, soonest} end
end
redis.call('HSET', KEYS[1], 'meta', ARGV[4], 'content', ARGV[5], 'owner', ARGV[10])
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('ZADD', KEYS[2], ARGV[7], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], size)
if ARGV[10] ~= '' then redis.call('HSET', KEYS[4], ARGV[2], size) end
return {0, 0, 0}
"""
"""Store a file if the files stored so far (those not expired) and it fit the budget (-1:
no budget), and its owner's files and it fit the owner's limit (-1: none). One script: two
API processes cannot both take the last room. Returns {0} when stored, {1, bytes in use}
over the budget, {2, the owner's bytes, ms until the owner's next file expires (-1: none
does)} over the owner's limit."""


@dataclass(frozen=True)
class NoRoom:
    """A file that was not stored: over the files ``budget`` or its ``owner``'s limit."""

    over: str
    used: int
    """Bytes already taken (by every file, or by the owner's)."""
    frees_in_s: int | None = None
    """When the owner's next file expires (None: none will)."""


async def put_file(
    connection: aioredis.Redis,
    meta: dict,
    content: bytes,
    ttl_s: int,
    budget: int = -1,
    owner: str | None = None,
    owner_limit: int | None = None,
) -> NoRoom | None:
    """Store a file for ``ttl_s`` seconds; None when stored, else why there was no room."""
    stored_at = time.time()  # finer than created_at: keeps the listing's order
    keys = (_file_key(meta["id"]), FILES, FILE_SIZES, _owner_sizes_key(owner))
    out: Any = await connection.eval(
        _PUT_FILE,
        4,
        *keys,
        budget,
        meta["id"],
        len(content),
        json.dumps(meta),
        content,
        ttl_s,
        stored_at,
        _file_key(""),
        -1 if owner_limit is None else owner_limit,
        owner or "",
    )
    over, used, soonest_ms = (int(x) for x in out)
    if over == 0:
        return None
    if over == 1:
        return NoRoom("budget", used)
    return NoRoom("owner", used, -(-soonest_ms // 1000) if soonest_ms >= 0 else None)


async def file_entry(connection: aioredis.Redis, file_id: str) -> tuple[dict, str | None] | None:
    """The file's OpenAI object and owner (None: made without a key), or None if gone."""
    meta, owner = await connection.hmget(_file_key(file_id), ["meta", "owner"])
    if meta is None:
        return None
    return json.loads(meta), _text(owner) or None


async def file_content(connection: aioredis.Redis, file_id: str) -> bytes | None:
    content: Any = await connection.hget(_file_key(file_id), "content")
    return content


async def keep_file_until(connection: aioredis.Redis, file_id: str, until: float) -> None:
    """A batch's input file lives at least as long as the batch may run."""
    key = _file_key(file_id)
    ttl = await connection.ttl(key)
    if ttl >= 0 and time.time() + ttl < until:
        await connection.expireat(key, int(until) + 1)
        entry = await file_entry(connection, file_id)
        if entry is not None:
            entry[0]["expires_at"] = int(until) + 1
            await connection.hset(key, "meta", json.dumps(entry[0]))


async def delete_file(connection: aioredis.Redis, file_id: str, owner: str | None) -> bool:
    async with connection.pipeline(transaction=True) as pipeline:
        pipeline.delete(_file_key(file_id))
        pipeline.zrem(FILES, file_id)
        pipeline.hdel(FILE_SIZES, file_id)
        pipeline.hdel(_owner_sizes_key(owner), file_id)
        deleted, *_ = await pipeline.execute()
    return bool(deleted)


async def list_files(connection: aioredis.Redis) -> list[tuple[dict, str | None]]:
    """Every stored file and its owner, oldest first; ids of files that expired are dropped
    on the way."""
    ids = [str(_text(i)) for i in await connection.zrange(FILES, 0, -1)]
    async with connection.pipeline(transaction=False) as pipeline:
        for file_id in ids:
            pipeline.hmget(_file_key(file_id), ["meta", "owner"])
        entries = await pipeline.execute()
    gone = [file_id for file_id, (meta, _) in zip(ids, entries, strict=True) if meta is None]
    if gone:
        await connection.zrem(FILES, *gone)
    return [(json.loads(meta), _text(owner) or None) for meta, owner in entries if meta is not None]
