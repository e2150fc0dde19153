"""`stylezoo stylize` and the Stylizer API on tiny checkpoints trained here: mixed inputs keep their sizes and
modes, bad files are skipped and named, the CLI and the Python API give identical pixels, noise samples are
seeded, pickles are refused."""

from __future__ import annotations

import dataclasses
import io
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import stylezoo
from stylezoo.core.cli import app
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CheckpointError, DataError, UsageError
from stylezoo.core.files.images import is_stylezoo_output, output_mode
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.engine import Trainer
from stylezoo.core.use.stylizer import Stylizer, pad_to_multiple, plan_outputs

TINY = {"size": 32, "batch": 2, "steps": 2, "sample_every": 0, "ckpt_every": 0, "num_samples": 2}


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


@pytest.fixture(scope="module")
def image_run(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("encdec-run")
    rc = resolve(reg, cli={"gen": "encdec", "disc": "patch", "feat": "", "gp": "none", "train": TINY,
                           "set": {"gen": {"channels": 8, "n_res": 1}, "disc": {"n_layers": 2}}}, losses=["tv"])
    Trainer(rc, out, registry=reg).fit()
    return out


@pytest.fixture(scope="module")
def noise_ckpt(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dcgan-run")
    rc = resolve(reg, cli={"gen": "dcgan", "disc": "dcgan", "feat": "", "gp": "none", "train": TINY,
                           "set": {"gen": {"channels": 8, "latent_dim": 16}, "disc": {"channels": 8}}}, losses=["tv"])
    return Trainer(rc, out, registry=reg).fit()


def _rgb(w: int, h: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), (xx + yy) % 256], -1)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


