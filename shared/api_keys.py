"""The API keys: one per person (or program), each with its limits, kept in Redis.

Written by ``mlxq keys`` (mlxq_cli/keys.py), read by every API process (who is calling, and
what may they do: api/access/) and by the workers (which keys have a queue, and their
weights: worker/fair_share.py). A key's secret is shown once, when it is made, and stored
only as its SHA-256 (the secrets are 256 random bits, so a plain hash is as good as a slow
one). Records:

    mlxq:apikey:<name>        hash  digest, admin, rpm, tpm, max_concurrent, files_bytes,
                                    models, weight, created_at, revoked_at (the limits
                                    api/access/limits.py's script reads)
    mlxq:apikeys              hash  name -> weight, every key ever made (revoked ones too:
                                    what they queued before is still served)
    mlxq:apikeys:digests      hash  digest -> name, live keys only (a revoked or rotated
                                    secret is dropped here, so it no longer finds its key)

``MLXQ_API_KEY`` stays an admin key beside these, under the name ``ENV_KEY_NAME``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from typing import Any

import redis
import redis.asyncio as aioredis
from pydantic import BaseModel, ConfigDict, Field

SECRET_PREFIX = "mlxq-"
"""Every secret starts with this, so a leaked one is recognisable (secret scanners)."""
ENV_KEY_NAME = "MLXQ_API_KEY"
"""The name MLXQ_API_KEY goes by (logs, usage, metrics): no made key can have it (names are
lower case)."""
ANONYMOUS = "anonymous"
"""The name requests go by when no key is configured (the service is open)."""
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
"""A key's name: it appears in queue names, metric labels and logs."""
RESERVED_NAMES = frozenset({ANONYMOUS})

KEYS = "mlxq:apikeys"
DIGESTS = "mlxq:apikeys:digests"


def record_key(name: str) -> str:
    return f"mlxq:apikey:{name}"


def digest_of(secret: str | bytes) -> str:
    raw = secret.encode() if isinstance(secret, str) else secret
    return hashlib.sha256(raw).hexdigest()


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class KeyProblem(ValueError):
    """A key that cannot be made, found or changed as asked; the message says why."""


class KeyRecord(BaseModel):
    """One key as stored (never its secret). A limit of None is no limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    admin: bool = False
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    max_concurrent: int | None = Field(None, ge=1)
    files_bytes: int | None = Field(None, ge=0)
    models: tuple[str, ...] | None = None
    """The models this key may use (ids or short aliases); None: every model."""
    weight: int = Field(1, ge=1, le=100)
    """Its share of a busy fleet: a key of weight 2 is served twice per round."""
    created_at: float = 0.0
    revoked_at: float | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def to_fields(self, digest: str) -> dict[str, str]:
        def text(value: int | float | None) -> str:
            return "" if value is None else str(value)

        return {
            "digest": digest,
            "admin": "1" if self.admin else "0",
            "rpm": text(self.rpm),
            "tpm": text(self.tpm),
            "max_concurrent": text(self.max_concurrent),
            "files_bytes": text(self.files_bytes),
            "models": ",".join(self.models) if self.models is not None else "",
            "weight": str(self.weight),
            "created_at": text(self.created_at),
            "revoked_at": text(self.revoked_at),
        }

    @classmethod
    def from_fields(cls, name: str, raw: dict[Any, Any]) -> tuple[KeyRecord, str]:
        """The record and its digest, from the hash as Redis returns it."""
        fields = {_text(k): _text(v) for k, v in raw.items()}

        def number(field: str) -> int | None:
            return int(fields[field]) if fields.get(field) else None

        models = fields.get("models") or ""
        record = cls(
            name=name,
            admin=fields.get("admin") == "1",
            rpm=number("rpm"),
            tpm=number("tpm"),
            max_concurrent=number("max_concurrent"),
            files_bytes=number("files_bytes"),
            models=tuple(models.split(",")) if models else None,
            weight=number("weight") or 1,
            created_at=float(fields.get("created_at") or 0),
            revoked_at=float(fields["revoked_at"]) if fields.get("revoked_at") else None,
        )
        return record, fields.get("digest", "")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def has_own_queue(owner: str | None) -> bool:
    """Requests of a made key wait in its own queue; those of MLXQ_API_KEY (the one key of a
    deployment without made keys) and anonymous ones in the model's shared queue, as always."""
    return owner is not None and owner != ENV_KEY_NAME


