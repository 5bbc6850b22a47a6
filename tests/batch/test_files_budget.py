"""Uploads cannot fill Redis: files have a budget below its memory cap, an upload that does
not fit is a clean 507, and a full Redis is a 503, never a 500 (in-process API, a Redis of
the test's own with a 64 MB cap and noeviction). Before: ten 95 MB uploads took Redis to
1.04 GB of its 1 GiB cap in 25 s, kept for 7 days; at the cap an upload got a 500."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.app import in_process_api
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.anyio

CAP = 64 * 1024**2
MB = 1024**2


@pytest.fixture
def capped_redis(tmp_path: Path) -> Iterator[RedisServer]:
    options = ("--maxmemory", str(CAP), "--maxmemory-policy", "noeviction")
    with RedisServer(tmp_path, options=options) as server:
        yield server


@pytest.fixture
async def api(anyio_backend: str, capped_redis: RedisServer) -> AsyncIterator[httpx.AsyncClient]:
    async with in_process_api(capped_redis.url, max_file_bytes=20 * MB, queue_timeout=0.5) as api:
        yield api.client


async def upload(client: httpx.AsyncClient, size: int, name: str = "in.jsonl") -> httpx.Response:
    files = {"file": (name, b"x" * size, "application/jsonl")}
    return await client.post("/v1/files", data={"purpose": "batch"}, files=files)


async def test_uploads_stop_at_the_budget_with_a_clean_error(
    api: httpx.AsyncClient, capped_redis: RedisServer
) -> None:
    # The default budget is half of the cap: 32 MB, so five files of 6 MB fit, a sixth not.
    ids = []
    for _ in range(5):
        response = await upload(api, 6 * MB)
        assert response.status_code == 200, response.text
        ids.append(response.json()["id"])
    refused = await upload(api, 6 * MB)
    assert refused.status_code == 507, refused.text
    error = refused.json()["error"]
    assert error["code"] == "storage_full" and "MLXQ_FILES_BUDGET" in error["message"]

    memory = capped_redis.client().info("memory")
    assert memory["used_memory"] < CAP * 0.9  # live traffic keeps its headroom
    # live requests still get in (no worker here: a 503 no_worker, not "Redis is full")
    chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    live = await api.post(
        "/v1/chat/completions", json={**chat, "model": "mlxq/SmolLM2-135M-Instruct-Q4_1"}
    )
    assert live.json()["error"]["code"] == "no_worker"

    assert (await api.delete(f"/v1/files/{ids[0]}")).status_code == 200
    assert (await upload(api, 6 * MB)).status_code == 200  # room again


async def test_an_upload_that_would_leave_redis_no_room_is_refused(
    anyio_backend: str, capped_redis: RedisServer
) -> None:
    """With a budget above what Redis can hold, Redis' own free memory still decides."""
    async with in_process_api(
        capped_redis.url, max_file_bytes=20 * MB, files_budget=10 * CAP
    ) as api:
        statuses = [(await upload(api.client, 12 * MB)).status_code for _ in range(4)]
    # Refused by the headroom check once Redis is near its cap, never by Redis itself (503);
    # Redis' buffers free up after a refusal, so a later upload may fit again.
    assert statuses[:2] == [200, 200] and 507 in statuses and 503 not in statuses, statuses
    assert capped_redis.client().info("memory")["used_memory"] < CAP


async def test_a_full_redis_is_a_503_never_a_500(
    api: httpx.AsyncClient, capped_redis: RedisServer
) -> None:
    line = b'{"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n'
    files = {"file": ("in.jsonl", line, "application/jsonl")}
    file_id = (await api.post("/v1/files", data={"purpose": "batch"}, files=files)).json()["id"]
    capped = capped_redis.client()
    capped.config_set("maxmemory", 1)  # full: every write is refused
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        capped.set("filler", b"y")
    body = {
        "input_file_id": file_id,
        "endpoint": "/v1/chat/completions",
        "completion_window": "24h",
    }
    response = await api.post("/v1/batches", json=body)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "redis_unavailable"
    assert "full" in response.json()["error"]["message"]
