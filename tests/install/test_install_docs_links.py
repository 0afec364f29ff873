"""The docs stand on their own in a fresh clone: every relative link in the README and the docs pages
resolves to a file of the repository (and to a heading, when it names one)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from install_kit import REPO

pytestmark = pytest.mark.unit

PAGES = [REPO / "README.md", REPO / "gitops" / "README.md", REPO / "bench" / "README.md",
         *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+\s+(.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def _resolves(page: Path, link: str) -> bool:
    if re.match(r"^[a-z][a-z0-9+.-]*:", link):
        return True  # an absolute URL
    path, _, anchor = link.partition("#")
    target = (page.parent / path).resolve() if path else page
    if not target.is_relative_to(REPO) or not target.exists():
        return False
    return not anchor or target.suffix != ".md" or anchor in _anchors(target)


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_relative_links_resolve_inside_the_repository(page: Path) -> None:
    assert [link for link in LINK.findall(page.read_text()) if not _resolves(page, link)] == []


def test_a_link_outside_the_repository_or_to_a_missing_heading_fails() -> None:
    page = REPO / "README.md"
    assert not _resolves(page, "../shared/DESIGN.md")
    assert not _resolves(page, "docs/operator.md#no-such-heading")
    assert _resolves(page, "docs/operator.md#condition-reasons")
