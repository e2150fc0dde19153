"""Bad inputs and faults, through the API and the CLI: every case either works correctly (checked values) or
stops with one line on stderr that says what is wrong and what to do, a non-zero exit and no traceback.

Covers: image modes, EXIF orientation, small images, unreadable and hostile files (decompression bombs),
empty/missing folders, --strict, unknown names and keys, incompatible compositions, impossible sizes,
out-of-range hyper-parameters, NaN/Inf in losses and gradients (inline fake plugin), a full disk while
writing checkpoints, samples and metrics, and file-system errors. Resuming reproduces the uninterrupted run:
tests/test_engine.py::test_resume_reproduces_the_uninterrupted_run; the kill test is tests/test_kill_resume.py.
"""

from __future__ import annotations

import errno
import io
import json
import os
import pathlib
import struct
import time
import types
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn
from typer.testing import CliRunner, Result

import stylezoo.core.components.registry as registry_mod
from stylezoo.core.cli import app
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import StepContext
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CheckpointError, DataError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.files.data import ImageSet
from stylezoo.core.files.images import BadImage, load_tensor, open_image

# a tiny noise-family composition: a run of a few steps takes a second or two
TINY = ["--gen", "dcgan", "--disc", "dcgan", "--adv", "lsgan", "--feat", "none", "--loss", "tv", "--size", "32",
        "--batch", "2", "--quiet", "--set", "gen.channels=8", "--set", "gen.max_channels=16",
        "--set", "gen.latent_dim=16", "--set", "disc.channels=8", "--set", "disc.max_channels=16",
        "--set", "train.sample_every=0", "--set", "train.log_every=1"]


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def clean_error(result: Result, code: int, *fragments: str) -> str:
    """Assert a user-facing failure: exit `code`, no traceback, one `error:` line holding every fragment."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)  # not an uncaught exception
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    line = lines[0]
    for f in fragments:
        assert f in line, (f, line)
    return line


def save(path: Path, arr: np.ndarray, mode: str | None = None, **kw: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path, **kw) if mode else Image.fromarray(arr).save(path, **kw)
    return path


def noise_image(seed: int, h: int = 40, w: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def good_folder(root: Path, n: int = 3, size: int = 40) -> Path:
    for i in range(n):
        save(root / f"good{i}.png", noise_image(i, size, size))
    return root


def _png_chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def bomb_png(w: int, h: int) -> bytes:
    """A valid-looking PNG that declares a w x h RGB image but holds a few bytes of data."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _png_chunk(b"IEND", b""))


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(noise_image(7)).save(buf, fmt)
    return buf.getvalue()


BAD_FILES: dict[str, bytes] = {
    "zero.jpg": b"",
    "zero.png": b"",
    "truncated.jpg": _encoded("JPEG")[:300],
    "truncated.png": _encoded("PNG")[:200],
    "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
    "corrupt.png": b"\x89PNG\r\n\x1a\n" + b"\x13\x37" * 300,
    "text.png": b"this is not an image, just text with a .png name\n",
    "page.jpg": b"<!DOCTYPE html><html><body>404 not found</body></html>",
    "bomb.png": bomb_png(100_000, 100_000),
}


def bad_folder(root: Path) -> Path:
    good_folder(root, 2)
    for name, data in BAD_FILES.items():
        (root / name).write_bytes(data)
    (root / "notes.txt").write_text("not an image suffix: ignored, not counted")
    return root


# ------------------------------------------------------------------------------------------ image modes
def _grad16() -> np.ndarray:
    return np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))


Check = Callable[[np.ndarray], None]
MODES: dict[str, Callable[[Path], tuple[Path, Check]]] = {}  # name -> writes a file, returns (path, check)


def case(name: str) -> Callable[..., Any]:
    def deco(fn: Callable[[Path], tuple[Path, Check]]) -> Callable[[Path], tuple[Path, Check]]:
        MODES[name] = fn
        return fn
    return deco


@case("grey L")
def _grey(tmp: Path) -> tuple[Path, Check]:
    a = np.tile(np.arange(256, dtype=np.uint8), (4, 1))

    def check(rgb: np.ndarray) -> None:
        assert (rgb == a[..., None]).all()
    return save(tmp / "grey.png", a, "L"), check


@case("16-bit grey gradient")
def _grey16(tmp: Path) -> tuple[Path, Check]:
    a = _grad16()
    expected = np.round(a.astype(np.float64) / 65535 * 255).astype(np.uint8)

    def check(rgb: np.ndarray) -> None:
        assert rgb.shape == (4, 256, 3)
        assert np.abs(rgb.astype(int) - expected[..., None]).max() <= 1
        assert rgb[0, 0, 0] == 0 and rgb[0, -1, 0] == 255
    return save(tmp / "grey16.png", a), check


@case("dark 16-bit grey stays dark")
def _dark16(tmp: Path) -> tuple[Path, Check]:
    a = np.tile(np.arange(256, dtype=np.uint16), (4, 1))  # 0..255 of 65535: nearly black

    def check(rgb: np.ndarray) -> None:
        assert rgb.max() <= 1  # not stretched to full range
    return save(tmp / "dark16.png", a), check


