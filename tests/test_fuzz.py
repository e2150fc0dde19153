"""Fuzzing the two doors strangers' files come in by: images and checkpoints.

Seeded random bytes (behind real magic numbers), truncations and bit flips of a real PNG, JPEG and
checkpoint, and random type swaps inside a checkpoint's metadata. Whatever happens, only the documented
errors come out (BadImage / DataError / CheckpointError, all StylezooError): never a TypeError, KeyError,
IndexError, struct.error, ... and never a hang. Hand-seeded loops keep it deterministic and fast.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import save_file

from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CheckpointError, DataError, StylezooError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.files.data import ImageSet
from stylezoo.core.files.images import BadImage, open_image
from stylezoo.core.runs.runconfig import RunConfig, resolve
from stylezoo.core.runs.rundir import resume_config
from stylezoo.core.training.engine import Trainer
from stylezoo.core.training.trainstate import load_run_state
from stylezoo.core.use.stylizer import load_generator

MAGIC = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\xff\xd8\xff\xee", b"GIF89a", b"GIF87a",
         b"BM", b"II*\x00", b"MM\x00*", b"RIFF\x00\x10\x00\x00WEBPVP8 ", b"P6\n4 4\n255\n", b"P5\n",
         b"\x00\x00\x01\x00"]
SUFFIXES = [".png", ".jpg", ".jpeg", ".gif", ".bmp", ".tif", ".webp", ".ppm"]


def outcome(call: Callable[[], Any], allowed: type[BaseException]) -> str:
    """'ok' or the name of the documented error; any other exception fails the test with the case."""
    try:
        call()
    except allowed as e:
        assert "\n" not in str(e), str(e)
        return type(e).__name__
    return "ok"


def random_bytes(rng: random.Random) -> bytes:
    n = int(10 ** rng.uniform(0, 3.5))
    return rng.choice(MAGIC) + rng.randbytes(n)


def flip_bits(data: bytes, rng: random.Random, n: int = 1, lo: int = 0, hi: int | None = None) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = rng.randrange(lo, hi if hi is not None else len(b))
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b)


def real_image(fmt: str) -> bytes:
    rng = np.random.default_rng(5)
    im = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8))
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(buf, fmt, exif=exif.tobytes())
    return buf.getvalue()


# ------------------------------------------------------------------------------------------ images
def test_random_bytes_as_images(tmp_path: Path) -> None:
    rng = random.Random(1)
    seen: dict[str, int] = {}
    for i in range(300):
        path = tmp_path / f"f{i}{rng.choice(SUFFIXES)}"
        path.write_bytes(random_bytes(rng))
        r = outcome(lambda path=path: open_image(path).load(), BadImage)
        seen[r] = seen.get(r, 0) + 1
    assert seen.get("BadImage", 0) > 250, seen


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "TIFF", "WEBP", "BMP"])
def test_truncated_and_bit_flipped_real_images(tmp_path: Path, fmt: str) -> None:
    data = real_image(fmt)
    rng = random.Random(fmt)
    path = tmp_path / f"x.{fmt.lower()}"
    cases = [data[:n] for n in sorted({*range(0, min(len(data), 64)), *rng.sample(range(len(data)), 40)})]
    cases += [flip_bits(data, rng, rng.randint(1, 4)) for _ in range(60)]
    cases += [flip_bits(data, rng, 1, 0, min(len(data), 64)) for _ in range(40)]  # headers
    seen: dict[str, int] = {}
    for case in cases:
        path.write_bytes(case)
        r = outcome(lambda: open_image(path), BadImage)
        if r == "ok":
            im = open_image(path)
            assert im.mode == "RGB" and min(im.size) >= 1
        seen[r] = seen.get(r, 0) + 1
    assert seen.get("BadImage", 0) >= 40, seen  # every truncation to the header is refused at least
    path.write_bytes(data)
    rotated = Image.open(io.BytesIO(data)).getexif().get(0x0112) == 6  # GIF and BMP keep no EXIF
    assert open_image(path).size == ((24, 32) if rotated else (32, 24))  # the intact file, orientation applied
    assert rotated or fmt in ("GIF", "BMP")


def test_a_folder_of_fuzz_keeps_exactly_the_readable_files(tmp_path: Path) -> None:
    rng = random.Random(2)
    for i in range(60):
        (tmp_path / f"f{i}{rng.choice(SUFFIXES)}").write_bytes(random_bytes(rng))
    readable = [p for p in sorted(tmp_path.iterdir()) if outcome(lambda p=p: open_image(p), BadImage) == "ok"]
    if not readable:  # (some random bytes behind a PPM header are a valid image)
        with pytest.raises(DataError, match="could be read"):
            ImageSet(tmp_path, 16)
    (tmp_path / "ok.png").write_bytes(real_image("PNG"))
    ds = ImageSet(tmp_path, 16)
    assert ds.files == sorted([*readable, tmp_path / "ok.png"]) and len(ds.skipped) == 60 - len(readable)
    assert ds.batch(0, 2, 0).shape == (2, 3, 16, 16)


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def run(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Trainer]:
    """A one-step tiny noise run, and a fresh Trainer of the same composition to load states into."""
    data = tmp_path_factory.mktemp("data")
    (data / "a.png").write_bytes(real_image("PNG"))
    cli = {"gen": "dcgan", "disc": "dcgan", "adv": "lsgan", "feat": "", "gp": "none", "data": {"data": str(data)},
           "train": {"size": 32, "batch": 2, "steps": 1, "sample_every": 0, "ckpt_every": 0, "num_samples": 2},
           "set": {"gen": {"channels": 8, "max_channels": 16, "latent_dim": 16},
                   "disc": {"channels": 8, "max_channels": 16}}}
    rc = resolve(reg, cli=cli, losses=["tv"])
    out = tmp_path_factory.mktemp("run")
    Trainer(rc, out, registry=reg).fit()
    return out / "last.safetensors", Trainer(rc, tmp_path_factory.mktemp("fresh"), registry=reg)


def _all_doors(path: Path, reg: Registry) -> list[Callable[[], Any]]:
    return [lambda: ckpt.read_meta(path), lambda: ckpt.load(path), lambda: load_generator(path, registry=reg)]


def test_random_bytes_as_checkpoints(tmp_path: Path, reg: Registry) -> None:
    rng = random.Random(3)
    seen: dict[str, int] = {}
    for i in range(300):
        if i % 3 == 0:  # a plausible header length, then junk
            body = rng.randbytes(rng.randint(0, 400))
            data = rng.choice([len(body), len(body) + 5, 2**63 - 1, 0]).to_bytes(8, "little") + body
        elif i % 3 == 1:  # a JSON-ish header
            header = json.dumps({"w": {"dtype": rng.choice(["F32", "F16", "I64", "XX"]), "shape": [rng.randint(-2, 9)],
                                       "data_offsets": [0, rng.randint(-4, 64)]}, "__metadata__": {"stylezoo": "{}"}})
            data = len(header).to_bytes(8, "little") + header.encode() + rng.randbytes(rng.randint(0, 64))
        else:
            data = random_bytes(rng)
        path = tmp_path / f"c{i}.safetensors"
        path.write_bytes(data)
        for door in _all_doors(path, reg):
            r = outcome(door, CheckpointError)
            seen[r] = seen.get(r, 0) + 1
    assert seen == {"CheckpointError": 900}, seen


def test_truncated_and_bit_flipped_checkpoints(tmp_path: Path, reg: Registry, run: tuple[Path, Trainer]) -> None:
    good, _ = run
    data = good.read_bytes()
    header = 8 + int.from_bytes(data[:8], "little")
    rng = random.Random(4)
    cases = [data[:n] for n in sorted({*range(0, 16), *rng.sample(range(len(data)), 60)})]
    cases += [flip_bits(data, rng, 1, 0, header) for _ in range(150)]  # the JSON header and our metadata
    cases += [flip_bits(data, rng, rng.randint(1, 8), header) for _ in range(30)]  # tensor bytes
    seen: dict[str, int] = {}
    path = tmp_path / "last.safetensors"
    for case in cases:
        path.write_bytes(case)
        for door in _all_doors(path, reg):
            r = outcome(door, StylezooError)
            seen[r] = seen.get(r, 0) + 1
    assert seen.get("CheckpointError", 0) > 300 and seen.get("ok", 0) > 0, seen
    assert set(seen) <= {"ok", "CheckpointError", "ConfigError"}, seen


JUNK: list[Any] = [None, -1, 0, 2**70, 1e308, float("nan"), True, "", "x", "gen/nope", [], [1, "a"], {}, {"a": [None]}]


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into nested dicts and lists."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, (*prefix, i))
    return out


def _replace(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    obj = obj.copy() if isinstance(obj, (dict, list)) else obj
    obj[path[0]] = _replace(obj[path[0]], path[1:], value)
    return obj


def test_metadata_with_random_values_of_the_wrong_type(tmp_path: Path, reg: Registry,
                                                        run: tuple[Path, Trainer]) -> None:
    """Swap random values deep inside the metadata; load, resume and train one step with what loads."""
    good, trainer = run
    tensors, meta = ckpt.load(good)
    rng = random.Random(5)
    seen: dict[str, int] = {}
    folder = tmp_path / "run"
    folder.mkdir()
    path = folder / "last.safetensors"
    for _ in range(80):
        bad = meta
        for _ in range(rng.randint(1, 3)):
            bad = _replace(bad, rng.choice([p for p in _paths(bad) if p]), rng.choice(JUNK))
        try:
            raw = json.dumps(bad)
        except ValueError:
            continue
        save_file(tensors, str(path), metadata={ckpt.META_KEY: raw})

        def resume() -> None:
            rc, p = resume_config(folder, registry=reg)
            assert isinstance(rc, RunConfig)
            load_run_state(trainer.modules(), p, device=trainer.device, ema_decay=trainer.train_cfg.ema)
            trainer.train_step(trainer.step)

        for door in [*_all_doors(path, reg), resume]:
            r = outcome(door, StylezooError)
            seen[r] = seen.get(r, 0) + 1
    assert seen.get("CheckpointError", 0) > 60 and seen.get("ok", 0) > 0, seen
    # DataError: a data path swapped for junk names nothing, and resume says the run's data is gone
    assert set(seen) <= {"ok", "CheckpointError", "ConfigError", "DataError", "TrainingDiverged"}, seen


def test_cli_values_fuzzed_give_a_run_or_one_documented_line(tmp_path: Path) -> None:
    """Seeded random values for training and component fields through `run --dry-run`: every outcome is a
    dry run that worked or one `error:` line with exit 1 or 2 (docs/promises.md); never a traceback."""
    import random

    from typer.testing import CliRunner

    from stylezoo.core.cli import app

    rng = random.Random(20261207)
    fields = ["train.size", "train.batch", "train.steps", "train.seed", "train.lr", "train.d_steps", "train.ema",
              "train.epochs", "train.log_every", "train.ckpt_minutes", "data.zoom", "data.cache_mb", "gen.channels",
              "gen.n_res", "disc.n_layers", "disc.channels", "train.precision", "train.style_size"]
    values = ["0", "-1", "1", "3", "2.5", "1e9", "-1e9", "9" * 40, "nan", "inf", "-inf", "", "x", "[1, 2]",
              "true", "{a=1}", "0x10", "1_000", "\x1b[2J"]
    base = ["run", "--gen", "encdec", "--disc", "patch", "--feat", "none", "--gp", "none", "--loss", "tv", "--size",
            "32", "--batch", "2", "--set", "gen.channels=8", "--set", "gen.n_res=1", "--set", "disc.channels=8",
            "--set", "disc.n_layers=2", "--dry-run"]
    outcomes: dict[int, int] = {}
    for _ in range(40):
        sets = [x for _ in range(rng.randint(1, 2)) for x in ("--set", f"{rng.choice(fields)}={rng.choice(values)}")]
        r = CliRunner().invoke(app, base + sets)
        outcomes[r.exit_code] = outcomes.get(r.exit_code, 0) + 1
        assert "Traceback" not in r.output and isinstance(r.exception, (SystemExit, type(None))), (sets, r.output)
        if r.exit_code:
            lines = [line for line in r.output.splitlines() if line.startswith("error:")]
            assert r.exit_code in (1, 2) and len(lines) == 1, (sets, r.output)
            assert "\x1b" not in r.output
    assert outcomes.get(2, 0) > 10  # most of the values are refused, as they should be
