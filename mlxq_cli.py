"""The ``mlxq`` command: ``mlxq api``, ``mlxq worker``, ``mlxq up``, ``mlxq prepare-model``.

It only parses arguments; each subcommand imports its process lazily, so ``mlxq api`` never
imports MLX.
"""

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mlxq", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("api", help="run the HTTP API (settings from MLXQ_* variables)")
    worker = commands.add_parser("worker", help="run a worker: load the model, serve jobs")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    up = commands.add_parser("up", help="start Redis (if not running), the API and workers")
    up.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    commands.add_parser("prepare-model", help="prepare the configured model and exit")
    args = parser.parse_args(argv)

    if args.command == "api":
        from api.main import run

        return run()
    if args.command == "worker":
        from worker.main import run as run_worker

        return run_worker(burst=args.burst)
    if args.command == "up":
        from shared.supervisor import up

        return up(workers=args.workers)
    from worker.main import prepare_model

    return prepare_model()


if __name__ == "__main__":
    sys.exit(main())
