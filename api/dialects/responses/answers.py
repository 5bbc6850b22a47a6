"""The Responses API's answer: the Response object and its output items, as
``client.responses.create`` reads them (built by ``render.py`` and ``stream.py``)."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from api.dialects.responses.items import ItemStatus


class ResponsesOutputTextOut(BaseModel):
    type: Literal["output_text"] = "output_text"
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] = Field(default_factory=list)


class ResponsesMessageOut(BaseModel):
    type: Literal["message"] = "message"
    id: str
    status: ItemStatus
    role: Literal["assistant"] = "assistant"
    content: list[ResponsesOutputTextOut]


class ResponsesFunctionCallOut(BaseModel):
    type: Literal["function_call"] = "function_call"
    id: str
    call_id: str
    name: str
    arguments: str
    status: ItemStatus


class ResponsesReasoningTextOut(BaseModel):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ResponsesReasoningOut(BaseModel):
    type: Literal["reasoning"] = "reasoning"
    id: str
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[ResponsesReasoningTextOut]
    status: ItemStatus


OutputItem = Annotated[
    ResponsesMessageOut | ResponsesFunctionCallOut | ResponsesReasoningOut,
    Field(discriminator="type"),
]


class ResponsesInputTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Input tokens served from the prefix cache.")
    cache_write_tokens: int = Field(0, description="Not counted here: always 0.")


class ResponsesOutputTokensDetails(BaseModel):
    reasoning_tokens: int = Field(description="Always 0: reasoning is counted as output.")


class ResponseUsage(BaseModel):
    input_tokens: int
    input_tokens_details: ResponsesInputTokensDetails
    output_tokens: int
    output_tokens_details: ResponsesOutputTokensDetails
    total_tokens: int


class ResponsesIncompleteDetails(BaseModel):
    reason: Literal["max_output_tokens"]


class ResponseObject(BaseModel):
    """OpenAI's Response, as ``client.responses.create`` reads it."""

    id: str
    object: Literal["response"] = "response"
    created_at: int
    completed_at: int | None = None
    status: Literal["in_progress", "completed", "incomplete"]
    error: None = None
    incomplete_details: ResponsesIncompleteDetails | None = None
    instructions: str | None = None
    max_output_tokens: int | None = None
    model: str
    output: list[OutputItem] = Field(default_factory=list)
    parallel_tool_calls: bool
    previous_response_id: None = None
    reasoning: None = None
    service_tier: Literal["default"] = "default"
    store: Literal[False] = False
    temperature: float
    top_p: float
    text: dict[str, Any]
    tool_choice: str | dict[str, Any]
    tools: list[dict[str, Any]]
    truncation: Literal["disabled"] = "disabled"
    usage: ResponseUsage | None = None
    user: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
