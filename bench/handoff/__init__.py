"""The scale-down hand-off benchmark: how fast a leaving mta-relay empties its queue into the relay that
stays, side by side with Postfix evacuating the same queue to another Postfix (``python -m
bench.handoff``; bench/README.md)."""
