"""Hand-off benchmark (see bench/README.md)."""
