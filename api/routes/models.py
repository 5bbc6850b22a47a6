"""``GET /v1/models``: the models that have at least one live worker."""

from fastapi import APIRouter

from api.deps import RedisDep
from api.fleet import served_models
from api.openai_schemas import ModelList, OpenAIError

router = APIRouter(prefix="/v1", tags=["openai"])


_RESPONSES: dict[int | str, dict] = {
    200: {"model": ModelList},
    **{status: {"model": OpenAIError} for status in (401, 503)},
}


@router.get("/models", responses=_RESPONSES)
async def list_models(redis: RedisDep) -> dict:
    served = await served_models(redis)
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": "mlxq", "workers": count}
        for model, count in sorted(served.items())
    ]
    return {"object": "list", "data": data}
