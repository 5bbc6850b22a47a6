"""Numbers JSON cannot carry (NaN, Infinity, 1e400) are a 4xx, never a 500, on every route."""

import pytest

pytestmark = pytest.mark.anyio

BAD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e400"]


@pytest.mark.parametrize("number", BAD_NUMBERS)
async def test_ask_refuses_non_finite_numbers(api_client, number: str) -> None:
    body = f'{{"question": "secret question", "timeout": {number}}}'
    response = await api_client.post(
        "/ask", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "finite" in response.text or "greater than" in response.text


@pytest.mark.parametrize("number", BAD_NUMBERS)
@pytest.mark.parametrize("field", ["temperature", "top_p", "presence_penalty", "timeout"])
async def test_v1_refuses_non_finite_numbers(api_client, number: str, field: str) -> None:
    body = (
        f'{{"model": "m", "messages": [{{"role": "user", "content": "hi"}}], "{field}": {number}}}'
    )
    response = await api_client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == field


async def test_no_error_path_logs_the_question(api_client, caplog) -> None:
    body = '{"question": "my secret question", "timeout": NaN}'
    await api_client.post("/ask", content=body, headers={"content-type": "application/json"})
    assert "my secret question" not in caplog.text