def check_name(name: str) -> None:
    if not NAME_PATTERN.match(name) or name in RESERVED_NAMES:
        raise KeyProblem(
            f"{name!r} cannot name a key: use 1 to 63 lower-case letters, digits, '_', '.' "
            f"or '-' (starting with a letter or digit), and not {sorted(RESERVED_NAMES)}."
        )


# -- made and changed by `mlxq keys` (synchronous) ---------------------------------------------

_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[2], redis.call('HGET', KEYS[1], 'weight'))
return 1
"""
"""Make the key unless its name is taken: its record, its digest, its weight at once."""

_REISSUE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = redis.call('HGET', KEYS[1], 'digest')
if old then redis.call('HDEL', KEYS[2], old) end
if ARGV[1] == '' then
  redis.call('HSET', KEYS[1], 'revoked_at', ARGV[3])
else
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[1], 'digest', ARGV[1], 'revoked_at', '')
end
return 1
"""
"""Revoke a key (ARGV[1] empty) or give it a new secret (its digest): the old secret stops
finding the key at once; API processes forget what they cached within a second."""


def create_key(connection: redis.Redis, record: KeyRecord) -> str:
    """Make the key; returns its secret (shown once, never stored)."""
    check_name(record.name)
    secret = new_secret()
    digest = digest_of(secret)
    record = record.model_copy(update={"created_at": time.time(), "revoked_at": None})
    fields = [item for pair in record.to_fields(digest).items() for item in pair]
    made = connection.eval(
        _CREATE, 3, record_key(record.name), DIGESTS, KEYS, digest, record.name, *fields
    )
    if not made:
        raise KeyProblem(f"A key named {record.name!r} exists already (rotate it to renew it).")
    return secret


def revoke_key(connection: redis.Redis, name: str) -> None:
    if not connection.eval(_REISSUE, 2, record_key(name), DIGESTS, "", name, time.time()):
        raise KeyProblem(f"No key named {name!r}.")


def rotate_key(connection: redis.Redis, name: str) -> str:
    """A new secret for the key (a revoked key comes back with it); the old one stops
    working. Its limits, usage and files stay its own."""
    secret = new_secret()
    if not connection.eval(_REISSUE, 2, record_key(name), DIGESTS, digest_of(secret), name, 0):
        raise KeyProblem(f"No key named {name!r}.")
    return secret


def list_keys(connection: redis.Redis) -> list[KeyRecord]:
    raw: Any = connection.hkeys(KEYS)
    names = sorted(_text(n) for n in raw)
    with connection.pipeline(transaction=False) as pipeline:
        for name in names:
            pipeline.hgetall(record_key(name))
        raws = pipeline.execute()
    return [KeyRecord.from_fields(n, raw)[0] for n, raw in zip(names, raws, strict=True) if raw]


def keys_made(connection: redis.Redis) -> bool:
    """Whether a key was ever made (then every request needs one)."""
    return bool(connection.exists(KEYS))


def key_weights(connection: redis.Redis) -> dict[str, int]:
    """Every key's name and weight (workers give each key's queue its turns by these)."""
    raw: Any = connection.hgetall(KEYS)
    return {_text(name): max(1, int(weight or 1)) for name, weight in raw.items()}


# -- read by the API (asynchronous) --------------------------------------------------------------


async def any_keys(connection: aioredis.Redis) -> bool:
    """Whether a key was ever made (then every request needs one)."""
    return bool(await connection.exists(KEYS))


async def find_key(connection: aioredis.Redis, digest: str) -> KeyRecord | None:
    """The live key whose secret has this digest, or None."""
    name = await connection.hget(DIGESTS, digest)
    if name is None:
        return None
    raw = await connection.hgetall(record_key(_text(name)))
    if not raw:
        return None
    record, stored = KeyRecord.from_fields(_text(name), raw)
    if record.revoked or not hmac.compare_digest(stored.encode(), digest.encode()):
        return None
    return record
