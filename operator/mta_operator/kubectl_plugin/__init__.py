"""``kubectl mta``: the kubectl plugin (console script ``kubectl-mta``) for MTA clusters."""

from .cli import main

__all__ = ["main"]
