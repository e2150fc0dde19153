"""Export a trained generator to ONNX or TorchScript, and prove the export computes the same pictures.

`export(checkpoint, "onnx", "model.onnx")` writes the exported model under a temporary name, runs the
PyTorch generator and the exported model (ONNX Runtime, or `torch.jit.load`) on the same inputs and only
renames the file into place when the maximum absolute difference is below the tolerance (1e-4 by default,
widened for models whose own float32 rounding error, measured against float64, is larger). The inputs are the
bundled sample photos (data/samples/content) at two different sizes and batch sizes for image generators,
and seeded noise at two batch sizes for noise generators. The measured differences go to `FILE.parity.json`.

ONNX: the dynamo-based exporter (`torch.onnx.export(..., dynamo=True)`), opset 18, dynamic batch and (for
image generators) dynamic height and width; models torch.export cannot capture fall back to the
TorchScript-based exporter (`dynamo=False`, dynamic axes). The weights are embedded, so files above 2 GB are
not supported. Conditional generators (their `export_conditions`) take their conditions as further inputs:
gen/adain `style` (K, 3, h, w; any K and size), `style_weights` (K,) and `alpha` (1,); gen/cin
`label_weights` (N, labels), one-hot rows picking a label. Their parity check feeds real style images and
label mixes beside the photos.
TorchScript: `torch.jit.trace` with a batch of 2 (sizes are traced symbolically, so batch, height and width
stay dynamic; the parity check verifies it). TorchScript is deprecated upstream in PyTorch 2.9+ but still
works; prefer ONNX. A TorchScript file is a pickle-based archive: load only files you made or trust.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..components.registry import Registry
from ..errors import StylezooError, UsageError
from .onnx import (  # noqa: F401  (re-exported: export's writers and example inputs were defined here)
    INPUT,
    OPSET,
    OUTPUT,
    SAMPLES,
    STYLE_SAMPLES,
    _args,
    _positional,
    _quiet,
    _runner,
    condition_inputs,
    conditions,
    ort_session,
    sample_photos,
    write_onnx,
    write_torchscript,
)

FORMATS = ("onnx", "torchscript")
DEFAULT_TOLERANCE = 1e-4
FLOOR_FACTOR = 4.0  # the automatic tolerance allows 4x the model's own float32 rounding error
SUFFIXES = {".onnx": "onnx", ".pt": "torchscript", ".ts": "torchscript", ".torchscript": "torchscript"}


class ParityError(StylezooError):
    """An exported model that does not compute what the PyTorch generator computes."""


@dataclass
class ParityCase:
    """One comparison: the input shape and the absolute differences of the outputs."""

    input_shape: list[int]
    max_abs_diff: float
    mean_abs_diff: float
    error: str | None = None  # the exported model failed on this input (e.g. a shape it was not exported for)


@dataclass
class ParityReport:
    """What `check_parity` measured; `passed` when every case ran and stayed below the tolerance."""

    format: str
    file: str
    tolerance: float  # the one applied
    cases: list[ParityCase]
    fp32_floor: float | None = None  # max |fp32 - fp64| of the PyTorch model itself (measured if 1e-4 was missed)
    requested_tolerance: float | None = None  # None: automatic (see auto_tolerance)
    generator: str = ""
    family: str = ""
    checkpoint: str = ""
    composition: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    exporter: str = ""
    # image generators: height and width must be multiples of this (pad, run, crop back, as stylize does)
    size_multiple: int = 1
    weights: str = ""  # "ema": the checkpoint's moving average (the default); "raw": --no-ema or none saved

    @property
    def max_abs_diff(self) -> float:
        return max((c.max_abs_diff for c in self.cases), default=math.inf)

    @property
    def mean_abs_diff(self) -> float:
        """The largest of the cases' mean absolute differences."""
        return max((c.mean_abs_diff for c in self.cases), default=math.inf)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.error is None for c in self.cases) and self.max_abs_diff < self.tolerance

    def summary(self) -> str:
        errors = [c.error for c in self.cases if c.error]
        if errors:
            return f"the exported model failed to run: {errors[0]}"
        how = ("given" if self.requested_tolerance is not None else "default" if self.fp32_floor is None
               else f"auto: 4x PyTorch's own fp32 error {self.fp32_floor:.2g}")
        return f"max abs diff {self.max_abs_diff:.3g} (tolerance {self.tolerance:.3g}, {how})"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d |= {"max_abs_diff": self.max_abs_diff, "mean_abs_diff": self.mean_abs_diff, "passed": self.passed}
        return d


def format_of(out: str | Path, fmt: str | None) -> str:
    """The export format: as given, else from the file suffix (.onnx, .pt/.ts/.torchscript)."""
    if fmt is None:
        fmt = SUFFIXES.get(Path(out).suffix.lower())
        if fmt is None:
            raise UsageError(f"Cannot tell the export format from {Path(out).name!r}: pass --format onnx|torchscript.")
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise UsageError(f"Unknown export format {fmt!r}: use one of {', '.join(FORMATS)}.")
    implied = SUFFIXES.get(Path(out).suffix.lower())
    if implied is not None and implied != fmt:  # a TorchScript archive named .onnx would fool every loader
        raise UsageError(f"{Path(out).name!r} is named like a {implied} file but --format is {fmt}: change one of "
                         "them.")
    return fmt


