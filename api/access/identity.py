"""The identity a request runs under, resolved once at the edge from the key it carries.

Three kinds of caller:

- a **made key** (``mlxq keys create``): its name, its limits, the models it may use, admin
  or not; it sees only its own files and batches unless it is an admin key;
- **MLXQ_API_KEY**: an admin key without limits, named ``MLXQ_API_KEY``;
- **anonymous**, only while no key is configured (no MLXQ_API_KEY, none ever made): the
  service is open on loopback as it always was, and sees everything.

``Keyring`` looks keys up in Redis and keeps what it found for under a second
(``CACHE_S``), so a revoked or rotated key is refused by every API process within a second
without a Redis round trip on every request. Once a process has seen that keys exist, it
stays closed to callers without one, even if Redis is emptied later.
"""

import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.api_keys import ANONYMOUS, ENV_KEY_NAME, KeyRecord, any_keys, digest_of, find_key

log = logging.getLogger(__name__)

CACHE_S = 0.5
"""How long a process trusts what it looked up about a key: a revoked key is refused
everywhere within this (and a lookup's round trip)."""
KEYS_IN_USE_CACHE_S = 1.0
"""How often a process asks whether any key was made, while none is known (the first key
made closes an open service within this)."""
CACHE_ENTRIES = 10_000
"""Lookups kept at most (one per secret seen in the last CACHE_S; past this, all dropped)."""


@dataclass(frozen=True)
class Identity:
    name: str
    admin: bool = False
    record: KeyRecord | None = None
    """A made key's record (its limits apply); None for MLXQ_API_KEY and anonymous."""

    @property
    def anonymous(self) -> bool:
        return self.name == ANONYMOUS and self.record is None

    @property
    def owner(self) -> str | None:
        """What files, batches and jobs record as their owner (None when anonymous)."""
        return None if self.anonymous else self.name

    @property
    def sees_all(self) -> bool:
        """Admin keys, and everyone on an open service, see every file and batch."""
        return self.admin or self.anonymous

    def may_see(self, owner: str | None) -> bool:
        return self.sees_all or (owner is not None and owner == self.name)

    def may_use(self, model: str) -> bool:
        """A key limited to some models (``--models``) names them by id or short alias."""
        allowed = self.record.models if self.record is not None else None
        return allowed is None or model in allowed or model.rsplit("/", 1)[-1] in allowed

    @property
    def files_bytes(self) -> int | None:
        return self.record.files_bytes if self.record is not None else None


OPEN = Identity(ANONYMOUS)
ENV_ADMIN = Identity(ENV_KEY_NAME, admin=True)


class Keyring:
    """Resolves the key a request carries into its ``Identity`` (None: refused, 401)."""

    def __init__(self, env_key: str | None, clock: Callable[[], float] = time.monotonic):
        self._env_key = env_key.encode() if env_key else None
        self._clock = clock
        self._connection: aioredis.Redis | None = None
        self._found: dict[str, tuple[float, KeyRecord | None]] = {}
        self._keys_seen = env_key is not None
        self._keys_checked_at = float("-inf")

    def attach(self, connection: aioredis.Redis) -> None:
        """The API's Redis client, made in its lifespan."""
        self._connection = connection

    async def keys_in_use(self) -> bool:
        """MLXQ_API_KEY is set, or a key was ever made: every request needs a key. Never
        raises: while Redis cannot say, what was last known holds."""
        if self._keys_seen or self._connection is None:
            return self._keys_seen
        now = self._clock()
        if now - self._keys_checked_at >= KEYS_IN_USE_CACHE_S:
            try:
                self._keys_seen = await any_keys(self._connection)
                self._keys_checked_at = now
            except RedisError as exc:
                log.debug("cannot ask Redis whether keys exist (%s)", exc)
        return self._keys_seen

    async def identify(self, secret: bytes) -> Identity | None:
        """The caller's identity; None when a key is needed and this one is none (or none was
        sent). Raises RedisError when Redis cannot say whether a key is live."""
        if self._env_key is not None and hmac.compare_digest(secret, self._env_key):
            return ENV_ADMIN
        if not await self.keys_in_use():
            return OPEN  # an open service: whatever a client sends ("Bearer unused") is no key
        if not secret:
            return None
        record = await self._record(secret)
        if record is None:
            return None
        return Identity(record.name, admin=record.admin, record=record)

    async def _record(self, secret: bytes) -> KeyRecord | None:
        digest = digest_of(secret)
        now = self._clock()
        cached = self._found.get(digest)
        if cached is not None and now - cached[0] < CACHE_S:
            return cached[1]
        assert self._connection is not None  # keys_in_use() is False until attached
        record = await find_key(self._connection, digest)
        if len(self._found) >= CACHE_ENTRIES:
            self._found.clear()
        self._found[digest] = (now, record)
        return record
