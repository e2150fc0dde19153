"""benchmarks/quality_faces.py: the seeded split, the skip path, and one tiny end-to-end run on drawn faces."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from stylezoo.benchmarks import quality_faces as qf


def draw_faces(folder: Path, n: int, seed: int, side: int = 40) -> list[Path]:
    """`n` face-like drawings (skin ellipse, eyes, mouth on a coloured background), seeded."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        bg = tuple(rng.randrange(40, 220) for _ in range(3))
        im = Image.new("RGB", (side, side), bg)
        d = ImageDraw.Draw(im)
        skin = (rng.randrange(150, 250), rng.randrange(100, 200), rng.randrange(80, 160))
        m = side // 6
        d.ellipse((m, m - 2, side - m, side - m + 4), fill=skin)
        for x in (side * 3 // 8, side * 5 // 8):
            d.ellipse((x - 2, side * 2 // 5 - 2, x + 2, side * 2 // 5 + 2), fill=(20, 20, 30))
        d.line((side * 2 // 5, side * 2 // 3, side * 3 // 5, side * 2 // 3), fill=(150, 40, 50), width=2)
        path = folder / f"{seed:02d}{i:04d}.png"
        im.save(path)
        out.append(path)
    return out


def test_split_is_seeded_disjoint_and_complete(tmp_path: Path) -> None:
    files = [tmp_path / f"{i:03d}.jpg" for i in range(20)]
    train, test = qf.split(list(reversed(files)), 5, seed=0)
    assert len(test) == 5 and len(train) == 15
    assert set(train) | set(test) == set(files) and not set(train) & set(test)
    assert qf.split(files, 5, seed=0) == (train, test)  # the input order does not matter
    assert qf.split(files, 5, seed=1)[1] != test  # another seed, another held-out set
    assert test != files[:5]  # a permutation, not the first names
    with pytest.raises(SystemExit):
        qf.split(files, 20, seed=0)


def test_recipe_sets_keep_unqualified_and_own_items() -> None:
    sets = ["train.size=32", "faces-dcgan-gram:gen.channels=8", "portrait-painting:train.batch=2",
            "data.style=samples:style/starry_night.jpg"]
    assert qf.recipe_sets(sets, "portrait-painting") == ["train.size=32", "train.batch=2",
                                                        "data.style=samples:style/starry_night.jpg"]
    assert qf.recipe_sets(sets, "faces-dcgan-gram") == ["train.size=32", "gen.channels=8",
                                                       "data.style=samples:style/starry_night.jpg"]


def test_missing_data_is_skipped_with_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert qf.main(["--data", str(tmp_path / "nowhere"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "skipped" in printed and "nowhere" in printed
    assert not out.exists()  # nothing trained, nothing written


def test_bad_options_are_refused() -> None:
    for bad in (["--minutes", "0"], ["--steps", "-1"]):
        with pytest.raises(SystemExit) as e:
            qf.parse(bad)
        assert e.value.code == 2


def test_train_for_stops_at_max_steps_or_the_budget() -> None:
    class Counting:  # what train_for reads of a Trainer
        def __init__(self) -> None:
            self.step, self.train_cfg = 0, type("T", (), {"batch": 2})()
            self.data = type("D", (), {"content": [0] * 10, "real": None})()

        def train_step(self, i: int) -> dict[str, float]:
            assert i == self.step
            return {"g/loss": 1.0, "d/loss": 1.0}

    tr = Counting()
    res = qf.train_for(tr, seconds=60.0, max_steps=7)
    assert tr.step == res["steps"] == 7 and res["epochs"] == pytest.approx(1.4)
    tr = Counting()
    assert qf.train_for(tr, seconds=0.0)["steps"] == 1  # at least one step; no max: the budget decides


@pytest.mark.slow
def test_tiny_end_to_end_run_scores_both_recipes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "dev"
    draw_faces(data / "faces" / "celeba_hq", 10, seed=1)
    draw_faces(data / "faces" / "codeformer", 3, seed=2)
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the 2 cores are shared with other work
    try:
        rc = qf.main(["--data", str(data), "--minutes", "0.02", "--holdout", "4", "--gatys-steps", "2",
                      "--set", "train.size=32", "--set", "train.batch=2", "--set", "faces-dcgan-gram:gen.channels=16",
                      "--set", "portrait-painting:gen.n_res=1", "--out", str(out), "--grid", "3"])
    finally:
        torch.set_num_threads(threads)
    assert rc == 0
    printed = capsys.readouterr().out
    assert "Gatys, 2 L-BFGS it." in printed and "identity: held-out faces" in printed
    assert "real training faces" in printed and "skipped" not in printed
    [path] = out.glob("quality_faces-*.json")
    res = json.loads(path.read_text())
    assert res["train_faces"] == 6 + 3 and len(res["held_out"]) == 4
    assert set(res["recipes"]) == {"portrait-painting", "faces-dcgan-gram"}
    pp, dc = res["recipes"]["portrait-painting"], res["recipes"]["faces-dcgan-gram"]
    assert pp["steps"] >= 1 and dc["steps"] >= 1 and pp["size"] == dc["size"] == 32
    for r in (pp, dc):
        assert set(r["rows"]) == ({"model", "gatys", "identity"} | ({"real"} if r is dc else set()))
        for row in r["rows"]:
            m = r["rows"][row]
            assert {"style_gram", "fid_effl0", "kid_effl0"} <= set(m)
            assert all(math.isfinite(v) for v in m.values())
        # Gatys moves the held-out faces' Gram statistics toward the painting's
        assert r["rows"]["gatys"]["style_gram"] < r["rows"]["identity"]["style_gram"]
    # identity on the image recipe: the input itself
    assert pp["rows"]["identity"]["content_feat"] == pytest.approx(0.0, abs=1e-6)
    assert pp["rows"]["identity"]["content_ssim"] == pytest.approx(1.0, abs=1e-4)
    assert pp["rows"]["gatys"]["content_ssim"] < 1.0
    assert "content_feat" not in dc["rows"]["model"]  # noise generators have no input to compare with
    assert dc["rows"]["identity"]["fid_effl0"] == pytest.approx(0.0, abs=1e-3)  # the real side itself
    assert dc["rows"]["real"]["fid_effl0"] > 1.0  # other real faces: a real distance
    assert len(dc["real_faces"]) == 4 and not set(dc["real_faces"]) & set(res["held_out"])
    # grids: input | model | Gatys per row (3 rows); DCGAN: a row of samples, held-out faces, their Gatys
    with Image.open(pp["grid"]) as im:
        assert im.size == (3 * 32 + 4 * 2, 3 * 32 + 4 * 2)
    with Image.open(dc["grid"]) as im:
        assert im.size == (3 * 32 + 4 * 2, 3 * 32 + 4 * 2)
    assert (Path(pp["run_dir"]) / "last.safetensors").is_file()
