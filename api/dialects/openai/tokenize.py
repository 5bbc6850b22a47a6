"""vLLM's tokenizer endpoints beside OpenAI's API: ``POST /tokenize`` (a prompt, or chat
messages through the model's chat template, to token ids) and ``POST /detokenize`` (token ids
to text), with vLLM's request and response shapes.

The API has no tokenizer: each runs as a small job (``worker.jobs.tokenize``) on a worker of
the model, which answers it on a preparer thread without touching the model. As for every
body, each field is honoured, refused with a 400 that names it, or unknown and refused.
"""

from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel, Field, field_validator

from api.core.neutral import tokenize_request
from api.core.validators import MAX_MESSAGES, MAX_TOOLS, StrictBody, refuser
from api.deps import JobExchangeDep
from api.dialects.openai.answers import ERROR_RESPONSES
from api.dialects.openai.schemas import MessageIn, ToolIn
from api.dialects.openai.translate import chat_messages, tool_definitions
from shared.schemas import DoneEvent, JSONScalar, Tokenized

MAX_TOKEN_IDS = 1_000_000
"""Token ids one /detokenize may send: more than any context; bounds the work."""

REFUSED_WHY = {
    "continue_final_message": "continuing the last message is not supported; the chat "
    "template is applied as for a generation (add_generation_prompt)",
    "chat_template": "a per-request chat template is not supported: the model's own is applied",
    "mm_processor_kwargs": "mlxq serves text models only",
    "add_special_tokens": "the chat template writes its own special tokens; only false is "
    "accepted with messages",
}

router = APIRouter(tags=["vllm"])


class TokenizePromptBody(StrictBody):
    """vLLM's TokenizeCompletionRequest."""

    model: str = Field(min_length=1)
    prompt: str
    add_special_tokens: bool = True
    return_token_strs: bool = False


class TokenizeChatBody(StrictBody):
    """vLLM's TokenizeChatRequest: the prompt a chat completion with these messages reads."""

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1, max_length=MAX_MESSAGES)
    add_generation_prompt: bool = True
    return_token_strs: bool = False
    chat_template_kwargs: dict[str, JSONScalar] | None = None
    tools: list[ToolIn] | None = Field(None, max_length=MAX_TOOLS)
    continue_final_message: bool = False
    add_special_tokens: bool = False
    chat_template: str | None = None
    mm_processor_kwargs: dict[str, Any] | None = None

    _refused = field_validator(
        "continue_final_message", "add_special_tokens", "chat_template", "mm_processor_kwargs"
    )(refuser(REFUSED_WHY, neutral=lambda name, value: value in (None, False)))


class DetokenizeBody(StrictBody):
    model: str = Field(min_length=1)
    tokens: list[int] = Field(max_length=MAX_TOKEN_IDS)


class TokenizeAnswer(BaseModel):
    count: int
    max_model_len: int | None
    tokens: list[int]
    token_strs: list[str] | None


class DetokenizeAnswer(BaseModel):
    prompt: str


@router.post(
    "/tokenize",
    response_model=None,
    responses={200: {"model": TokenizeAnswer}, **ERROR_RESPONSES},
)
async def tokenize(body: TokenizePromptBody | TokenizeChatBody, job: JobExchangeDep) -> Response:
    """``{"count", "max_model_len", "tokens", "token_strs"}``, as vLLM answers."""
    model = await job.model(body.model)
    fields: dict[str, Any] = {"return_token_strs": body.return_token_strs}
    if isinstance(body, TokenizeChatBody):
        fields |= {
            "messages": chat_messages(body.messages),
            "tools": tool_definitions(body.tools),
            "chat_template_kwargs": body.chat_template_kwargs,
            "add_generation_prompt": body.add_generation_prompt,
        }
    else:
        fields |= {"prompt": body.prompt, "add_special_tokens": body.add_special_tokens}
    request = tokenize_request(job.settings, model=model, **fields)

    def answer(done: DoneEvent) -> dict:
        tokenized = _tokenized(done)
        tokens = tokenized.tokens or []
        return {
            "count": len(tokens),
            "max_model_len": tokenized.max_model_len,
            "tokens": tokens,
            "token_strs": tokenized.token_strs,
        }

    return await job.respond(request, answer=answer)


@router.post(
    "/detokenize",
    response_model=None,
    responses={200: {"model": DetokenizeAnswer}, **ERROR_RESPONSES},
)
async def detokenize(body: DetokenizeBody, job: JobExchangeDep) -> Response:
    """``{"prompt"}``: the text the token ids stand for, as vLLM answers."""
    model = await job.model(body.model)
    request = tokenize_request(job.settings, model=model, tokens=body.tokens)
    return await job.respond(request, answer=lambda done: {"prompt": _tokenized(done).text})


def _tokenized(done: DoneEvent) -> Tokenized:
    if done.tokenized is None:
        raise AssertionError("a tokenizer job answers with its tokens or text")
    return done.tokenized
