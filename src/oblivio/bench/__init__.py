"""Benchmarks: the built-in demo, experiment runner and reports."""
