"""Each key's limits, enforced atomically in Redis across every API process.

One Lua script admits a request or refuses it, all or nothing, reading the key's limits
from its record (shared/api_keys.py) and the time from Redis itself (API processes' clocks
may differ):

- **requests per minute**: GCRA (the generic cell rate algorithm, a leaky bucket kept as one
  number: the theoretical arrival time). A key of 60 rpm may send 60 at once, then one a
  second; nothing resets on the minute.
- **tokens per minute**: a token bucket of the same kind, charged with each answer's real
  usage (prompt and completion tokens) once it is known (``add_charge``), and checked before
  a request is admitted: a request is refused while the bucket is empty. One answer may
  take it below empty; the key then waits until it has refilled.
- **concurrent requests**: a sorted set of leases, one per request running; each expires
  unless its API process renews it (every LEASE_RENEW_S), so a process that crashes cannot
  hold a key's slots for longer than LEASE_TTL_S.

A refused request is a 429 ``rate_limited`` with ``Retry-After`` and the figures its
dialect's headers announce (api/access/headers.py).
"""

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from shared.api_keys import record_key

log = logging.getLogger(__name__)

LEASE_TTL_S = 30
"""A concurrency lease its API process stopped renewing (it died) frees the slot after this."""
LEASE_RENEW_S = 10.0
LEASE_GRACE_S = 10.0
"""A lease is not renewed past its request's deadline plus this (a request cannot run
longer; a lease whose release was lost is not kept alive forever)."""
CONCURRENCY_RETRY_S = 1
"""Retry-After when a key's concurrent requests are all in use: one ends at any moment."""

_ADMIT = """
local limits = redis.call('HMGET', KEYS[1], 'rpm', 'tpm', 'max_concurrent')
local rpm, tpm, conc = tonumber(limits[1]), tonumber(limits[2]), tonumber(limits[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function bucket(key, per_minute)
  local interval = 60000 / per_minute
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  return interval, tat, math.floor((60000 - (tat - now)) / interval + 1e-6)
end
-- admitted, refused by, wait ms, rpm, requests left, requests reset ms,
-- tpm, tokens left, tokens reset ms, concurrent limit, concurrent in use
local out = {1, '', 0, 0, 0, 0, 0, 0, 0, 0, 0}
local r_interval, r_tat, r_left
if rpm then
  r_interval, r_tat, r_left = bucket(KEYS[2], rpm)
  out[4] = rpm
  out[5], out[6] = math.max(r_left, 0), math.ceil(r_tat - now)
  if r_left < 1 then
    out[1], out[2], out[3] = 0, 'requests', math.ceil(r_tat + r_interval - 60000 - now)
  end
end
if tpm then
  local interval, tat, left = bucket(KEYS[3], tpm)
  out[7], out[8], out[9] = tpm, math.max(left, 0), math.ceil(tat - now)
  if left < 1 and out[1] == 1 then
    out[1], out[2], out[3] = 0, 'tokens', math.ceil(tat + interval - 60000 - now)
  end
end
if conc then
  redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
  out[10], out[11] = conc, redis.call('ZCARD', KEYS[4])
  if out[11] >= conc and out[1] == 1 then
    out[1], out[2], out[3] = 0, 'concurrent', 1000 * tonumber(ARGV[3])
  end
end
if out[1] == 0 then return out end
if rpm then
  local tat = r_tat + r_interval
  redis.call('SET', KEYS[2], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
  out[5], out[6] = r_left - 1, math.ceil(tat - now)
end
if conc then
  redis.call('ZADD', KEYS[4], now + tonumber(ARGV[2]), ARGV[1])
  redis.call('PEXPIRE', KEYS[4], 2 * tonumber(ARGV[2]))
  out[11] = out[11] + 1
end
return out
"""
"""Admit a request under its key's limits, or say which limit refused it and for how long;
nothing is counted for a refused request."""

_CHARGE = """
local tpm = tonumber(redis.call('HGET', KEYS[1], 'tpm'))
if not tpm then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tat = tonumber(redis.call('GET', KEYS[2])) or now
if tat < now then tat = now end
tat = tat + tonumber(ARGV[1]) * 60000 / tpm
redis.call('SET', KEYS[2], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1000)
return 1
"""
"""Take an answer's tokens from its key's bucket (it may go below empty)."""

_RENEW = """
local t = redis.call('TIME')
local expires = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], 'XX', expires, ARGV[i]) end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return 1
"""


def _limit_key(name: str, what: str) -> str:
    return f"mlxq:limit:{name}:{what}"


