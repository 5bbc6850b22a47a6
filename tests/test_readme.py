"""The README's configuration table lists exactly the settings the code reads."""

import re
from pathlib import Path

from shared.settings import Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented_and_nothing_else() -> None:
    documented = set(re.findall(r"^\| `(MLXQ_[A-Z_]+)` \|", README, flags=re.MULTILINE))
    expected = {f"MLXQ_{name.upper()}" for name in Settings.model_fields} | {
        "MLXQ_DEMO_WHEEL",
        "MLXQ_DEMO_EMBEDDING_WHEEL",
    }
    assert documented == expected


def test_readme_gives_the_two_commands_ci_uses() -> None:
    assert "make run" in README and "make test" in README
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "make test" in ci
