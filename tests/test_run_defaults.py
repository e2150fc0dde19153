"""What a run builds on when the user names only some of it: a generator's own recipe (`recipe = ...` on its
card) when no --recipe is given."""

from __future__ import annotations

import logging

import pytest
from cli_results import invoke

from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import ConfigError
from stylezoo.core.runs.runconfig import resolve

TINY = ["--size", "32", "--batch", "1", "--set", "train.num_samples=1"]


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def test_gen_adain_without_a_recipe_builds_on_its_own_recipe(reg: Registry, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stylezoo"):
        rc = resolve(reg, cli={"gen": "adain", "data": {"content": "faces/", "style": "paintings/"}})
    adain = resolve(reg, recipe="adain", cli={"data": {"content": "faces/", "style": "paintings/"}})
    assert rc == adain  # its losses, no discriminator, its learning rate: not the default recipe's
    assert (rc.recipe, rc.disc, rc.adv, rc.train.lr) == ("adain", "", "", 3e-4)
    assert set(rc.losses) == {"loss/adain-content", "loss/moments"}
    notes = [r.getMessage() for r in caplog.records if "its recipe" in r.getMessage()]
    assert len(notes) == 1 and "adain" in notes[0] and "--recipe NAME" in notes[0]


def test_gen_cin_builds_on_multi_style(reg: Registry) -> None:
    rc = resolve(reg, cli={"gen": "gen/cin"})
    assert rc.recipe == "multi-style" and rc.set["gen"]["n_res"] == 3


def test_an_explicit_recipe_or_a_generator_without_one_keeps_the_old_base(reg: Registry,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="stylezoo"):
        named = resolve(reg, recipe="default", cli={"gen": "adain", "data": {"content": "a", "style": "b"}})
        plain = resolve(reg, cli={"gen": "unet"})
    assert (named.recipe, named.disc, "loss/gram" in named.losses) == ("default", "disc/patch", True)
    assert plain.recipe == "default" and plain.gen == "gen/unet"
    assert not [r for r in caplog.records if "its recipe" in r.getMessage()]


def test_a_card_naming_an_unknown_recipe_is_one_line(bare_registry, make_plugin) -> None:
    reg = bare_registry(make_plugin("acme", ["gen/odd"], recipe="nope"),
                        catalog={"components": {}, "recipes": {"default": {"gen": "gen/odd"}}})
    with pytest.raises(ConfigError, match=r"gen/odd's card names the recipe 'nope'.*--recipe NAME"):
        resolve(reg, cli={"gen": "odd"})


def test_cli_gen_adain_reports_its_recipe(tmp_path) -> None:
    result = invoke("run", "--gen", "adain", "--content", "samples:content", "--style", "samples:style", *TINY,
                    "--set", "gen.weights=random", "--set", "feat.weights=random", "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: recipe adain" in result.output
    assert "loss/moments" in result.output and "disc/patch" not in result.output
