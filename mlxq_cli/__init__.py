"""The ``mlxq`` command: run the processes (api, worker, group, up), talk to them (status, ask,
keys, usage) and manage models (pull, models, rm).

It only parses arguments; each subcommand imports what it needs lazily, so ``mlxq api``
never imports MLX.
"""

import argparse
from importlib import metadata
from pathlib import Path


def version() -> str:
    """The installed package's version (a checkout run with ``python -m`` has none)."""
    try:
        return metadata.version("mlxq")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlxq", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"mlxq {version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("api", help="run the HTTP API (settings from MLXQ_* variables)")
    worker = commands.add_parser("worker", help="run a worker: load the model, serve jobs")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    group = commands.add_parser(
        "group", help="run a worker group: one model split over ranks of mlx.launch"
    )
    group.add_argument("-n", type=int, dest="ranks", help="ranks on this machine (default 2)")
    group.add_argument("--hostfile", help="mlx.launch's hostfile: one rank per host")
    group.description = "Other options (--starting-port, --env, --verbose ...) go to mlx.launch."
    up = commands.add_parser("up", help="start Redis (if not running), the API and workers")
    up.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    up.add_argument(
        "--embedding-workers",
        type=int,
        default=0,
        help="embedding worker processes for MLXQ_EMBEDDING_MODEL (default 0)",
    )
    status = commands.add_parser("status", help="live workers, queue depths and failed jobs")
    status.add_argument(
        "--watch",
        action="store_true",
        help="redraw every 2 s, with sparklines of the last minute (Ctrl+C ends)",
    )
    ask = commands.add_parser("ask", help="ask a question; the answer streams to the terminal")
    ask.add_argument("question", help='the question; "-" reads it from standard input')
    ask.add_argument("--max-tokens", type=int, default=None)
    ask.add_argument("--model", default=None, help="default: the server's MLXQ_MODEL")
    batch = commands.add_parser(
        "batch", help="run a JSONL file of requests as a batch (OpenAI Batch API)"
    )
    batch.add_argument("input", nargs="?", type=Path, help="the requests, one JSON per line")
    batch.add_argument("-o", "--output", type=Path, required=True, help="output JSONL file")
    batch.add_argument("--attach", metavar="BATCH_ID", help="follow a batch already running")
    batch.add_argument("--endpoint", help="default: the url of the file's first line")
    batch.add_argument("--completion-window", default="24h", help="default 24h")
    pull = commands.add_parser(
        "pull", help="download a model (Hugging Face repo id) into this machine's cache"
    )
    pull.add_argument("model", help="org/name, e.g. mlx-community/Qwen3-4B-4bit")
    commands.add_parser("models", help="the fleet's models: sizes and where each is loaded")
    rm = commands.add_parser("rm", help="delete a pulled model from this machine's cache")
    rm.add_argument("model", help="org/name")
    _add_keys(commands)
    usage = commands.add_parser("usage", help="requests and tokens per API key and day")
    usage.add_argument("--since", metavar="DATE", help="first day, YYYY-MM-DD (default: 30 days)")
    bench = commands.add_parser("bench", help="run the benchmarks (bench/run.py; see --help)")
    bench.add_argument("arguments", nargs=argparse.REMAINDER)
    commands.add_parser("prepare-model", help="prepare the configured model and exit")
    return parser


def _add_keys(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="API keys: one per person, with limits (in Redis)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    create = actions.add_parser("create", help="make a key; its secret is the last line printed")
    create.add_argument("name", help="lower-case letters, digits, '_', '.', '-'")
    for flag, what in (
        ("--rpm", "requests per minute"),
        ("--tpm", "tokens per minute (prompt and completion)"),
        ("--max-concurrent", "requests at once"),
        ("--files-bytes", "bytes of stored files"),
    ):
        create.add_argument(flag, type=int, metavar="N", help=f"most {what} (default: no limit)")
    create.add_argument("--models", metavar="A,B", help="models it may use (default: all)")
    create.add_argument("--admin", action="store_true", help="sees every key's files, batches")
    create.add_argument(
        "--weight", type=int, default=1, metavar="N", help="turns per round on a busy fleet"
    )
    actions.add_parser("list", help="every key, its limits, when made and revoked")
    for action, what in (("revoke", "refuse it from now on"), ("rotate", "give it a new secret")):
        actions.add_parser(action, help=what).add_argument("name")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args.command != "group":  # only mlxq group passes options on
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "api":
        from api.server import run

        return run()
    if args.command == "worker":
        from worker.main import run as run_worker

        return run_worker(burst=args.burst)
    if args.command == "group":
        from mlxq_cli.group import launch_group

        return launch_group(args.ranks, args.hostfile, unknown)
    if args.command == "up":
        from mlxq_cli.supervisor import up

        return up(workers=args.workers, embedding_workers=args.embedding_workers)
    if args.command == "status":
        from mlxq_cli.commands import status

        return status(watch=args.watch)
    if args.command == "ask":
        from mlxq_cli.commands import ask as ask_question

        return ask_question(args.question, args.max_tokens, args.model)
    if args.command == "batch":
        from mlxq_cli.batch import run_batch

        return run_batch(
            args.input, args.output, args.attach, args.endpoint, args.completion_window
        )
    if args.command in ("pull", "models", "rm"):
        from mlxq_cli import models

        if args.command == "pull":
            return models.pull(args.model)
        if args.command == "rm":
            return models.remove(args.model)
        return models.models()
    if args.command == "keys":
        from mlxq_cli.keys import keys

        return keys(args)
    if args.command == "usage":
        from mlxq_cli.keys import usage

        return usage(args.since)
    if args.command == "bench":
        from mlxq_cli.commands import bench as run_bench

        return run_bench(args.arguments)
    from worker.main import prepare_model

    return prepare_model()