def require_exporters(fmt: str) -> None:
    """The packages an export in `fmt` needs, checked before any work (a UsageError naming the install)."""
    import importlib.util

    if fmt != "onnx":
        return
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise UsageError(f"ONNX export needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
                         "installed: pip install 'stylezoo[export]' (or use --format torchscript).")


# ----------------------------------------------------------------------------------------------- inputs
def parity_sizes(multiple: int) -> list[tuple[int, int]]:
    """Two different (H, W), both multiples of `multiple`: about 64x64 and 96x128."""
    def up(v: int) -> int:
        return max(multiple, math.ceil(v / multiple) * multiple)

    first, second = (up(64), up(64)), (up(96), up(128))
    if second == first:
        second = (first[0], 2 * first[1])
    return [first, second]


def parity_inputs(module: nn.Module) -> list[Any]:
    """Real inputs of two shapes: photos (batch 2, then 1) or seeded noise (batch 1, then 3).

    Conditional generators get tuples (photos, *conditions): one then two reference styles of other sizes,
    or one-hot label rows then a mix of labels (see `condition_inputs`).
    """
    if getattr(module, "family", "image") == "noise":
        g = torch.Generator().manual_seed(0)
        dim = int(getattr(module, "latent_dim"))
        return [torch.randn(1, dim, generator=g), torch.randn(3, dim, generator=g)]
    a, b = parity_sizes(int(getattr(module, "size_multiple", 1)))
    xs = [sample_photos(2, a), sample_photos(1, b)]
    if not conditions(module):
        return xs
    return [(x, *condition_inputs(module, x, case)) for case, x in enumerate(xs)]


def fp32_floor(reference: nn.Module, xs: Sequence[Tensor]) -> float:
    """How far the float32 model itself is from exact arithmetic: max |fp32 - fp64| over `xs` (0 if no fp64).

    No float32 reimplementation (ONNX Runtime's kernels, another conv algorithm) can be expected to agree with
    PyTorch's float32 more closely than this; deep models on Caffe-scale inputs reach ~1e-3.
    """
    import copy

    try:
        ref64 = copy.deepcopy(reference).double()
        worst = 0.0
        with torch.inference_mode():
            for x in xs:
                d = (reference(*_args(x)).double() - ref64(*(t.double() for t in _args(x)))).abs().max()
                worst = max(worst, float(d))
        return worst if math.isfinite(worst) else 0.0
    except Exception:  # noqa: BLE001 - a model without float64 kernels: no floor, the plain tolerance applies
        return 0.0


def auto_tolerance(floor: float) -> float:
    """The default tolerance: DEFAULT_TOLERANCE, widened to FLOOR_FACTOR x the model's own float32 error."""
    return max(DEFAULT_TOLERANCE, FLOOR_FACTOR * floor)


