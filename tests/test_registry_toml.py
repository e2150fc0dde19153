"""registry.toml and the registered components agree, and every recipe names real components and valid fields."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from stylezoo.core.components.config import build_config, config_to_dict
from stylezoo.core.components.registry import Entry, Registry, load_registry_toml
from stylezoo.core.errors import StylezooError

CATALOG = load_registry_toml()
CARDS: dict[str, dict[str, Any]] = CATALOG["components"]
RECIPES: dict[str, dict[str, Any]] = CATALOG["recipes"]
RECIPE_KEYS = {"description", "gen", "disc", "feat", "adv", "gp", "losses", "set", "train", "data"}
ROLE_KIND = {"gen": "gen", "disc": "disc", "feat": "feat", "adv": "loss", "gp": "gp"}


@pytest.fixture(scope="module")
def builtin() -> Registry:
    """Built-ins only: third-party plugins need no card."""
    return Registry(entry_points=False)


@pytest.fixture(scope="module")
def full() -> Registry:
    return Registry()


def builtin_names(reg: Registry) -> set[str]:
    builtins = {p.name for p in reg.plugins if p.builtin}
    return {n for n, e in reg.entries.items() if e.plugin in builtins}


def is_adversarial(e: Entry) -> bool:
    return e.card.get("role") == "adversarial" or bool(getattr(e.factory, "adversarial", False))


def test_the_packaged_registry_toml_is_the_one_read():
    assert (Path(__file__).resolve().parent.parent / "registry.toml").read_text() and CARDS


def test_builtins_load(builtin):
    assert [(p.name, p.error) for p in builtin.failures] == []


def test_every_builtin_component_has_a_card(builtin):
    missing = sorted(builtin_names(builtin) - set(CARDS))
    assert missing == [], f"add [components.\"NAME\"] tables to registry.toml for {missing}"


def test_every_card_names_a_registered_builtin(builtin):
    stray = sorted(set(CARDS) - builtin_names(builtin))
    assert stray == [], f"registry.toml describes components no built-in registers: {stray}"


@pytest.mark.parametrize("name", sorted(CARDS))
def test_card_has_description_and_licence(name):
    card = CARDS[name]
    assert isinstance(card.get("description"), str) and len(card["description"]) > 10
    assert isinstance(card.get("licence"), str) and card["licence"].strip()


@pytest.mark.parametrize("name", sorted(n for n, c in CARDS.items() if "defaults" in c))
def test_card_defaults_equal_config_defaults(builtin, name):
    entry = builtin.get(name)
    actual = config_to_dict(entry.config())
    stated = CARDS[name]["defaults"]
    unknown = sorted(set(stated) - set(actual))
    assert unknown == [], f"{name}: defaults name fields the config lacks: {unknown}"
    assert {k: actual[k] for k in stated} == stated


def test_card_family_matches_the_generator(builtin):
    for name, e in builtin.entries.items():
        if e.kind == "gen":
            assert e.card.get("family") in ("noise", "image"), f"{name}: card needs family = noise|image"
            declared = getattr(e.factory, "family", None)
            assert declared in (None, e.card["family"]), f"{name}: card says {e.card['family']}, class {declared}"


def test_compatible_lists_name_registered_adversarial_losses(full):
    checked = 0
    for name, e in full.entries.items():
        for other in e.card.get("compatible", ()):
            assert other in full.entries, f"{name}: compatible names unknown {other!r}"
            assert is_adversarial(full.entries[other]), f"{name}: compatible lists {other}, not an adversarial loss"
            checked += 1
    assert checked > 0


def test_a_card_recipe_is_one_built_on_that_generator(builtin):
    """`recipe = NAME` on a generator's card is what `--gen X` without --recipe builds on: it must use X."""
    named = {n: c["recipe"] for n, c in CARDS.items() if "recipe" in c}
    assert set(named) >= {"gen/adain", "gen/cin"}
    for name, rname in named.items():
        assert builtin.get(name).kind == "gen", f"{name}: only a generator's card names a recipe"
        assert rname in RECIPES, f"{name}: recipe {rname!r} is not in registry.toml"
        assert builtin.resolve(RECIPES[rname]["gen"], "gen") == name, f"{name}: recipe {rname} trains another gen"


def test_weight_sets_belong_to_registered_extractors(builtin):
    for wname, table in CATALOG.get("weights", {}).items():
        assert builtin.get(table["component"]).kind == "feat", wname


# ---------------------------------------------------------------------------------------------- recipes


