"""benchmarks/quality_pairs.py: the seeded split, the skip path, and one tiny run on drawn pairs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from stylezoo.benchmarks import quality_pairs as qp


def draw_pairs(root: Path, n: int, side: int = 64) -> None:
    """`n` photo/sketch pairs: a coloured disc on a background, and its dark outline on white."""
    rng = random.Random(0)
    for sub in ("photo", "sketch"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        x, y, r = rng.randrange(16, 48), rng.randrange(16, 48), rng.randrange(6, 14)
        photo = Image.new("RGB", (side, side), tuple(rng.randrange(60, 200) for _ in range(3)))
        ImageDraw.Draw(photo).ellipse((x - r, y - r, x + r, y + r), fill=(230, 180, 140))
        sketch = Image.new("RGB", (side, side), (250, 250, 250))
        ImageDraw.Draw(sketch).ellipse((x - r, y - r, x + r, y + r), outline=(30, 30, 30), width=2)
        photo.save(root / "photo" / f"p{i:03d}.png")
        sketch.save(root / "sketch" / f"p{i:03d}.png")


def test_split_is_seeded_and_disjoint() -> None:
    stems = [f"s{i:02d}" for i in range(10)]
    train, test = qp.split(list(reversed(stems)), 3, 0)
    assert len(test) == 3 and sorted(train + test) == stems and not set(train) & set(test)
    assert qp.split(stems, 3, 0) == (train, test) and qp.split(stems, 3, 1)[1] != test
    with pytest.raises(SystemExit):
        qp.split(stems, 10, 0)


def test_missing_data_is_skipped_with_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert qp.main(["--data", str(tmp_path / "none"), "--out", str(tmp_path / "out")]) == 0
    assert "skipped" in capsys.readouterr().out and not (tmp_path / "out").exists()


def test_grey64_is_luma_in_unit_range() -> None:
    x = torch.zeros(1, 3, 128, 128)
    x[:, 1] = 1.0  # pure green at full intensity -> luma 0.587 * 1 + (0.299 + 0.114) * 0.5
    g = qp.grey64(x)
    assert g.shape == (1, 1, 64, 64)
    torch.testing.assert_close(g, torch.full_like(g, 0.587 + 0.413 * 0.5), rtol=0, atol=1e-5)


@pytest.mark.slow
def test_tiny_run_scores_the_average_and_the_raw_weights(tmp_path: Path) -> None:
    draw_pairs(tmp_path / "pairs", 8)
    out = tmp_path / "out"
    rc = qp.main(["--data", str(tmp_path / "pairs"), "--minutes", "0.05", "--holdout", "2", "--out", str(out),
                  "--grid", "2", "--set", "train.ema=0.9", "--set", "gen.channels=8", "--set", "train.size=64"])
    assert rc == 0
    (result,) = out.glob("quality_pairs-*.json")
    r = json.loads(result.read_text())
    assert r["steps"] > 0 and len(r["test_stems"]) == 2 and r["train_pairs"] == 6
    for k in ("ssim", "raw_ssim", "photo_ssim"):
        assert -1.0 <= r[k] <= 1.0, k
    for k in ("l1", "raw_l1", "photo_l1"):
        assert 0.0 <= r[k] <= 1.0, k
    assert r["recipe"]["train"]["ema"] == 0.9
    assert Path(r["grid"]).is_file() and (Path(r["run_dir"]) / "last.safetensors").is_file()