def check_parity(reference: nn.Module, exported: str | Path, fmt: str | None = None, *,
                 tolerance: float | None = None, inputs: Sequence[Tensor] | None = None) -> ParityReport:
    """Run `reference` (eval mode, fp32, CPU) and the exported file on the same inputs; never raises on a mismatch.

    `inputs` defaults to `parity_inputs(reference)` (real photos at two sizes, or noise at two batch sizes).
    `tolerance` None: DEFAULT_TOLERANCE, and when that is missed, `auto_tolerance(fp32_floor(...))`; a number
    is used as it is.
    """
    exported = Path(exported)
    fmt = format_of(exported, fmt)
    reference = reference.eval().float().cpu()
    xs = list(inputs) if inputs is not None else parity_inputs(reference)
    reference = _positional(reference)  # conditional generators take (x, *conditions)
    try:
        run = _runner(exported, fmt)
    except Exception as e:  # an unreadable export is a failed check, not a crash
        case = ParityCase([], math.inf, math.inf, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        return ParityReport(fmt, str(exported), DEFAULT_TOLERANCE if tolerance is None else tolerance, [case],
                            requested_tolerance=tolerance)
    cases = []
    for inp in xs:
        x = _args(inp)[0]  # the content image (or noise); the shape recorded
        with torch.inference_mode():
            want = reference(*_args(inp)).numpy()
        try:
            got = run(inp)
        except Exception as e:
            msg = str(e).splitlines()[0] if str(e) else ""
            cases.append(ParityCase(list(x.shape), math.inf, math.inf,
                                    f"input {tuple(x.shape)}: {type(e).__name__}: {msg}"))
            continue
        if got.shape != want.shape:
            cases.append(ParityCase(list(x.shape), math.inf, math.inf,
                                    f"input {tuple(x.shape)} gave shape {got.shape}, expected {want.shape}"))
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        bad = not np.all(np.isfinite(diff))
        cases.append(ParityCase(list(x.shape), math.inf if bad else float(diff.max()),
                                math.inf if bad else float(diff.mean())))
    report = ParityReport(fmt, str(exported), DEFAULT_TOLERANCE if tolerance is None else float(tolerance), cases,
                          requested_tolerance=tolerance)
    if tolerance is None and not report.passed and all(c.error is None for c in cases):
        # measured only when needed (float64 convs are ~20x slower): is this just float32 rounding?
        report.fp32_floor = fp32_floor(reference, xs)
        report.tolerance = auto_tolerance(report.fp32_floor)
    return report


def _versions() -> dict[str, str]:
    from ..version import __version__

    v = {"stylezoo": __version__, "torch": torch.__version__}
    for mod in ("onnx", "onnxruntime", "onnxscript"):
        with contextlib.suppress(ImportError):
            v[mod] = __import__(mod).__version__
    return v


def export(checkpoint: str | Path, fmt: str | None, out: str | Path, *, tolerance: float | None = None,
           registry: Registry | None = None, opset: int = OPSET, ema: bool = True) -> ParityReport:
    """Export a checkpoint's generator and check parity; the file appears at `out` only if the check passes.

    Raises ParityError (the previous file at `out`, if any, is left untouched) when the difference is not
    below `tolerance` (None: 1e-4, or 4x the model's own float32 error when that is larger; see
    `auto_tolerance`). Writes `out` plus `out.parity.json` with the measured differences.
    """
    from ..files.checkpoint import atomic_write
    from .loading import load_generator

    out = Path(out)
    if out.suffix.lower() == ".safetensors":
        raise UsageError(f"-o {out}: .safetensors is the checkpoint format; name the export .onnx or .ts (it would "
                         "replace a checkpoint with a model that cannot be resumed or loaded as one).")
    fmt = format_of(out, fmt)
    if out.is_dir():
        raise UsageError(f"-o {out} is a folder: give the exported file's name, e.g. {out / ('model' + '.onnx')}.")
    blocker = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise UsageError(f"-o {out}: {blocker} is a file, not a folder.")
    if tolerance is not None and not tolerance > 0:
        raise UsageError(f"--tolerance must be > 0, got {tolerance}.")
    if fmt == "onnx" and opset < 17:
        raise UsageError(f"opset {opset} is too old: use 17 or newer.")
    require_exporters(fmt)
    loaded = load_generator(checkpoint, device="cpu", registry=registry, ema=ema)
    module = loaded.module.eval().float()
    why = getattr(module, "not_exportable", "")
    if why:
        raise UsageError(f"{loaded.name} cannot be exported: {why}. Use it through stylezoo (stylize, the Python API).")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            if fmt == "onnx":
                exporter = write_onnx(module, tmp, opset) + " + onnxruntime"
            else:
                write_torchscript(module, tmp)
                exporter = "torch.jit.trace + torch.jit.load"
        except StylezooError:
            raise
        except Exception as e:
            raise StylezooError(
                f"Exporting {loaded.name} to {fmt} failed "
                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})."
                + (" Try --format torchscript." if fmt == "onnx" else " Try --format onnx.")
            ) from e
        report = check_parity(module, tmp, fmt, tolerance=tolerance)
        report.file = str(out)
        report.generator, report.family, report.checkpoint = loaded.name, loaded.family, str(loaded.path)
        report.composition = {"composition": loaded.meta.get("composition", {}),
                              "configs": {"gen": loaded.meta.get("configs", {}).get("gen", {})},
                              "step": loaded.meta.get("step")}
        report.versions = _versions()
        report.exporter = exporter
        report.weights = "ema" if loaded.averaged else "raw"
        report.size_multiple = int(getattr(module, "size_multiple", 1)) if loaded.family == "image" else 1
        if not report.passed:
            raise ParityError(
                f"The {fmt} export of {loaded.name} does not match the PyTorch model: {report.summary()}; "
                f"nothing was written to {out}. Report this with the checkpoint, or raise --tolerance if the "
                "difference is acceptable."
            )
        os.chmod(tmp, 0o644)  # mkstemp made it private; an exported model is meant to be shared
        os.replace(tmp, out)
        payload = json.dumps(report.to_dict(), indent=2, default=str)
        atomic_write(parity_path(out), lambda p: p.write_text(payload))
        return report
    finally:
        tmp.unlink(missing_ok=True)


def parity_path(out: str | Path) -> Path:
    """Where the parity record of an exported file lives: `FILE.parity.json`."""
    out = Path(out)
    return out.with_name(out.name + ".parity.json")


__all__ = ["conditions", "condition_inputs",
           "FORMATS", "OPSET", "DEFAULT_TOLERANCE", "FLOOR_FACTOR", "fp32_floor", "auto_tolerance", "ParityError",
           "ParityCase", "ParityReport", "export",
           "check_parity", "parity_inputs", "parity_sizes", "sample_photos", "write_onnx", "write_torchscript",
           "format_of", "parity_path"]
