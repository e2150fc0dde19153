"""The import structure ARCHITECTURE.md draws, checked on the source: every import statement of every module,
including those inside functions and under `if TYPE_CHECKING:`, resolved to the module it names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# core's sub-packages from the bottom up: a module may import its own package and those listed before it.
LAYERS = ("errors", "version", "ops", "components", "runtime", "files", "runs", "use", "evaluation", "training",
          "cli")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["stylezoo", *parts])


def modules() -> dict[str, Path]:
    found = {}
    for sub in ("core", "plugins"):
        for p in (ROOT / sub).rglob("*.py"):
            found[module_name(p)] = p
    found["stylezoo"] = ROOT / "__init__.py"
    for top in ("__main__", "testing"):  # the API's other modules at the root
        found[f"stylezoo.{top}"] = ROOT / f"{top}.py"
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `path` imports, wherever the statement stands."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in known and "." in t:  # `import stylezoo.core.x.y` names x.y's module
                t = t.rsplit(".", 1)[0]
            if t in known and t != name:
                out.add(t)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports_of(n, p, set(mods)) for n, p in mods.items()}


def layer(mod: str) -> str | None:
    parts = mod.split(".")
    return parts[2] if len(parts) > 2 and parts[1] == "core" else None


def test_the_walk_sees_the_package(graph: dict[str, set[str]]) -> None:
    assert len(graph) > 60
    assert "stylezoo.core.files.checkpoint" in graph["stylezoo.core.training.trainstate"]
    # an import inside a function counts too
    assert "stylezoo.core.components.registry" in graph["stylezoo"]


def test_no_import_cycles(graph: dict[str, set[str]]) -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_core_imports_neither_plugins_nor_the_api_nor_the_cli(graph: dict[str, set[str]]) -> None:
    bad = [(m, t) for m, ts in graph.items() if m.startswith("stylezoo.core.") and layer(m) != "cli"
           for t in ts if t.startswith(("stylezoo.plugins", "stylezoo.core.cli")) or t == "stylezoo"]
    assert not bad, bad
    bad = [(m, t) for m, ts in graph.items() if m.startswith("stylezoo.plugins")
           for t in ts if t.startswith("stylezoo.core.cli") or t == "stylezoo"]
    assert not bad, bad


def test_core_packages_import_only_downwards(graph: dict[str, set[str]]) -> None:
    unknown = sorted({layer(m) for m in graph if layer(m) and layer(m) not in LAYERS})
    assert not unknown, f"add these core packages to LAYERS (and to ARCHITECTURE.md's picture): {unknown}"
    up = [(m, t) for m, ts in graph.items() if layer(m) for t in ts
          if layer(t) and LAYERS.index(layer(t)) > LAYERS.index(layer(m))]  # type: ignore[arg-type]
    assert not up, "upward imports:\n" + "\n".join(f"{m} -> {t}" for m, t in sorted(up))


def test_architecture_names_every_layer() -> None:
    import re

    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    picture = text.split("### The layers of core/", 1)[1].split("```")[1]  # one line per package, top to bottom
    drawn = re.findall(r"^ (\w+)/ ", picture, re.M)
    assert drawn == [n for n in reversed(LAYERS) if n not in ("errors", "version")], drawn
    missing = [n for n in LAYERS if n not in ("errors", "version") and n not in drawn]
    assert not missing, missing


def test_no_file_in_core_is_long() -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "core").rglob("*.py")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 420}
    assert not long, f"split these by job (about 400 lines at most): {long}"
