"""Benchmarks, each run side by side with a peer (see bench/README.md)."""
