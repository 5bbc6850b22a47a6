"""The RQ job functions mlxq enqueues, and the one rule for which request each one carries.

The API never imports worker code: a job names its function by dotted path (the functions
themselves are worker/jobs.py's stubs). The function also says how to read the job's
payload: ``request_model`` maps it to its request class, the API picks the function for a
request with ``function_for``, and the worker and the reaper read a job's request back with
``read_job_request``, so that none of them guesses the kind of a job.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import MappingProxyType
from typing import TYPE_CHECKING

from pydantic import ValidationError

from shared.schemas import EmbeddingRequest, GenerationRequest, JobRequest, TokenizeRequest

if TYPE_CHECKING:
    from rq.job import Job

GENERATE_FUNCTION = "worker.jobs.generate"
"""A generation job (its request: a GenerationRequest)."""
EMBED_FUNCTION = "worker.jobs.embed"
"""An embedding job (its request: an EmbeddingRequest)."""
TOKENIZE_FUNCTION = "worker.jobs.tokenize"
"""A tokenizer job (its request: a TokenizeRequest): /tokenize and /detokenize."""

REQUEST_MODELS: MappingProxyType[
    str, type[GenerationRequest] | type[EmbeddingRequest] | type[TokenizeRequest]
] = MappingProxyType(
    {
        GENERATE_FUNCTION: GenerationRequest,
        EMBED_FUNCTION: EmbeddingRequest,
        TOKENIZE_FUNCTION: TokenizeRequest,
    }
)
"""Each job function -> the request class its job's ``request`` keyword holds."""

ALLOWED_FUNCTIONS = frozenset(REQUEST_MODELS)
"""The only job functions an mlxq worker runs; any other function name is refused."""


class UnreadableJob(Exception):
    """A job whose request cannot be read. Its message says what is wrong and never quotes
    the payload (a prompt must not reach a log through an error message)."""


def function_for(request: JobRequest) -> str:
    """The job function that carries ``request``."""
    if isinstance(request, EmbeddingRequest):
        return EMBED_FUNCTION
    if isinstance(request, TokenizeRequest):
        return TOKENIZE_FUNCTION
    return GENERATE_FUNCTION


def is_mlxq_job(job: Job) -> bool:
    """The job names one of mlxq's own functions (a payload that does not even deserialize,
    say a planted pickle, names none)."""
    try:
        return job.func_name in ALLOWED_FUNCTIONS
    except Exception:
        return False


def read_job_request(job: Job) -> JobRequest:
    """The job's request, validated as the class its function names; UnreadableJob when the
    payload does not deserialize, names another function or does not validate."""
    try:
        function, kwargs = job.func_name, job.kwargs
    except Exception as exc:
        raise UnreadableJob(f"its payload does not deserialize ({type(exc).__name__})") from None
    model = REQUEST_MODELS.get(function or "")
    if model is None:
        raise UnreadableJob("it does not name an mlxq job function") from None
    payload = kwargs.get("request") if isinstance(kwargs, dict) else None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = _problems(exc, model.model_fields)
        raise UnreadableJob(f"its request is not a valid {model.__name__} ({problems})") from None


def _problems(exc: ValidationError, fields: Iterable[str]) -> str:
    """Which fields failed validation, and how ("messages: list_type"), without any value
    of the payload: not even the name of a field the model does not have."""
    known = set(fields)
    problems = set()
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        loc = error["loc"]
        field = "request" if not loc else loc[0] if loc[0] in known else "an unexpected field"
        problems.add(f"{field}: {error['type']}")
    return "; ".join(sorted(problems))
