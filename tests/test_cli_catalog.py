"""`stylezoo list / info / plugins` through typer's CliRunner, plus the real console script once."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

import stylezoo
from stylezoo.core.cli import app, catalog
from stylezoo.core.components import registry as registry_mod
from stylezoo.core.components.registry import BUILTIN_PLUGINS as BUILTINS
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import UnknownComponentError

runner = CliRunner()


@pytest.fixture(autouse=True)
def _fresh_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets a fresh default registry, a wide console (no folded names) and no debug tracebacks."""
    monkeypatch.setattr(registry_mod, "_default", None)
    monkeypatch.setattr(catalog, "out", Console(highlight=False, width=250))
    monkeypatch.delenv("STYLEZOO_DEBUG", raising=False)


@pytest.fixture
def use_registry(monkeypatch: pytest.MonkeyPatch):
    """Make the CLI use the given registry (as `stylezoo` would use its default one)."""

    def use(reg: Registry) -> Registry:
        monkeypatch.setattr(registry_mod, "_default", reg)
        return reg

    return use


def invoke(*args: str, ok: bool = True):
    result = runner.invoke(app, list(args))
    if ok:
        assert result.exit_code == 0, (result.output, result.exception)
    return result


def rows(*args: str) -> list[dict]:
    return json.loads(invoke("list", "--json", *args).stdout)


# ------------------------------------------------------------------------------------------ list


def test_list_table_shows_builtins_extras_and_recipes():
    out = invoke("list").stdout
    for name in ("gen/dcgan", "gen/encdec", "disc/patch", "loss/gram", "gp/r1", "gen/pixelshuffle", "loss/laplacian"):
        assert name in out
    assert "extras" in out and "perceptual" in out  # the plugin column
    assert "original" in out and "recipe" in out


def test_list_json_rows():
    data = rows()
    by_name = {r["name"]: r for r in data}
    assert set(stylezoo.list_components()) <= set(by_name)  # the Python API and the CLI agree
    extra = by_name["gen/pixelshuffle"]
    assert (extra["kind"], extra["plugin"], extra["dist"]) == ("gen", "extras", "stylezoo-extras")
    assert extra["version"] == stylezoo.info("gen/pixelshuffle").version and extra["description"]
    assert by_name["loss/tv"]["dist"] == "stylezoo" and by_name["loss/tv"]["plugin"] == "pixel"
    assert any(r["kind"] == "recipe" for r in data)


def test_list_wildcard():
    assert [r["name"] for r in rows("vgg*")] == ["feat/vgg16", "feat/vgg19"]
    assert [r["name"] for r in rows("vgg*")] == stylezoo.list_components("vgg*")
    out = invoke("list", "gen/*").stdout
    assert "gen/dcgan" in out and "gen/pixelshuffle" in out and "disc/" not in out and "loss/" not in out
    assert rows("no-such-thing*") == []  # JSON: an empty list is an answer a script can use


def test_list_with_no_match_says_so_instead_of_an_empty_table():
    none = invoke("list", "nothing*", ok=False)
    assert none.exit_code == 2 and "Traceback" not in none.output
    assert "No component or recipe matches 'nothing*'" in none.stderr and "stylezoo list" in none.stderr
    assert none.stdout == ""
    kind = invoke("list", "--kind", "loss", "dcgan", ok=False)
    assert kind.exit_code == 2 and "No loss matches 'dcgan'" in kind.stderr
    assert "stylezoo list --kind loss" in kind.stderr
    assert "gen/dcgan" in invoke("list", "dcgan").stdout  # with matches: unchanged


def test_list_kind_filter():
    gens = rows("--kind", "gen")
    assert gens and {r["kind"] for r in gens} == {"gen"}
    assert "gen/pixelshuffle" in [r["name"] for r in gens]
    assert [r["name"] for r in rows("-k", "loss", "lap*")] == ["loss/laplacian"]
    recipes = rows("--kind", "recipe")
    assert recipes and {r["kind"] for r in recipes} == {"recipe"}
    bad = invoke("list", "--kind", "generator", ok=False)
    assert bad.exit_code == 2 and "Unknown kind 'generator'" in bad.stderr and "Traceback" not in bad.output


# ------------------------------------------------------------------------------------------ info


def test_info_shows_config_fields_defaults_and_plugin():
    entry = stylezoo.info("gen/dcgan")
    out = invoke("info", "gen/dcgan").stdout
    assert "provided by: plugin 'dcgan' from stylezoo " + stylezoo.__version__ in out
    for f in dataclasses.fields(entry.config):
        assert f.name in out
    assert "size" in out and "latent_dim" in out and "int" in out
    data = json.loads(invoke("info", "gen/dcgan", "--json").stdout)
    defaults = dataclasses.asdict(entry.config())
    assert {c["name"]: c["default"] for c in data["config"]} == json.loads(json.dumps(defaults))
    assert data["plugin"] == "dcgan" and data["dist"] == "stylezoo" and data["version"] == stylezoo.__version__
    assert all(c["type"] for c in data["config"])
    assert "--set gen.FIELD=VALUE" in out
    assert json.loads(invoke("info", "pixelshuffle", "--json").stdout)["name"] == "gen/pixelshuffle"  # short name
    ambiguous = invoke("info", "dcgan", ok=False)
    assert ambiguous.exit_code == 2 and "ambiguous: disc/dcgan, gen/dcgan" in ambiguous.stderr


