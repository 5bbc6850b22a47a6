"""The parallel run's list of long modules names modules that exist (a renamed one would
silently lose its place at the front)."""

from pathlib import Path

from tests.support.module_order import LONGEST_MODULES

TESTS = Path(__file__).resolve().parent


def test_every_listed_module_exists() -> None:
    missing = [module for module in LONGEST_MODULES if not (TESTS / module).is_file()]
    assert not missing


def test_listed_modules_come_first_in_the_collection(request) -> None:
    order = [item.nodeid.split("::")[0] for item in request.session.items]
    collected = [module for module in dict.fromkeys(order) if module[6:] in LONGEST_MODULES]
    assert collected == [f"tests/{m}" for m in LONGEST_MODULES if f"tests/{m}" in order]
