"""`stylezoo export`: every registered generator exports to ONNX and TorchScript with dynamic shapes and passes
its parity check on real images at two sizes; tampered exports fail it and never land under the final name."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from typer.testing import CliRunner

from stylezoo.core.cli import app
from stylezoo.core.components.config import config_to_dict
from stylezoo.core.components.registry import Registry
from stylezoo.core.errors import CheckpointError, UsageError
from stylezoo.core.files import checkpoint as ckpt
from stylezoo.core.use import export as ex
from stylezoo.core.use.stylizer import load_generator

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated upstream, still asked for

GENERATORS = Registry().names(kind="gen")  # every generator registered now, built-in or plugin
# ... but those that say why they cannot be exported (gen/wct: eigendecompositions); test_wct.py checks the refusal
EXPORTABLE = [n for n in GENERATORS if not getattr(Registry().get(n).factory, "not_exportable", "")]
FORMATS = {"onnx": ".onnx", "torchscript": ".ts"}
SMALL = {"channels": 8, "n_res": 1, "blocks": 1, "latent_dim": 16, "size": 32}  # shrink fields a config has


@pytest.fixture(scope="module")
def reg() -> Registry:
    return Registry()


def _small_config(reg: Registry, name: str) -> object:
    fields = {f.name for f in dataclasses.fields(reg.get(name).config)}
    try:
        return reg.make_config(name, {k: v for k, v in SMALL.items() if k in fields})
    except (ValueError, UsageError):
        return reg.make_config(name)


@pytest.fixture(scope="module")
def checkpoints(reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A checkpoint per generator, as the engine writes them (gen.* tensors, composition and config in the
    metadata), with the weights moved off their initial values so norms' affine parameters matter."""
    d = tmp_path_factory.mktemp("ckpts")
    out = {}
    for i, name in enumerate(GENERATORS):
        cfg = _small_config(reg, name)
        torch.manual_seed(i)
        module = reg.build(name, config=cfg)
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        path = d / f"{name.replace('/', '-')}.safetensors"
        ckpt.save(path, ckpt.prefixed("gen", module.state_dict()),
                  {"composition": {"gen": name}, "configs": {"gen": config_to_dict(cfg)}, "step": 3,
                   "family": module.family})
        out[name] = path
    return out


