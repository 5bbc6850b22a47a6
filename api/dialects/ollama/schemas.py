"""The Ollama request bodies mlxq accepts (``/api/chat``, ``/api/generate``, ``/api/embed``,
``/api/embeddings``, ``/api/show``), as the official ``ollama`` clients send them.

As for every dialect, nothing a client asks for is silently dropped: every field and every
``options`` entry (options.py) is honoured, refused with a 400 that names it
(``REFUSED_WHY``), or accepted as a documented no-op (``NO_OP_FIELDS``, ``NO_OP_OPTIONS``).
Unknown fields and unknown options are refused.
"""

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from api.core.validators import (
    MAX_MESSAGES,
    MAX_TOOLS,
    StrictBody,
    ToolName,
    ensure_encodable,
    refuser,
)
from api.dialects.ollama.options import OllamaOptions
from shared.schemas import MAX_TOP_LOGPROBS
from shared.units import FOREVER, parse_duration

KEEP_ALIVE_DOC = (
    "How long the model stays loaded once idle after this request: seconds, or a duration "
    '("5m", "1h"); 0 unloads it as soon as it is idle, negative keeps it loaded. Default: '
    "MLXQ_KEEP_ALIVE."
)


class KeepAlive(StrictBody):
    """Ollama's ``keep_alive``, honoured: the model's keep-alive on the worker that answers."""

    keep_alive: int | float | str | None = Field(None, description=KEEP_ALIVE_DOC)

    @field_validator("keep_alive")
    @classmethod
    def _a_duration(cls, value: int | float | str | None) -> int | float | str | None:
        if value is not None:
            parse_duration(value)  # ValueError (a 400 naming the field) when it is none
        return value

    @property
    def keep_alive_s(self) -> float | None:
        """Seconds, as the job carries it (negative: forever); None: the worker's default."""
        if self.keep_alive is None:
            return None
        seconds = parse_duration(self.keep_alive)
        return -1.0 if seconds == FOREVER else seconds


NO_OP_FIELDS: dict[str, str] = {
    "pull.insecure": "the Hugging Face hub is always reached over HTTPS",
    "messages[].thinking": "an earlier answer's thinking is not rendered (chat templates drop "
    "it too)",
    "show.verbose": "model_info is always the short form",
}
"""Request fields accepted and documented as no-ops."""

REFUSED_WHY: dict[str, str] = {
    "images": "images are not supported: mlxq serves text models only",
    "context": "context is deprecated by Ollama and not supported: send the conversation to "
    "/api/chat instead",
    "template": "a per-request prompt template is not supported: the model's own chat "
    "template is applied (or none, with raw: true)",
    "think": "thinking cannot be switched on per request: a reasoning model's thinking comes "
    "back as `thinking` anyway; only think: false (or no think) is accepted",
    "width": "image generation is not supported",
    "height": "image generation is not supported",
    "steps": "image generation is not supported",
}
"""Fields refused with a 400 when set to anything but their neutral value."""


class OllamaFunctionCallIn(StrictBody):
    name: str = Field(min_length=1)
    arguments: dict[str, Any] = Field(default_factory=dict)
    index: int | None = Field(None, description="Ollama numbers a turn's calls; order is kept.")


class OllamaToolCallIn(StrictBody):
    id: str | None = Field(None, description="Optional: Ollama's calls carry no id.")
    type: Literal["function"] | None = None
    function: OllamaFunctionCallIn


class OllamaMessageIn(StrictBody):
    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    thinking: str | None = Field(None, description="No-op: " + NO_OP_FIELDS["messages[].thinking"])
    images: list[str] | None = Field(None, description="Refused: " + REFUSED_WHY["images"])
    tool_calls: list[OllamaToolCallIn] | None = None
    tool_name: str | None = Field(None, description="For a tool message: the tool that answered.")

    @field_validator("images")
    @classmethod
    def _no_images(cls, images: list[str] | None) -> list[str] | None:
        if images:
            raise ValueError(REFUSED_WHY["images"])
        return images

    @model_validator(mode="after")
    def _calls_are_the_assistants(self) -> "OllamaMessageIn":
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self


class OllamaFunctionIn(StrictBody):
    name: ToolName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OllamaToolIn(StrictBody):
    type: Literal["function"] = "function"
    function: OllamaFunctionIn


_refuse = refuser(REFUSED_WHY, neutral=lambda name, value: value in (None, "", [], False, 0))
"""A refused field set to anything but its neutral value is a 400 that names it."""


