"""Paired image-to-image (pix2pix-style) data and training: pairing by file stem, identical augmentation of
both images of a pair, the conditional discriminator, target features, a tiny run that learns, resume."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CompositionError, ConfigError, DataError
from stylezoo.core.files.data import PairSet, match_pairs, pair_folders
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.api import train
from stylezoo.core.training.engine import Trainer

TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 0, "log_every": 1, "num_samples": 2}
SETS = {"gen": {"channels": 8}, "disc": {"n_layers": 2, "channels": 8, "cond_channels": 3}}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def smooth_image(rng: np.random.Generator, side: int) -> np.ndarray:
    """A random low-frequency RGB image (uint8, side x side): blobs a U-Net can learn to map quickly."""
    low = torch.from_numpy(rng.random((1, 3, 4, 4), dtype=np.float32))
    up = torch.nn.functional.interpolate(low, size=(side, side), mode="bicubic", align_corners=False)
    return (up[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def inverted_grey(rgb: np.ndarray) -> np.ndarray:
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (255 - grey).round().clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pairs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 pairs of 36x36 images: photo/NN.png and sketch/NN.png = the photo's inverted grey (mode L)."""
    root = tmp_path_factory.mktemp("pairs")
    (root / "photo").mkdir()
    (root / "sketch").mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        rgb = smooth_image(rng, 36)
        Image.fromarray(rgb, "RGB").save(root / "photo" / f"{i:02d}.png")
        Image.fromarray(inverted_grey(rgb), "L").save(root / "sketch" / f"{i:02d}.png")
    return root


def paired(pairs: Path, **over: object) -> dict:
    return {"gen": "unet", "disc": "patch", "feat": "", "adv": "bce", "gp": "none", "train": TINY,
            "set": SETS, "data": {"pairs": str(pairs), "content": "", "style": ""}, **over}


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------------------------- pairing


