"""The docs stay true to the tree: every relative link in a Markdown file resolves inside the repo."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\]\(([^)\s]+)\)")
SKIP = {".venv", "artifacts", ".git", "node_modules", ".pytest_cache"}


def markdown_files() -> list[Path]:
    return [p for p in REPO.rglob("*.md") if not SKIP & set(p.relative_to(REPO).parts)]


def test_every_relative_link_resolves_inside_the_repo() -> None:
    broken = []
    for md in markdown_files():
        for target in LINK.findall(md.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target) or target.startswith("#"):
                continue
            path = (md.parent / target.split("#", 1)[0]).resolve()
            if not path.exists() or not path.is_relative_to(REPO):
                broken.append(f"{md.relative_to(REPO)}: {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_label_guide_is_in_the_repo_and_linked_from_the_readme() -> None:
    guide = REPO / "docs" / "labels.md"
    assert guide.is_file()
    text = guide.read_text(encoding="utf-8")
    for label in ("claim", "official_confirmation", "casualty", "retaliation"):
        assert f"`{label}`" in text
    assert "docs/labels.md" in (REPO / "README.md").read_text(encoding="utf-8")
