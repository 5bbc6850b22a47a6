"""What the model listings say of each model, from its workers' catalogues (the API never
reads model files): in-process, with stand-in heartbeats, read through the official ``ollama``
and ``openai`` clients; and, once, from the real worker of the demo model."""

import httpx
import ollama
import openai
import pytest
import redis

from shared import protocol
from shared.keys import queue_name_for_model
from shared.settings import DEMO_MODEL_ID
from tests.support.app import BASE_URL, InProcessApi
from tests.support.processes import Service

CHAT = "org/Coder-7B-Instruct"
EMBEDDER = "org/minilm-embedder"


def _beat(redis_url: str, worker: str, model: str, **facts: object) -> None:
    """A stand-in worker holding ``model``, whose catalogue describes it with ``facts``."""
    client = redis.Redis.from_url(redis_url)
    with client.pipeline() as pipeline:
        record = protocol.WorkerStats(model=model, queues=[queue_name_for_model(model)], slots=2)
        protocol.add_heartbeat(pipeline, worker, record, ttl_s=60, running=[])
        entry = protocol.CatalogueEntry(model=model, **facts)  # type: ignore[arg-type]
        protocol.add_catalogue(pipeline, worker, [entry], ttl_s=60)
        pipeline.execute()


@pytest.fixture
async def api(make_api, redis_url: str):
    _beat(
        redis_url,
        "chat-1",
        model=CHAT,
        capabilities=["completion", "tools", "insert", "thinking"],
        context_length=32768,
        parameter_count=7_615_616_512,
        family="qwen2",
        quantization="Q4",
        disk_bytes=4_280_000_000,
    )
    _beat(redis_url, "chat-2", model=CHAT, capabilities=["completion"], context_length=16384)
    _beat(
        redis_url,
        "embed-1",
        model=EMBEDDER,
        kind="embedding",
        context_length=512,
        parameter_count=22_713_216,
        family="bert",
        quantization="F32",
    )
    async with make_api(model=CHAT) as api:
        yield api


def _ollama(api: InProcessApi) -> ollama.AsyncClient:
    return ollama.AsyncClient(host=BASE_URL, transport=httpx.ASGITransport(app=api.app))


def _openai(api: InProcessApi) -> openai.AsyncOpenAI:
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app))
    return openai.AsyncOpenAI(base_url=f"{BASE_URL}/v1", api_key="unused", http_client=http)


async def test_ollama_show_tells_what_each_model_can_do(api: InProcessApi) -> None:
    client = _ollama(api)
    chat = await client.show(CHAT)
    assert chat.capabilities == ["completion", "tools", "insert", "thinking"]
    assert chat.modelinfo is not None
    # The shortest context any of its workers reads: a request must fit every one of them.
    assert chat.modelinfo["qwen2.context_length"] == 16384
    assert chat.modelinfo["general.parameter_count"] == 7_615_616_512
    assert chat.details is not None
    assert chat.details.family == "qwen2" and chat.details.parameter_size == "7.6B"
    assert chat.details.quantization_level == "Q4"

    embedder = await client.show(EMBEDDER)
    assert embedder.capabilities == ["embedding"]  # not offered for chat, nor tools
    assert embedder.modelinfo is not None and embedder.modelinfo["bert.context_length"] == 512
    assert embedder.details is not None and embedder.details.parameter_size == "22.71M"


async def test_ollama_list_and_ps_carry_details_size_and_context(api: InProcessApi) -> None:
    client = _ollama(api)
    listed = {m.model: m for m in (await client.list()).models}
    chat = listed[f"{CHAT}:latest"]
    assert chat.size == 4_280_000_000
    assert chat.details is not None and chat.details.quantization_level == "Q4"
    assert listed[f"{EMBEDDER}:latest"].details.family == "bert"  # type: ignore[union-attr]
    running = {m.model: m for m in (await client.ps()).models}
    assert running[f"{CHAT}:latest"].context_length == 16384


async def test_openai_models_carry_the_context_length_and_capabilities(api: InProcessApi) -> None:
    cards = {card.id: card for card in (await _openai(api).models.list()).data}
    chat, embedder = cards[CHAT].model_dump(), cards[EMBEDDER].model_dump()
    assert chat["max_model_len"] == chat["context_length"] == 16384  # vLLM's and LiteLLM's names
    assert "completion" in chat["capabilities"]
    assert embedder["max_model_len"] == 512 and embedder["capabilities"] == ["embedding"]
    alias = cards["Coder-7B-Instruct"].model_dump()  # an alias is described as its model
    assert alias["max_model_len"] == 16384 and alias["root"] == CHAT


async def test_a_model_no_worker_describes_is_listed_as_a_chat_model(make_api) -> None:
    async with make_api(model="org/starting") as api:
        shown = await _ollama(api).show("org/starting")
    assert shown.capabilities == ["completion", "tools"]
    assert shown.modelinfo is not None and not any("context_length" in k for k in shown.modelinfo)


@pytest.mark.e2e
def test_the_demo_models_worker_describes_it(model_service: Service) -> None:
    client = ollama.Client(host=model_service.base_url)
    shown = client.show(DEMO_MODEL_ID)
    assert shown.capabilities == ["completion", "tools"]  # SmolLM2 has no FIM or think tokens
    assert shown.modelinfo is not None
    assert shown.modelinfo["llama.context_length"] == 8192
    assert shown.modelinfo["general.parameter_count"] == 134_515_008
    assert shown.details is not None and shown.details.parameter_size == "134.52M"
    assert shown.details.family == "llama" and shown.details.quantization_level == "Q4"
    (listed,) = [m for m in client.list().models if m.model == f"{DEMO_MODEL_ID}:latest"]
    assert listed.size and listed.size > 90_000_000  # the weights on disk

    models = openai.OpenAI(base_url=f"{model_service.base_url}/v1", api_key="unused").models
    card = models.retrieve(DEMO_MODEL_ID).model_dump()
    assert card["max_model_len"] == 8192 and card["capabilities"] == ["completion", "tools"]