@case("RGBA composited on white")
def _rgba(tmp: Path) -> tuple[Path, Check]:
    a = np.zeros((2, 3, 4), np.uint8)
    a[:, 0] = (255, 0, 0, 0)  # fully transparent red -> white
    a[:, 1] = (0, 0, 255, 255)  # opaque blue
    a[:, 2] = (0, 0, 0, 128)  # half-transparent black -> mid grey

    def check(rgb: np.ndarray) -> None:
        assert (rgb[:, 0] == 255).all() and (rgb[:, 1] == (0, 0, 255)).all()
        assert (np.abs(rgb[:, 2].astype(int) - 127) <= 1).all()
    return save(tmp / "rgba.png", a, "RGBA"), check


@case("grey + alpha")
def _la(tmp: Path) -> tuple[Path, Check]:
    im = Image.merge("LA", [Image.new("L", (4, 4), 0), Image.new("L", (4, 4), 0)])
    path = tmp / "la.png"
    im.save(path)

    def check(rgb: np.ndarray) -> None:
        assert (rgb == 255).all()  # transparent black over white
    return path, check


@case("palette")
def _palette(tmp: Path) -> tuple[Path, Check]:
    im = Image.new("P", (4, 2))
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    im.putdata([0, 1, 2, 0, 1, 2, 0, 1])
    path = tmp / "palette.png"
    im.save(path)

    def check(rgb: np.ndarray) -> None:
        assert tuple(rgb[0, 0]) == (255, 0, 0) and tuple(rgb[0, 1]) == (0, 255, 0) and tuple(rgb[0, 2]) == (0, 0, 255)
    return path, check


@case("palette with transparency")
def _palette_t(tmp: Path) -> tuple[Path, Check]:
    im = Image.new("P", (2, 1))
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * 762)
    im.putdata([0, 1])
    path = tmp / "palette_t.png"
    im.save(path, transparency=0)

    def check(rgb: np.ndarray) -> None:
        assert tuple(rgb[0, 0]) == (255, 255, 255) and tuple(rgb[0, 1]) == (0, 0, 255)
    return path, check


@case("1-bit")
def _bilevel(tmp: Path) -> tuple[Path, Check]:
    im = Image.new("1", (4, 1))
    im.putdata([0, 255, 0, 255])
    path = tmp / "bits.png"
    im.save(path)

    def check(rgb: np.ndarray) -> None:
        assert rgb[0, :, 0].tolist() == [0, 255, 0, 255]
    return path, check


@case("CMYK JPEG")
def _cmyk(tmp: Path) -> tuple[Path, Check]:
    a = np.zeros((16, 48, 3), np.uint8)
    a[:, :16] = (255, 0, 0)
    a[:, 16:32] = (0, 255, 0)
    a[:, 32:] = (0, 0, 255)
    path = tmp / "cmyk.jpg"
    Image.fromarray(a).convert("CMYK").save(path, quality=100)
    assert Image.open(path).mode == "CMYK"

    def check(rgb: np.ndarray) -> None:
        for x, colour in ((8, (255, 0, 0)), (24, (0, 255, 0)), (40, (0, 0, 255))):
            assert np.abs(rgb[8, x].astype(int) - colour).max() <= 8, (x, rgb[8, x])
    return path, check


@case("32-bit float")
def _float(tmp: Path) -> tuple[Path, Check]:
    a = np.linspace(-1.0, 3.0, 16, dtype=np.float32).reshape(4, 4)
    path = tmp / "float.tif"
    Image.fromarray(a, "F").save(path)

    def check(rgb: np.ndarray) -> None:
        assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] >= 254  # stretched from its own range
    return path, check


@pytest.mark.parametrize("name", list(MODES))
def test_every_image_mode_loads_as_the_right_rgb(tmp_path: Path, name: str) -> None:
    path, check = MODES[name](tmp_path)
    im = open_image(path)
    assert im.mode == "RGB"
    check(np.asarray(im))
    t = load_tensor(path)
    assert t.shape[0] == 3 and t.dtype == torch.float32 and -1 <= t.min() and t.max() <= 1


def test_alpha_is_kept_when_asked(tmp_path: Path) -> None:
    a = np.zeros((2, 2, 4), np.uint8)
    a[..., 3] = [[0, 64], [128, 255]]
    im = open_image(save(tmp_path / "a.png", a, "RGBA"), keep_alpha=True)
    assert im.mode == "RGBA" and np.asarray(im)[..., 3].tolist() == [[0, 64], [128, 255]]


# orientation -> where the original top-left (red), top-right (green), bottom-right (blue) corners end up
@pytest.mark.parametrize("orientation,shape,corners", [
    (1, (20, 40), {"red": (0, 0), "green": (0, -1), "blue": (-1, -1)}),
    (3, (20, 40), {"red": (-1, -1), "green": (-1, 0), "blue": (0, 0)}),  # rotated 180
    (6, (40, 20), {"red": (0, -1), "green": (-1, -1), "blue": (-1, 0)}),  # rotated 90 clockwise
    (8, (40, 20), {"red": (-1, 0), "green": (0, 0), "blue": (0, -1)}),  # rotated 90 counter-clockwise
])
@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_exif_orientation_is_applied(tmp_path: Path, orientation: int, shape: tuple[int, int],
                                     corners: dict[str, tuple[int, int]], fmt: str) -> None:
    a = np.zeros((20, 40, 3), np.uint8)
    a[:10, :20] = (255, 0, 0)
    a[:10, 20:] = (0, 255, 0)
    a[10:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(tmp_path / f"o{orientation}.{fmt}", a, exif=exif.tobytes(), quality=100)
    rgb = np.asarray(open_image(path)).astype(int)
    assert rgb.shape[:2] == shape
    colours = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}
    for name, (y, x) in corners.items():
        assert np.abs(rgb[y, x] - colours[name]).max() <= 12, (name, rgb[y, x])
    assert load_tensor(path).shape == (3, *shape)


