"""The documents name tests as evidence ("the test that holds it to it"); each named test must exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REF = re.compile(r"(tests/test_\w+\.py)::(\w+)")


def test_every_test_the_docs_name_exists() -> None:
    docs = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", *sorted((ROOT / "docs").glob("*.md"))]
    refs = {(doc.name, m.group(1), m.group(2)) for doc in docs if doc.is_file()
            for m in REF.finditer(doc.read_text(encoding="utf-8"))}
    assert len(refs) >= 5  # README's and promises.md's tables name at least this many
    missing = [f"{doc}: {path}::{name}" for doc, path, name in sorted(refs)
               if not (ROOT / path).is_file()
               or not re.search(rf"^def {name}\(", (ROOT / path).read_text(encoding="utf-8"), re.M)]
    assert not missing, "documents name tests that do not exist:\n" + "\n".join(missing)


def test_the_readme_component_table_lists_every_built_in_component() -> None:
    from stylezoo.core.components.registry import Registry

    table = (ROOT / "README.md").read_text(encoding="utf-8").split("| generators |", 1)[1].split("\n\n", 1)[0]
    built_in = list(Registry(entry_points=False).entries)
    assert len(built_in) >= 20
    missing = [n for n in built_in if f"`{n}`" not in table]
    assert not missing, f"README's component table (Components) leaves out: {missing}"


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")  # inline links and images: [text](target)
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def _prose(path: Path) -> str:
    """A markdown file without its fenced code blocks (links inside them are code, not links)."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def _anchors(path: Path) -> set[str]:
    """The `#anchor`s GitHub gives a markdown file's headings (lower case, punctuation dropped, spaces to '-')."""
    anchors: set[str] = set()
    count: dict[str, int] = {}
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", _prose(path), re.M):
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = count.get(slug, 0)
        count[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")  # a repeated heading gets -1, -2, ...
    return anchors


def test_every_relative_link_in_the_docs_resolves() -> None:
    docs = [ROOT / "README.md", ROOT / "ARCHITECTURE.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for doc in (d for d in docs if d.is_file()):
        for target in LINK.findall(_prose(doc)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: ...
                continue
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "documents link to what is not there:\n" + "\n".join(broken)
