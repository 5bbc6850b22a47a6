"""Turning a job's request into what the engine runs, on a preparer thread of the worker.

Everything that can refuse a request is done here, before it reaches the engine thread:
tokenizing (chat template, tools), fitting ``max_tokens`` into the context, checking token
ids, and compiling the grammar of structured output or a forced tool call. A refusal is an
``MlxqError`` whose message names the field, so the client gets a clear 400.
"""

from collections.abc import Callable
from functools import partial
from typing import Any

from shared.errors import ContextLengthExceeded, InvalidRequest
from shared.schemas import GenerationRequest
from worker.channels import channels_for, ends_in_reasoning
from worker.engine_api import EngineRequest, LogitsProcessor
from worker.fim import find_fim_tokens
from worker.model import LoadedModel
from worker.prompt import fit_max_tokens, prompt_token_lists
from worker.sampling import check_logit_bias
from worker.sequence import SequenceSpec
from worker.tool_schemas import tool_call_schema
from worker.tools import parse_tool_calls


class RequestPreparer:
    def __init__(self, loaded: LoadedModel, max_tokens_cap: int) -> None:
        self._tokenizer = loaded.tokenizer
        self._model_id = loaded.model_id
        self._fim = find_fim_tokens(loaded.tokenizer)
        self._context_length = loaded.context_length
        self._cap = max_tokens_cap
        self.vocab_size = _vocab_size(loaded)
        self._compiler: Any = None
        self._longest_token: int | None = None

    def prepare(self, job_id: str, request: GenerationRequest, timeout_at: float) -> EngineRequest:
        check_logit_bias(request.sampling, self.vocab_size)
        if request.suffix is not None and self._fim is None:
            raise InvalidRequest(
                f"suffix: the model {self._model_id!r} cannot fill in the middle: its "
                "vocabulary has no fill-in-the-middle tokens (such as <fim_prefix>, "
                "<fim_suffix>, <fim_middle> or <|fim_prefix|>...). Use a code model that has "
                "them (StarCoder, Qwen2.5-Coder, DeepSeek-Coder), or send no suffix."
            )
        self._refuse_what_cannot_fit(request)
        prompts = prompt_token_lists(self._tokenizer, request, self._fim)
        self._check_token_ids(prompts)
        max_tokens = [
            fit_max_tokens(request.max_tokens, len(p), self._context_length, self._cap)
            for p in prompts
        ]
        return EngineRequest(
            job_id, request, prompts, max_tokens, timeout_at, constraint=self._constraint(request)
        )

    def sequence_spec(self, request: EngineRequest) -> SequenceSpec:
        """How the choices' text is read: stops, channels, tool calls, logprobs."""
        body = request.request
        tools_rendered = bool(body.tools) and body.tool_choice != "none"
        forced = tools_rendered and body.tool_choice != "auto"
        tools = [t.model_dump(mode="json", exclude_none=True) for t in body.tools or []]
        in_reasoning = ends_in_reasoning(self._tokenizer, request.prompts[0])
        return SequenceSpec(
            stops=body.stop,
            channels=partial(
                channels_for, self._tokenizer, tools_rendered and not forced, in_reasoning
            ),
            tool_parser=(
                partial(parse_tool_calls, tokenizer=self._tokenizer, tools=tools)
                if tools_rendered
                else None
            ),
            forced_tool_call=forced,
            parallel_tool_calls=body.parallel_tool_calls,
            logprobs=body.logprobs,
        )

    def _refuse_what_cannot_fit(self, request: GenerationRequest) -> None:
        """Refuse a prompt too long for the context before tokenizing it (a megabyte takes
        seconds): no token is longer than the longest in the vocabulary, so its byte length
        divided by that gives a lower bound on its token count."""
        if self._context_length is None:
            return
        texts = [m.content for m in request.messages or []]
        texts += [p for p in request.prompts or [] if isinstance(p, str)]
        texts += [request.suffix] * len(request.prompts or []) if request.suffix else []
        least = sum(len(t.encode()) for t in texts) // self._max_token_bytes()
        if least > self._context_length:
            raise ContextLengthExceeded(
                f"The prompt has at least {least} tokens, more than the model's context "
                f"window of {self._context_length} tokens; shorten the prompt."
            )

    def _max_token_bytes(self) -> int:
        """The most bytes of text one token stands for (every token decoded once, about half
        a second for 50,000 tokens, the first time a request is checked)."""
        if self._longest_token is None:
            hf_tokenizer = getattr(self._tokenizer, "_tokenizer", self._tokenizer)
            decode = hf_tokenizer.batch_decode
            texts = decode([[i] for i in range(self.vocab_size)])
            self._longest_token = max((len(t.encode()) for t in texts), default=1) or 1
        return self._longest_token

    def _check_token_ids(self, prompts: list[list[int]]) -> None:
        for tokens in prompts:
            bad = [t for t in tokens if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidRequest(
                    f"prompt: token ids {bad[:5]} are outside this model's vocabulary "
                    f"(0 to {self.vocab_size - 1})."
                )

    def _constraint(self, request: GenerationRequest) -> Callable[[], LogitsProcessor] | None:
        """A factory of per-sequence grammar constraints, compiled (and checked) now."""
        from worker.constrained import SchemaError

        forced = bool(request.tools) and request.tool_choice not in ("auto", "none")
        if not forced and request.response_format is None:
            return None
        compiler = self._grammar()
        try:
            if forced:
                tools = [t.model_dump(mode="json") for t in request.tools or []]
                choice: str | dict = request.tool_choice
                if choice != "required":
                    choice = {"type": "function", "function": {"name": choice}}
                schema = tool_call_schema(tools, choice, request.parallel_tool_calls)
                make = partial(compiler.json_schema, schema)
            else:
                assert request.response_format is not None
                spec = request.response_format.model_dump(mode="json")
                make = partial(compiler.for_response_format, spec)
            make()  # compile now: a schema the engine cannot enforce is a 400, not a 500
        except SchemaError as exc:
            raise InvalidRequest(f"{exc.param}: {exc}") from exc
        except ValueError as exc:
            raise InvalidRequest(f"tool_choice: {exc}") from exc
        return make

    def _grammar(self) -> Any:
        if self._compiler is None:
            from worker.constrained import GrammarCompiler

            self._compiler = GrammarCompiler(self._tokenizer)
        return self._compiler


def _vocab_size(loaded: LoadedModel) -> int:
    """Rows of the model's output: the token ids a prompt or logit_bias may name."""
    size = getattr(getattr(loaded.model, "args", None), "vocab_size", None)
    return int(size) if size else len(loaded.tokenizer.vocab)
