"""``mlxq group``: start a worker group with MLX's own launcher, whose output loop is made to
block (mlxq_cli/launcher.py: ``mlx.launch`` itself keeps a core busy while its group runs).
The plain ``mlx.launch ... mlxq worker`` works as well; this fills in its arguments."""

import os
import sys

DEFAULT_RANKS = 2


def launcher_argv(ranks: int | None, hostfile: str | None, extra: list[str]) -> list[str]:
    """MLX's launcher starting ``mlxq worker`` with this interpreter on each rank: ``ranks``
    local ranks over the ring backend, or one per host of ``hostfile``."""
    launch = [sys.executable, "-m", "mlxq_cli.launcher"]
    if hostfile is not None:
        where = ["--hostfile", hostfile]
    else:
        where = ["--backend", "ring", "-n", str(ranks or DEFAULT_RANKS)]
    return [*launch, *where, *extra, "--python", sys.executable, "-m", "mlxq_cli", "worker"]


def launch_group(ranks: int | None, hostfile: str | None, extra: list[str]) -> int:
    if ranks is not None and hostfile is not None:
        print(
            "mlxq group: give -n (ranks on this machine) or --hostfile, not both", file=sys.stderr
        )
        return 2
    argv = launcher_argv(ranks, hostfile, [a for a in extra if a != "--"])
    print(" ".join(argv), file=sys.stderr, flush=True)
    os.execv(argv[0], argv)
    return 0  # not reached: the launcher replaced this process
