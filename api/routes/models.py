"""``GET /v1/models``: the models that have at least one live worker."""

from fastapi import APIRouter

from api.deps import RedisDep
from api.fleet import served_models
from api.openai_schemas import ModelList, OpenAIError

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", responses={200: {"model": ModelList}, 401: {"model": OpenAIError}})
async def list_models(redis: RedisDep) -> dict:
    served = await served_models(redis)
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": "mlxq", "workers": count}
        for model, count in sorted(served.items())
    ]
    return {"object": "list", "data": data}
