"""Benchmarks, kept apart from the tests: `python -m benchmarks.conv` (or `make bench`).

Nothing here is imported by tinygen itself, and this file imports nothing, so
that benchmarks/conv.py can adjust OpenBLAS's environment before NumPy loads.
"""
