"""A tokenizer job (vLLM's ``/tokenize`` and ``/detokenize``): the model's own tokenizer on
a prompt, a conversation (through the chat template, exactly as a generation's prompt is
built) or token ids. It runs on a preparer thread, where prompts are tokenized anyway; the
engine answers it at once, without touching the model."""

from typing import Any

from shared.errors import InvalidRequest
from shared.schemas import Tokenized, TokenizeRequest
from worker.prompt import chat_prompt_tokens


def run_tokenize(
    tokenizer: Any, request: TokenizeRequest, context_length: int | None, vocab_size: int
) -> Tokenized:
    if request.tokens is not None:
        bad = [t for t in request.tokens if not 0 <= t < vocab_size]
        if bad:
            raise InvalidRequest(
                f"tokens: ids {bad[:5]} are outside this model's vocabulary (0 to "
                f"{vocab_size - 1})."
            )
        return Tokenized(text=tokenizer.decode(request.tokens), max_model_len=context_length)
    if request.messages is not None:
        tokens = chat_prompt_tokens(
            tokenizer,
            request.messages,
            tools=request.tools,
            template_kwargs=request.chat_template_kwargs,
            add_generation_prompt=request.add_generation_prompt,
        )
    else:
        assert request.prompt is not None
        tokens = list(
            tokenizer.encode(request.prompt, add_special_tokens=request.add_special_tokens)
        )
    strs = tokenizer.convert_ids_to_tokens(tokens) if request.return_token_strs else None
    return Tokenized(tokens=tokens, token_strs=strs, max_model_len=context_length)
