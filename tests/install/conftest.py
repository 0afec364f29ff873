"""Fixtures for the install tests: helm from the test bed's cache (fails in CI when it is missing)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from install_kit import helm_path


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    path = helm_path()
    if not path.exists():
        reason = f"helm not built at {path} (run `make testbed-build`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"helm required in CI: {reason}", pytrace=False)
        pytest.skip(reason)
    return path
