"""The frameworks people build agents with, against the real service and the demo model:
LangChain (structured output by all three methods, tools in a two-step agent loop),
litellm (chat and tools over OpenAI's API; chat over its two Ollama providers), the OpenAI
Agents SDK (an agent with a tool, over chat completions and Responses) and langchain-anthropic
(structured output over Anthropic's Messages API)."""

import asyncio
import json
from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field

from shared.settings import DEMO_MODEL_ID
from tests.support.processes import Service

pytestmark = pytest.mark.e2e


class Movie(BaseModel):
    """A movie and what people thought of it."""

    title: str = Field(description="The movie's title", max_length=30)
    year: int = Field(ge=1900, le=2030)
    rating: int = Field(ge=1, le=5)


@pytest.fixture(scope="module")
def chat_model(model_service: Service):
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=DEMO_MODEL_ID,
        base_url=f"{model_service.base_url}/v1",
        api_key="unused",
        temperature=0,
        max_tokens=80,
        max_retries=0,
    )


@pytest.mark.parametrize("method", ["json_schema", "function_calling"])
def test_langchain_structured_output(chat_model, method: str) -> None:
    movie = chat_model.with_structured_output(Movie, method=method).invoke(
        "Tell me about a famous movie."
    )
    assert isinstance(movie, Movie) and movie.title and 1 <= movie.rating <= 5


def test_langchain_structured_output_json_mode(chat_model) -> None:
    # json_mode promises JSON, not keys: LangChain leaves the keys to the prompt, and a
    # 135M model does not follow them, so this checks what the mode promises.
    roomy = chat_model.model_copy(update={"max_tokens": 200})
    structured = roomy.with_structured_output(Movie.model_json_schema(), method="json_mode")
    answer = structured.invoke("Tell me about a famous movie. Respond in JSON format.")
    assert isinstance(answer, dict) and answer


def test_langchain_two_step_agent_loop(chat_model) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool

    @tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        return f"It is sunny and 21 degrees in {city}."

    messages = [HumanMessage("What is the weather in Paris?")]
    caller = chat_model.bind_tools([get_weather], tool_choice="get_weather")
    call_message = caller.invoke(messages)
    (call,) = call_message.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    assert list(call["args"]) == ["city"]  # nothing invented beside the one parameter

    messages += [
        call_message,
        ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"]),
    ]
    final = chat_model.bind_tools([get_weather]).invoke(messages)
    assert isinstance(final.content, str)
    assert final.response_metadata["finish_reason"] in ("stop", "length", "tool_calls")


def test_litellm_chat_and_tools(model_service: Service) -> None:
    import litellm

    common = {
        "model": f"openai/{DEMO_MODEL_ID}",
        "api_base": f"{model_service.base_url}/v1",
        "api_key": "unused",
        "temperature": 0,
        "max_tokens": 60,
    }
    answer = litellm.completion(messages=[{"role": "user", "content": "Say hello."}], **common)
    assert answer.choices[0].message.content

    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 30}},
                "required": ["city"],
            },
        },
    }
    called = litellm.completion(
        messages=[{"role": "user", "content": "Weather in Rome?"}],
        tools=[weather],
        tool_choice="required",
        **common,
    )
    (call,) = called.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert isinstance(json.loads(call.function.arguments)["city"], str)


# litellm's stream types trip pydantic warnings of their own (ReadOnly TypedDict items).
@pytest.mark.filterwarnings("ignore:.*on TypedDict class.*ReadOnly:UserWarning")
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("provider", ["ollama", "ollama_chat"])
def test_litellm_ollama_providers(
    model_service: Service, monkeypatch: pytest.MonkeyPatch, provider: str, stream: bool
) -> None:
    """litellm's Ollama providers post JSON without a Content-Type (every call was a 400)."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network in tests
    import litellm

    answer = litellm.completion(
        model=f"{provider}/{DEMO_MODEL_ID}",
        api_base=model_service.base_url,
        messages=[{"role": "user", "content": "Say hello."}],
        temperature=0,
        max_tokens=8,
        stream=stream,
    )
    if stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in answer)
    else:
        text = answer.choices[0].message.content
    assert text


@pytest.mark.parametrize("use_responses", [False, True], ids=["chat", "responses"])
def test_openai_agents_runs_an_agent_by_the_short_alias(
    model_service: Service, use_responses: bool
) -> None:
    """The Agents SDK reads "mlxq/..." as a provider prefix ("Unknown prefix: mlxq"): the
    model's short alias is a name it can use."""
    from agents import Agent, ModelSettings, RunConfig, Runner, function_tool
    from agents.models.multi_provider import MultiProvider
    from openai import AsyncOpenAI

    alias = DEMO_MODEL_ID.rsplit("/", 1)[1]
    client = AsyncOpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused")
    provider = MultiProvider(openai_client=client, openai_use_responses=use_responses)
    config = RunConfig(model_provider=provider, tracing_disabled=True)
    cities: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather in a city."""
        cities.append(city)
        return f"It is sunny in {city}."

    agent = Agent(
        name="weather",
        instructions="Answer with the weather tool.",
        model=alias,
        tools=[get_weather],
        tool_use_behavior="stop_on_first_tool",
        model_settings=ModelSettings(temperature=0, max_tokens=60, tool_choice="required"),
    )

    async def run() -> Any:
        # The client is closed in the loop that opened its connections: left to the garbage
        # collector, it closes them in a later test's loop ("Event loop is closed").
        async with client:
            return await Runner.run(agent, "What is the weather in Paris?", run_config=config)

    result = asyncio.run(run())  # run_sync keeps one loop across tests; its client does not
    assert len(cities) == 1 and result.final_output == f"It is sunny in {cities[0]}."


class Review(BaseModel):
    """A movie and what people thought of it."""

    title: str = Field(description="The movie's title")
    year: int
    verdict: Literal["bad", "fine", "great"]


def test_langchain_anthropic_structured_output(model_service: Service) -> None:
    """langchain-anthropic's json_schema method sends Anthropic's ``output_config.format``.
    (The anthropic package moves bounds such as ``maximum`` into descriptions first, as
    Anthropic's API wants: only what is left is enforced, so this schema has none.)"""
    from langchain_anthropic import ChatAnthropic

    model = ChatAnthropic(
        model=DEMO_MODEL_ID,
        base_url=model_service.base_url,
        api_key="unused",
        temperature=0,
        max_tokens=80,
        max_retries=0,
    )
    review = model.with_structured_output(Review, method="json_schema").invoke(
        "Tell me about a famous movie."
    )
    assert isinstance(review, Review) and review.title and review.verdict
