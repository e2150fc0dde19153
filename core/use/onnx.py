"""Writing a generator as ONNX or TorchScript and running the written file (ONNX Runtime, torch.jit).

Conditional generators (their `export_conditions`) take their conditions as further positional inputs.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from ..errors import StylezooError
from ..files.images import open_image, pil_to_tensor

OPSET = 18
SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples" / "content"
STYLE_SAMPLES = SAMPLES.parent / "style"  # reference styles for conditional generators' example inputs
INPUT, OUTPUT = "input", "output"


def conditions(module: nn.Module) -> tuple[tuple[str, str], ...]:
    """A conditional generator's extra inputs as (name, kind): kinds "images", "weights", "scalar", "labels"."""
    return tuple(getattr(module, "export_conditions", ()))


def sample_photos(n: int, hw: tuple[int, int], folder: Path = SAMPLES) -> Tensor:
    """`n` of the bundled sample photos (or of `folder`) as (n, 3, H, W) in [-1, 1]: scaled to cover, centre-cropped."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        raise StylezooError(f"The bundled sample images are missing from {folder}; reinstall stylezoo.")
    h, w = hw
    out = []
    for i in range(n):
        im = open_image(files[i % len(files)])
        s = max(h / im.height, w / im.width)
        im = im.resize((max(w, round(im.width * s)), max(h, round(im.height * s))), Image.Resampling.BICUBIC)
        left, top = (im.width - w) // 2, (im.height - h) // 2
        out.append(pil_to_tensor(im.crop((left, top, left + w, top + h))))
    return torch.stack(out)


def condition_inputs(module: nn.Module, x: Tensor, case: int) -> list[Tensor]:
    """Real values for the extra inputs with the content batch `x`: case 0 one reference style (or one-hot
    labels), case 1 two styles of another size mixed 0.3/0.7 with alpha 0.6 (or a mix of labels)."""
    refs = 1 + case % 2
    out: list[Tensor] = []
    for name, kind in conditions(module):
        if kind == "images":
            out.append(sample_photos(refs, (64, 80) if refs == 1 else (72, 56), STYLE_SAMPLES))
        elif kind == "weights":
            out.append(torch.tensor([1.0] if refs == 1 else [0.3, 0.7]))
        elif kind == "scalar":
            out.append(torch.tensor([1.0 if refs == 1 else 0.6]))
        elif kind == "labels":
            n, num = x.shape[0], int(getattr(module, "num_labels"))
            w = torch.zeros(n, num)
            if case % 2 == 0:  # one-hot rows: one label per image
                w[torch.arange(n), torch.arange(n) % num] = 1.0
            else:  # an equal mix of the first and the last label
                w[:, 0] += 0.5
                w[:, -1] += 0.5
            out.append(w)
        else:
            raise StylezooError(f"{type(module).__name__}: unknown export condition kind {kind!r} for {name!r}.")
    return out


def _condition_dims(module: nn.Module, batch: Any) -> tuple[Any, ...]:
    """torch.export dynamic shapes of the extra inputs (the number and size of styles, the batch of labels)."""
    from torch.export import Dim

    refs = Dim("refs")
    table = {"images": {0: refs, 2: Dim.AUTO, 3: Dim.AUTO}, "weights": {0: refs}, "scalar": None, "labels": {0: batch}}
    return tuple(table[kind] for _, kind in conditions(module))


def _condition_axes(module: nn.Module) -> dict[str, dict[int, str]]:
    """The same as named dynamic axes, for the TorchScript-based ONNX exporter."""
    table = {"images": {0: "refs", 2: "style_height", 3: "style_width"}, "weights": {0: "refs"}, "scalar": {},
             "labels": {0: "batch"}}
    return {name: table[kind] for name, kind in conditions(module)}


class _Conditioned(nn.Module):
    """A conditional generator with positional inputs: forward(x, *conditions) -> module(x, name=value, ...)."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        self.names = tuple(n for n, _ in conditions(module))
        self.family = getattr(module, "family", "image")

    def forward(self, x: Tensor, *conds: Tensor) -> Tensor:
        return self.module(x, **dict(zip(self.names, conds)))


def _positional(module: nn.Module) -> nn.Module:
    """The module as exported and compared: wrapped when it takes conditions."""
    return _Conditioned(module) if conditions(module) and not isinstance(module, _Conditioned) else module


