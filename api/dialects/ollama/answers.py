"""Ollama's answers as the OpenAPI schema documents them (the routes build them as dicts)."""

from typing import Any, Literal

from pydantic import BaseModel, Field

from api.core.error_handlers import ERROR_STATUSES


class OllamaError(BaseModel):
    error: str


class OllamaVersion(BaseModel):
    version: str


class OllamaModelDetails(BaseModel):
    parent_model: str
    format: str
    family: str
    families: list[str]
    parameter_size: str
    quantization_level: str


class OllamaModel(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: OllamaModelDetails


class OllamaTags(BaseModel):
    models: list[OllamaModel]


class OllamaRunningModel(OllamaModel):
    expires_at: str = Field(description="When it unloads if left idle (its keep-alive).")
    size_vram: int
    context_length: int | None = None
    workers: int = Field(description="mlxq: live workers holding the model loaded.")
    loaded_on: list[str] = Field(description="mlxq: the hosts of the workers holding it.")


class OllamaPs(BaseModel):
    models: list[OllamaRunningModel]


class OllamaShow(BaseModel):
    modelfile: str
    parameters: str
    template: str
    details: OllamaModelDetails
    model_info: dict[str, Any]
    capabilities: list[str]
    modified_at: str
    loaded_on: list[str] = Field(description="mlxq: the hosts of the workers holding it.")


class OllamaPullProgress(BaseModel):
    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None


class OllamaFunctionCallOut(BaseModel):
    name: str
    arguments: dict[str, Any]


class OllamaToolCallOut(BaseModel):
    function: OllamaFunctionCallOut


class OllamaMessageOut(BaseModel):
    role: Literal["assistant"]
    content: str
    thinking: str | None = None
    tool_calls: list[OllamaToolCallOut] | None = None


class _Answer(BaseModel):
    model: str
    created_at: str
    done: bool
    done_reason: Literal["stop", "length", "load", "unload"] | None = None
    total_duration: int | None = None
    load_duration: int | None = None
    prompt_eval_count: int | None = None
    prompt_eval_duration: int | None = None
    eval_count: int | None = None
    eval_duration: int | None = None
    logprobs: list[dict[str, Any]] | None = None


class OllamaChatResponse(_Answer):
    message: OllamaMessageOut


class OllamaGenerateResponse(_Answer):
    response: str
    thinking: str | None = None


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": OllamaError} for status in ERROR_STATUSES
}
"""Every error an /api route can answer, in Ollama's shape (invalid input is a 400)."""
