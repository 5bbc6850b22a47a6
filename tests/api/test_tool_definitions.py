"""Function tools as clients define them, in every dialect that takes tools (in-process API,
a stand-in worker that never takes the job): what reaches the worker."""

import pytest

from shared.schemas import NO_PARAMETERS
from tests.support.jobs import enqueued_request, serve

pytestmark = pytest.mark.anyio

MODEL = "org/served-model"
USER = [{"role": "user", "content": "What time is it?"}]
NOW = {"name": "current_time", "description": "The time now."}  # no "parameters"

WITHOUT_PARAMETERS = {
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": USER,
        "tools": [{"type": "function", "function": NOW}],
        "tool_choice": "required",
    },
    "/v1/responses": {
        "model": MODEL,
        "input": "What time is it?",
        "tools": [{"type": "function", **NOW}],
        "tool_choice": "required",
    },
    "/api/chat": {
        "model": MODEL,
        "messages": USER,
        "tools": [{"type": "function", "function": NOW}],
        "stream": False,
    },
}


@pytest.mark.parametrize("path", list(WITHOUT_PARAMETERS))
async def test_a_tool_without_parameters_takes_none(make_api, redis_url: str, path: str) -> None:
    """OpenAI's spec: ``parameters`` left out is an empty parameter list (it was a 500)."""
    serve(redis_url, MODEL)
    async with make_api(queue_timeout=30) as api:
        body = WITHOUT_PARAMETERS[path]
        request = await enqueued_request(api.client, redis_url, MODEL, path, body)
    (tool,) = request["tools"]
    assert tool["function"]["name"] == "current_time"
    assert tool["function"]["parameters"] == NO_PARAMETERS
