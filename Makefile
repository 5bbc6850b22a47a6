# One task runner for the README, CI and developers.
.PHONY: setup run test lint lock bench

setup:
	@scripts/setup.sh

## Start Redis (if not running), the API on 127.0.0.1:5015 and one worker with the demo model.
run: setup
	.venv/bin/mlxq up

## Set up (with Chromium for tests/web), lint, type-check, then run the whole test suite
## (starts its own Redis servers and processes): three pytest workers, each test module on
## one of them (module fixtures start services once); one OpenBLAS thread per process, as
## several share the cores (each spinning its own threads slowed the whole run). Tests
## marked `alone` (timing that other tests' load upsets) run afterwards, by themselves.
test:
	@scripts/setup.sh --with-browser
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	OPENBLAS_NUM_THREADS=1 .venv/bin/python -m pytest -n 3 --dist loadscope -m "not alone"
	OPENBLAS_NUM_THREADS=1 .venv/bin/python -m pytest -m alone

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

## Re-pin requirements.lock from pyproject.toml (needs uv: .venv/bin/pip install uv).
lock:
	uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -o requirements.lock

bench: setup
	.venv/bin/python bench/run.py
