"""Benchmarks behind ``make bench``: each figure is a ratio against a reference in the same run."""