def flat_set(table: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """`set` as {prefix: {field: value}}, from either {"gen": {"f": v}} or {"gen.f": v} / {"loss/gram.f": v}."""
    out: dict[str, dict[str, Any]] = {}
    for key, value in table.items():
        if "." in key:
            prefix, fname = key.split(".", 1)
            out.setdefault(prefix, {})[fname] = value
        else:
            assert isinstance(value, dict), f"set.{key} must be a table of field = value"
            out.setdefault(key, {}).update(value)
    return out


@pytest.mark.parametrize("rname", sorted(RECIPES))
def test_recipe_names_registered_components_and_valid_fields(full, rname):
    recipe = RECIPES[rname]
    assert set(recipe) <= RECIPE_KEYS, f"recipe {rname}: unknown keys {sorted(set(recipe) - RECIPE_KEYS)}"
    assert recipe.get("description"), f"recipe {rname} needs a description"
    parts: dict[str, str] = {}
    for role, kind in ROLE_KIND.items():
        if recipe.get(role):
            parts[role] = full.resolve(recipe[role], kind)
    assert "gen" in parts, f"recipe {rname} needs a generator"
    if "adv" in parts:
        assert is_adversarial(full.get(parts["adv"])) and "disc" in parts
    losses = {full.resolve(n, "loss"): w for n, w in recipe.get("losses", {}).items()}
    for name, w in losses.items():
        assert not is_adversarial(full.get(name)), f"{name} is adversarial: name it in adv, not losses"
        assert isinstance(w, (int, float)) and math.isfinite(w), f"recipe {rname}: weight of {name} is {w!r}"
    overrides = flat_set(recipe.get("set", {}))
    for prefix in overrides:
        if prefix in ROLE_KIND:
            assert prefix in parts, f"recipe {rname} sets {prefix}.* but has no {prefix}"
        else:
            full_name = full.resolve(prefix, "loss")
            assert full_name in losses or full_name == parts.get("adv"), f"recipe {rname} sets unused {prefix}"
    # every component's config builds with the recipe's values (unknown keys, types, ranges)
    for role, name in parts.items():
        build_config(full.get(name).config, overrides.get(role, {}), owner=name)
    by_loss = {full.resolve(p, "loss"): ov for p, ov in overrides.items() if p not in ROLE_KIND}
    for name, w in losses.items():
        cfg_cls = full.get(name).config
        extra = {"weight": w} if "weight" in {f.name for f in dataclasses.fields(cfg_cls)} else {}
        build_config(cfg_cls, {**by_loss.get(name, {}), **extra}, owner=name)
    for other in [parts.get("gp"), *losses]:
        compat = full.get(other).card.get("compatible") if other else None
        if compat and "adv" in parts:
            assert parts["adv"] in compat, f"recipe {rname}: {other} does not work with {parts['adv']}"


@pytest.mark.parametrize("rname", sorted(RECIPES))
def test_recipe_train_and_data_are_valid(rname):
    runconfig = pytest.importorskip("stylezoo.core.runs.runconfig")
    recipe = RECIPES[rname]
    build_config(runconfig.TrainConfig, recipe.get("train", {}), owner="train")
    data = build_config(runconfig.DataConfig, recipe.get("data", {}), owner="data").resolved()
    for key, raw in recipe.get("data", {}).items():
        if isinstance(raw, str) and raw.startswith("samples:"):
            assert Path(getattr(data, key)).exists(), f"recipe {rname}: data.{key} = {raw} is not bundled"


@pytest.mark.parametrize("rname", sorted(RECIPES))
def test_recipe_resolves_as_a_run(full, rname):
    runconfig = pytest.importorskip("stylezoo.core.runs.runconfig")
    try:
        rc = runconfig.resolve(full, recipe=rname)
    except StylezooError as e:  # pragma: no cover - the message is the point
        pytest.fail(f"recipe {rname}: {e}")
    assert rc.gen == full.resolve(RECIPES[rname]["gen"], "gen")


@pytest.mark.parametrize("rname", sorted(RECIPES))
def test_naming_the_recipes_own_component_short_or_full_keeps_its_settings(full, rname):
    """`--gen encdec` on a recipe whose gen is gen/encdec is no change: the recipe's `set.gen` stays."""
    from stylezoo.core.runs.runconfig import resolve

    base = resolve(full, recipe=rname)
    for role in ROLE_KIND:
        name = RECIPES[rname].get(role)
        if not name:
            continue
        for form in (name, name.split("/", 1)[-1]):
            rc = resolve(full, recipe=rname, cli={role: form})
            assert rc == base, f"recipe {rname}: --{role} {form} changed the run"


def test_another_extractor_drops_the_recipes_layer_names_but_keeps_the_users(full):
    """The default recipe's Gram layers are VGG's relu names: --feat efficientnet-lite0 starts from its own."""
    from stylezoo.core.runs.runconfig import component_config, resolve

    vgg = resolve(full, recipe="default")
    assert component_config(full, vgg, "loss/gram").layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    same = resolve(full, recipe="default", cli={"feat": "vgg16"})
    assert component_config(full, same, "loss/gram").layers == ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    eff = resolve(full, recipe="default", cli={"feat": "efficientnet-lite0"})
    assert (component_config(full, eff, "loss/gram").layers == ()
            and component_config(full, eff, "loss/content").layers == ())
    # the same layer's own choice stays, whichever order its keys come in
    mine = resolve(full, recipe="default",
                   cli={"set": {"loss/gram": {"layers": ["block1"]}}, "feat": "efficientnet-lite0"})
    assert component_config(full, mine, "loss/gram").layers == ("block1",)
