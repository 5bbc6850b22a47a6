"""The order in which `make test`'s parallel run hands out test modules: longest first.

pytest-xdist (`--dist loadscope --no-loadscope-reorder`) gives each idle worker the next
module in collection order. Left in file order, a long module that happened to come last ran
on by itself for a minute while the other workers sat idle; started first, the long modules
overlap and the short ones fill the gaps (longest-processing-time-first scheduling).
"""

import pytest

LONGEST_MODULES = (
    # Seconds each took in one parallel run on two cores (its share of the session's services
    # started included); only the order matters. Modules not listed took under 15 s and
    # follow in file order.
    "worker/test_speculation.py",  # 146
    "fleet/test_worker_group.py",  # 144
    "e2e/test_models_on_demand.py",  # 141
    "api/test_openai_fields.py",  # 83
    "faults/test_schemathesis.py",  # 69
    "api/test_frameworks.py",  # 61
    "faults/test_pause.py",  # 61
    "worker/test_constrained.py",  # 54
    "batch/test_batch_faults.py",  # 53
    "e2e/test_speculation_service.py",  # 41
    "api/test_openai.py",  # 35
    "faults/test_abandoned.py",  # 35
    "faults/test_worker_death.py",  # 35
    "worker/test_prefix_cache.py",  # 34
    "batch/test_batch_api.py",  # 34
    "faults/test_redis_restart.py",  # 31
    "api/test_responses.py",  # 29
    "faults/test_routing.py",  # 28
    "test_readme_frameworks.py",  # 27
    "test_wheel.py",  # 25
    "faults/test_security.py",  # 24
    "api/test_ollama.py",  # 24
    "faults/test_http_edge.py",  # 22
    "web/test_page.py",  # 20
    "e2e/test_tool_calls.py",  # 18
    "api/test_key_limits.py",  # 17
)


def longest_modules_first(items: list[pytest.Item]) -> None:
    """Sort items in place: listed modules first, in the list's order; the rest keep theirs."""
    rank = {f"tests/{module}": place for place, module in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))
