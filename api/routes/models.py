"""``GET /v1/models`` (the models that have at least one live worker) and
``GET /v1/models/{id}`` (ids may contain "/", as Hugging Face repo ids do)."""

from fastapi import APIRouter

from api.deps import RedisDep, SettingsDep
from api.fleet import served_models
from api.openai_responses import ModelCard, ModelList, OpenAIError
from shared.errors import ModelNotFound

router = APIRouter(prefix="/v1", tags=["openai"])


_RESPONSES: dict[int | str, dict] = {
    200: {"model": ModelList},
    **{status: {"model": OpenAIError} for status in (401, 503)},
}


@router.get("/models", responses=_RESPONSES)
async def list_models(redis: RedisDep) -> dict:
    served = await served_models(redis)
    data = [_card(model, count) for model, count in sorted(served.items())]
    return {"object": "list", "data": data}


_ONE_RESPONSES: dict[int | str, dict] = {
    200: {"model": ModelCard},
    **{status: {"model": OpenAIError} for status in (401, 404, 503)},
}


@router.get("/models/{model_id:path}", responses=_ONE_RESPONSES)
async def retrieve_model(model_id: str, redis: RedisDep, settings: SettingsDep) -> dict:
    """A served model, or the default model (its worker may be starting)."""
    served = await served_models(redis)
    if model_id not in served and model_id != settings.model:
        raise ModelNotFound(f"The model {model_id!r} is not served here.")
    return _card(model_id, served.get(model_id, 0))


def _card(model: str, workers: int) -> dict:
    return {"id": model, "object": "model", "created": 0, "owned_by": "mlxq", "workers": workers}