# name -> (expected output size (w, h), expected output mode with keep_mode); by default every output is
# RGB, or RGBA for inputs with alpha
EXPECTED = {
    "rgb.png": ((40, 30), "RGB"),
    "grey.png": ((33, 20), "L"),
    "alpha.png": ((24, 26), "RGBA"),
    "palette.png": ((30, 18), "P"),
    "deep16.png": ((20, 28), "I;16"),
    "rotated.jpg": ((24, 40), "RGB"),  # stored 40x24 with EXIF Orientation 6: displayed 24x40
    "odd/odd.jpg": ((37, 51), "RGB"),
}
BAD = ("corrupt.png", "zero.jpg")
COLOUR = {name: "RGBA" if name == "alpha.png" else "RGB" for name in EXPECTED}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mixed")
    (d / "odd").mkdir()
    Image.fromarray(_rgb(40, 30, 0)).save(d / "rgb.png")
    Image.fromarray(_rgb(33, 20, 1)[..., 0]).save(d / "grey.png")
    rgba = np.dstack([_rgb(24, 26, 2), np.linspace(0, 255, 24 * 26).reshape(26, 24).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(d / "alpha.png")
    Image.fromarray(_rgb(30, 18, 3)).quantize(16).save(d / "palette.png")
    Image.fromarray((np.arange(28 * 20).reshape(28, 20) * 100).astype(np.uint16)).save(d / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    Image.fromarray(_rgb(40, 24, 4)).save(d / "rotated.jpg", exif=exif)
    Image.fromarray(_rgb(37, 51, 5)).save(d / "odd" / "odd.jpg", quality=95)
    (d / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(200)))
    (d / "zero.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image; ignored")
    return d


def test_folder_of_mixed_inputs_keeps_sizes_and_modes(image_run: Path, mixed: Path, tmp_path: Path) -> None:
    skipped: list[str] = []
    st = Stylizer.load(image_run, device="cpu")
    report = st.stylize_files([mixed], tmp_path, keep_mode=True, on_skip=lambda p, why: skipped.append(p))
    assert sorted(Path(p).name for p in skipped) == sorted(BAD)
    assert sorted(Path(p).name for p, _ in report.skipped) == sorted(BAD)
    assert len(report.written) == len(EXPECTED)
    for name, (size, mode) in EXPECTED.items():
        out = tmp_path / name  # sub-folders mirrored, names and formats kept
        assert out.is_file(), name
        with Image.open(out) as im:
            assert (im.size, im.mode) == (size, mode), name
            assert im.format == Image.open(mixed / name).format
    with Image.open(mixed / "alpha.png") as src, Image.open(tmp_path / "alpha.png") as got:
        assert np.array_equal(np.asarray(src.getchannel("A")), np.asarray(got.getchannel("A")))
        assert not np.array_equal(np.asarray(src.convert("RGB")), np.asarray(got.convert("RGB")))
    with Image.open(tmp_path / "deep16.png") as im:
        assert np.asarray(im).dtype == np.uint16 and np.asarray(im).max() > 255  # a real 16-bit output


def test_cli_and_python_api_give_identical_pixels(image_run: Path, mixed: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["stylize", str(image_run), str(mixed), "-o", str(tmp_path), "--ext", "png",
                                      "--device", "cpu", "--batch", "3"])
    assert result.exit_code == 0, result.output
    for bad in BAD:
        assert bad in result.output
    assert f"wrote {len(EXPECTED)} image(s)" in result.output and "skipped 2" in result.output
    st = stylezoo.Stylizer.load(image_run / "last.safetensors", device="cpu")
    for name in EXPECTED:
        with Image.open(tmp_path / Path(name).with_suffix(".png")) as cli_out:
            api_out = st(mixed / name)
            assert api_out.mode == cli_out.mode == COLOUR[name], name  # grey, palette, 16-bit in: colour out
            assert np.array_equal(np.asarray(api_out), np.asarray(cli_out)), name
    result = CliRunner().invoke(app, ["stylize", str(image_run), str(mixed / "grey.png"), str(mixed / "palette.png"),
                                      "-o", str(tmp_path / "kept"), "--keep-mode", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    for name in ("grey.png", "palette.png"):
        with Image.open(tmp_path / "kept" / name) as cli_out:
            api_out = st(mixed / name, keep_mode=True)
            assert api_out.mode == cli_out.mode == EXPECTED[name][1], name
            assert np.array_equal(np.asarray(api_out), np.asarray(cli_out)), name


def test_pil_and_tensor_inputs(image_run: Path) -> None:
    st = Stylizer.load(image_run, device="cpu")
    photo = Image.fromarray(_rgb(37, 51, 7))
    out = st(photo)
    assert isinstance(out, Image.Image) and out.size == (37, 51) and out.mode == "RGB"
    x = torch.from_numpy(_rgb(37, 51, 7)).permute(2, 0, 1).float() / 127.5 - 1
    y = st(x)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.min() >= -1 and y.max() <= 1
    # the tensor path and the PIL path are the same computation
    assert np.abs(np.asarray(out).astype(int) - ((y.permute(1, 2, 0) + 1) * 127.5).round().numpy()).max() <= 1
    batch = torch.stack([x, x.flip(-1)])
    assert st(batch).shape == batch.shape
    assert st(x, size=16).shape == (3, 22, 16)
    assert st(torch.zeros(1, 3, 1, 2)).shape == (1, 3, 1, 2)  # tiny images are padded by replication
    assert st(Image.new("LA", (9, 5), (80, 200))).mode == "RGBA"
    assert st(Image.new("LA", (9, 5), (80, 200)), keep_mode=True).mode == "LA"
    grey = Image.fromarray(_rgb(37, 51, 7)[..., 0])
    assert st(grey).mode == "RGB" and st(grey, keep_mode=True).mode == "L"
    # the grey output is the colour output's luma
    assert np.abs(np.asarray(st(grey).convert("L")).astype(int) - np.asarray(st(grey, keep_mode=True))).max() <= 1


def test_precision_option(image_run: Path) -> None:
    from stylezoo.core.runtime.devices import bf16_supported

    x = torch.from_numpy(_rgb(32, 40, 9)).permute(2, 0, 1).float() / 127.5 - 1
    auto = Stylizer.load(image_run, device="cpu", precision="auto")
    assert auto.precision == ("bf16" if bf16_supported(torch.device("cpu")) else "fp32")  # bf16 where fast
    fp32 = Stylizer.load(image_run, device="cpu", precision="fp32")
    assert fp32.precision == "fp32"
    with pytest.raises(UsageError, match="precision"):
        Stylizer.load(image_run, device="cpu", precision="fp16")
    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no bfloat16 support")
    st16 = Stylizer.load(image_run, device="cpu", precision="bf16")
    y16 = st16(x)
    y32 = fp32(x)
    assert y16.dtype == torch.float32 and 0 < (y16 - y32).abs().mean() < 0.02  # bf16 ran, and stays close
    # an unconditional image generator runs as a bfloat16 copy; the loaded fp32 module is left as it was
    low = st16._bf16_module()
    assert low is not None and all(p.dtype == torch.bfloat16 for p in low.parameters())
    assert all(p.dtype == torch.float32 for p in st16.module.parameters())
    with torch.inference_mode():
        direct = low(x[None].to(torch.bfloat16)).float()[0]
    torch.testing.assert_close(y16, direct)  # stylize's bf16 path is that copy


def test_noise_generator_samples_through_a_bf16_copy(noise_ckpt: Path) -> None:
    """Autocast was 6x slower than float32 for 16 DCGAN samples; the bfloat16 copy is faster than both."""
    from stylezoo.core.runtime.devices import bf16_supported

    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no bfloat16 support")
    st16 = Stylizer.load(noise_ckpt, device="cpu", precision="bf16")
    fp32 = Stylizer.load(noise_ckpt, device="cpu", precision="fp32")
    low = st16._bf16_module()
    assert low is not None and all(p.dtype == torch.bfloat16 for p in low.parameters())
    assert all(p.dtype == torch.float32 for p in st16.module.parameters())
    y16, y32 = st16.sample_tensor(4, seed=3), fp32.sample_tensor(4, seed=3)
    assert y16.dtype == torch.float32 and 0 < (y16 - y32).abs().mean() < 0.02  # bf16 ran, and stays close
    z = torch.randn(4, int(st16.latent_dim), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        direct = low(z.to(torch.bfloat16)).float()
    torch.testing.assert_close(y16, direct)  # sampling's bf16 path is that copy


def test_conditional_generators_keep_autocast_under_bf16(reg: Registry) -> None:
    from stylezoo.core.use.stylizer import LoadedGenerator

    for name in ("gen/adain", "gen/cin"):
        g = reg.build(name, {"channels": 8} if name == "gen/cin" else {"weights": "random"})
        st = Stylizer(LoadedGenerator(g.eval(), name, "image", {}, Path("-")), device="cpu", precision="fp32")
        st.precision = "bf16"
        assert st._bf16_module() is None, name  # style statistics / label mixing stay in float32 under autocast


def test_batched_equals_one_by_one(image_run: Path, tmp_path: Path) -> None:
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        Image.fromarray(_rgb(36, 28, 10 + i)).save(d / f"{i}.png")
    st = Stylizer.load(image_run, device="cpu")
    one = st.stylize_files([d], tmp_path / "one", batch=1).written
    three = st.stylize_files([d], tmp_path / "three", batch=3).written
    for a, b in zip(sorted(one), sorted(three)):
        diff = np.abs(np.asarray(Image.open(a)).astype(int) - np.asarray(Image.open(b)).astype(int))
        assert diff.max() <= 1  # per-sample norms: batching changes only float rounding


def test_onnxruntime_backend_matches_torch(image_run: Path, mixed: Path, tmp_path: Path) -> None:
    torch_st = Stylizer.load(image_run, device="cpu", precision="fp32", backend="auto")  # parity: fp32 both sides
    a = torch_st.stylize_files([mixed], tmp_path / "torch", ext="png").written
    assert torch_st.backend == "torch"  # auto: fewer than AUTO_ORT_MIN_IMAGES files stay on PyTorch
    ort_st = Stylizer.load(image_run, device="cpu", backend="onnxruntime")
    assert ort_st.backend == "onnxruntime"
    # its threads sleep between runs, so they never take the cores from PyTorch work in the same process
    opts = ort_st._session.get_session_options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    b = ort_st.stylize_files([mixed], tmp_path / "ort", ext="png").written
    assert [p.relative_to(tmp_path / "torch") for p in a] == [p.relative_to(tmp_path / "ort") for p in b]
    for x, y in zip(a, b):
        diff = np.abs(np.asarray(Image.open(x)).astype(int) - np.asarray(Image.open(y)).astype(int))
        assert diff.max() <= 1 if Image.open(x).mode != "I;16" else diff.max() <= 256, x


def test_size_option_and_output_file_format(image_run: Path, mixed: Path, tmp_path: Path) -> None:
    st = Stylizer.load(image_run, device="cpu")
    out = st.stylize_files([mixed / "alpha.png"], tmp_path / "a.png", size=48).written
    with Image.open(out[0]) as im:
        assert im.size == (48, 52) and im.mode == "RGBA"  # alpha resized with the image
    r = CliRunner().invoke(app, ["stylize", str(image_run), str(mixed / "alpha.png"), "-o", str(tmp_path / "a.jpg"),
                                 "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "JPEG cannot store mode RGBA" in r.output
    with Image.open(tmp_path / "a.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (24, 26)


def test_bad_inputs_strict_and_nothing_written(image_run: Path, mixed: Path, tmp_path: Path) -> None:
    r = CliRunner().invoke(app, ["stylize", str(image_run), str(mixed / "corrupt.png"), str(mixed / "zero.jpg"),
                                 "-o", str(tmp_path / "none"), "--device", "cpu"])
    assert r.exit_code != 0 and "Nothing was written" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "none").exists()
    r = CliRunner().invoke(app, ["stylize", str(image_run), str(mixed), "-o", str(tmp_path / "strict"), "--strict",
                                 "--device", "cpu"])
    assert r.exit_code != 0 and "--strict" in r.output
    assert not (tmp_path / "strict").exists()  # refused before writing anything
    with pytest.raises(UsageError, match="names one file"):
        Stylizer.load(image_run, device="cpu").stylize_files([mixed], tmp_path / "x.png")


def test_outputs_inside_the_input_folder_are_not_inputs(image_run: Path, tmp_path: Path) -> None:
    d = tmp_path / "photos"
    d.mkdir()
    Image.fromarray(_rgb(20, 20, 1)).save(d / "a.png")
    st = Stylizer.load(image_run, device="cpu")
    for _ in range(2):  # the second run does not pick up the first run's output
        assert len(st.stylize_files([d], d / "out").written) == 1
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*.png")) == ["a.png", "out/a.png"]
    with pytest.raises(UsageError, match="inside the output folder"):
        st.stylize_files([d / "out"], d)
    with pytest.raises(UsageError, match="overwrite its own input"):
        st.stylize_files([d / "a.png"], d / "a.png")


def test_noise_generator_num_and_seed(noise_ckpt: Path, tmp_path: Path) -> None:
    def run(seed: int, out: Path) -> list[np.ndarray]:
        r = CliRunner().invoke(app, ["stylize", str(noise_ckpt), "--num", "3", "--seed", str(seed), "-o", str(out),
                                     "--device", "cpu"])
        assert r.exit_code == 0, r.output
        files = sorted(out.iterdir())
        assert len(files) == 3
        return [np.asarray(Image.open(f)) for f in files]

    a, b = run(7, tmp_path / "a"), run(7, tmp_path / "b")
    assert a[0].shape == (32, 32, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    st = Stylizer.load(noise_ckpt, device="cpu")
    assert np.array_equal(np.asarray(st.sample(3, seed=7, batch=2)[2]), a[2])  # batching does not change samples
    # compared as floats: a 2-step DCGAN in eval mode can be nearly flat, below one 8-bit level
    s7, s8 = st.sample_tensor(3, seed=7), st.sample_tensor(3, seed=8)
    assert torch.equal(s7, st.sample_tensor(3, seed=7)) and not torch.equal(s7, s8)
    assert not torch.equal(s7[0], s7[1])
    with pytest.raises(UsageError, match="noise"):
        st(torch.zeros(3, 8, 8))
    with pytest.raises(UsageError, match="onnxruntime"):
        Stylizer.load(noise_ckpt, device="cpu", backend="onnxruntime")


def test_pickle_checkpoints_are_refused(tmp_path: Path) -> None:
    for suffix in (".pt", ".pth"):
        p = tmp_path / f"model{suffix}"
        p.write_bytes(b"not really a pickle")
        with pytest.raises(CheckpointError, match="pickled"):
            Stylizer.load(p)
        r = CliRunner().invoke(app, ["stylize", str(p), "x.png"])
        assert r.exit_code != 0 and "pickled" in r.output


def test_modes_padding_and_top_level_api() -> None:
    assert stylezoo.Stylizer is Stylizer
    modes = ("L", "I;16", "I", "1", "RGB", "P", "CMYK", "YCbCr")
    assert [output_mode(m, False, keep_mode=True) for m in modes] == \
        ["L", "I;16", "I;16", "L", "RGB", "P", "CMYK", "RGB"]
    assert [output_mode(m, False) for m in modes] == ["RGB"] * len(modes)
    assert output_mode("P", True, keep_mode=True) == "RGBA" and output_mode("LA", True, keep_mode=True) == "LA"
    assert output_mode("LA", True) == "RGBA"
    x = torch.arange(2 * 3 * 37 * 51, dtype=torch.float32).reshape(2, 3, 37, 51)
    xp, (top, left) = pad_to_multiple(x, 16)
    assert xp.shape[-2:] == (48, 64) and torch.equal(xp[..., top:top + 37, left:left + 51], x)
    with pytest.raises(DataError, match="Nothing to stylize"):
        plan_outputs(["/nonexistent/folder"], "out")


def test_encode_falls_back_when_format_cannot_store_mode() -> None:
    from stylezoo.core.files.images import encode

    data, note = encode(Image.new("I;16", (4, 4), 1000), "JPEG")
    assert note and Image.open(io.BytesIO(data)).mode == "L"
    data, note = encode(Image.new("RGB", (4, 4)), "PNG")
    assert note is None and Image.open(io.BytesIO(data)).size == (4, 4)


def test_auto_precision_gives_way_to_onnxruntime_fp32_but_explicit_bf16_does_not(image_run: Path) -> None:
    from stylezoo.core.runtime.devices import bf16_supported

    st = Stylizer.load(image_run, device="cpu", backend="auto")  # precision auto
    assert st.use_onnxruntime(required=False) and (st.backend, st.precision) == ("onnxruntime", "fp32")
    if not bf16_supported(torch.device("cpu")):
        pytest.skip("this CPU has no bfloat16 support")
    with pytest.raises(UsageError, match="fp32"):
        Stylizer.load(image_run, device="cpu", precision="bf16", backend="onnxruntime")


def test_stylizer_keeps_freed_memory_on_the_cpu_unless_asked_not_to(monkeypatch: pytest.MonkeyPatch) -> None:
    from stylezoo.core.runtime import cpu_memory
    from stylezoo.core.use.stylizer import LoadedGenerator, Stylizer

    calls: list[int] = []
    monkeypatch.setattr(cpu_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    loaded = LoadedGenerator(module=torch.nn.Identity(), name="gen/x", family="image", meta={}, path=Path("x"))
    Stylizer(loaded)
    assert calls == [1]
    Stylizer(loaded, keep_freed_memory=False)
    assert calls == [1]


class _Broken(torch.nn.Module):
    """A generator that returns NaN, half the height or one channel: what a buggy plugin might."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "nan":
            return x * float("nan")
        if self.how == "half":
            return x[..., : x.shape[-2] // 2, :]
        return x[:, :1]


@pytest.mark.parametrize("how,fragment", [("nan", "NaN or Inf"), ("half", "of its input size"),
                                          ("gray", "must return RGB images")])
def test_stylize_refuses_output_that_cannot_be_an_image(how: str, fragment: str, tmp_path: Path) -> None:
    from stylezoo.core.errors import PluginError
    from stylezoo.core.use.stylizer import LoadedGenerator

    st = Stylizer(LoadedGenerator(_Broken(how), "gen/broken", "image", {}, Path("-")), precision="fp32")
    with pytest.raises(PluginError, match=fragment) as e:
        st(Image.new("RGB", (40, 30), (200, 100, 50)))
    assert "gen/broken" in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, stylezoo.StylezooError)  # the API exports the base class
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (40, 30)).save(src / "a.png")
    with pytest.raises(PluginError):
        st.stylize_files([src], tmp_path / "out")
    assert not list((tmp_path / "out").glob("*.png"))  # nothing written


def test_stylize_refuses_tensors_that_are_not_images_in_the_unit_range() -> None:
    from stylezoo.core.use.stylizer import LoadedGenerator

    st = Stylizer(LoadedGenerator(torch.nn.Identity(), "gen/x", "image", {}, Path("-")), precision="fp32")
    x = torch.rand(3, 16, 16) * 2 - 1
    assert torch.equal(st(x), x)  # in range: fine
    for bad, fragment in ((x * 127.5 + 127.5, "0-255 pixels"), ((x * 127.5 + 127.5).to(torch.uint8), "uint8"),
                          (x * float("nan"), "NaN"), (x * 3, "[-1, 1]")):
        with pytest.raises(UsageError, match=None) as e:
            st(bad)
        assert fragment in str(e.value)


def test_stylize_notes_when_large_inputs_ran_at_full_resolution(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from stylezoo.core.use import stylizer as inference
    from stylezoo.core.use.stylizer import LoadedGenerator

    monkeypatch.setattr(inference, "LARGE_INPUT", 20)  # a 40x30 photo stands for a 4000x3000 one
    st = Stylizer(LoadedGenerator(torch.nn.Identity(), "gen/x", "image", {}, Path("-")), precision="fp32")
    src = tmp_path / "in"
    src.mkdir()
    Image.new("RGB", (40, 30), (10, 200, 30)).save(src / "big.png")
    Image.new("RGB", (16, 16)).save(src / "small.png")
    report = st.stylize_files([src], tmp_path / "out")
    assert len(report.written) == 2 and any("1 input(s)" in n and "--size" in n for n in report.notes)
    report = st.stylize_files([src], tmp_path / "out2", size=24)  # resized first: nothing to say
    assert not any("--size" in n for n in report.notes)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
@pytest.mark.parametrize("command", ["stylize", "eval"])
def test_a_device_that_is_not_here_is_not_blamed_on_the_checkpoint(image_run: Path, tmp_path: Path,
                                                                   command: str) -> None:
    args = [command, str(image_run), *([str(tmp_path)] if command == "stylize" else []), "--device", "cuda"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2 and "CUDA, which is not available" in r.output, r.output
    assert "corrupt" not in r.output and "Traceback" not in r.output


def test_load_passes_keep_freed_memory_on(image_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stylezoo.core.runtime import cpu_memory

    calls: list[int] = []
    monkeypatch.setattr(cpu_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    Stylizer.load(image_run, device="cpu", keep_freed_memory=False)
    assert calls == []
    Stylizer.load(image_run, device="cpu")
    assert calls == [1]


def test_a_users_image_in_the_output_sub_folder_is_never_overwritten(image_run: Path, tmp_path: Path) -> None:
    """photos/out/a.png is the user's, not an earlier output: stylizing photos/ into photos/out refuses to replace
    it."""
    d = tmp_path / "photos"
    (d / "out").mkdir(parents=True)
    Image.fromarray(_rgb(20, 20, 1)).save(d / "a.png")
    Image.fromarray(_rgb(20, 20, 2)).save(d / "out" / "a.png")
    Image.fromarray(_rgb(20, 20, 3)).save(d / "out" / "b.png")
    before = (d / "out" / "a.png").read_bytes()
    st = Stylizer.load(image_run, device="cpu")
    with pytest.raises(UsageError, match="did not mark as its own"):
        st.stylize_files([d], d / "out")
    assert (d / "out" / "a.png").read_bytes() == before
    # outputs are marked, so re-running into a fresh sub-folder replaces only stylize's own output
    assert is_stylezoo_output(st.stylize_files([d / "a.png"], d / "new").written[0])
    assert not is_stylezoo_output(d / "a.png")
    report = st.stylize_files([d / "a.png", d / "new"], d / "new")
    assert [p.name for p in report.written] == ["a.png"]
    # the same folder named by a glob, by its files, or written with a suffix find_images does not list
    mine = d / "out" / "b.jfif"
    Image.fromarray(_rgb(20, 20, 4)).save(mine, format="JPEG")
    (d / "b.png").write_bytes((d / "a.png").read_bytes())
    for inputs, ext in (([str(d / "*.png")], None), ([d / "a.png", d / "b.png"], None), ([d], "jfif")):
        with pytest.raises(UsageError, match="did not mark as its own"):
            st.stylize_files(inputs, d / "out", ext=ext)
    assert (d / "out" / "a.png").read_bytes() == before and not is_stylezoo_output(mine)
    mine.unlink()
    (d / "b.png").unlink()
    # --overwrite (Python: overwrite=True) replaces what stylize cannot tell apart: a user's image, an older
    # stylezoo's output, or a GIF/BMP output, which cannot carry the mark (a re-run into the same folder)
    assert [p.name for p in st.stylize_files([d / "a.png"], d / "gif", ext="gif").written] == ["a.gif"]
    with pytest.raises(UsageError, match="BMP/GIF/PPM"):
        st.stylize_files([d / "a.png"], d / "gif", ext="gif")
    r = CliRunner().invoke(app, ["stylize", str(image_run), str(d / "a.png"), "-o", str(d / "gif"), "--ext", "gif",
                                 "--overwrite", "--device", "cpu", "-q"])
    assert r.exit_code == 0, r.output
    # and the user's own images left out of the inputs are named in a note, not dropped silently
    (d / "out" / "a.png").unlink()
    report = st.stylize_files([d], d / "out")
    assert any("left out of the inputs" in n for n in report.notes), report.notes


def test_earlier_outputs_in_an_input_folder_are_skipped_unless_named(image_run: Path, tmp_path: Path) -> None:
    """album/ -o album/out1, then album/ -o album/out2: the second run restyled out1's outputs too (a third run
    restyled those again). Marked images found in a folder or by a glob are skipped; one named is stylized."""
    d = tmp_path / "album"
    (d / "day1").mkdir(parents=True)
    Image.fromarray(_rgb(20, 20, 1)).save(d / "day1" / "a.png")
    st = Stylizer.load(image_run, device="cpu")
    assert len(st.stylize_files([d], d / "out1").written) == 1
    for inputs in ([d], [str(d / "**" / "*.png")]):
        report = st.stylize_files(inputs, d / "out2")
        assert [p.relative_to(d / "out2").as_posix() for p in report.written] == ["day1/a.png"], inputs
        assert [n for n in report.notes if "skipped 1 image(s)" in n and "Software: stylezoo" in n], report.notes
    r = CliRunner().invoke(app, ["stylize", str(image_run), str(d), "-o", str(d / "out3"), "--device", "cpu", "-q"])
    assert r.exit_code == 0 and r.output.count("skipped 2 image(s)") == 1, r.output  # out1/a.png, out2/day1/a.png
    assert sorted(p.relative_to(d / "out3").as_posix() for p in (d / "out3").rglob("*.png")) == ["day1/a.png"]
    # an output named as an input file is what the user asked for: stylized again
    assert st.stylize_files([d / "out1" / "day1" / "a.png"], tmp_path / "again.png").written == [tmp_path / "again.png"]
    with pytest.raises(UsageError, match="stylezoo's own outputs"):  # a folder of outputs alone: say why, not 'none'
        st.stylize_files([d / "out1"], tmp_path / "x")
    assert "earlier" in CliRunner().invoke(app, ["stylize", "--help"]).output


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc, a folder no one can create files in")
def test_an_output_path_that_cannot_be_written_is_named_not_its_temporary_file(image_run: Path, tmp_path: Path) -> None:
    Image.fromarray(_rgb(20, 20, 1)).save(tmp_path / "a.png")
    for out in ("/proc/x.png", "/proc/self/x.png"):  # the error named /proc/.x.png.PID-XXXX.tmp
        r = CliRunner().invoke(app, ["stylize", str(image_run), str(tmp_path / "a.png"), "-o", out, "--device", "cpu",
                                     "-q"])
        assert r.exit_code == 1 and "Traceback" not in r.output, r.output
        assert f"Cannot be written (No such file or directory): {out}." in r.output and ".tmp" not in r.output, r.output
    with pytest.raises(OSError) as e:  # the Python API's error names it too
        Stylizer.load(image_run, device="cpu").stylize_files([tmp_path / "a.png"], "/proc/x.png")
    assert e.value.filename == "/proc/x.png" and e.value.filename2 is None


def test_inputs_with_suffixes_no_image_format_has_are_written_as_png(image_run: Path, tmp_path: Path) -> None:
    """photo.dat (a PNG) comes out as photo.png; notes.txt is skipped as not an image, not 'cannot write .txt'."""
    (tmp_path / "in").mkdir()
    Image.fromarray(_rgb(20, 20, 1)).save(tmp_path / "in" / "photo.dat", format="PNG")
    (tmp_path / "in" / "notes.txt").write_text("hello")
    st = Stylizer.load(image_run, device="cpu")
    report = st.stylize_files([tmp_path / "in" / "photo.dat", tmp_path / "in" / "notes.txt"], tmp_path / "out")
    assert [p.name for p in report.written] == ["photo.png"]
    assert len(report.skipped) == 1 and "not an image" in report.skipped[0][1]


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "tif"])
def test_every_markable_output_format_carries_the_stylezoo_mark(ext: str, tmp_path: Path) -> None:
    from stylezoo.core.files.images import encode, image_format

    p = tmp_path / f"x.{ext}"
    p.write_bytes(encode(Image.fromarray(_rgb(8, 8, 0)), image_format(p))[0])
    assert is_stylezoo_output(p)


# ------------------------------------------------------------------------- inputs smaller than the training size
SEEN: list[tuple[int, int]] = []  # the sides the recording generator was called on


@dataclasses.dataclass
class _RecCfg:
    width: int = 3


class _Recorder(torch.nn.Module):
    """An image generator that records the size of every input it is given."""

    family = "image"

    def __init__(self, cfg: _RecCfg) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append((int(x.shape[-2]), int(x.shape[-1])))
        return torch.tanh(self.conv(x))


@pytest.fixture(scope="module")
def recorder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Registry, Path]:
    """A registry with gen/recorder, and its checkpoint trained (one step) at 32 px."""
    plug = types.ModuleType("recorder")

    @hookimpl
    def register_components(register):
        register("gen/recorder", _Recorder, config=_RecCfg)

    plug.register_components = register_components
    reg = Registry(plugins=(plug,), entry_points=False)
    rc = resolve(reg, cli={"gen": "recorder", "disc": "", "adv": "", "feat": "", "train": {**TINY, "steps": 1},
                           "data": {"content": "samples:content"}}, losses=["tv"])
    return reg, Trainer(rc, tmp_path_factory.mktemp("recorder-run"), registry=reg).fit()


def test_an_input_under_the_training_size_is_stylized_at_it_and_resized_back(recorder, tmp_path: Path) -> None:
    reg, ckpt = recorder
    st = Stylizer.load(ckpt, device="cpu", precision="fp32", registry=reg)
    assert st.train_size == 32
    SEEN.clear()
    x = torch.rand(3, 16, 16) * 2 - 1
    assert st(x).shape == (3, 16, 16) and SEEN == [(32, 32)]
    SEEN.clear()
    assert st(Image.fromarray(_rgb(20, 16, 0))).size == (20, 16) and SEEN == [(32, 40)]  # the shorter side to 32
    SEEN.clear()
    assert st(x, size=16).shape == (3, 16, 16) and SEEN == [(16, 16)]  # size= overrides
    SEEN.clear()
    assert st(torch.rand(3, 40, 48) * 2 - 1).shape == (3, 40, 48) and SEEN == [(40, 48)]  # larger: as it is


def test_cli_stylizes_a_small_input_at_the_training_size_with_a_note(recorder, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from stylezoo.core.components import registry as registry_module

    reg, ckpt = recorder
    monkeypatch.setattr(registry_module, "_default", reg)
    Image.fromarray(_rgb(16, 16, 1)).save(tmp_path / "small.png")
    SEEN.clear()
    result = CliRunner().invoke(app, ["stylize", str(ckpt), str(tmp_path / "small.png"), "-o",
                                      str(tmp_path / "out.png"), "--precision", "fp32", "--backend", "torch"])
    assert result.exit_code == 0, result.output
    assert SEEN == [(32, 32)] and Image.open(tmp_path / "out.png").size == (16, 16)
    assert "note:" in result.output and "trained at" in result.output and "--size" in result.output
    python = Stylizer.load(ckpt, device="cpu", precision="fp32", backend="torch", registry=reg)(tmp_path / "small.png")
    assert np.array_equal(np.asarray(python), np.asarray(Image.open(tmp_path / "out.png").convert("RGB")))
    SEEN.clear()
    result = CliRunner().invoke(app, ["stylize", str(ckpt), str(tmp_path / "small.png"), "-o",
                                      str(tmp_path / "sized.png"), "--size", "16", "--precision", "fp32"])
    assert result.exit_code == 0, result.output
    assert SEEN == [(16, 16)] and "trained at" not in result.output
