"""Revoking and rotating a key with ``mlxq keys`` reaches every API process within a second:
two real API processes on one Redis, each polled until it refuses the secret; a revocation is
timed from the moment the key's record says it was revoked, a rotation from the command's
return."""

import time

import httpx
import redis

from tests.support.keys import bearer
from tests.support.processes import Processes, wait_until
from tests.test_cli_keys import mlxq, secret_of

WITHIN_S = 1.0


def status(api: str, secret: str) -> int:
    return httpx.get(f"{api}/v1/files", headers=bearer(secret), timeout=5).status_code


def seconds_until_refused(apis: list[str], secret: str, since: float) -> list[float]:
    """For each API process, how long after ``since`` (Unix time) it first answered 401."""
    refused_after: dict[str, float] = {}
    while len(refused_after) < len(apis) and time.time() - since < 5:
        for api in apis:
            if api not in refused_after and status(api, secret) == 401:
                refused_after[api] = time.time() - since
    assert len(refused_after) == len(apis), refused_after
    return [refused_after[api] for api in apis]


def test_revoked_and_rotated_keys_are_refused_everywhere_within_a_second(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    apis = [processes.api(mlxq_env), processes.api(mlxq_env)]
    alice = secret_of(mlxq("keys", "create", "alice", env=mlxq_env))
    bob = secret_of(mlxq("keys", "create", "bob", env=mlxq_env))
    for secret in (alice, bob):
        wait_until(lambda s=secret: all(status(api, s) == 200 for api in apis), 3, "the key")

    mlxq("keys", "revoke", "alice", env=mlxq_env)
    revoked_at = float(
        redis.Redis.from_url(mlxq_env["MLXQ_REDIS_URL"]).hget("mlxq:apikey:alice", "revoked_at")
    )
    revoked = seconds_until_refused(apis, alice, revoked_at)
    rotated = mlxq("keys", "rotate", "bob", env=mlxq_env)
    old_refused = seconds_until_refused(apis, bob, time.time())
    new_bob = secret_of(rotated)

    print(f"\nrevoked key refused after {revoked} s; rotated key's old secret after {old_refused}")
    assert max(revoked) < WITHIN_S and max(old_refused) < WITHIN_S
    assert [status(api, new_bob) for api in apis] == [200, 200]
    assert [status(api, alice) for api in apis] == [401, 401]  # and it stays refused


def test_an_api_with_made_keys_may_listen_on_a_public_address(
    processes: Processes, mlxq_env: dict[str, str]
) -> None:
    """Made keys close the service as MLXQ_API_KEY does, so `mlxq api` starts on 0.0.0.0
    (without any key it refuses to: tests/faults/test_security.py)."""
    secret = secret_of(mlxq("keys", "create", "alice", env=mlxq_env))
    api = processes.api({**mlxq_env, "MLXQ_HOST": "0.0.0.0"})
    assert httpx.get(f"{api}/v1/models", timeout=5).status_code == 401
    assert status(api, secret) == 200