@dataclass(frozen=True)
class Figures:
    """Where a key stands, for the rate-limit headers (0 limit: that limit is not set)."""

    rpm: int = 0
    requests_left: int = 0
    requests_reset_s: float = 0.0
    tpm: int = 0
    tokens_left: int = 0
    tokens_reset_s: float = 0.0

    @property
    def any(self) -> bool:
        return bool(self.rpm or self.tpm)


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused, and when to try again."""

    limit: str
    """"requests", "tokens" or "concurrent"."""
    message: str
    retry_after_s: int
    figures: Figures


@dataclass
class Ticket:
    """A request admitted under its key's limits; ``release`` frees its concurrency lease."""

    name: str
    figures: Figures
    lease: str | None
    renew_until: float
    released: bool = field(default=False)


class RateLimiter:
    def __init__(self) -> None:
        self._connection: aioredis.Redis | None = None
        self._held: dict[str, Ticket] = {}
        """Leases this process holds, by lease id (renewed every LEASE_RENEW_S)."""

    def attach(self, connection: aioredis.Redis) -> None:
        self._connection = connection

    @property
    def connection(self) -> aioredis.Redis:
        assert self._connection is not None, "attached in the app's lifespan"
        return self._connection

    async def admit(self, name: str, deadline: float) -> Ticket | Refusal:
        """Admit one request of the made key ``name`` (its deadline: Unix time), or say why
        not."""
        lease = uuid.uuid4().hex
        keys = [record_key(name), *(_limit_key(name, w) for w in ("rpm", "tpm", "active"))]
        out = await self.connection.eval(
            _ADMIT, 4, *keys, lease, LEASE_TTL_S * 1000, CONCURRENCY_RETRY_S
        )
        admitted, refused_by, wait_ms = int(out[0]), _text(out[1]), int(out[2])
        figures = Figures(
            rpm=int(out[3]),
            requests_left=int(out[4]),
            requests_reset_s=int(out[5]) / 1000,
            tpm=int(out[6]),
            tokens_left=int(out[7]),
            tokens_reset_s=int(out[8]) / 1000,
        )
        if not admitted:
            retry_after_s = max(1, -(-wait_ms // 1000))
            return Refusal(refused_by, _refusal(name, refused_by, out), retry_after_s, figures)
        renew_until = time.monotonic() + (deadline - time.time()) + LEASE_GRACE_S
        ticket = Ticket(name, figures, lease if int(out[9]) else None, renew_until)
        if ticket.lease is not None:
            self._held[ticket.lease] = ticket
        return ticket

    async def release(self, ticket: Ticket) -> None:
        """The request has ended: its concurrency slot is free again."""
        if ticket.released or ticket.lease is None:
            return
        ticket.released = True
        self._held.pop(ticket.lease, None)
        try:
            await self.connection.zrem(_limit_key(ticket.name, "active"), ticket.lease)
        except RedisError as exc:  # the lease expires by itself
            log.warning("key %s: could not free a concurrency slot (%s)", ticket.name, exc)

    async def renew_forever(self) -> None:
        """Keep this process's leases alive while their requests run; end when cancelled."""
        while True:
            await asyncio.sleep(LEASE_RENEW_S)
            with contextlib.suppress(RedisError):
                await self._renew()

    async def _renew(self) -> None:
        now = time.monotonic()
        by_key: dict[str, list[str]] = {}
        for lease, ticket in list(self._held.items()):
            if now > ticket.renew_until:
                self._held.pop(lease, None)  # past its deadline: left to expire
            else:
                by_key.setdefault(ticket.name, []).append(lease)
        for name, leases in by_key.items():
            await self.connection.eval(
                _RENEW, 1, _limit_key(name, "active"), LEASE_TTL_S * 1000, *leases
            )


def add_charge(pipeline: Any, name: str, tokens: int) -> None:
    """Queue, on ``pipeline``, taking an answer's ``tokens`` from the made key ``name``'s
    tokens-per-minute bucket (nothing when it has no such limit)."""
    if tokens > 0:
        pipeline.eval(_CHARGE, 2, record_key(name), _limit_key(name, "tpm"), tokens)


def _refusal(name: str, refused_by: str, out: list) -> str:
    if refused_by == "requests":
        return (
            f"Rate limit reached for key {name!r}: {int(out[3])} requests per minute. "
            "Try again after the Retry-After seconds."
        )
    if refused_by == "tokens":
        return (
            f"Rate limit reached for key {name!r}: {int(out[6])} tokens per minute (prompt "
            "and completion tokens of its answers). Try again after the Retry-After seconds."
        )
    return (
        f"Key {name!r} has {int(out[9])} requests running, its most at once "
        "(max concurrent); try again when one has ended."
    )


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
