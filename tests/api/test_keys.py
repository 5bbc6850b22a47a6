"""A key per person, in this process (tests/support/app.py): who gets in, who sees whose
files and batches, the limits decided before a job runs. Two made keys (alice, bob), an
admin key (ops) and MLXQ_API_KEY; no worker."""

import asyncio
import io
import json
import logging

import httpx
import pytest
import redis

from shared.api_keys import revoke_key
from shared.settings import DEMO_MODEL_ID
from tests.support.keys import bearer, make_key

pytestmark = pytest.mark.anyio

ENV_KEY = "env-admin-key-0123"


@pytest.fixture
def keys(redis_url: str) -> dict[str, dict[str, str]]:
    """Headers for each caller."""
    return {
        "alice": bearer(make_key(redis_url, "alice")),
        "bob": bearer(make_key(redis_url, "bob")),
        "ops": bearer(make_key(redis_url, "ops", admin=True)),
        "env": bearer(ENV_KEY),
    }


def lines(n: int = 2) -> bytes:
    rows = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": "hi"}]},
        }
        for i in range(n)
    ]
    return "".join(json.dumps(row) + "\n" for row in rows).encode()


async def upload(client: httpx.AsyncClient, headers: dict[str, str], content: bytes) -> str:
    files = {"file": ("in.jsonl", io.BytesIO(content))}
    response = await client.post(
        "/v1/files", headers=headers, files=files, data={"purpose": "batch"}
    )
    assert response.status_code == 200, response.text
    return response.json()["id"]


async def listed(
    client: httpx.AsyncClient, headers: dict[str, str], file_id: str
) -> tuple[set[str], set[str], int]:
    """The files and batches a key lists, and the status of reading ``file_id``."""
    files = (await client.get("/v1/files", headers=headers)).json()["data"]
    batches = (await client.get("/v1/batches", headers=headers)).json()["data"]
    content = await client.get(f"/v1/files/{file_id}/content", headers=headers)
    return {f["id"] for f in files}, {b["id"] for b in batches}, content.status_code


async def test_made_keys_close_an_open_service(make_api, redis_url: str) -> None:
    async with make_api() as api:
        assert (await api.client.get("/v1/models")).status_code == 200  # open: no key made
    secret = make_key(redis_url, "alice")
    async with make_api() as api:
        anonymous = await api.client.get("/v1/models")
        placeholder = await api.client.get("/v1/models", headers=bearer("unused"))
        alice = await api.client.get("/v1/models", headers=bearer(secret))
        anthropic_style = await api.client.get("/v1/models", headers={"x-api-key": secret})
        health = await api.client.get("/health")
        elsewhere = {"Host": "mlxq.example.org"}  # no DNS-rebinding guard once keys are needed
        remote = await api.client.get("/v1/models", headers={**bearer(secret), **elsewhere})
        remote_anonymous = await api.client.get("/v1/models", headers=elsewhere)
    assert remote.status_code == 200 and remote_anonymous.status_code == 401
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    assert placeholder.status_code == 401
    assert alice.status_code == 200 and anthropic_style.status_code == 200
    assert health.status_code == 200
    assert secret.startswith("mlxq-") and len(secret) > 40


async def test_the_environment_key_still_works_beside_made_keys(make_api, keys) -> None:
    async with make_api(api_key=ENV_KEY) as api:
        env = await api.client.get("/v1/models", headers=keys["env"])
        alice = await api.client.get("/v1/models", headers=keys["alice"])
        nobody = await api.client.get("/v1/models", headers=bearer("mlxq-not-a-key"))
    assert (env.status_code, alice.status_code, nobody.status_code) == (200, 200, 401)


async def test_a_revoked_key_is_refused_within_a_second(make_api, redis_url: str, keys) -> None:
    async with make_api() as api:
        assert (await api.client.get("/v1/files", headers=keys["alice"])).status_code == 200
        revoke_key(redis.Redis.from_url(redis_url), "alice")
        loop = asyncio.get_running_loop()
        revoked_at = loop.time()
        while (await api.client.get("/v1/files", headers=keys["alice"])).status_code != 401:
            assert loop.time() - revoked_at < 1.0, "still accepted a second after revoking"
            await asyncio.sleep(0.02)
        assert (await api.client.get("/v1/files", headers=keys["bob"])).status_code == 200


