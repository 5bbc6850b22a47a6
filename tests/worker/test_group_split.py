"""Splitting a model over a worker group's ranks (worker/group/split.py): which split each
model gets, and two real ranks (MLX's launcher, ring backend on 127.0.0.1) computing what one
process computes, tensor parallel and pipeline."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import ROOT, free_ports
from tests.support.tiny_models import build_random_llama
from worker.group.split import choose_split
from worker.startup_error import StartupError

PROMPT = [1, 504, 3458, 282, 4649, 314, 253]


@pytest.fixture(scope="module")
def demo_model_path(cache_dir: Path) -> Path:
    from worker.demo_model import prepare_demo_model

    return prepare_demo_model(cache_dir)


@pytest.fixture(scope="module")
def even_heads(tmp_path_factory: pytest.TempPathFactory, demo_model_path: Path) -> Path:
    """A small random Llama whose 4 heads and 2 KV heads divide between 2 ranks."""
    return build_random_llama(tmp_path_factory.mktemp("even-heads"), demo_model_path)


def lazy(folder: Path):
    from mlx_lm.utils import load_model

    return load_model(folder, lazy=True)[0]


def test_the_demo_model_is_pipelined_its_nine_heads_do_not_divide(demo_model_path: Path) -> None:
    model = lazy(demo_model_path)
    assert choose_split(model, 2) == "pipeline"
    assert choose_split(model, 3) == "tensor"  # 9 heads and 3 KV heads divide among 3
    with pytest.raises(StartupError, match="9 attention heads do not divide among 2 ranks"):
        choose_split(model, 2, "tensor")
    with pytest.raises(StartupError, match="30 layers are fewer than the group's 31 ranks"):
        choose_split(model, 31, "pipeline")


def test_even_heads_are_split_tensor_parallel_unless_asked_otherwise(even_heads: Path) -> None:
    model = lazy(even_heads)
    assert choose_split(model, 2) == "tensor"
    assert choose_split(model, 2, "pipeline") == "pipeline"


def test_a_model_without_either_split_is_refused_with_why() -> None:
    class Opaque:
        model_type = "opaque"
        layers = [object(), object()]

    with pytest.raises(StartupError, match="cannot be split over 2 ranks"):
        choose_split(Opaque(), 2)


def run_two_ranks(folder: Path, split: str, tmp_path: Path) -> dict:
    out = tmp_path / f"{split}.json"
    launcher = [sys.executable, "-m", "mlxq_cli.launcher"]  # mlx.launch, blocking (mlxq group's)
    command = [
        *launcher, "--backend", "ring", "-n", "2", "--starting-port", str(free_ports(2)),
        "--python", sys.executable, str(ROOT / "tests" / "support" / "group_ranks.py"),
        str(folder), split, str(out), *map(str, PROMPT),
    ]  # fmt: skip
    done = subprocess.run(
        command, cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


@pytest.mark.parametrize("split", ["tensor", "pipeline"])
def test_two_ranks_compute_what_one_process_computes(
    even_heads: Path, split: str, tmp_path: Path
) -> None:
    import mlx.core as mx

    from tests.support.group_ranks import greedy

    model = lazy(even_heads)
    mx.eval(model.parameters())
    tokens, logits = greedy(model, PROMPT)

    ranks = run_two_ranks(even_heads, split, tmp_path)
    assert ranks["split"] == split
    assert ranks["tokens"] == tokens
    # pipeline runs each layer as one process does; tensor parallel sums partial products
    # across ranks, in another order: equal up to float32 rounding
    tolerance = 0.0 if split == "pipeline" else 1e-4
    assert max(abs(a - b) for a, b in zip(ranks["logits"], logits, strict=True)) <= tolerance
