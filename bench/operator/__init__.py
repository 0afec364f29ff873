"""Operator benchmarks (see scale.py)."""
