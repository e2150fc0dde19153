"""Benchmarks: scripts that measure stylezoo on this machine and write JSON to bench-results/.

Run them as modules, e.g. `python -m stylezoo.benchmarks.inference`. They are never part of the test suite.
"""
