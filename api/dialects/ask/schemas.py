"""``POST /ask``'s body and answer: the seed contract, ``{"question", "max_tokens"?}`` ->
``{"answer"}``, with mlxq's optional ``model``, ``stream`` and ``timeout``."""

from pydantic import BaseModel, Field, field_validator

from api.core.validators import StrictBody


class AskRequest(StrictBody):
    question: str = Field(min_length=1, description="The question; must not be blank.")
    max_tokens: int | None = Field(
        None,
        ge=1,
        description="Most tokens to generate; omitted: until the model stops (bounded by the "
        "context window and the server's cap).",
    )
    model: str | None = Field(
        None, min_length=1, description="Model to ask; default: the server's MLXQ_MODEL."
    )
    stream: bool = Field(False, description="Answer as Server-Sent Events, piece by piece.")
    timeout: float | None = Field(
        None,
        gt=0,
        le=86400,
        description="Seconds until the request's deadline (default MLXQ_REQUEST_TIMEOUT); "
        "past it the answer is a 504 and generation stops.",
    )
    speculative: bool = Field(
        True,
        description="False: decode plainly, with no guessed tokens checked (speculation never "
        "changes a greedy answer or the sampled distribution).",
    )

    @field_validator("question")
    @classmethod
    def _not_blank(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("question must not be blank")
        return question


class AskResponse(BaseModel):
    answer: str


class ErrorBody(BaseModel):
    """mlxq's own error body, on /ask and every route outside the other dialects."""

    detail: str
    code: str
    partial_answer: str | None = Field(
        None, description="Text generated before a deadline cut the request off."
    )
