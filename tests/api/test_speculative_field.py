"""``"speculative": false`` reaches the worker's request from every dialect that takes it
(its effect on decoding is tests/worker/test_speculation.py's and the service test's)."""

import pytest

from api.dialects.ask.schemas import AskRequest
from api.dialects.openai.schemas import ChatCompletionRequest, CompletionRequest
from api.dialects.openai.translate import chat_request, completion_request
from api.dialects.responses.schemas import ResponseRequest
from api.dialects.responses.translate import responses_request
from shared.settings import Settings

SETTINGS = Settings()


@pytest.mark.parametrize("value", [False, None])
def test_openai_and_responses_pass_it_on(value: bool | None) -> None:
    extra = {} if value is None else {"speculative": value}
    chat = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **extra)
    completion = CompletionRequest(model="m", prompt="hi", **extra)
    response = ResponseRequest(model="m", input="hi", **extra)
    expected = value is None  # omitted: speculation on
    assert chat_request(chat, SETTINGS, "m").speculative is expected
    assert completion_request(completion, SETTINGS, "m").speculative is expected
    assert responses_request(response, SETTINGS, "m").speculative is expected


def test_ask_takes_a_boolean_only() -> None:
    assert AskRequest(question="hi", speculative=False).speculative is False
    with pytest.raises(ValueError, match="speculative"):
        AskRequest(question="hi", speculative="sometimes")
