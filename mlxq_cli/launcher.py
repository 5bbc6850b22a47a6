"""MLX's launcher (``mlx.launch``) with an output loop that blocks instead of polling.

In MLX 0.32 each rank's thread of the launcher selects on the rank's stdin pipe, which is
always writable, and its main thread on its own stdin (always readable at end of file), so
the launcher kept a core and a half busy for as long as its group ran (measured on two cores,
the group idle). ``mlxq group`` runs this instead: MLX's own ``main`` (hostfile, SSH, ports,
environment, backends) with one blocking reader thread per output stream of each rank, the
same messages, and the same rule: a rank that fails ends the others. Nothing is read from
the launcher's stdin (ranks of ``mlxq worker`` read none).
"""

import queue
import sys
import threading
from io import BufferedReader
from typing import Any, BinaryIO


def launch_with_blocking_io(command_class: Any, arguments: list, verbose: bool) -> None:
    """A stand-in for ``mlx._distributed_utils.launch._launch_with_io`` (same arguments)."""
    from mlx._distributed_utils.common import log, log_warning

    commands = [command_class(*args, **kwargs) for args, kwargs in arguments]
    output_lock = threading.Lock()
    exits: queue.Queue[int] = queue.Queue()
    readers = []
    for command in commands:
        preprocess_lock = threading.Lock()  # the first chunk read carries the pid file's name
        for source, sink, is_stdout in (
            (command.process.stdout, sys.stdout.buffer, True),
            (command.process.stderr, sys.stderr.buffer, False),
        ):
            reader = threading.Thread(
                target=_copy,
                args=(command, source, sink, is_stdout, preprocess_lock, output_lock),
                daemon=True,
            )
            reader.start()
            readers.append(reader)
    for rank, command in enumerate(commands):
        threading.Thread(target=_report_exit, args=(rank, command, exits), daemon=True).start()

    stopping = False
    for _ in commands:
        rank = _next_exit(exits)
        if commands[rank].exit_status[0] != 0 and not stopping:
            stopping = True
            for other in commands:
                if other.process.poll() is None:
                    other.terminate()
    for reader in readers:
        reader.join()
    for rank, command in enumerate(commands):
        code, killed = command.exit_status
        if killed:
            log_warning(f"Node with rank {rank} was killed")
        elif code != 0:
            log_warning(f"Node with rank {rank} exited with code {code}")
        else:
            log(verbose, f"Node with rank {rank} completed")


def _report_exit(rank: int, command: Any, exits: "queue.Queue[int]") -> None:
    command.process.wait()
    exits.put(rank)


def _next_exit(exits: "queue.Queue[int]") -> int:
    """The next rank to exit. Ctrl-C reached the ranks too (one terminal): the first one
    keeps the launcher relaying their output while rank 0 finishes its jobs, as mlx.launch
    does; a second one leaves."""
    try:
        return exits.get()
    except KeyboardInterrupt:
        print("mlx.launch: waiting for the ranks to stop (Ctrl-C again to leave)", file=sys.stderr)
        return exits.get()


def _copy(
    command: Any,
    source: BufferedReader,
    sink: BinaryIO,
    is_stdout: bool,
    preprocess_lock: threading.Lock,
    output_lock: threading.Lock,
) -> None:
    """One output stream of one rank, chunk by chunk as it comes, until it closes."""
    for chunk in iter(lambda: source.read1(8192), b""):
        with preprocess_lock:
            text = command.preprocess_output(chunk.decode(errors="ignore"), is_stdout)
        with output_lock:
            sink.write(text.encode())
            sink.flush()


def main() -> None:
    from mlx._distributed_utils import launch

    if not hasattr(launch, "_launch_with_io"):  # another MLX: its own loop runs, as it is
        print("mlxq group: MLX's launcher changed; its output loop runs as is", file=sys.stderr)
    launch._launch_with_io = launch_with_blocking_io
    sys.argv[0] = "mlx.launch"
    launch.main()


if __name__ == "__main__":
    main()
