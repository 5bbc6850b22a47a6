"""The HTTP edge, in-process: DNS-rebinding guard, HEAD, API key schemes, log lines."""

import logging

import pytest

pytestmark = pytest.mark.anyio


async def test_without_a_key_only_own_names_are_served(make_api) -> None:
    async with make_api(allowed_hosts=["mlxq.lan"]) as api:
        for host in ("127.0.0.1:5015", "localhost", "[::1]:5015", "mlxq.lan:80"):
            response = await api.client.get("/health", headers={"host": host})
            assert response.status_code == 200, host
        rebound = await api.client.get("/v1/models", headers={"host": "attacker.example"})
        assert rebound.status_code == 403
        assert rebound.json()["error"]["code"] == "forbidden"
        foreign = await api.client.post(
            "/ask", json={"question": "hi"}, headers={"origin": "http://attacker.example"}
        )
        assert foreign.status_code == 403 and foreign.json()["code"] == "forbidden"
        own = await api.client.get("/health", headers={"origin": "http://localhost:5015"})
        assert own.status_code == 200


async def test_with_a_key_any_name_is_served(make_api) -> None:
    async with make_api(api_key="k") as api:
        response = await api.client.get(
            "/health", headers={"host": "mac-mini.local", "authorization": "Bearer k"}
        )
        assert response.status_code == 200


async def test_head_on_health_and_the_page(api_client) -> None:
    for path in ("/health", "/"):
        response = await api_client.head(path)
        assert response.status_code == 200, path


async def test_bearer_scheme_in_any_case_and_x_api_key(make_api) -> None:
    async with make_api(api_key="s3cret") as api:
        for headers in (
            {"authorization": "Bearer s3cret"},
            {"authorization": "bearer s3cret"},
            {"authorization": "BEARER s3cret"},
            {"x-api-key": "s3cret"},
        ):
            assert (await api.client.get("/v1/models", headers=headers)).status_code == 200
        wrong = await api.client.get("/v1/models", headers={"authorization": "Basic s3cret"})
        assert wrong.status_code == 401


async def test_control_characters_in_paths_are_escaped_in_the_log(api_client, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="mlxq.api"):
        await api_client.get("/nothing%0aINFO%20forged%20line")
    lines = [r.getMessage() for r in caplog.records if r.name == "mlxq.api"]
    assert any("\\x0aINFO forged line" in line for line in lines)
    assert not any("\n" in line for line in lines)
