"""Benchmarks for runcycles: run with ``python -m nox -s bench`` (see README.md here)."""
