"""What a run builds on when the user names only some of it: a generator's own recipe (`recipe = ...` on its
card) when no --recipe is given, and `--loss none` (no loss terms: adversarial loss only)."""

from __future__ import annotations

import logging

import pytest
from cli_results import clean_error, invoke

from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CompositionError, ConfigError
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


# ------------------------------------------------------------------------------------------------ --loss none


def test_loss_none_drops_every_term_and_their_overrides(reg: Registry) -> None:
    rc = resolve(reg, recipe="faces-dcgan-gram", losses=["none"])
    assert rc.losses == {} and rc.set == {}  # the recipe's gram and its layers are gone
    assert (rc.gen, rc.disc, rc.adv) == ("gen/dcgan", "disc/dcgan", "loss/bce")
    # the same run as a config file's `losses = {}`
    assert rc == resolve(reg, recipe="faces-dcgan-gram", cli={"losses": {}})


def test_loss_composes_as_documented(reg: Registry) -> None:
    rc = resolve(reg, recipe="default", losses=["gram:5", "tv"])
    assert rc.losses == {"loss/gram": 5.0, "loss/tv": reg.make_config("loss/tv").weight}
    assert "loss/content" not in rc.set and rc.set["loss/gram"]["layers"]  # a kept term keeps its overrides
    assert resolve(reg, recipe="default", losses=["gram:5"], sets=["gram.weight=7"]).losses == {"loss/gram": 7.0}


@pytest.mark.parametrize("items", [["none", "gram"], ["none:1"]])
def test_loss_none_goes_alone(reg: Registry, items: list[str]) -> None:
    with pytest.raises(ConfigError, match="--loss none .* alone"):
        resolve(reg, losses=items)


def test_a_run_with_nothing_to_train_its_generator_is_refused(reg: Registry) -> None:
    with pytest.raises(CompositionError, match="Nothing would train gen/adain.*--loss NAME"):
        resolve(reg, recipe="adain", losses=["none"])


def test_cli_loss_none_trains_a_plain_dcgan(tmp_path) -> None:
    result = invoke("run", "--recipe", "faces-dcgan-gram", "--loss", "none", "--feat", "none", *TINY, "--batch", "2",
                    "--dry-run")
    assert result.exit_code == 0, result.output
    assert "gen/dcgan" in result.output and "loss/bce" in result.output and "loss/gram" not in result.output
    clean_error(invoke("run", "--loss", "none", "--loss", "tv", "--dry-run"), "--loss none", "alone")