async def test_every_files_and_batches_route_keeps_each_key_to_its_own(make_api, keys) -> None:
    async with make_api(api_key=ENV_KEY) as api:
        client = api.client
        file_id = await upload(client, keys["alice"], lines())
        batch = await client.post(
            "/v1/batches",
            headers=keys["alice"],
            json={"input_file_id": file_id, "endpoint": "/v1/chat/completions",
                  "completion_window": "24h"},
        )  # fmt: skip
        assert batch.status_code == 200, batch.text
        batch_id = batch.json()["id"]
        bob_file = await upload(client, keys["bob"], lines(1))

        never = {"file": "file-0123456789abcdef", "batch": "batch_0123456789abcdef"}
        bob = keys["bob"]
        refused = {
            "retrieve file": await client.get(f"/v1/files/{file_id}", headers=bob),
            "file content": await client.get(f"/v1/files/{file_id}/content", headers=bob),
            "delete file": await client.delete(f"/v1/files/{file_id}", headers=bob),
            "batch of it": await client.post(
                "/v1/batches",
                headers=bob,
                json={
                    "input_file_id": file_id,
                    "endpoint": "/v1/chat/completions",
                    "completion_window": "24h",
                },
            ),  # fmt: skip
            "retrieve batch": await client.get(f"/v1/batches/{batch_id}", headers=bob),
            "cancel batch": await client.post(f"/v1/batches/{batch_id}/cancel", headers=bob),
        }
        missing = await client.get(f"/v1/files/{never['file']}", headers=bob)
        bob_files = (await client.get("/v1/files", headers=bob)).json()["data"]
        bob_batches = (await client.get("/v1/batches", headers=bob)).json()["data"]

        alice_files = (await client.get("/v1/files", headers=keys["alice"])).json()["data"]
        alice_batch = await client.get(f"/v1/batches/{batch_id}", headers=keys["alice"])
        seen_by = {who: await listed(client, keys[who], file_id) for who in ("ops", "env")}
        cancel = await client.post(f"/v1/batches/{batch_id}/cancel", headers=keys["alice"])

    for route, response in refused.items():
        assert response.status_code == 404, (route, response.text)
        assert response.json()["error"]["code"] == "not_found", route
        assert response.json()["error"]["type"] == missing.json()["error"]["type"], route
    assert [f["id"] for f in bob_files] == [bob_file]  # not alice's
    assert bob_batches == []
    assert [f["id"] for f in alice_files] == [file_id]  # bob's delete did nothing
    assert alice_batch.status_code == 200 and alice_batch.json()["status"] == "in_progress"
    for who, (files, batches, content_status) in seen_by.items():
        assert files == {file_id, bob_file}, who  # an admin key sees every key's
        assert batches == {batch_id} and content_status == 200, who
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelling"


async def test_stored_file_bytes_are_limited_per_key(make_api, redis_url: str) -> None:
    carol = bearer(make_key(redis_url, "carol", files_bytes=1000))
    dave = bearer(make_key(redis_url, "dave"))
    async with make_api() as api:
        first = await upload(api.client, carol, b"x" * 600)
        files = {"file": ("in.jsonl", io.BytesIO(b"y" * 600))}
        over = await api.client.post(
            "/v1/files", headers=carol, files=files, data={"purpose": "batch"}
        )
        await upload(api.client, dave, b"z" * 600)  # another key's room is its own
        too_large = await api.client.post(
            "/v1/files",
            headers=carol,
            files={"file": ("in.jsonl", io.BytesIO(b"y" * 1001))},
            data={"purpose": "batch"},
        )
        assert (await api.client.delete(f"/v1/files/{first}", headers=carol)).status_code == 200
        await upload(api.client, carol, b"y" * 600)  # room again once one is deleted
    assert over.status_code == 429, over.text
    assert over.json()["error"]["code"] == "rate_limited"
    assert (
        "carol" in over.json()["error"]["message"]
        and "600 of 1000" in over.json()["error"]["message"]
    )
    retry_after = int(over.headers["retry-after"])
    assert 600_000 - 60 <= retry_after <= 604_800  # when its first file expires (7 days)
    assert too_large.status_code == 413  # no wait would ever make room


async def test_a_key_limited_to_some_models_is_told_others_do_not_exist(
    make_api, redis_url: str
) -> None:
    limited = bearer(make_key(redis_url, "erin", models=("other/model",)))
    body = {"model": DEMO_MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}
    async with make_api() as api:
        chat = await api.client.post("/v1/chat/completions", headers=limited, json=body)
        tags = await api.client.get("/api/tags", headers=limited)
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"
    assert tags.json() == {"models": []}


async def test_concurrent_requests_are_limited_and_freed_when_they_end(
    make_api, redis_url: str
) -> None:
    """No worker: admitted requests wait in the queue (holding their slots) until the queue
    timeout answers them 503; a third meanwhile is a 429 at once; after, slots are free."""
    frank = bearer(make_key(redis_url, "frank", max_concurrent=2))
    body = {"question": "hi", "max_tokens": 1}
    async with make_api(queue_timeout=1.5) as api:
        waiting = [
            asyncio.create_task(api.client.post("/ask", headers=frank, json=body)) for _ in range(2)
        ]
        await asyncio.sleep(0.5)
        third = await api.client.post("/ask", headers=frank, json=body)
        first_two = await asyncio.gather(*waiting)
        again = await api.client.post("/ask", headers=frank, json=body)
    assert [r.status_code for r in first_two] == [503, 503]
    assert third.status_code == 429 and third.json()["code"] == "rate_limited"
    assert "2 requests running" in third.json()["detail"]
    assert third.headers["retry-after"] == "1"
    assert again.status_code == 503  # admitted: the slots were freed


async def test_logs_name_the_key_never_the_secret(
    make_api, keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with make_api() as api:
        await api.client.get("/v1/files", headers=keys["alice"])
        await api.client.get("/v1/files", headers=bearer("mlxq-wrong"))
    secret = keys["alice"]["Authorization"].split()[1]
    lines = [r.getMessage() for r in caplog.records if "/v1/files" in r.getMessage()]
    assert any("-> 200" in line and line.endswith(" key=alice") for line in lines), lines
    assert any("-> 401" in line and "key=" not in line for line in lines), lines
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert secret not in logged and "mlxq-wrong" not in logged


async def test_a_process_that_saw_keys_stays_closed_if_redis_loses_them(
    make_api, redis_url: str, keys
) -> None:
    async with make_api() as api:
        assert (await api.client.get("/v1/files", headers=keys["alice"])).status_code == 200
        redis.Redis.from_url(redis_url).flushdb()  # a Redis restarted empty
        await asyncio.sleep(1.1)  # past the cache of "are there keys?"
        anonymous = await api.client.get("/v1/files")
        alice = await api.client.get("/v1/files", headers=keys["alice"])
    assert anonymous.status_code == 401  # not open to everyone
    assert alice.status_code == 401  # and the lost key is no key