@pytest.fixture(scope="module")
def exported(checkpoints: dict[str, Path], reg: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Exports made on first use, shared by the tests of this module."""
    d = tmp_path_factory.mktemp("exports")
    cache: dict[tuple[str, str], tuple[Path, ex.ParityReport]] = {}

    def get(name: str, fmt: str) -> tuple[Path, ex.ParityReport]:
        if (name, fmt) not in cache:
            out = d / f"{name.replace('/', '-')}{FORMATS[fmt]}"
            cache[name, fmt] = out, ex.export(checkpoints[name], fmt, out, registry=reg)
        return cache[name, fmt]

    return get  # type: ignore[return-value]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("name", EXPORTABLE)
def test_every_generator_exports_with_parity(name: str, fmt: str, exported, checkpoints: dict[str, Path],
                                             reg: Registry) -> None:
    out, report = exported(name, fmt)
    assert report.passed and report.max_abs_diff < report.tolerance
    # the automatic tolerance: 1e-4, or 4x PyTorch's own float32 error (vs float64) when a model's is larger
    assert report.tolerance == ex.auto_tolerance(report.fp32_floor or 0.0) and report.tolerance < 1e-2
    assert out.is_file() and not list(out.parent.glob(".*.tmp"))
    shapes = [tuple(c.input_shape) for c in report.cases]
    assert len(shapes) == 2 and shapes[0][0] != shapes[1][0]  # two batch sizes
    family = load_generator(checkpoints[name], registry=reg).family
    if family == "image":
        assert shapes[0][2:] != shapes[1][2:]  # two spatial sizes
    record = json.loads(ex.parity_path(out).read_text())
    assert record["passed"] and record["tolerance"] == report.tolerance and record["requested_tolerance"] is None
    assert record["max_abs_diff"] == pytest.approx(report.max_abs_diff)
    assert record["composition"]["composition"]["gen"] == name and record["versions"]["torch"] == torch.__version__
    assert [c["input_shape"] for c in record["cases"]] == [list(s) for s in shapes]
    if fmt == "onnx":
        model = onnx.load(str(out))
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
        dims = model.graph.input[0].type.tensor_type.shape.dim
        dynamic = [bool(dim.dim_param) for dim in dims]
        assert dynamic == ([True, False, True, True] if family == "image" else [True, False])


def _reference(checkpoints: dict[str, Path], reg: Registry) -> torch.nn.Module:
    return load_generator(checkpoints["gen/encdec"], registry=reg).module


def test_tampered_onnx_fails_its_parity_check(exported, checkpoints: dict[str, Path], reg: Registry,
                                              tmp_path: Path) -> None:
    good, _ = exported("gen/encdec", "onnx")
    model = onnx.load(str(good))
    init = next(t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and
                np.prod(t.dims) > 8)
    arr = numpy_helper.to_array(init).copy()
    arr.flat[0] += 0.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    bad = tmp_path / "tampered.onnx"
    onnx.save(model, str(bad))
    ref = _reference(checkpoints, reg)
    assert ex.check_parity(ref, good).passed
    report = ex.check_parity(ref, bad)
    assert not report.passed and report.max_abs_diff > report.tolerance
    strict = ex.check_parity(ref, good, tolerance=1e-12)  # a given tolerance is applied as it is
    assert strict.tolerance == 1e-12 and not strict.passed and "given" in strict.summary()


def test_tampered_torchscript_fails_its_parity_check(exported, checkpoints: dict[str, Path], reg: Registry,
                                                     tmp_path: Path) -> None:
    good, _ = exported("gen/encdec", "torchscript")
    model = torch.jit.load(str(good))
    with torch.no_grad():  # the head's bias: scaling a conv followed by instance norm would cancel out
        list(model.parameters())[-1].add_(0.01)
    bad = tmp_path / "tampered.ts"
    torch.jit.save(model, str(bad))
    report = ex.check_parity(_reference(checkpoints, reg), bad)
    assert not report.passed and report.max_abs_diff > report.tolerance


class _Branchy(torch.nn.Module):
    """torch.export cannot capture this (a branch on a buffer's value), and one buffer is non-persistent."""

    family = "image"
    size_multiple = 1

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect")
        self.norm = torch.nn.InstanceNorm2d(3, affine=True)
        self.register_buffer("gain", torch.tensor(1.5), persistent=False)
        self.register_buffer("enabled", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(self.enabled.sum() > 0):
            return torch.tanh(self.norm(self.conv(x)) * self.gain)
        return x


def test_onnx_falls_back_to_the_tracing_exporter(tmp_path: Path) -> None:
    model = _Branchy().eval()
    path = tmp_path / "branchy.onnx"
    used = ex.write_onnx(model, path)
    assert "dynamo=False" in used and "dynamo exporter failed" in used
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"]  # every buffer is an initializer, not an input
    report = ex.check_parity(model, path)
    assert report.passed, report.summary()
    with torch.no_grad():
        model.gain.fill_(1.0)  # the export holds the values it was made with
    assert not ex.check_parity(model, path).passed


def test_auto_tolerance_widens_only_to_the_models_own_float32_error(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    model = _Branchy().eval()

    def off_by(eps: float):  # an "export" that differs from PyTorch by exactly eps
        return lambda path, fmt: (lambda x: (model(x) + eps).detach().numpy())

    monkeypatch.setattr(ex, "_runner", off_by(3e-4))
    monkeypatch.setattr(ex, "fp32_floor", lambda ref, xs: 1e-4)  # a model whose fp32 error is 1e-4
    report = ex.check_parity(model, tmp_path / "m.onnx")
    assert report.passed and report.tolerance == pytest.approx(4e-4) and report.fp32_floor == 1e-4
    assert not ex.check_parity(model, tmp_path / "m.onnx", tolerance=1e-4).passed  # a given value is not widened
    monkeypatch.setattr(ex, "fp32_floor", lambda ref, xs: 1e-6)
    assert not ex.check_parity(model, tmp_path / "m.onnx").passed
    monkeypatch.setattr(ex, "_runner", off_by(5e-5))
    monkeypatch.setattr(ex, "fp32_floor", lambda ref, xs: pytest.fail("measured although 1e-4 was met"))
    report = ex.check_parity(model, tmp_path / "m.onnx")
    assert report.passed and report.fp32_floor is None and report.tolerance == ex.DEFAULT_TOLERANCE


def test_failed_parity_leaves_no_file(checkpoints: dict[str, Path], reg: Registry, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    real = ex.write_torchscript

    def tampering(module: torch.nn.Module, path: Path) -> None:
        real(module, path)
        m = torch.jit.load(str(path))
        with torch.no_grad():
            for p in m.parameters():
                p.add_(0.1)
        torch.jit.save(m, str(path))

    out = tmp_path / "model.ts"
    out.write_bytes(b"an earlier export")
    monkeypatch.setattr(ex, "write_torchscript", tampering)
    with pytest.raises(ex.ParityError, match="does not match"):
        ex.export(checkpoints["gen/encdec"], "torchscript", out, registry=reg)
    assert out.read_bytes() == b"an earlier export"  # the previous file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ts"]  # no temp file, no parity record
    r = CliRunner().invoke(app, ["export", str(checkpoints["gen/encdec"]), "--format", "torchscript",
                                 "-o", str(tmp_path / "cli.ts")])
    assert r.exit_code == 1 and "does not match" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "cli.ts").exists()


def test_cli_export_prints_and_stores_the_difference(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "gen.ts"
    r = CliRunner().invoke(app, ["export", str(checkpoints["gen/encdec"]), "-o", str(out), "--tolerance", "1e-3"])
    assert r.exit_code == 0, r.output
    assert "parity ok" in r.output and "max abs diff" in r.output
    record = json.loads(ex.parity_path(out).read_text())
    assert record["format"] == "torchscript" and record["tolerance"] == 1e-3
    assert record["size_multiple"] > 1 and f"multiples of {record['size_multiple']}" in " ".join(r.output.split())


def test_refusals(tmp_path: Path) -> None:
    p = tmp_path / "model.pth"
    p.write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickled"):
        ex.export(p, "onnx", tmp_path / "m.onnx")
    r = CliRunner().invoke(app, ["export", str(p), "-o", str(tmp_path / "m.onnx")])
    assert r.exit_code != 0 and "pickled" in r.output
    with pytest.raises(UsageError, match="format"):
        ex.format_of(tmp_path / "m.xyz", None)
    with pytest.raises(UsageError, match="Unknown export format"):
        ex.format_of(tmp_path / "m.onnx", "tflite")
    with pytest.raises(UsageError, match="named like a onnx file but --format is torchscript"):
        ex.format_of(tmp_path / "m.onnx", "torchscript")
    assert ex.format_of(tmp_path / "m.bin", "torchscript") == "torchscript"  # a suffix that implies nothing
    assert ex.auto_tolerance(0.0) == ex.DEFAULT_TOLERANCE and ex.auto_tolerance(1e-3) == pytest.approx(4e-3)
    assert ex.parity_sizes(16) == [(64, 64), (96, 128)] and ex.parity_sizes(128) == [(128, 128), (128, 256)]


def test_onnx_export_without_its_packages_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without onnxruntime the export used to fail its 'parity check' (ModuleNotFoundError as a mismatch)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(UsageError,
                       match=r"needs onnxruntime, which is not installed: pip install 'stylezoo\[export\]'"):
        ex.require_exporters("onnx")
    ex.require_exporters("torchscript")  # needs nothing beyond torch


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_an_exported_file_given_as_a_checkpoint_says_what_to_give(exported, tmp_path: Path, fmt: str) -> None:
    """`stylize model.pt` on stylezoo's own TorchScript export was 'a pickled PyTorch file'; .onnx 'corrupt'."""
    out, _ = exported("gen/encdec", fmt)
    alone = tmp_path / f"model{'.pt' if fmt == 'torchscript' else '.onnx'}"  # without its parity record
    alone.write_bytes(out.read_bytes())
    for path in (out, alone):
        with pytest.raises(CheckpointError, match="is an exported model"):
            load_generator(path)
    with pytest.raises(UsageError, match="checkpoint format"):  # it used to replace the checkpoint itself
        ex.export(tmp_path / "x.safetensors", fmt, tmp_path / "last.safetensors")
    # a bad output path is refused before the export's work, naming what is wrong
    (tmp_path / "dir.onnx").mkdir()
    with pytest.raises(UsageError, match="is a folder"):
        ex.export(out, "onnx", tmp_path / "dir.onnx")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        ex.export(out, "onnx", alone / "x.onnx")
        r = CliRunner().invoke(app, ["stylize", str(path), str(tmp_path), "-o", str(tmp_path / "o")])
        assert r.exit_code == 1 and "exported model" in r.output and "pickled" not in r.output
