"""``mlxq keys`` as an operator runs it: against Redis, the secret printed once as the last
line and stored only as its hash."""

import os
import subprocess
import sys

import redis

from tests.support.processes import ROOT


def mlxq(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "mlxq_cli", *args],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result


def secret_of(result: subprocess.CompletedProcess) -> str:
    """The new secret: the last line a create or rotate prints."""
    return result.stdout.strip().splitlines()[-1]


def test_create_list_rotate_and_revoke(mlxq_env: dict[str, str], redis_url: str) -> None:
    made = mlxq(
        "keys", "create", "alice", "--rpm", "60", "--tpm", "10000", "--max-concurrent", "4",
        "--files-bytes", "1000000", "--models", "a/b,c", "--weight", "2", env=mlxq_env,
    )  # fmt: skip
    secret = secret_of(made)
    admin = secret_of(mlxq("keys", "create", "ops", "--admin", env=mlxq_env))
    again = mlxq("keys", "create", "alice", env=mlxq_env, check=False)
    bad_name = mlxq("keys", "create", "Alice Smith", env=mlxq_env, check=False)
    bad_limit = mlxq("keys", "create", "zed", "--rpm", "0", env=mlxq_env, check=False)
    rotated = secret_of(mlxq("keys", "rotate", "alice", env=mlxq_env))
    mlxq("keys", "revoke", "ops", env=mlxq_env)
    unknown = mlxq("keys", "revoke", "nobody", env=mlxq_env, check=False)
    listed = mlxq("keys", "list", env=mlxq_env).stdout

    assert secret.startswith("mlxq-") and rotated.startswith("mlxq-") and rotated != secret
    assert again.returncode == 1 and "exists already" in again.stderr
    assert bad_name.returncode == 1 and "cannot name a key" in bad_name.stderr
    assert bad_limit.returncode == 1 and "rpm" in bad_limit.stderr
    assert unknown.returncode == 1 and "No key named 'nobody'" in unknown.stderr
    rows = {line.split()[0]: line.split() for line in listed.splitlines()[1:]}
    assert rows["alice"][1:8] == ["no", "60", "10000", "4", "1000000", "a/b,c", "2"]
    assert rows["alice"][-1] == "-" and rows["ops"][1] == "yes" and rows["ops"][-1] != "-"
    dump = str(redis.Redis.from_url(redis_url).hgetall("mlxq:apikey:alice"))
    for shown in (secret, rotated, admin):
        assert shown not in listed and shown not in dump  # stored as a hash only
