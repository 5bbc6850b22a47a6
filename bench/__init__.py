"""Benchmarks for mlxq: ``python bench/run.py`` writes docs/benchmarks.md."""
