"""benchmarks/train_zoo.py's pieces that need no training: how it rewrites registry.toml's [models.*] tables
(in place, hand-written lines kept), its --set routing, and the portable data names in a shipped file."""

from __future__ import annotations

import tomllib

from stylezoo.benchmarks import train_zoo
from stylezoo.benchmarks.train_zoo import OWNED, TOML_SECTION, recipe_sets, update_models

TEXT = """# the catalog
[recipes.adain]
gen = "gen/adain"

{section}

[models.any]
description = "Hand-written words"  # a comment that stays
licence = "CC0-1.0"
sha256 = "old"
steps = 1
"""


def test_update_models_sets_owned_keys_in_place_and_keeps_the_rest():
    text = TEXT.format(section=TOML_SECTION)
    new = update_models(text, {"any": {"description": "generated", "licence": "Apache-2.0", "sha256": "abc",
                                       "steps": 40, "scores": {"style_ratio": 0.5, "content_ssim": 0.75},
                                       "takes_style": True}}, OWNED)
    data = tomllib.loads(new)["models"]["any"]
    assert data == {"description": "Hand-written words", "licence": "CC0-1.0", "sha256": "abc", "steps": 40,
                    "scores": {"style_ratio": 0.5, "content_ssim": 0.75}, "takes_style": True}
    assert "# a comment that stays" in new and new.startswith("# the catalog\n[recipes.adain]")
    assert new.count(TOML_SECTION) == 1


def test_update_models_adds_missing_tables_whole_under_the_heading():
    new = update_models('[recipes.adain]\ngen = "gen/adain"\n', {"the-scream": {
        "description": 'Munch, "The Scream"', "style_label": "the_scream", "train_s": 61.5}}, OWNED)
    assert new.count(TOML_SECTION) == 1 and new.index(TOML_SECTION) < new.index("[models.the-scream]")
    assert tomllib.loads(new)["models"]["the-scream"] == {"description": 'Munch, "The Scream"',
                                                          "style_label": "the_scream", "train_s": 61.5}
    again = update_models(new, {"the-scream": {"train_s": 70.0}}, OWNED)
    assert tomllib.loads(again)["models"]["the-scream"]["train_s"] == 70.0 and again.count("train_s") == 1


def test_recipe_sets_routes_qualified_items_to_their_recipe():
    sets = ["train.lr=0.001", "adain:gen.layer=relu4_1", "multi-style:gen.channels=16"]
    assert recipe_sets(sets, "adain") == ["train.lr=0.001", "gen.layer=relu4_1"]
    assert recipe_sets(sets, "multi-style") == ["train.lr=0.001", "gen.channels=16"]


def test_shipped_files_name_the_bundled_images_not_this_machines_paths():
    style = train_zoo.SAMPLES / "style"
    assert train_zoo._portable(str(style)) == "samples:style"
    assert train_zoo._portable(str(style / "the_scream.jpg")) == "samples:style/the_scream.jpg"
    assert train_zoo._portable("/elsewhere/photos") == "/elsewhere/photos" and train_zoo._portable("") == ""