def _args(x: Any) -> tuple[Tensor, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


# ----------------------------------------------------------------------------------------------- writers
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence tracer/deprecation chatter (the parity check is what tells whether the export is right)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        yield


def _example(module: nn.Module) -> Tensor:
    """A batch of 2 (batch sizes 0 and 1 get specialised by the exporters)."""
    if getattr(module, "family", "image") == "noise":
        return torch.randn(2, int(getattr(module, "latent_dim")))
    m = int(getattr(module, "size_multiple", 1))
    side = max(m, math.ceil(64 / m) * m)
    return torch.rand(2, 3, side, side) * 2 - 1


class _AllTensors(nn.Module):
    """A generator as the TorchScript-based ONNX exporter should see it: every parameter and buffer.

    That exporter names the weights from `state_dict()`; buffers left out of it (non-persistent ones, or a
    frozen pretrained encoder a state-dict hook drops from checkpoints) would become extra graph inputs.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: Tensor, *conds: Tensor) -> Tensor:
        return self.module(x, *conds)

    def state_dict(self, *args: Any, destination: Any = None, prefix: str = "",  # type: ignore[override]
                   keep_vars: bool = False) -> Any:
        out: Any = OrderedDict() if destination is None else destination
        for name, t in chain(self.module.named_parameters(), self.module.named_buffers()):
            out[f"{prefix}module.{name}"] = t if keep_vars else t.detach()
        return out


def write_onnx(module: nn.Module, path: Path, opset: int = OPSET) -> str:
    """Export to ONNX with dynamic batch (and H, W for image generators); returns which exporter worked.

    The dynamo-based exporter first; a model that torch.export cannot capture (a branch on a buffer's
    value, for example) falls back to the TorchScript-based exporter, which traces the branch taken with
    the checkpoint's values. Either way the parity check is what decides whether the file is kept.
    """
    from torch.export import Dim

    x = _example(module)
    dims: dict[int, Any] = {0: Dim("batch")}
    if x.dim() == 4:
        dims |= {2: Dim.AUTO, 3: Dim.AUTO}
    args: tuple[Any, ...] = (x,)
    shapes: tuple[Any, ...] = (dims,)
    extra = conditions(module)
    if extra:  # conditions follow the content image: (x, (c1, c2, ...)) is how torch.export sees *conds
        args = (x, *condition_inputs(module, x, 1))
        shapes = (dims, _condition_dims(module, dims[0]))
        module = _positional(module)
    names = [INPUT, *(n for n, _ in extra)]
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(module, args, None, dynamo=True, opset_version=opset, input_names=names,
                                        output_names=[OUTPUT], dynamic_shapes=shapes, verbose=False,
                                        external_data=False)
            if program is None:  # pragma: no cover - only with dynamo=False
                raise RuntimeError("torch.onnx.export returned no program")
            program.save(str(path), external_data=False)
        return f"torch.onnx.export(dynamo=True, opset_version={opset})"
    except Exception as first:  # noqa: BLE001 - retried below, re-raised if that fails too
        axes = {0: "batch", 2: "height", 3: "width"} if x.dim() == 4 else {0: "batch"}
        cond_axes = _condition_axes(getattr(module, "module", module)) if extra else {}
        try:
            with _quiet(), torch.no_grad():
                torch.onnx.export(_AllTensors(module), args, str(path), dynamo=False, opset_version=opset,
                                  input_names=names, output_names=[OUTPUT],
                                  dynamic_axes={INPUT: axes, OUTPUT: axes, **cond_axes})
        except Exception:
            raise first from None
        why = str(first).splitlines()[0] if str(first) else type(first).__name__
        return f"torch.onnx.export(dynamo=False, opset_version={opset}); the dynamo exporter failed: {why[:200]}"


def write_torchscript(module: nn.Module, path: Path) -> None:
    """Trace the generator (batch, height and width stay symbolic) and save the TorchScript archive."""
    x = _example(module)
    args = (x, *condition_inputs(module, x, 1)) if conditions(module) else (x,)
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(_positional(module), args, check_trace=False)
        torch.jit.save(traced, str(path))


# ----------------------------------------------------------------------------------------------- runners
def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session whose threads sleep between runs instead of spinning.

    onnxruntime's workers busy-wait after each run by default. In a process that also runs PyTorch they take the
    cores from the next torch call; sleeping instead costs onnxruntime nothing measurable (docs/benchmarks.md).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _runner(path: Path, fmt: str) -> Any:
    """A function (N, ...) float32 tensor, or a tuple (input, *conditions) -> numpy array, running the exported file."""
    if fmt == "onnx":
        sess = ort_session(path)
        names = [i.name for i in sess.get_inputs()]
        return lambda x: sess.run(None, {n: t.numpy() for n, t in zip(names, _args(x))})[0]
    with _quiet():
        model = torch.jit.load(str(path), map_location="cpu")  # our own file, just written
    model.eval()

    def run(x: Any) -> np.ndarray:
        with torch.inference_mode():
            return model(*_args(x)).numpy()

    return run