def test_images_smaller_than_the_training_size_are_upscaled(tmp_path: Path) -> None:
    """Small images are upscaled (bicubic) to cover the training crop; they train, they are not skipped."""
    save(tmp_path / "tiny.png", np.full((8, 8, 3), (200, 40, 10), np.uint8))
    save(tmp_path / "thin.png", np.full((12, 20, 3), (200, 40, 10), np.uint8))
    ds = ImageSet(tmp_path, 32)
    assert len(ds) == 2 and not ds.skipped
    b = ds.batch(0, 2, seed=0)
    assert b.shape == (2, 3, 32, 32)
    colour = torch.tensor([200, 40, 10]).float().div(127.5).sub(1)
    torch.testing.assert_close(b.mean(dim=(2, 3)), colour.expand(2, 3), atol=0.02, rtol=0)
    assert load_tensor(tmp_path / "tiny.png", 32).shape == (3, 32, 32)


def test_cli_trains_on_images_smaller_than_the_training_size(tmp_path: Path) -> None:
    for i in range(2):
        save(tmp_path / "data" / f"s{i}.png", noise_image(i, 10, 10))
    r = invoke("run", *TINY, "--steps", "1", "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert ckpt.read_meta(tmp_path / "run" / "last.safetensors")["step"] == 1


@pytest.mark.parametrize("trained", [False, True])
def test_interrupted_run_says_what_it_saved(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, trained: bool) -> None:
    """Ctrl-C or SIGTERM: the message names the checkpoint to resume from, or says there is none yet."""
    import stylezoo.core.training.api as engine

    real = engine.train

    def interrupted(*a: Any, **k: Any) -> Path:
        if trained:
            real(*a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(engine, "train", interrupted)
    for i in range(2):
        save(tmp_path / "data" / f"s{i}.png", noise_image(i, 32, 32))
    r = invoke("run", *TINY, "--steps", "2", "--data", tmp_path / "data", "--out", tmp_path / "run")
    assert r.exit_code == 130, r.output
    if trained:
        assert "saved at step 2" in r.output and f"--resume {tmp_path / 'run'}" in r.output
    else:
        assert "nothing to resume" in r.output and "--resume" not in r.output


# ------------------------------------------------------------------------------------------ bad files
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_files_raise_bad_image_naming_the_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(BAD_FILES[name])
    with pytest.raises(BadImage) as e:
        open_image(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_missing_image_file(tmp_path: Path) -> None:
    with pytest.raises(BadImage, match="no such image file"):
        open_image(tmp_path / "nope.png")


@pytest.mark.parametrize("w,h", [(100_000, 100_000), (9_000, 9_000), (20_000, 5_000), (1, 200_000_000)])
def test_decompression_bomb_is_refused_quickly(tmp_path: Path, w: int, h: int) -> None:
    path = tmp_path / "bomb.png"
    path.write_bytes(bomb_png(w, h))
    assert path.stat().st_size < 200
    t0 = time.perf_counter()
    with pytest.raises(BadImage) as e:
        open_image(path)
    assert time.perf_counter() - t0 < 2.0
    assert "decompression bomb" in str(e.value) and str(path) in str(e.value)


def test_imageset_skips_bad_files_with_one_warning_naming_them(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    folder = bad_folder(tmp_path / "data")
    with caplog.at_level("WARNING", logger="stylezoo"):
        ds = ImageSet(folder, 32, what="real")
    assert len(ds) == 2 and len(ds.skipped) == len(BAD_FILES)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and f"skipped {len(BAD_FILES)} file(s) in the" in warnings[0]
    assert "notes.txt" not in warnings[0]
    named = [n for n in BAD_FILES if n in warnings[0]]
    assert len(named) >= 5  # the warning names the first five and counts the rest
    assert f"and {len(BAD_FILES) - 5} more" in warnings[0]
    with pytest.raises(DataError, match="--strict"):
        ImageSet(folder, 32, strict=True)


def test_cli_skips_bad_files_and_trains(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = bad_folder(tmp_path / "data")
    with caplog.at_level("WARNING"):
        r = invoke("run", *TINY, "--steps", "1", "--data", folder, "--out", tmp_path / "run")
    assert r.exit_code == 0, r.output
    assert f"skipped {len(BAD_FILES)} file(s) in the" in caplog.text and "bomb.png" in caplog.text
    assert (tmp_path / "run" / "last.safetensors").is_file()


def test_cli_strict_refuses_bad_files_before_any_work(tmp_path: Path) -> None:
    folder = bad_folder(tmp_path / "data")
    r = invoke("run", *TINY, "--steps", "1", "--data", folder, "--strict", "--out", tmp_path / "run")
    line = clean_error(r, 1, "--strict", str(folder))
    assert any(n in line for n in BAD_FILES)
    assert not (tmp_path / "run" / "last.safetensors").exists()


@pytest.mark.parametrize("layout,fragment", [
    ("empty", "No images found"),
    ("missing", "no such file or folder"),
    ("only-text", "No images found"),
    ("only-bad", "could be read"),
])
def test_cli_empty_missing_or_unreadable_data_folder(tmp_path: Path, layout: str, fragment: str) -> None:
    folder = tmp_path / "data"
    if layout != "missing":
        folder.mkdir()
    if layout == "only-text":
        (folder / "readme.txt").write_text("hello")
    if layout == "only-bad":
        (folder / "zero.png").write_bytes(b"")
        (folder / "bomb.png").write_bytes(bomb_png(100_000, 100_000))
    r = invoke("run", *TINY, "--steps", "1", "--data", folder, "--out", tmp_path / "run")
    clean_error(r, 1, fragment, str(folder))


def test_cli_style_image_that_does_not_exist(tmp_path: Path) -> None:
    content = good_folder(tmp_path / "content", 2)
    missing = tmp_path / "nope" / "starry.jpg"
    r = invoke("run", "--gen", "encdec", "--disc", "none", "--adv", "none", "--feat", "vgg16",
               "--set", "feat.weights=random", "--loss", "gram", "--content", content, "--style", missing,
               "--size", "32", "--batch", "2", "--steps", "1", "--quiet", "--out", tmp_path / "run",
               "--set", "gen.channels=8", "--set", "gen.n_res=1")
    clean_error(r, 1, str(missing), "no such file")


# ------------------------------------------------------------------------------------------ bad names, keys, values
@pytest.mark.parametrize("args,fragments", [
    (["--gen", "dcgann"], ["Unknown generator 'dcgann'", "gen/dcgan", "stylezoo list"]),
    (["--disc", "nosuch"], ["Unknown discriminator 'nosuch'"]),
    (["--adv", "lsgn"], ["'lsgn'", "loss/lsgan"]),
    (["--gp", "r2"], ["'r2'"]),
    (["--feat", "vgg99"], ["'vgg99'"]),
    (["--loss", "gramm"], ["'gramm'", "loss/gram"]),
    (["--recipe", "defualt"], ["Unknown recipe 'defualt'", "default"]),
    (["--set", "gen.chanels=8"], ["gen/dcgan.chanels", "channels"]),
    (["--set", "train.lrr=1"], ["train.lrr", "lr"]),
    (["--set", "data.folder=x"], ["data.folder"]),
    (["--set", "nosuchrole.x=1"], ["'nosuchrole'", "stylezoo list"]),
    (["--set", "gen"], ["ROLE.FIELD=VALUE"]),
    (["--loss", "tv:lots"], ["must be a number"]),
    (["--set", "gen.channels=wide"], ["gen/dcgan.channels", "integer"]),
    (["--set", "train.precision=fp8"], ["train.precision", "fp32"]),
    # NaN passes every `x < 0` check, then poisons the run or crashes in int(); inf crashed math.ceil
    (["--loss", "tv:nan"], ["loss/tv.weight", "finite"]),
    (["--set", "data.zoom=nan"], ["data.zoom", "finite"]),
    (["--epochs", "inf"], ["train.epochs", "finite"]),
    (["--lr", "nan"], ["train.lr", "finite"]),
    (["--device", "foo"], ["Unknown device 'foo'", "cuda:N"]),
    pytest.param(["--device", "cuda"], ["CUDA, which is not available", "--device cpu"],
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
])
def test_cli_unknown_names_keys_and_bad_values_exit_2(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    r = invoke("run", *TINY, "--data", good_folder(tmp_path / "d", 1), *args, "--out", tmp_path / "run")
    clean_error(r, 2, *fragments)
    assert not (tmp_path / "run").exists()


def test_cli_unknown_key_in_a_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text('gen = "dcgan"\nlearning_rate = 0.1\n')
    clean_error(invoke("run", "--config", cfg, "--dry-run"), 2, "learning_rate", "Valid keys")
    cfg.write_text('gen = "dcgan"\n[train\n')
    clean_error(invoke("run", "--config", cfg, "--dry-run"), 2, "not valid TOML")
    clean_error(invoke("run", "--config", tmp_path / "missing.toml", "--dry-run"), 2, "no such file")
    clean_error(invoke("run", "--config", tmp_path, "--dry-run"), 2, "is a folder")
    cfg.write_bytes(b"\xff\xfe\x00binary")
    clean_error(invoke("run", "--config", cfg, "--dry-run"), 2, "not a text file")
    cfg.write_text('recipe = "original"\n')
    clean_error(invoke("run", "--recipe", "default", "--config", cfg, "--dry-run"), 2, "disagree")


@pytest.mark.parametrize("body,fragments", [
    ('gen = 5', ["{cfg}", "gen must be a name"]),
    ('disc = ["patch"]', ["{cfg}", "disc must be a name"]),
    ('losses = 3', ["{cfg}", "[losses]", "must be a table"]),  # brackets survive the console's markup
    ('[losses]\ntv = "heavy"', ["{cfg}", "weight of loss 'tv' must be a number"]),
    ('[losses]\ntv = true', ["{cfg}", "weight of loss 'tv' must be a number"]),
    ('set = "gen.channels=8"', ["{cfg}", "set must be a table"]),
    ('[set]\ngen = 8', ["{cfg}", "set.gen must be a table"]),
    ('train = 3', ["{cfg}", "train must be a table"]),
    ('[train]\nlr = "fast"', ["train.lr", "number"]),
    ('[data]\nstrict = "maybe"', ["data.strict"]),
])
def test_cli_config_file_values_of_the_wrong_shape(tmp_path: Path, body: str, fragments: list[str]) -> None:
    cfg = tmp_path / "run.toml"
    cfg.write_text(body + "\n")
    clean_error(invoke("run", "--config", cfg, "--dry-run"), 2, *(f.replace("{cfg}", str(cfg)) for f in fragments))


@pytest.mark.parametrize("args,fragments", [
    (["--disc", "none"], ["needs a discriminator"]),
    (["--adv", "none"], ["needs an adversarial loss"]),
    (["--adv", "tv"], ["not an adversarial loss"]),
    (["--loss", "bce"], ["adversarial loss", "--adv"]),
    (["--loss", "gram"], ["feature extractor"]),
    (["--loss", "entropy"], ["loss/entropy is not valid with loss/lsgan", "loss/bce"]),
    (["--disc", "none", "--adv", "none", "--gp", "r1"], ["gp/r1", "discriminator"]),
    (["--pairs", "somewhere"], ["noise", "paired"]),
    (["--loss", "l1"], ["noise"]),
])
def test_cli_incompatible_compositions_exit_2(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    base = ["--gen", "dcgan", "--disc", "dcgan", "--adv", "lsgan", "--feat", "none", "--loss", "tv", "--size", "32"]
    r = invoke("run", *base, "--data", good_folder(tmp_path / "d", 1), *args, "--out", tmp_path / "run")
    clean_error(r, 2, *fragments)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("gen,size,fragments", [
    ("dcgan", 48, ["gen/dcgan", "32, 64, 128, 256", "48"]),
    ("dcgan", 4, ["train.size", "at least 8"]),
    ("unet", 30, ["gen/unet", "multiple of 4"]),
    ("pixelshuffle", 30, ["gen/pixelshuffle", "--size 30", "multiple of 4"]),
])
def test_cli_sizes_the_generator_cannot_produce(tmp_path: Path, gen: str, size: int, fragments: list[str]) -> None:
    data = good_folder(tmp_path / "d", 2)
    r = invoke("run", "--gen", gen, "--disc", "patch", "--adv", "lsgan", "--feat", "none", "--loss", "tv",
               "--size", str(size), "--batch", "2", "--steps", "1", "--quiet", "--content", data, "--data", data,
               "--set", "disc.channels=8", "--out", tmp_path / "run")
    clean_error(r, 2, *fragments)
    assert not (tmp_path / "run" / "last.safetensors").exists()


@pytest.mark.parametrize("args,fragments", [
    (["--lr", "0"], ["train.lr", "positive"]),
    (["--lr", "-0.001"], ["train.lr", "positive"]),
    (["--batch", "0"], ["train.batch", "at least 1"]),
    (["--steps", "0"], ["train.steps", "at least 1"]),
    (["--epochs", "-1"], ["train.epochs"]),
    (["--loss", "tv:-1"], ["weight", "-1"]),
    (["--set", "adv.weight=-0.5"], ["weight"]),
    (["--set", "train.lr_d=-1"], ["train.lr_d"]),
    (["--set", "train.betas=1.0,0.9"], ["train.betas", "[0, 1)"]),
    (["--set", "train.max_bad_steps=0"], ["train.max_bad_steps", "at least 1"]),
    (["--set", "train.d_steps=0"], ["train.d_steps"]),
    (["--set", "gen.channels=0"], ["channels", ">= 1"]),
    (["--set", "train.log_every=0"], ["train.log_every", "at least 1"]),
    (["--set", "train.ckpt_every=-2"], ["train.ckpt_every"]),
    (["--set", "train.sample_every=-1"], ["train.sample_every"]),
    (["--set", "train.style_size=-5"], ["train.style_size", "at least 8"]),
])
def test_cli_out_of_range_hyperparameters_exit_2(tmp_path: Path, args: list[str], fragments: list[str]) -> None:
    r = invoke("run", *TINY, "--data", good_folder(tmp_path / "d", 1), *args, "--out", tmp_path / "run")
    clean_error(r, 2, *fragments)
    assert not (tmp_path / "run").exists()


def test_cli_out_inside_a_file_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the run folder should go")
    clean_error(invoke("run", *TINY, "--steps", "1", "--data", good_folder(tmp_path / "d", 1), "--out", blocker), 2,
                f"--out {blocker} is a file")
    with pytest.raises(BadImage, match="is a folder: give one image file"):
        open_image(tmp_path)
    args = ["run", *TINY, "--steps", "1", "--data", good_folder(tmp_path / "d", 1), "--out", blocker / "run"]
    clean_error(invoke(*args), 1, str(blocker))
    monkeypatch.setenv("STYLEZOO_DEBUG", "1")
    assert isinstance(invoke(*args).exception, OSError)  # the traceback is there when asked for


# ------------------------------------------------------------------------------------------ NaN / Inf during training
@dataclass
class BlowUpConfig:
    weight: float = 1.0  # multiplies the term
    after: int = 2  # first (0-based) step whose value is bad
    until: int = 1_000_000  # first step that is good again
    value: str = "nan"  # nan, inf, grad (a finite value whose gradient is NaN), raise, or vector (not a scalar)
    side: str = "gen"  # which update the term joins: gen or disc


class BlowUp(nn.Module):
    """A loss term that goes bad from step `after` until `until` (a stand-in for a loss that diverges)."""

    step: ClassVar[str] = "gen"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, cfg: BlowUpConfig) -> None:
        super().__init__()
        self.cfg, self.weight = cfg, cfg.weight
        self.step = cfg.side  # type: ignore[misc]

    def feature_layers(self, extractor: Any) -> tuple[str, ...]:
        return ()

    def forward(self, ctx: StepContext) -> Tensor:
        x = ctx.fake.float()
        good = (x - x.detach()).mean() + 0.1
        if not self.cfg.after <= ctx.step < self.cfg.until:
            return good
        if self.cfg.value == "grad":
            return torch.sqrt((x - x.detach()).abs() + 0.0).mean()  # value 0, gradient NaN
        if self.cfg.value == "raise":
            raise KeyError("a bug inside the term")
        if self.cfg.value == "oom":
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if self.cfg.value == "vector":
            return (x - x.detach()).mean((1, 2, 3)) + 0.1
        return good * float(self.cfg.value)


def blowup_plugin() -> types.ModuleType:
    mod = types.ModuleType("blowup_plugin")

    @hookimpl
    def register_components(register: Callable[..., None]) -> None:
        register("loss/blowup", BlowUp, config=BlowUpConfig, description="goes NaN on purpose")

    mod.register_components = register_components  # type: ignore[attr-defined]
    return mod


@pytest.fixture
def blowup_registry(monkeypatch: pytest.MonkeyPatch) -> Registry:
    """The CLI's default registry with the built-ins plus loss/blowup."""
    reg = Registry(plugins=[blowup_plugin()])
    monkeypatch.setattr(registry_mod, "_default", reg)
    return reg


def _params(path: Path, prefix: str) -> dict[str, Tensor]:
    tensors, _ = ckpt.load(path)
    return {k: v for k, v in tensors.items() if k.startswith(prefix + ".") and "running_" not in k
            and "num_batches" not in k}


def _same(a: dict[str, Tensor], b: dict[str, Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("value,side,who", [
    ("nan", "gen", "generator step: loss/blowup"),
    ("inf", "gen", "generator step: loss/blowup"),
    ("-inf", "disc", "discriminator step: loss/blowup"),
    ("grad", "gen", "generator gradients"),
])
def test_cli_nan_or_inf_stops_the_run_naming_the_loss_and_keeps_the_good_weights(
        tmp_path: Path, blowup_registry: Registry, value: str, side: str, who: str) -> None:
    out = tmp_path / "run"
    r = invoke("run", *TINY, "--loss", "tv", "--loss", "blowup", "--steps", "20", "--data",
               good_folder(tmp_path / "d", 2), "--set", "train.ckpt_every=1", "--set", "train.max_bad_steps=3",
               "--set", f"loss/blowup.value={value}", "--set", f"loss/blowup.side={side}",
               "--set", "loss/blowup.after=3", "--out", out)
    clean_error(r, 1, who, "3 consecutive steps", "NaN/Inf", "Stopped at step 6", str(out), "lower the learning rate")
    module = "gen" if side == "gen" else "disc"
    ck = out / "checkpoints"
    # steps 4 and 5 were not applied to the module that saw the NaN; the run stopped at the third bad step, 6
    # (metrics and checkpoints count steps from 1)
    assert sorted(p.name for p in ck.glob("*.safetensors"))[-1] == "step-0000005.safetensors"
    good = _params(ck / "step-0000003.safetensors", module)
    assert not _same(good, _params(ck / "step-0000002.safetensors", module))  # it was learning before
    assert _same(good, _params(ck / "step-0000005.safetensors", module))
    assert _same(good, _params(out / "last.safetensors", module))
    assert all(torch.isfinite(v).all() for v in ckpt.load(out / "last.safetensors")[0].values())
    assert list(tmp_path.rglob("*.tmp")) == []


def test_a_run_stopped_by_nan_saves_its_last_good_weights_without_periodic_checkpoints(
        tmp_path: Path, blowup_registry: Registry) -> None:
    out = tmp_path / "run"
    r = invoke("run", *TINY, "--loss", "tv", "--loss", "blowup", "--steps", "20", "--data",
               good_folder(tmp_path / "d", 2), "--set", "train.ckpt_every=0", "--set", "train.max_bad_steps=3",
               "--set", "loss/blowup.after=3", "--out", out)
    clean_error(r, 1, "Stopped at step 6", "saved in", str(out / "last.safetensors"))
    tensors, meta = ckpt.load(out / "last.safetensors")  # the 3 good steps were not lost
    assert meta["step"] == 5 and all(torch.isfinite(v).all() for v in tensors.values())
    assert not list((out / "checkpoints").glob("*.safetensors"))  # no periodic ones were asked for


def test_a_few_bad_steps_are_skipped_and_training_goes_on(tmp_path: Path, blowup_registry: Registry) -> None:
    out = tmp_path / "run"
    r = invoke("run", *TINY, "--loss", "tv", "--loss", "blowup", "--steps", "5", "--data",
               good_folder(tmp_path / "d", 2), "--set", "train.ckpt_every=1", "--set", "train.max_bad_steps=3",
               "--set", "loss/blowup.after=2", "--set", "loss/blowup.until=4", "--out", out)
    assert r.exit_code == 0, r.output
    ck = out / "checkpoints"
    g = {s: _params(ck / f"step-{s:07d}.safetensors", "gen") for s in range(1, 6)}
    assert _same(g[2], g[3]) and _same(g[3], g[4])  # steps 3 and 4 (0-based 2, 3) skipped
    assert not _same(g[4], g[5])  # and learning resumed
    rows = {json.loads(line)["step"]: json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()}
    assert np.isnan(rows[3]["g/loss/blowup"]) and np.isfinite(rows[5]["g/loss/blowup"])


def test_a_short_run_whose_every_step_is_bad_is_not_done(tmp_path: Path, blowup_registry: Registry,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """Fewer steps than max_bad_steps, all NaN: an error and nothing saved, not 'done' with untrained weights."""
    out = tmp_path / "run"
    r = invoke("run", *TINY, "--loss", "tv", "--loss", "blowup", "--steps", "2", "--data",
               good_folder(tmp_path / "d", 2), "--set", "loss/blowup.after=0", "--out", out)
    clean_error(r, 1, "All 2 steps had a NaN/Inf", "loss/blowup", "nothing was saved")
    assert not (out / "last.safetensors").exists()
    # bad last steps after good ones: done, the good weights saved, and a warning that says so
    with caplog.at_level("WARNING", logger="stylezoo"):
        r = invoke("run", *TINY, "--loss", "tv", "--loss", "blowup", "--steps", "4", "--data",
                   good_folder(tmp_path / "d", 2), "--set", "loss/blowup.after=2", "--out", tmp_path / "run2")
    assert r.exit_code == 0, r.output
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "the last 2 step(s) had a NaN/Inf" in said and "those of step 2" in said, said


def test_running_out_of_memory_is_not_blamed_on_a_components_settings(tmp_path: Path,
                                                                       blowup_registry: Registry) -> None:
    r = invoke("run", *TINY, "--loss", "tv", "--loss", "blowup", "--steps", "2", "--data",
               good_folder(tmp_path / "d", 2), "--set", "loss/blowup.after=0", "--set", "loss/blowup.value=oom",
               "--out", tmp_path / "run")
    assert isinstance(r.exception, RuntimeError) and "out of memory" in str(r.exception)
    assert "--set loss/blowup" not in r.output


@pytest.mark.parametrize("value,fragments", [
    ("raise", ["loss/blowup failed in the first training step", "KeyError", "--set loss/blowup.*"]),
    ("vector", ["loss/blowup returned a tensor of shape (2,)", "scalar"]),
])
def test_a_term_that_fails_in_the_first_step_is_named(tmp_path: Path, blowup_registry: Registry, value: str,
                                                      fragments: list[str]) -> None:
    r = invoke("run", *TINY, "--loss", "tv", "--loss", "blowup", "--steps", "2", "--data",
               good_folder(tmp_path / "d", 2), "--set", "loss/blowup.after=0", "--set", f"loss/blowup.value={value}",
               "--out", tmp_path / "run")
    clean_error(r, 2 if value == "raise" else 1, *fragments)


@pytest.mark.parametrize("args,fragments", [
    (["--set", "disc.in_channels=1"], ["disc/patch failed in the first training step", "channels", "--set disc.*"]),
    (["--set", "disc.num_labels=3"], ["disc/patch failed in the first training step", "num_labels=3"]),
])
def test_settings_that_break_a_component_are_one_line_naming_it(tmp_path: Path, args: list[str],
                                                                 fragments: list[str]) -> None:
    out = tmp_path / "run"
    data = good_folder(tmp_path / "d", 2)
    patch = ["--gen", "encdec", "--disc", "patch", "--adv", "lsgan", "--feat", "none", "--loss", "tv", "--size", "32",
             "--batch", "2", "--steps", "2", "--quiet", "--set", "gen.channels=8", "--set", "gen.n_res=1",
             "--set", "disc.channels=8", "--content", data, "--data", data]
    r = invoke("run", *patch, *args, "--out", out)
    clean_error(r, 2, *fragments)
    # the folder it leaves says how to start again instead of sending the user to --resume
    r = invoke("run", *TINY, "--loss", "tv", "--steps", "2", "--data", data, "--out", out)
    clean_error(r, 2, "stopped before it saved a checkpoint", "--overwrite")


# ------------------------------------------------------------------------------------------ full disk
def _enospc(*_: Any, **__: Any) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _trained(tmp_path: Path) -> tuple[Path, bytes]:
    out = tmp_path / "run"
    r = invoke("run", *TINY, "--steps", "2", "--data", good_folder(tmp_path / "d", 2),
               "--set", "train.ckpt_every=1", "--out", out)
    assert r.exit_code == 0, r.output
    return out, (out / "last.safetensors").read_bytes()


def _intact(out: Path, before: bytes, step: int) -> None:
    assert (out / "last.safetensors").read_bytes() == before
    assert ckpt.read_meta(out / "last.safetensors")["step"] == step
    assert [p for p in out.rglob("*") if p.name.endswith(".tmp")] == []


def test_disk_full_while_writing_a_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, before = _trained(tmp_path)
    monkeypatch.setattr(ckpt, "save_file", _enospc)
    r = invoke("run", "--resume", out, "--steps", "4", "--quiet")
    clean_error(r, 1, "No space left", "last.safetensors", "previous file is intact", "Free some disk space")
    _intact(out, before, 2)


def test_disk_full_while_writing_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, before = _trained(tmp_path)
    monkeypatch.setattr(Image.Image, "save", _enospc)
    r = invoke("run", "--resume", out, "--steps", "4", "--quiet")  # 2 steps, then the final sample grid
    clean_error(r, 1, "No space left", "final.png")
    assert ckpt.read_meta(out / "last.safetensors")["step"] == 4  # checkpoints are written before samples
    assert [p for p in out.rglob("*") if p.name.endswith(".tmp")] == []
    del before


def test_disk_full_while_writing_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, before = _trained(tmp_path)
    real_open = pathlib.Path.open

    class Full(io.StringIO):
        def write(self, s: str) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    def fake_open(self: Path, mode: str = "r", *a: Any, **kw: Any) -> Any:
        return Full() if self.name == "metrics.jsonl" and mode.startswith("a") else real_open(self, mode, *a, **kw)

    monkeypatch.setattr(pathlib.Path, "open", fake_open)
    r = invoke("run", "--resume", out, "--steps", "4", "--quiet")
    clean_error(r, 1, "No space left", "metrics.jsonl")
    _intact(out, before, 2)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_atomic_write_keeps_the_old_file_on_a_full_disk(tmp_path: Path, code: int) -> None:
    path = tmp_path / "x.safetensors"
    ckpt.save(path, {"a": torch.ones(3)}, {"step": 1})
    before = path.read_bytes()

    def half_then_full(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError(code, "full")

    with pytest.raises(CheckpointError, match="No space left"):
        ckpt.atomic_write(path, half_then_full)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]
    with pytest.raises(PermissionError):  # other OS errors are not disguised as a full disk
        ckpt.atomic_write(path, lambda tmp: (_ for _ in ()).throw(PermissionError(errno.EACCES, "denied")))
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_leftover_tmp_files_of_killed_writers_are_removed_on_the_next_save(tmp_path: Path) -> None:
    dead = 2**22 + 12345  # above the default pid_max: no such process
    stale = [tmp_path / f".last.safetensors.{dead}-abcd1234.tmp",
             tmp_path / f".step-0000003.safetensors.{dead}-x_y_z_01.tmp"]
    alive = tmp_path / ".last.safetensors.1-abcd1234.tmp"  # pid 1 runs: maybe another writer, kept
    other = tmp_path / f".samples.png.{dead}-abcd1234.tmp"  # another kind of file: not ours to judge
    for p in [*stale, alive, other]:
        p.write_bytes(b"torn")
    ckpt.save(tmp_path / "last.safetensors", {"a": torch.ones(1)}, {"step": 1})
    assert not any(p.exists() for p in stale)
    assert alive.exists() and other.exists()


def test_atomic_writes_get_ordinary_permissions(tmp_path: Path) -> None:
    """Temporary files are private (mkstemp); the finished file gets the mode a plain open() would give."""
    mask = os.umask(0o022)
    try:
        ckpt.save(tmp_path / "last.safetensors", {"a": torch.ones(1)}, {"step": 1})
    finally:
        os.umask(mask)
    assert (tmp_path / "last.safetensors").stat().st_mode & 0o777 == 0o644


def test_linked_sub_folders_are_followed_once_and_a_link_loop_ends(tmp_path: Path) -> None:
    from stylezoo.core.files.images import find_images
    from stylezoo.core.runs.runconfig import SAMPLES

    top = tmp_path / "top"
    top.mkdir()
    Image.new("RGB", (8, 8)).save(top / "own.png")
    (top / "more").symlink_to(SAMPLES / "content", target_is_directory=True)  # e.g. a dataset kept elsewhere
    (top / "again").symlink_to(SAMPLES / "content", target_is_directory=True)  # the same folder twice
    (top / "loop").symlink_to(top, target_is_directory=True)
    found = find_images(top)
    bundled = sorted(p.name for p in (SAMPLES / "content").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    assert len(bundled) >= 3
    assert sorted(p.name for p in found) == sorted(["own.png", *bundled])  # each real image once


def test_a_thin_strip_is_refused_before_it_is_blown_up_to_gigabytes(tmp_path: Path) -> None:
    from stylezoo.core.files.data import load_images
    from stylezoo.core.files.images import MAX_PIXELS, resize_short

    strip, ok = tmp_path / "strip.png", tmp_path / "ok.png"
    Image.new("RGB", (40000, 1)).save(strip)  # a few hundred bytes; at 128 px it would be 5,120,000 x 128
    Image.new("RGB", (64, 48)).save(ok)
    assert strip.stat().st_size < 2000
    good, kept, bad = load_images([strip, ok], 128)
    assert kept == [ok] and good[0].shape == (3, 128, 171)
    assert len(bad) == 1 and "strip.png" in bad[0] and "would become 5120000x128" in bad[0]
    with pytest.raises(DataError, match="--strict"):
        load_images([strip, ok], 128, strict=True)
    assert resize_short(Image.new("RGB", (400, 1)), 64).size == (25600, 64)  # elongated but bounded: kept
    assert 25600 * 64 < MAX_PIXELS < 5120000 * 128
