"""OpenAI's answers as the OpenAPI schema documents them (schemathesis checks the real answers
against it); ``render.py`` builds them."""

from typing import Literal

from pydantic import BaseModel, Field

from api.core.error_handlers import ERROR_STATUSES


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None
    partial_content: str | None = Field(
        None, description="mlxq: text generated before a deadline cut the request off."
    )


class OpenAIError(BaseModel):
    error: OpenAIErrorDetail


class PromptTokensDetails(BaseModel):
    cached_tokens: int = Field(description="Prompt tokens served from the prefix cache.")


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class FunctionCallOut(BaseModel):
    name: str
    arguments: str


class ToolCallOut(BaseModel):
    id: str
    type: Literal["function"]
    function: FunctionCallOut


class ChatMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCallOut] | None = None
    reasoning_content: str | None = None


class TopLogprobOut(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprobOut(TopLogprobOut):
    top_logprobs: list[TopLogprobOut]


class ChatLogprobs(BaseModel):
    content: list[TokenLogprobOut] | None
    refusal: None = None


FinishReason = Literal["stop", "length", "tool_calls"]


class ChatChoice(BaseModel):
    index: int
    message: ChatMessageOut
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None] = Field(
        description="With echo, the prompt's first token has none (null)."
    )
    top_logprobs: list[dict[str, float] | None]
    text_offset: list[int]


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage


class ModelCard(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    workers: int = Field(description="mlxq: live workers holding the model loaded.")
    root: str = Field(
        description="The model's id (as vLLM names it): itself, or the model an alias stands for."
    )
    state: Literal["loaded", "loading", "not-loaded"] = Field(
        "not-loaded",
        description="mlxq (LM Studio's word): a request for a model not loaded waits while a "
        "worker loads it.",
    )
    loaded_on: list[str] = Field(
        default_factory=list, description="mlxq: the hosts of the workers holding it loaded."
    )
    max_model_len: int | None = Field(None, description="Tokens the model reads at most (vLLM).")
    context_length: int | None = Field(None, description="The same, under LiteLLM's name.")
    family: str | None = Field(None, description="mlxq: its architecture (config's model_type).")
    parameter_count: int | None = None
    quantization: str | None = Field(None, description='mlxq: "Q4", "BF16", ...')
    size: int | None = Field(None, description="mlxq: bytes of its weights on disk.")
    memory_bytes: int | None = Field(
        None, description="mlxq: bytes it takes loaded (measured once loaded, else estimated)."
    )
    capabilities: list[str] | None = Field(
        None,
        description="mlxq: what the model does, in Ollama's words (completion, tools, insert, "
        "thinking; or embedding): as its loaded tokenizer told, else as its kind does.",
    )


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelCard]


SSE_RESPONSE = {
    "description": 'The completion; with "stream": true, Server-Sent Events ending with '
    "`data: [DONE]`.",
    "content": {
        "text/event-stream": {
            "schema": {  # one event: its data is a JSON chunk, an error, or [DONE]
                "type": "object",
                "required": ["data"],
                "properties": {"event": {"const": "message"}, "data": {"type": "string"}},
            }
        }
    },
}


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": OpenAIError} for status in ERROR_STATUSES
}
"""Every error a /v1 route can answer, in OpenAI's shape (invalid input is a 400, never 422)."""
