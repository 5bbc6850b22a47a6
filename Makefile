# One task runner for the README, CI and developers.
.PHONY: setup run test typecheck parallel-tests lint lock bench

setup:
	@scripts/setup.sh

## Start Redis (if not running), the API on 127.0.0.1:5015 and one worker with the demo model.
run: setup
	.venv/bin/mlxq up

## Set up (with Chromium for tests/web), lint, type-check, then run the whole test suite
## (starts its own Redis servers and processes): four pytest workers, each test module on
## one of them (module fixtures start services once), the longest modules handed out first
## (tests/support/module_order.py); one OpenBLAS thread per process, as several share the
## cores (each spinning its own threads slowed the whole run). Bytecode is cached even where
## the environment says not to (PYTHONDONTWRITEBYTECODE): the suite starts some 140 Python
## processes, and each would compile mlxq and pytest rewrite every plugin again. Tests marked
## `alone` (timing that other tests' load upsets) run afterwards, by themselves. mypy runs
## beside the parallel run (a failure still fails make test, once both are done).
TEST_ENV = OPENBLAS_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=

test:
	@scripts/setup.sh --with-browser
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	@$(MAKE) --no-print-directory -j2 typecheck parallel-tests
	$(TEST_ENV) .venv/bin/python -m pytest -m alone

typecheck:
	.venv/bin/mypy

parallel-tests:
	$(TEST_ENV) .venv/bin/python -m pytest -n 4 --dist loadscope --no-loadscope-reorder -m "not alone"

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

## Re-pin requirements.lock from pyproject.toml (needs uv: .venv/bin/pip install uv).
lock:
	uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -o requirements.lock

bench: setup
	.venv/bin/python bench/run.py
