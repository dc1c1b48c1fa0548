"""Benchmarks: each prints side-by-side ratios; `make bench` (bench/run.py) collects the README table."""
