"""Ollama's model management: ``POST /api/pull`` (streamed progress) and ``DELETE
/api/delete``, on the Hugging Face cache of the machine the API runs on (shared/hub_cache.py).

Workers on that machine whose catalogue holds ``hf-cache`` (MLXQ_MODELS' default) serve a
pulled model within their next rescan; workers on other Macs read their own cache: pull
there with ``mlxq pull`` (docs/multi-mac.md). A pull that stops (the client leaves, the
network drops) leaves its partial files, and the next pull of the model resumes them; the
client leaving does not stop the download. Only an admin key (or an open service) may pull
or delete: both write to the machine's disk.
"""

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse

from api.access.identity import Identity
from api.core.frames import NDJSON_MEDIA_TYPE, ndjson_line
from api.core.model_loads import unload_now
from api.deps import AsyncRedisDep, IdentityDep
from api.dialects.ollama.answers import ERROR_RESPONSES, OllamaPullProgress
from api.dialects.ollama.schemas import OllamaDeleteRequest, OllamaPullRequest
from shared import hub_cache
from shared.errors import ErrorCode, InvalidRequest, MlxqError, NotFound

router = APIRouter(prefix="/api", tags=["ollama"])

PROGRESS_EVERY_S = 0.25
"""At most this often a progress line is sent while bytes arrive."""
FIRST_NEWS_S = 2.0
"""A pull waits this long for its first bytes (or its failure) before its stream starts, so
that a pull that cannot start (offline, no such repository) is a plain HTTP error."""


def _may_manage(identity: Identity) -> None:
    if not identity.sees_all:
        raise MlxqError("Pulling and deleting models needs an admin key.", ErrorCode.FORBIDDEN)


def _repo_id(name: str) -> str:
    if not hub_cache.is_repo_id(name):
        raise InvalidRequest(
            f"model {name!r}: mlxq pulls Hugging Face repositories, named org/name "
            "(e.g. mlx-community/Qwen3-4B-4bit)."
        )
    return name


def _line(progress: hub_cache.Progress, repo: str) -> dict:
    if progress.status != "downloading":
        return {"status": progress.status}
    digest = "sha256:" + hashlib.sha256(repo.encode()).hexdigest()
    return {
        "status": f"pulling {repo}",
        "digest": digest,
        "total": progress.total,
        "completed": progress.completed,
    }


@router.post(
    "/pull",
    response_model=None,
    responses={200: {"model": OllamaPullProgress}, **ERROR_RESPONSES},
)
async def pull(body: OllamaPullRequest, identity: IdentityDep) -> Response:
    """Download a Hugging Face repository's MLX weights into the local cache; progress as
    Ollama's lines (``status``, ``digest``, ``total``, ``completed``) unless ``stream``
    is false."""
    _may_manage(identity)
    repo = _repo_id(body.model_name)
    loop = asyncio.get_running_loop()
    news: asyncio.Queue[hub_cache.Progress] = asyncio.Queue()

    def report(progress: hub_cache.Progress) -> None:
        loop.call_soon_threadsafe(news.put_nowait, progress)

    task = asyncio.ensure_future(asyncio.to_thread(hub_cache.pull, repo, report))
    if body.stream is False:
        await _pulled(task)
        return JSONResponse({"status": "success"})
    deadline = loop.time() + FIRST_NEWS_S
    while not task.done() and loop.time() < deadline:
        try:
            first = await asyncio.wait_for(news.get(), deadline - loop.time())
        except TimeoutError:
            break
        if first.status == "downloading":
            news.put_nowait(first)
            break
    if task.done():
        await _pulled(task)  # a pull that could not start: a plain error
    return StreamingResponse(_lines(task, news, repo), media_type=NDJSON_MEDIA_TYPE)


async def _pulled(task: "asyncio.Future[Path]") -> None:
    try:
        await task
    except hub_cache.PullFailed as exc:
        raise MlxqError(str(exc), ErrorCode.PULL_FAILED) from exc


async def _lines(
    task: "asyncio.Future[Path]", news: "asyncio.Queue[hub_cache.Progress]", repo: str
) -> AsyncIterator[str]:
    yield ndjson_line({"status": "pulling manifest"})
    sent_at = 0.0
    while not (task.done() and news.empty()):
        try:
            progress = await asyncio.wait_for(news.get(), 0.5)
        except TimeoutError:
            continue
        if progress.status in ("pulling manifest", "success"):
            continue
        if time.monotonic() - sent_at >= PROGRESS_EVERY_S or progress.completed == progress.total:
            sent_at = time.monotonic()
            yield ndjson_line(_line(progress, repo))
    try:
        await task
    except hub_cache.PullFailed as exc:
        yield ndjson_line({"error": str(exc)})
        return
    for status in ("verifying sha256 digest", "writing manifest", "success"):
        yield ndjson_line({"status": status})


@router.delete("/delete", response_model=None, responses=ERROR_RESPONSES)
async def delete(
    body: OllamaDeleteRequest, identity: IdentityDep, redis: AsyncRedisDep
) -> Response:
    """Delete a pulled model from the local Hugging Face cache; workers holding it unload
    it once idle, and drop it from their catalogue at their next rescan."""
    _may_manage(identity)
    repo = _repo_id(body.model_name)
    freed = await asyncio.to_thread(hub_cache.remove, repo)
    if not freed:
        raise NotFound(f"model '{repo}' not found in the Hugging Face cache")
    await unload_now(redis, repo)
    return Response(status_code=200)
