"""Ollama's model management, in-process: /api/pull (the hub is unreachable from the tests:
a plain error at once, no stream) and DELETE /api/delete on the local Hugging Face cache."""

import time
from pathlib import Path

import pytest

from tests.support.hf_cache import cache_model


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hf"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.anyio
@pytest.mark.parametrize("stream", [True, False])
async def test_a_pull_without_the_hub_is_one_clear_error_at_once(
    api_client, hf_cache: Path, stream: bool
) -> None:
    started = time.monotonic()
    body = {"model": "mlx-community/no-such-model", "stream": stream}
    response = await api_client.post("/api/pull", json=body)
    assert time.monotonic() - started < 10
    assert response.status_code == 502, response.text
    assert response.json()["error"].startswith("cannot pull mlx-community/no-such-model:")


@pytest.mark.anyio
async def test_a_pull_names_a_repository(api_client) -> None:
    response = await api_client.post("/api/pull", json={"model": "llama3"})
    assert response.status_code == 400 and "org/name" in response.json()["error"]


@pytest.mark.anyio
async def test_delete_removes_a_pulled_model(api_client, hf_cache: Path, tmp_path: Path) -> None:
    source = tmp_path / "model"
    source.mkdir()
    (source / "config.json").write_text("{}")
    (source / "model.safetensors").write_bytes(b"x" * 10)
    snapshot = cache_model(hf_cache, "org/name", source)
    response = await api_client.request("DELETE", "/api/delete", json={"model": "org/name"})
    assert response.status_code == 200 and not snapshot.exists()
    again = await api_client.request("DELETE", "/api/delete", json={"model": "org/name"})
    assert again.status_code == 404 and "not found" in again.json()["error"]


@pytest.mark.anyio
async def test_only_an_admin_key_manages_models(make_api, redis_url: str) -> None:
    from tests.support.keys import make_key

    secret = make_key(redis_url, "alice")
    async with make_api() as api:
        headers = {"Authorization": f"Bearer {secret}"}
        for method, path in (("POST", "/api/pull"), ("DELETE", "/api/delete")):
            response = await api.client.request(
                method, path, json={"model": "org/name"}, headers=headers
            )
            assert response.status_code == 403 and "admin" in response.json()["error"]
