"""Throw-away namespaces in the test bed, for fixtures of any scope."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any


def temporary_namespace(kube: Any, prefix: str) -> Iterator[str]:
    """Yields a new namespace's name; deletes it afterwards without waiting for its contents to go."""
    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    kube.kubectl("create", "namespace", name)
    yield name
    kube.kubectl("delete", "namespace", name, "--wait=false", check=False)
