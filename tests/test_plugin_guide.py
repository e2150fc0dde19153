"""A plugin written from docs/plugins.md alone (tests/plugin_fixture/szfixture.py, one component of each kind,
public API only) passes stylezoo's component checks and trains a run composed of nothing else."""

from __future__ import annotations

import ast
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

from stylezoo.core.components.registry import BUILTIN_PLUGINS, Registry
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.engine import Trainer

FIXTURE = Path(__file__).parent / "plugin_fixture" / "szfixture.py"
SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
NAMES = ["disc/fx-disc", "feat/fx-feat", "gen/fx-gen", "gp/fx-r1", "loss/fx-hinge", "loss/fx-style"]


def fixture_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("szfixture", FIXTURE)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["szfixture"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry(BUILTIN_PLUGINS, entry_points=False, plugins=[fixture_module()])


def test_the_fixture_uses_only_the_public_api() -> None:
    tree = ast.parse(FIXTURE.read_text())
    mods = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)} | \
        {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    ours = {m for m in mods if m and m.startswith("stylezoo")}
    assert ours == {"stylezoo"}, ours


def test_every_kind_registers_and_passes_the_component_checks(reg: Registry, tmp_path: Path) -> None:
    from stylezoo.testing import check_component, plugin_components

    assert plugin_components("szfixture", registry=reg) == NAMES
    assert {n.split("/")[0] for n in NAMES} == {"gen", "disc", "feat", "loss", "gp"}
    for name in NAMES:
        check_component(name, tmp_path, registry=reg)


def test_a_run_of_fixture_components_trains(reg: Registry, tmp_path: Path) -> None:
    rc = resolve(reg, cli={"gen": "fx-gen", "disc": "fx-disc", "feat": "fx-feat", "adv": "fx-hinge", "gp": "fx-r1",
                           "train": {"size": 32, "batch": 2, "steps": 3, "sample_every": 0, "ckpt_every": 0,
                                     "log_every": 1, "num_samples": 2},
                           "data": {"content": str(SAMPLES / "content"), "style": str(SAMPLES / "style")}},
                 losses=["fx-style"])
    tr = Trainer(rc, tmp_path, registry=reg)
    assert tr.plan.layers["fake"] == ("conv1", "conv2") and tr.plan.layers["style"] == ("conv1", "conv2")
    before = [p.detach().clone() for p in tr.components.gen.parameters()]
    last = tr.fit()
    assert last.is_file() and tr.step == 3
    row = tr.history[-1]
    assert {"g/loss/fx-style", "d/gp/fx-r1", "g/g_adv", "d/d_adv"} <= set(row), sorted(row)
    assert all(math.isfinite(v) for v in row.values())
    assert any(not p.equal(q) for p, q in zip(tr.components.gen.parameters(), before))


def test_a_hook_that_names_fewer_arguments_still_loads() -> None:
    """Hooks are called through pluggy: an implementation that takes none of the hook's arguments loads."""
    import stylezoo

    calls: list[int] = []

    class NoArgs:
        @stylezoo.hookimpl
        def register_components(self) -> None:
            calls.append(1)

    reg = Registry([], entry_points=False, plugins=[NoArgs()])
    assert reg.failures == [] and calls == [1]


@pytest.mark.parametrize("doc", ["README.md", "docs/plugins.md"])
def test_the_documents_plugin_examples_work(doc: str, tmp_path: Path) -> None:
    """The first Python block under the document's plugin section, run as a module, registers a component
    that passes the component checks."""
    import re

    from stylezoo.testing import check_component

    text = (Path(__file__).resolve().parent.parent / doc).read_text(encoding="utf-8")
    section = text.split("## Writing a plugin", 1)[1] if "## Writing a plugin" in text else text
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, f"{doc} has no plugin example"
    mod = ModuleType(f"doc_plugin_{tmp_path.name}")
    sys.modules[mod.__name__] = mod  # dataclasses look their module up
    exec(compile(code.group(1), doc, "exec"), mod.__dict__)
    reg = Registry([], entry_points=False, plugins=[mod])
    assert reg.failures == [] and len(reg.names()) == 1, [p.error for p in reg.failures]
    check_component(reg.names()[0], tmp_path, registry=reg)
