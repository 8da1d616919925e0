"""Benchmarks for aggregator (not part of the installed package).

Run from the repository root, e.g. ``python -m bench.bench_poll --help``.
"""
