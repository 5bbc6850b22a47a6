"""The README's "Agent frameworks" snippets, each run as it is written (read from README.md, so
the README cannot drift), as a script of its own, against the real service and the demo
model; only the address is changed to the test service's."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.processes import Service

pytestmark = pytest.mark.e2e

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
README_URL = "http://127.0.0.1:5015"


def _snippets() -> dict[str, str]:
    """The section's Python blocks by what their first line installs."""
    section = README.split("### Agent frameworks\n", 1)[1].split("\n### ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    return {block.splitlines()[0].removeprefix("# pip install "): block for block in blocks}


SNIPPETS = _snippets()
CITY = re.compile(r"^name=(['\"]).*\1 country=(['\"]).*\2$", flags=re.MULTILINE)
"""A City printed by pydantic: the answer parsed into the model's fields (the schema was
enforced; what a 135M model puts in them is its own business)."""


def test_the_section_has_one_snippet_per_framework() -> None:
    assert sorted(SNIPPETS) == sorted(
        ['"pydantic-ai-slim[openai]"', "instructor", "langchain-openai", "litellm", "openai-agents"]
    )
    assert all(README_URL in code for code in SNIPPETS.values())


@pytest.mark.parametrize(
    ("package", "expected"),
    [
        ("instructor", CITY),
        ('"pydantic-ai-slim[openai]"', CITY),
        ("langchain-openai", CITY),
        ("openai-agents", re.compile(r"\S")),
        ("litellm", re.compile(r"\S")),
    ],
)
def test_the_snippet_runs_against_the_service(
    model_service: Service, tmp_path: Path, package: str, expected: re.Pattern
) -> None:
    if package == "instructor":
        # instructor pins jiter<0.15 and rich<15, which this project's openai and rich
        # exceed, so it is not in requirements.lock (installing it would downgrade openai).
        pytest.importorskip("instructor", reason="pip install --no-deps instructor")
    script = tmp_path / "snippet.py"
    script.write_text(SNIPPETS[package].replace(README_URL, model_service.base_url))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}  # litellm: no network
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=240, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert expected.search(result.stdout), (result.stdout, result.stderr[-2000:])