def test_pairs_are_matched_by_stem_and_unmatched_files_reported(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    for folder, names in {"photo": ["a.png", "b.png", "c.jpg", "only_photo.png"],
                          "sketch": ["a.png", "b.jpg", "c.png", "x1.png", "x2.png"]}.items():
        (tmp_path / folder).mkdir()
        for n in names:
            Image.fromarray(rgb).save(tmp_path / folder / n)
    inputs, targets = pair_folders(tmp_path)
    assert (inputs.name, targets.name) == ("photo", "sketch")
    with caplog.at_level(logging.WARNING, logger="stylezoo"):
        got = match_pairs(inputs, targets)
    assert [(s, a.name, b.name) for s, a, b in got] == [("a", "a.png", "a.png"), ("b", "b.png", "b.jpg"),
                                                       ("c", "c.jpg", "c.png")]
    msg = caplog.text
    assert "1 input file(s)" in msg and "only_photo" in msg
    assert "2 target file(s)" in msg and "x1" in msg and "x2" in msg
    with pytest.raises(DataError, match="--strict"):
        match_pairs(inputs, targets, strict=True)


def test_pair_folders_accepts_two_named_subfolders_and_refuses_others(tmp_path: Path) -> None:
    (tmp_path / "before").mkdir()
    (tmp_path / "after").mkdir()
    a, b = pair_folders(tmp_path)
    assert (a.name, b.name) == ("after", "before")  # sorted order when the names are not known ones
    (tmp_path / "third").mkdir()
    with pytest.raises(DataError, match="--input DIR --target DIR"):
        pair_folders(tmp_path)
    with pytest.raises(DataError, match="no such folder"):
        pair_folders(tmp_path / "missing")


def test_same_random_crop_and_flip_on_both_images_of_a_pair(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for side in ("in", "out"):
        (tmp_path / side).mkdir()
    for i in range(10):
        img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)  # noise: any offset or flip changes the crop
        Image.fromarray(img).save(tmp_path / "in" / f"{i}.png")
        Image.fromarray(255 - img).save(tmp_path / "out" / f"{i}.png")  # the target is the inverse
    ps = PairSet(tmp_path / "in", tmp_path / "out", 24, stream=1, short=40)
    seen = []
    for step in range(6):
        x, y = ps.batch(step, 3, seed=5)
        assert x.shape == y.shape == (3, 3, 24, 24)
        torch.testing.assert_close(y, -x, atol=1e-6, rtol=0)  # same crop, same flip: y is still -x pixelwise
        seen.append(x)
    # the crops really are random (else the check above proves nothing) and batches repeat exactly
    assert any(not torch.equal(seen[0][0], s[k]) for s in seen[1:] for k in range(3))
    torch.testing.assert_close(ps.batch(4, 3, seed=5)[0], seen[4], atol=0, rtol=0)
    # both flips occur: some crop equals a horizontal flip of the same region of its source image
    flips = 0
    for step in range(6):
        idx = ps.indices(step, 3, 5)
        x, _ = ps.batch(step, 3, seed=5)
        for k, i in enumerate(idx):
            src = ps.inputs[i].float().div(127.5).sub(1)
            windows = src.unfold(1, 24, 1).unfold(2, 24, 1)  # (3, 17, 17, 24, 24)
            flipped = x[k].flip(-1)
            flips += int(any(torch.allclose(windows[:, r, c], flipped) for r in range(17) for c in range(17)))
    assert 0 < flips < 18


def test_targets_of_another_size_are_resized_to_their_input(tmp_path: Path) -> None:
    (tmp_path / "photo").mkdir()
    (tmp_path / "sketch").mkdir()
    for i in range(3):
        Image.fromarray(np.full((32, 32, 3), 10 * i, np.uint8)).save(tmp_path / "photo" / f"{i}.png")
        Image.fromarray(np.full((64, 64), 200, np.uint8), "L").save(tmp_path / "sketch" / f"{i}.png")
    ps = PairSet(*pair_folders(tmp_path), 32, short=32)
    x, y = ps.fixed(3)
    assert x.shape == y.shape == (3, 3, 32, 32)
    assert torch.allclose(y, torch.full_like(y, 200 / 127.5 - 1), atol=1e-2)


def test_a_target_of_another_aspect_ratio_is_stretched_with_a_warning(tmp_path: Path,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "photo").mkdir()
    (tmp_path / "sketch").mkdir()
    for i, (w, h) in enumerate([(64, 64), (96, 64)]):  # 1: the same shape, twice the size; 2: 3:2, stretched
        Image.fromarray(np.full((32, 32, 3), 10, np.uint8)).save(tmp_path / "photo" / f"{i}.png")
        Image.fromarray(np.full((h, w), 200, np.uint8), "L").save(tmp_path / "sketch" / f"{i}.png")
    with caplog.at_level("WARNING", logger="stylezoo"):
        ps = PairSet(*pair_folders(tmp_path), 32, short=32)
    said = [r.getMessage() for r in caplog.records if "aspect ratio" in r.getMessage()]
    assert len(said) == 1 and "1 pair(s)" in said[0] and "(1)" in said[0], said
    assert ps.fixed(2)[1].shape == (2, 3, 32, 32)


def test_data_zoom_sets_the_scale_jitter(reg: Registry, pairs_dir: Path, tmp_path: Path) -> None:
    """zoom 1: pairs kept at the training size (crops are whole images, as at test time); default: 1.125x."""
    auto = Trainer(resolve(reg, cli=paired(pairs_dir), losses=["l1"]), tmp_path / "a", registry=reg)
    assert auto.data.pairs.inputs[0].shape[-1] == round(32 * 1.125)
    whole = Trainer(resolve(reg, cli=paired(pairs_dir, data={"pairs": str(pairs_dir), "zoom": 1.0}), losses=["l1"]),
                    tmp_path / "b", registry=reg)
    assert whole.data.pairs.inputs[0].shape[-1] == 32
    x, _ = whole.data.pairs.batch(0, 2, 0)
    ref = whole.data.pairs.fixed(len(whole.data.pairs))[0]
    # every crop is a whole image, maybe mirrored
    assert all(any(torch.equal(xi, r) or torch.equal(xi, r.flip(-1)) for r in ref) for xi in x)
    with pytest.raises(ConfigError, match="zoom"):
        resolve(reg, cli=paired(pairs_dir, data={"pairs": str(pairs_dir), "zoom": 0.5}), losses=["l1"])


# ---------------------------------------------------------------------------------- the conditional D


def test_conditional_discriminator_sees_input_beside_image(reg: Registry, pairs_dir: Path, tmp_path: Path) -> None:
    rc = resolve(reg, cli=paired(pairs_dir, gp="r1"), losses=["l1"])
    tr = Trainer(rc, tmp_path, registry=reg)
    first = tr.components.disc.net[0]
    assert isinstance(first, torch.nn.Conv2d) and first.in_channels == 6
    calls: list[tuple[torch.Tensor, torch.Tensor | None]] = []
    forward = tr.components.disc.forward

    def recording(image: torch.Tensor, condition: torch.Tensor | None = None, **cond: object) -> torch.Tensor:
        calls.append((image.detach().clone(), None if condition is None else condition.detach().clone()))
        return forward(image, condition=condition, **cond)

    tr.components.disc.forward = recording  # type: ignore[method-assign]
    tr.stepper.placement = dataclasses.replace(tr.placement, disc_fwd=tr.components.disc)
    inputs, targets, _ = tr.stepper.batch(0)
    logs = tr.train_step(0)
    # D step: D on [real; fake] in one call (a per-sample discriminator), then the R1 penalty; G step:
    # D(fake). Each image with its input beside it
    assert tr.placement.joint_d and len(calls) == 3
    n = inputs.shape[0]
    for i, (_, condition) in enumerate(calls):
        assert condition is not None
        want = torch.cat([inputs, inputs]) if i == 0 else inputs
        torch.testing.assert_close(condition.float(), want.float())
    torch.testing.assert_close(calls[0][0][:n], targets)  # the real images are the targets
    assert torch.isfinite(torch.tensor(logs["d/gp/r1"]))


def test_content_against_target_uses_target_features_without_grad(reg: Registry, pairs_dir: Path,
                                                                   tmp_path: Path) -> None:
    rc = resolve(reg, cli=paired(pairs_dir, feat="vgg16"), losses=["l1", "content", "gram:1000"],
                 sets=["feat.weights=random", "loss/content.against=target"])
    tr = Trainer(rc, tmp_path, registry=reg)
    # no --style: the Gram targets come from the target images (all 16 of them)
    assert tr.data.style_images is not None and tr.data.style_images.shape[0] == 16
    calls: list[tuple[torch.Tensor, bool]] = []
    forward = tr.components.feat.forward

    def counting(x: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
        calls.append((x.detach().clone(), torch.is_grad_enabled()))
        return forward(x, layers)

    tr.components.feat.forward = counting  # type: ignore[method-assign]
    _, targets, _ = tr.stepper.batch(0)
    logs = tr.train_step(0)
    assert len(calls) == 2  # the fakes (with grad), the targets (without); nothing else
    assert calls[0][1] is True and calls[1][1] is False
    torch.testing.assert_close(calls[1][0], targets)
    assert logs["g/loss/content"] > 0 and logs["g/loss/gram"] > 0


@pytest.mark.parametrize("over,losses,sets,err,fragment", [
    ({"data": {"content": "x"}, "set": {"gen": {"channels": 8}}}, ["l1"], [], CompositionError, "--pairs"),
    ({"data": {"input": "x"}}, ["l1"], [], ConfigError, "--target"),
    ({"data": {"pairs": "x", "target": "y", "input": "z"}}, ["l1"], [], ConfigError, "not both"),
    ({"gen": "dcgan"}, ["tv"], [], CompositionError, "image generator"),
    ({}, ["l1"], ["disc.cond_channels=1"], CompositionError, "cond_channels=3"),
])
def test_paired_misconfigurations_are_refused(reg: Registry, pairs_dir: Path, tmp_path: Path, over: dict,
                                              losses: list[str], sets: list[str], err: type, fragment: str) -> None:
    with pytest.raises(err) as e:
        rc = resolve(reg, cli=paired(pairs_dir, **over), losses=losses, sets=sets)
        Trainer(rc, tmp_path, registry=reg)  # missing pairs are found when the run starts, before any step
    assert fragment in str(e.value)


# ------------------------------------------------------------------------------------------- training


@torch.no_grad()
def eval_l1(tr: Trainer) -> float:
    tr.components.gen.eval()
    x, y = tr.data.pairs.fixed(16)
    out = tr.components.gen(x)
    tr.components.gen.train()
    return float((out - y).abs().mean())


def test_tiny_paired_run_learns_the_mapping(reg: Registry, pairs_dir: Path, tmp_path: Path) -> None:
    rc = resolve(reg, cli=paired(pairs_dir, train={**TINY, "batch": 4, "steps": 30, "lr": 2e-3, "num_samples": 3}),
                 losses=["l1"])
    tr = Trainer(rc, tmp_path, registry=reg)
    before = eval_l1(tr)
    tr.fit()
    after = eval_l1(tr)
    l1 = [r["g/loss/l1"] / 100 for r in rows(tmp_path / "metrics.jsonl")]
    assert len(l1) == 30
    first, last = sum(l1[:3]) / 3, sum(l1[-3:]) / 3
    assert last < 0.6 * first, (first, last)
    assert after < 0.6 * before, (before, after)
    # the final grid shows input | output | true target: three rows of 3 tiles of 32 px with 2 px padding
    with Image.open(tmp_path / "samples" / "final.png") as im:
        assert im.size == (3 * 34 + 2, 3 * 34 + 2)


def test_resume_with_paired_data_repeats_the_uninterrupted_run(reg: Registry, pairs_dir: Path,
                                                              tmp_path: Path) -> None:
    full = resolve(reg, cli=paired(pairs_dir, train={**TINY, "steps": 4}), losses=["l1"])
    Trainer(full, tmp_path / "full", registry=reg).fit()
    args = ["run", "--gen", "unet", "--disc", "patch", "--adv", "bce", "--feat", "none", "--loss", "l1",
            "--pairs", str(pairs_dir), "--size", "32", "--batch", "2", "--steps", "2", "--out", str(tmp_path / "half"),
            "--set", "gen.channels=8", "--set", "disc.n_layers=2", "--set", "disc.channels=8",
            "--set", "disc.cond_channels=3", "--set", "train.log_every=1", "--set", "train.sample_every=0",
            "--set", "train.ckpt_every=0", "--set", "train.num_samples=2", "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    train(resume=tmp_path / "half", steps=4, registry=reg)
    a, b = rows(tmp_path / "full" / "metrics.jsonl"), rows(tmp_path / "half" / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    for ra, rb in zip(a, b):
        for k in ("d/loss", "g/loss", "g/loss/l1"):
            assert ra[k] == pytest.approx(rb[k], rel=1e-4, abs=1e-5), (ra["step"], k)
