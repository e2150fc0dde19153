"""How a Stylizer runs its generator: the precision, the device, and ONNX Runtime or a bfloat16 copy."""

from __future__ import annotations

import copy
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UsageError
from ..runtime.devices import bf16_supported, pick_device
from .export import check_parity
from .onnx import ort_session, write_onnx

PRECISIONS = ("fp32", "bf16", "auto")
# What "auto" means: bf16 (bfloat16 weights for unconditional image generators, autocast for the others:
# Stylizer._bf16_module) where the device has fast bfloat16, else fp32. bf16 is the precision the default recipes
# train in; it is faster on such CPUs and moves pixels by a few 8-bit levels (docs/benchmarks.md). Folders of
# AUTO_ORT_MIN_IMAGES+ files (backend auto) and --backend onnxruntime run ONNX Runtime in fp32 (max difference
# 1 level from PyTorch fp32).
AUTO_PRECISION = "bf16-where-fast"
BACKENDS = ("auto", "torch", "onnxruntime")
AUTO_ORT_MIN_IMAGES = 16  # backend auto: ONNX Runtime from this many files on (its one-off export then pays off)
log = logging.getLogger("stylezoo")


LARGE_INPUT = 2048  # shorter side in px above which stylize notes that --size would resize first


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp32 or bf16. "auto": bf16 where the device has fast bfloat16, else fp32 (see AUTO_PRECISION)."""
    if precision not in PRECISIONS:
        raise UsageError(f"Unknown precision {precision!r}: use one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        if AUTO_PRECISION == "bf16-where-fast":
            return "bf16" if bf16_supported(device) else "fp32"
        return AUTO_PRECISION
    if precision == "bf16":
        if not bf16_supported(device):
            raise UsageError(f"bfloat16 is not supported on {device} here; use --precision fp32.")
    return precision


def device_of(spec: str | torch.device) -> torch.device:
    """The torch device for "auto", "cpu", "cuda:1", ... or a device."""
    return pick_device(spec if isinstance(spec, str) else str(spec))


def onnx_session(module: nn.Module, family: str, device: torch.device, precision: str,
                 auto_precision: bool) -> tuple[Any, str | None]:
    """(an ONNX Runtime session running `module`, None), exported to a temporary file and checked for parity
    first; or (None, why not). Only image generators in fp32 on the CPU qualify."""
    if family != "image" or device.type != "cpu" or (precision != "fp32" and not auto_precision):
        return None, "the onnxruntime backend is for image generators in fp32 on the CPU"
    if getattr(module, "not_exportable", ""):
        return None, f"this generator does not export ({getattr(module, 'not_exportable')})"
    if getattr(module, "export_conditions", ()):
        return None, "style- and label-conditioned generators run on PyTorch here (`stylezoo export` covers them)"
    try:
        import onnxruntime  # noqa: F401  (only whether it is installed)
    except ImportError:
        return None, "onnxruntime is not installed (pip install 'stylezoo[export]')"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gen.onnx"
        try:
            write_onnx(module, path)
            report = check_parity(module, path)
            if not report.passed:
                return None, f"its ONNX export does not match PyTorch ({report.summary()})"
            return ort_session(path), None
        except Exception as e:  # an export failure must not stop stylizing with PyTorch
            return None, f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"


def bf16_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` with bfloat16 weights, for bfloat16 inputs: autocast re-casts every weight and moves
    each normalisation layer's activations through float32 at every call; the copy does neither. Only for
    unconditional generators (conditional ones compute their style statistics and label mixes in float32
    under autocast). docs/benchmarks.md compares the two."""
    return copy.deepcopy(module).to(torch.bfloat16).eval()
