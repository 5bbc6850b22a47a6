"""Embeddings end to end: HTTP -> Redis -> an embedding worker (MLX) -> HTTP, through the
official ``openai`` and ``ollama`` clients, plus the refusals a user would meet."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import ollama
import openai
import pytest
import redis

from shared.settings import DEMO_EMBEDDING_MODEL_ID
from tests.support.processes import Processes

REFERENCE = json.loads(
    (Path(__file__).parents[1] / "worker/data/embedding_reference.json").read_text()
)

pytestmark = pytest.mark.e2e


DB = 8
"""The Redis database of this module's processes (other tests flush database 0)."""


@pytest.fixture(scope="module")
def base_url(
    redis_server: str, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """An embedding worker beside an API whose default model is the chat demo model, started
    once for the module (the worker loads the embedding model)."""
    redis_url = f"{redis_server.rsplit('/', 1)[0]}/{DB}"
    redis.Redis.from_url(redis_url).flushdb()
    env = {"MLXQ_REDIS_URL": redis_url, "MLXQ_CACHE_DIR": str(cache_dir)}
    processes = Processes(tmp_path_factory.mktemp("embeddings"))
    processes.worker({**env, "MLXQ_MODEL": DEMO_EMBEDDING_MODEL_ID}, timeout=300)
    yield processes.api(env)
    processes.stop_all()
    redis.Redis.from_url(redis_url).flushdb()


def _close_to_reference(vectors: list[list[float]], count: int) -> None:
    got, expected = np.array(vectors), np.array(REFERENCE["embeddings"][:count])
    assert got.shape == (count, 384)
    assert (1.0 - (got * expected).sum(axis=1)).max() < 1e-3


def test_openai_client_float_and_base64(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    sentences = REFERENCE["sentences"]
    floats = client.embeddings.create(
        model=DEMO_EMBEDDING_MODEL_ID, input=sentences, encoding_format="float"
    )
    assert [d.index for d in floats.data] == list(range(len(sentences)))
    _close_to_reference([d.embedding for d in floats.data], len(sentences))
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > len(sentences)
    # The client's default is base64 (decoded back to floats by the client itself).
    packed = client.embeddings.create(model=DEMO_EMBEDDING_MODEL_ID, input=sentences[0])
    np.testing.assert_allclose(packed.data[0].embedding, floats.data[0].embedding, atol=1e-6)
    tokens = client.embeddings.create(model=DEMO_EMBEDDING_MODEL_ID, input=[7592, 2088])
    assert len(tokens.data) == 1 and len(tokens.data[0].embedding) == 384


def test_ollama_client_embed(base_url: str) -> None:
    client = ollama.Client(host=base_url)
    response = client.embed(model=DEMO_EMBEDDING_MODEL_ID, input=REFERENCE["sentences"][:3])
    _close_to_reference(response.embeddings, 3)
    # Ollama truncates by default; the older route answers one vector.
    long = client.embed(model=f"{DEMO_EMBEDDING_MODEL_ID}:latest", input="word " * 400)
    assert len(long.embeddings[0]) == 384
    older = httpx.post(
        f"{base_url}/api/embeddings",
        json={"model": DEMO_EMBEDDING_MODEL_ID, "prompt": REFERENCE["sentences"][0]},
        timeout=60,
    )
    assert older.status_code == 200
    _close_to_reference([older.json()["embedding"]], 1)


def test_refusals_are_400s(base_url: str) -> None:
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="at most 256"):
        client.embeddings.create(model=DEMO_EMBEDDING_MODEL_ID, input="word " * 400)
    with pytest.raises(openai.BadRequestError, match="384"):
        client.embeddings.create(model=DEMO_EMBEDDING_MODEL_ID, input="x", dimensions=64)
    with pytest.raises(openai.BadRequestError, match="does not generate text"):
        client.chat.completions.create(
            model=DEMO_EMBEDDING_MODEL_ID, messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=base_url).embed(
            model=DEMO_EMBEDDING_MODEL_ID, input="word " * 400, truncate=False
        )
    assert refused.value.status_code == 400


def test_a_batch_of_embedding_requests(base_url: str) -> None:
    """/v1/embeddings lines in a batch run on the embedding worker's batch lane."""
    from tests.batch.test_batch_api import finished, jsonl

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
    sentences = REFERENCE["sentences"][:3]
    content = "".join(
        json.dumps(
            {
                "custom_id": f"s{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": DEMO_EMBEDDING_MODEL_ID, "input": text},
            }
        )
        + "\n"
        for i, text in enumerate(sentences)
    )
    upload = client.files.create(file=("in.jsonl", content.encode()), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
    )
    done = finished(client, batch.id, timeout=120)
    assert done.status == "completed" and done.request_counts.completed == 3
    rows = {r["custom_id"]: r for r in jsonl(client, done.output_file_id)}
    vectors = [rows[f"s{i}"]["response"]["body"]["data"][0]["embedding"] for i in range(3)]
    _close_to_reference(vectors, 3)
