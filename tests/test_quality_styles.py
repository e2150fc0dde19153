"""benchmarks/quality_styles.py: worst-tile ratio, pairwise L1, the fixed split, the skip path (no training)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stylezoo.benchmarks import quality_styles as qs


def to_target(x: torch.Tensor) -> torch.Tensor:
    """A stand-in style distance: per image, the mean absolute difference to the constant image 0.5."""
    return (x - 0.5).abs().flatten(1).mean(1)


def test_tiles_cut_each_image_into_its_quarters() -> None:
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    t = qs.tiles(x)
    assert t.shape == (8, 1, 2, 2)
    assert torch.equal(t[0], x[0, :, :2, :2]) and torch.equal(t[1], x[0, :, :2, 2:])
    assert torch.equal(t[2], x[0, :, 2:, :2]) and torch.equal(t[7], x[1, :, 2:, 2:])


def test_worst_tile_finds_the_one_unchanged_quarter() -> None:
    inputs = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    outputs = torch.full_like(inputs, 0.5)  # three quarters fully "styled": distance 0
    outputs[:, :, 8:, :8] = inputs[:, :, 8:, :8]  # one quarter left as it was
    assert qs.worst_tile(to_target, outputs, inputs).tolist() == pytest.approx([1.0] * 3)
    assert float(to_target(outputs).mean() / to_target(inputs).mean()) < 0.35  # the whole-image ratio hides it
    assert qs.worst_tile(to_target, torch.full_like(inputs, 0.5), inputs).tolist() == pytest.approx([0.0] * 3)


def test_pairwise_l1_is_zero_for_equal_references_and_in_unit_range() -> None:
    a = torch.zeros(2, 3, 8, 8)
    assert qs.pairwise_l1([a, a.clone(), a.clone()]) == 0.0
    assert qs.pairwise_l1([a - 1, a + 1]) == pytest.approx(1.0)  # black vs white
    assert qs.pairwise_l1([a - 1, a + 1, a + 1]) == pytest.approx(2 / 3)


def test_split_is_disjoint() -> None:
    for kind, side in qs.SPLIT.items():
        assert not set(side["tune"]) & set(side["score"]), kind
    assert qs.PORTRAIT_TRAIN in qs.SPLIT["photos"]["tune"]  # portrait-painting trains on the tuning side only
    assert qs.PORTRAIT_STYLE not in qs.SPLIT["paintings"]["tune"]


def test_split_files_are_disjoint_on_the_dev_data() -> None:
    if qs.missing(qs.DEFAULT_DATA):
        pytest.skip(f"no development data at {qs.DEFAULT_DATA}")
    for kind, side in qs.SPLIT.items():
        tune, score = (qs.expand(qs.DEFAULT_DATA, side[k]) for k in ("tune", "score"))
        assert tune and score
        assert not {f.resolve() for f in tune} & {f.resolve() for f in score}, kind
        assert not {f.name for f in tune} & {f.name for f in score}, kind


def test_skips_without_the_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert qs.main(["--data", str(tmp_path / "absent"), "--out", str(tmp_path / "out"), "--quick"]) == 0
    assert "skipped:" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()