def test_info_shows_compatibility_both_ways():
    out = invoke("info", "loss/entropy").stdout
    assert "compatible with: loss/bce" in out and "--set loss/entropy.FIELD=VALUE" in out
    bce = invoke("info", "loss/bce").stdout
    assert "works with:" in bce and "loss/entropy" in bce and "gp/r1" in bce and "--set adv.FIELD" in bce
    data = json.loads(invoke("info", "gp/none", "--json").stdout)
    assert "loss/wgan" not in data["compatible"] and "loss/bce" in data["compatible"]


def test_info_shows_weights_and_types_verbatim(use_registry, make_plugin):
    plugin = make_plugin("acme", ["feat/fake"], weights="acme-v2 [sha256 0123abcd]", compatible=("loss/bce",))
    use_registry(Registry(builtins=(), entry_points=False, plugins=[plugin], catalog={"components": {}, "recipes": {}}))
    out = invoke("info", "feat/fake").stdout
    assert "weights: acme-v2 [sha256 0123abcd]" in out  # brackets are not eaten as rich markup
    assert "compatible with: loss/bce" in out and "provided by: plugin 'acme'" in out
    assert "width" in out and "channels of the fake conv" in out  # the field's source comment
    assert json.loads(invoke("info", "feat/fake", "--json").stdout)["weights"] == "acme-v2 [sha256 0123abcd]"


def test_info_of_a_feat_names_its_weights():
    data = json.loads(invoke("info", "feat/vgg16", "--json").stdout)
    assert data["weights"], "feat/vgg16 must say which weights it holds (card `weights` or a `weights` field)"
    assert "weights:" in invoke("info", "feat/vgg16").stdout
    assert "weight set: vgg16-hed (install offline with `stylezoo weights pull vgg16-hed`)" in invoke(
        "info", "feat/vgg16").stdout


def test_info_of_a_recipe():
    out = invoke("info", "original").stdout
    assert "recipe original" in out and "gen/dcgan" in out and "loss/gram" in out


def test_info_unknown_name_exits_2_with_a_suggestion():
    result = invoke("info", "gen/dcgn", ok=False)
    assert result.exit_code == 2
    assert "Did you mean 'gen/dcgan'" in result.stderr and "stylezoo list" in result.stderr
    assert result.stdout == "" and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) <= 3  # one message (rich may wrap it)


def test_debug_env_shows_the_exception(monkeypatch):
    monkeypatch.setenv("STYLEZOO_DEBUG", "1")
    result = invoke("info", "gen/dcgn", ok=False)
    assert isinstance(result.exception, UnknownComponentError)


# ------------------------------------------------------------------------------------------ plugins


def test_plugins_json_lists_builtins_and_extras():
    data = {p["name"]: p for p in json.loads(invoke("plugins", "--json").stdout)}
    for mod in BUILTINS:
        p = data[mod.rsplit(".", 1)[-1]]
        assert p["builtin"] and p["dist"] == "stylezoo" and p["module"] == mod
    extras = data["extras"]
    assert not extras["builtin"] and extras["error"] is None and extras["hooks"] == ["register_components"]
    assert (extras["dist"], extras["module"]) == ("stylezoo-extras", "stylezoo_extras")
    assert sorted(extras["components"]) == ["gen/pixelshuffle", "loss/laplacian"]


def test_broken_plugin_is_reported_and_list_still_works(use_registry, make_plugin):
    broken = make_plugin("acme_broken", ["gen/acme1", "gen/acme2"], fail_after=1)
    use_registry(Registry(plugins=[broken]))
    table = invoke("plugins").stdout
    assert "acme_broken" in table and "failed: RuntimeError: acme_broken broke while registering" in table
    data = {p["name"]: p for p in json.loads(invoke("plugins", "--json").stdout)}
    assert data["acme_broken"]["error"].startswith("RuntimeError") and data["acme_broken"]["components"] == []
    assert data["extras"]["error"] is None
    listing = invoke("list")
    assert "gen/dcgan" in listing.stdout and "gen/pixelshuffle" in listing.stdout and "gen/acme1" not in listing.stdout
    assert "1 plugin(s) failed to load: acme_broken" in listing.stderr
    names = [r["name"] for r in rows()]
    assert "loss/laplacian" in names and "gen/acme1" not in names
    unknown = invoke("info", "gen/acme1", ok=False)
    assert unknown.exit_code == 2 and "acme_broken" in unknown.stderr


# ------------------------------------------------------------------------------------------ real script


def _script() -> str:
    found = Path(sys.executable).parent / "stylezoo"
    return str(found) if found.exists() else (shutil.which("stylezoo") or pytest.fail("no stylezoo console script"))


def _run(*cmd: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("STYLEZOO_DEBUG", "STYLEZOO_PLUGINS")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def test_console_script_lists_the_zoo_as_json():
    proc = _run(_script(), "list", "--json")
    assert proc.returncode == 0, proc.stderr
    names = {r["name"] for r in json.loads(proc.stdout)}
    assert {"gen/dcgan", "loss/gram", "gen/pixelshuffle", "loss/laplacian"} <= names
    bad = _run(_script(), "info", "gen/dcgn")
    assert bad.returncode == 2 and "Did you mean 'gen/dcgan'" in bad.stderr and "Traceback" not in bad.stderr


def test_python_dash_m_stylezoo_help():
    proc = _run(sys.executable, "-m", "stylezoo", "--help")
    assert proc.returncode == 0, proc.stderr
    for command in ("list", "info", "plugins"):
        assert command in proc.stdout
