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