class OllamaGeneration(KeepAlive):
    model: str = Field(min_length=1, description='A served model id; ":latest" is accepted.')
    stream: bool | None = Field(None, description="Newline-delimited JSON unless false.")
    format: Literal["", "json"] | dict[str, Any] | None = Field(
        None, description='"json": any JSON object; a JSON Schema: an answer that follows it.'
    )
    options: OllamaOptions | None = None
    think: bool | Literal["low", "medium", "high"] | None = Field(
        None, description="Refused unless false: " + REFUSED_WHY["think"]
    )
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @field_validator("think")
    @classmethod
    def _thinking_off_only(cls, think: Any) -> Any:
        if think not in (None, False):
            raise ValueError(REFUSED_WHY["think"])
        return think

    @model_validator(mode="after")
    def _consistent(self) -> "OllamaGeneration":
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        ensure_encodable(self)
        return self

    @property
    def streaming(self) -> bool:
        return self.stream is not False

    @property
    def settings(self) -> OllamaOptions:
        return self.options or OllamaOptions()

    @property
    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 0) if self.logprobs else None


class OllamaChatRequest(OllamaGeneration):
    messages: list[OllamaMessageIn] = Field(
        default_factory=list,
        max_length=MAX_MESSAGES,
        description="No messages: the model is (already) loaded, done_reason load.",
    )
    tools: list[OllamaToolIn] | None = Field(None, max_length=MAX_TOOLS)


class OllamaGenerateRequest(OllamaGeneration):
    prompt: str | None = Field(None, description="No prompt: done_reason load.")
    system: str | None = None
    raw: bool | None = Field(None, description="true: the prompt as it is, no chat template.")
    suffix: str | None = Field(
        None,
        description="Fill-in-the-middle: the text after the insertion (the prompt is the text "
        "before it), for models whose vocabulary has FIM tokens (capability insert); others "
        "refuse it with a 400 naming the model.",
    )
    images: list[str] | None = Field(None, description="Refused: " + REFUSED_WHY["images"])
    context: list[int] | None = Field(None, description="Refused: " + REFUSED_WHY["context"])
    template: str | None = Field(None, description="Refused: " + REFUSED_WHY["template"])
    width: int | None = Field(None, description="Refused: " + REFUSED_WHY["width"])
    height: int | None = Field(None, description="Refused: " + REFUSED_WHY["height"])
    steps: int | None = Field(None, description="Refused: " + REFUSED_WHY["steps"])

    _refused = field_validator("images", "context", "template", "width", "height", "steps")(_refuse)

    @model_validator(mode="after")
    def _system_needs_a_template(self) -> "OllamaGenerateRequest":
        if self.raw and self.system:
            raise ValueError("system with raw: true: a raw prompt gets no template to put it in")
        if self.suffix and self.system:
            raise ValueError(
                "system with suffix: a fill-in-the-middle prompt has no place for a system message"
            )
        return self


class OllamaShowRequest(StrictBody):
    model: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1, description="Deprecated spelling of model.")
    verbose: bool | None = Field(None, description="No-op: " + NO_OP_FIELDS["show.verbose"])

    @model_validator(mode="after")
    def _named(self) -> "OllamaShowRequest":
        if not (self.model or self.name):
            raise ValueError("model is required")
        return self

    @property
    def model_name(self) -> str:
        return self.model or self.name or ""


class OllamaEmbedBody(KeepAlive):
    """``POST /api/embed``; ``options`` is an accepted no-op (an embedding has nothing to
    sample); ``keep_alive`` is honoured."""

    model: str = Field(min_length=1)
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = Field(None, ge=1)
    options: dict | None = None


class OllamaEmbeddingsBody(KeepAlive):
    """Ollama's older ``POST /api/embeddings``: one prompt, one vector."""

    model: str = Field(min_length=1)
    prompt: str
    options: dict | None = None


class _NamedModel(StrictBody):
    model: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1, description="Deprecated spelling of model.")

    @model_validator(mode="after")
    def _named(self) -> "_NamedModel":
        if not (self.model or self.name):
            raise ValueError("model is required")
        return self

    @property
    def model_name(self) -> str:
        return (self.model or self.name or "").removesuffix(":latest")


class OllamaPullRequest(_NamedModel):
    """``POST /api/pull``: a Hugging Face repo id (``org/name``), into the local cache."""

    stream: bool | None = Field(None, description="Progress lines unless false.")
    insecure: bool | None = Field(None, description="No-op: " + NO_OP_FIELDS["pull.insecure"])


class OllamaDeleteRequest(_NamedModel):
    """``DELETE /api/delete``: a model pulled into the local Hugging Face cache."""
