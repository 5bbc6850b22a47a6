"""Turning a request into prompt tokens, and fitting max_tokens into the model's context."""

import logging
from typing import Any

from shared.errors import ContextLengthExceeded, InvalidRequest
from shared.schemas import ChatMessage, GenerationRequest, ToolDefinition
from worker.fim import FimTokens, fim_prompt

log = logging.getLogger(__name__)

_RESERVED_TEMPLATE_ARGS = frozenset(
    {"conversation", "messages", "tokenize", "add_generation_prompt", "return_dict", "tools"}
)


def prompt_token_lists(
    tokenizer: Any, request: GenerationRequest, fim: FimTokens | None = None
) -> list[list[int]]:
    """One token list per prompt: raw prompts as they are (text encoded, token ids checked
    by the engine), chat requests through the tokenizer's chat template (one prompt), and
    with a ``suffix`` each prompt as the prefix of a fill-in-the-middle prompt (``fim``: the
    model's markers; the caller refuses a model without them)."""
    if request.suffix is not None and request.prompts is not None:
        assert fim is not None, "a model without FIM markers is refused before"
        lists = [fim_prompt(tokenizer, fim, str(p), request.suffix) for p in request.prompts]
    elif request.prompts is not None:
        lists = [
            list(tokenizer.encode(p)) if isinstance(p, str) else list(p) for p in request.prompts
        ]
    elif request.messages:
        lists = [_chat_tokens(tokenizer, request)]
    else:
        raise InvalidRequest("The request has neither messages nor a prompt.")
    if not lists or any(not tokens for tokens in lists):
        raise InvalidRequest("The prompt is empty: there is nothing to continue.")
    return lists


def _chat_tokens(tokenizer: Any, request: GenerationRequest) -> list[int]:
    """Chat requests get the tokenizer's chat template; without one, the raw text is used."""
    assert request.messages is not None
    return chat_prompt_tokens(
        tokenizer,
        request.messages,
        tools=request.tools,
        tool_choice=request.tool_choice,
        template_kwargs=request.chat_template_kwargs,
    )


def chat_prompt_tokens(
    tokenizer: Any,
    chat: list[ChatMessage],
    *,
    tools: list[ToolDefinition] | None = None,
    tool_choice: str = "auto",
    template_kwargs: dict[str, Any] | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """A conversation's prompt tokens, through the chat template (tools rendered as the
    template or mlxq's fallback wants them); without a template, the raw text."""
    messages = [m.model_dump(mode="json", exclude_none=True) for m in chat]
    kwargs: dict[str, Any] = dict(template_kwargs or {})
    reserved = _RESERVED_TEMPLATE_ARGS & kwargs.keys()
    if reserved:
        raise InvalidRequest(f"chat_template_kwargs may not set {sorted(reserved)}.")
    if tools or any(m["role"] == "tool" or "tool_calls" in m for m in messages):
        from worker.tools import tool_prompt

        definitions = [t.model_dump(mode="json", exclude_none=True) for t in tools or []]
        messages, extra = tool_prompt(tokenizer, messages, definitions or None, tool_choice)
        kwargs.update(extra)
    if getattr(tokenizer, "has_chat_template", False):
        try:
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
            )
            return list(tokenizer.encode(text, add_special_tokens=False))
        except Exception as exc:  # a broken template must not fail the request
            log.warning("chat template failed (%s); using the raw question", exc)
    else:
        log.warning("tokenizer has no chat template; using the raw question")
    return list(tokenizer.encode("\n\n".join(m.get("content") or "" for m in messages)))


def fit_max_tokens(
    requested: int | None, prompt_length: int, context_length: int | None, cap: int
) -> int:
    """The number of tokens to generate: the request's, checked, or the most that fits.

    No silent truncation: an explicit max_tokens that does not fit is refused with the limit.
    """
    room = cap if context_length is None else context_length - prompt_length
    if room <= 0:
        raise ContextLengthExceeded(
            f"The prompt has {prompt_length} tokens, which fills the model's context window "
            f"of {context_length} tokens; shorten the prompt."
        )
    if requested is None:
        return min(cap, room)
    if requested > room:
        raise ContextLengthExceeded(
            f"max_tokens={requested} does not fit: the prompt has {prompt_length} tokens and "
            f"the model's context window is {context_length} tokens, so max_tokens can be at "
            f"most {room}."
        )
    return requested
