"""``mlxq pull``, ``mlxq models`` and ``mlxq rm``: the models on this machine and in the fleet.

``pull`` and ``rm`` work on this machine's Hugging Face cache (shared/hub_cache.py): run them
on the Mac whose workers should serve the model. ``models`` lists what the fleet can serve
(every live worker's catalogue, from Redis), with sizes and where each model is loaded, and
the models of this machine's cache that no live worker lists.
"""

import sys

import redis

from shared import hub_cache, protocol
from shared.fleet_view import FleetModel, fleet_models
from shared.redis_clients import command_client
from shared.settings import get_settings, without_password
from shared.units import human_bytes


def pull(repo_id: str) -> int:
    """Download a Hugging Face repository's MLX weights into the cache, with a progress bar;
    a pull that stopped resumes where it stopped."""
    from tqdm import tqdm

    bar: tqdm | None = None

    def report(progress: hub_cache.Progress) -> None:
        nonlocal bar
        if progress.status != "downloading":
            return
        if bar is None:
            bar = tqdm(total=progress.total, unit="B", unit_scale=True, desc=repo_id)
        bar.total = max(progress.total, progress.completed)
        bar.n = progress.completed
        bar.refresh()

    try:
        path = hub_cache.pull(repo_id, report)
    except hub_cache.PullFailed as exc:
        print(f"mlxq pull: {exc}", file=sys.stderr)
        return 1
    finally:
        if bar is not None:
            bar.close()
    print(f"pulled {repo_id} into {path}")
    return 0


def remove(repo_id: str) -> int:
    """Delete a pulled model from this machine's cache; workers holding it unload it."""
    if not hub_cache.is_repo_id(repo_id):
        print(f"mlxq rm: {repo_id!r} is not a Hugging Face repo id (org/name)", file=sys.stderr)
        return 1
    freed = hub_cache.remove(repo_id)
    if not freed:
        print(f"mlxq rm: {repo_id} is not in the Hugging Face cache", file=sys.stderr)
        return 1
    settings = get_settings()
    try:
        with command_client(settings.redis_url, connect_timeout_s=2.0).pipeline() as pipeline:
            protocol.add_unload_request(pipeline, repo_id)
            pipeline.execute()
    except redis.RedisError:
        pass  # no fleet to tell: the files are gone, which is what was asked
    print(f"deleted {repo_id} ({human_bytes(freed)})")
    return 0


def models() -> int:
    """Every model the fleet can serve, and this machine's cached ones no worker lists."""
    settings = get_settings()
    connection = command_client(settings.redis_url, connect_timeout_s=2.0)
    try:
        fleet = fleet_models(connection)
    except redis.RedisError as exc:
        where = without_password(settings.redis_url)
        print(f"mlxq models: cannot reach Redis at {where}: {exc}", file=sys.stderr)
        return 1
    rows = [["model", "size", "memory", "parameters", "quant", "context", "loaded on"]]
    rows += [_row(model, seen) for model, seen in sorted(fleet.items())]
    cached = {repo: path for repo, path in hub_cache.cached_models().items() if repo not in fleet}
    for repo, path in sorted(cached.items()):
        size = human_bytes(hub_cache.disk_bytes(path))
        rows.append([repo, size, "-", "-", "-", "-", "(this machine's cache; no worker lists it)"])
    _print_table(rows)
    return 0


def _row(model: str, seen: FleetModel) -> list[str]:
    entry = seen.entry
    where = ", ".join(sorted({held.host or worker for worker, held in seen.held_by}))
    if not where:
        where = "loading" if seen.loading_on else "-"
    if not seen.servable_by and seen.refusals:
        where = f"refused: {seen.refusals[0][2]}"
    return [
        model,
        human_bytes(entry.disk_bytes) if entry.disk_bytes else "-",
        human_bytes(entry.memory_bytes) if entry.memory_bytes else "-",
        f"{entry.parameter_count / 1e6:.0f}M" if entry.parameter_count else "-",
        entry.quantization or "-",
        str(entry.context_length or "-"),
        where,
    ]


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
