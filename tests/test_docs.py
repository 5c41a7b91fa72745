"""The README stays a front door and the documentation stays inside the repository, with links that resolve."""

import re

import pytest

from tests.district_helpers import REPO

PAGES = sorted((REPO / "docs").rglob("*.md")) + [REPO / "README.md", REPO / "ARCHITECTURE.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_the_readme_is_short():
    size = len((REPO / "README.md").read_bytes())
    assert size <= 12_288, f"README.md is {size} bytes: keep it a front door (at most ~12 KB); move detail to docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_pages_name_no_path_outside_the_repository_and_their_links_resolve(page):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text and "/work/" not in text, f"{page.name} names a path outside the repository"
    for target in LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (page.parent / target).resolve().exists(), f"{page.name} links to {target}, which does not exist"
