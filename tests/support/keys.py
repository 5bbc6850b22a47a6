"""Making API keys for tests, as ``mlxq keys create`` makes them (shared/api_keys.py)."""

import redis

from shared.api_keys import KeyRecord, create_key


def make_key(redis_url: str, name: str, **fields: object) -> str:
    """A new key in this test's Redis; returns its secret. ``fields``: KeyRecord's limits."""
    connection = redis.Redis.from_url(redis_url)
    try:
        return create_key(connection, KeyRecord(name=name, **fields))  # type: ignore[arg-type]
    finally:
        connection.close()


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}
