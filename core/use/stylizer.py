"""Use a trained generator: load it from a checkpoint or run directory with no flags (the composition and its
configs come from the checkpoint's metadata) and apply it to images, paths, tensors or whole folders.

`Stylizer` is the Python face of `stylezoo stylize`; the CLI is a thin layer over `Stylizer.stylize_files`
and `Stylizer.write_samples`, so both give identical pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from PIL import Image
from torch import Tensor, nn

from ..components.registry import Registry
from ..errors import DataError, UsageError
from ..files.checkpoint import atomic_write
from ..files.images import (
    InputImage,
    _to_rgb,
    encode,
    image_format,
    input_image,
    open_image,
    read_item,
    restore_mode,
    tensor_to_pil,
)
from ..runtime import cpu_memory
from .backends import (
    AUTO_ORT_MIN_IMAGES,
    AUTO_PRECISION,
    BACKENDS,
    LARGE_INPUT,
    PRECISIONS,
    bf16_copy,
    device_of,
    onnx_session,
    resolve_precision,
)
from .inputs import (
    TILE,
    TILE_ABOVE,
    _check_range,
    _check_size,
    _label_pairs,
    _mix_weights,
    _resize_tensor,
    _style_tensor,
    at_least,
    pad_to_multiple,
    tiled,
)
from .loading import LoadedGenerator, checkpoint_path, load_generator
from .outputs import StylizeReport, checked_output, plan_outputs, sample_paths

log = logging.getLogger("stylezoo")


class Stylizer:
    """A trained generator ready to apply: `Stylizer.load("runs/x")("photo.jpg").save("out.png")`.

    Image generators take a PIL image, a path or a tensor ((3, H, W) or (N, 3, H, W) in [-1, 1]) of any size
    (padded to the generator's multiple and cropped back) and return the same kind; an image whose shorter side
    is under the training size (`train_size`, from the checkpoint) is stylized at that size and resized back,
    unless a `size` is given. Noise generators `sample(n, seed)`. Paths get their EXIF orientation applied; PIL
    images are used as they are.

    precision: "fp32", "bf16" (autocast) or "auto" (bf16 where the device has fast bfloat16, faster there and
    a few 8-bit levels off fp32; else fp32). backend: "torch", "onnxruntime" (exported and parity-checked at
    load) or "auto" (PyTorch, switching to ONNX Runtime for batches of AUTO_ORT_MIN_IMAGES files or more).
    keep_freed_memory: on the CPU, have glibc's malloc keep freed memory for reuse (process-wide,
    core/runtime/cpu_memory.py), so calls do not page-fault their tensors back in (docs/benchmarks.md).
    """

    def __init__(self, loaded: LoadedGenerator, *, device: str | torch.device = "cpu", precision: str = "auto",
                 backend: str = "auto", keep_freed_memory: bool = True) -> None:
        if backend not in BACKENDS:
            raise UsageError(f"Unknown backend {backend!r}: use one of {', '.join(BACKENDS)}.")
        self.loaded = loaded
        self.device = device_of(device)
        if keep_freed_memory and self.device.type == "cpu":
            cpu_memory.keep_freed_memory()
        self.precision = resolve_precision(precision, self.device)
        self._auto_precision = precision == "auto"  # ONNX Runtime (fp32) may take over from auto's bf16
        self.module = loaded.module.to(self.device).eval()
        self.name, self.family = loaded.name, loaded.family
        conditional = getattr(self.module, "needs_style", False) or hasattr(self.module, "num_labels")
        if self.precision == "bf16" and self.device.type == "cpu" and conditional:  # (others: a bf16 copy, below)
            # under autocast, oneDNN's bf16 convolutions skip their layout reorders on channels_last weights: gen/wct
            # ran 2.5x faster at 512 px, gen/cin the same (docs/any-style.md). Set once, here, so style statistics
            # and outputs always come from one layout
            self.module.to(memory_format=torch.channels_last)
        self.size_multiple = int(getattr(self.module, "size_multiple", 1))
        self.latent_dim = getattr(self.module, "latent_dim", None)
        self.requested_backend, self.backend = backend, "torch"
        self._session: Any = None
        self._cond: dict[str, Any] = {}  # style statistics / label weights for conditional generators
        self._bf16: nn.Module | None = None  # a bfloat16 copy of the module (see _bf16_module)
        self.tile_above, self.tile = TILE_ABOVE, TILE  # images over tile_above pixels run in tiles of this side
        size = loaded.meta.get("run", {}).get("train", {}).get("size") if self.family == "image" else None
        self.train_size: int | None = size if isinstance(size, int) and size > 0 else None  # smaller ones go up to it
        self.model: str | None = None  # the shipped model's name (core/use/shipped.py's load_model)
        self.requires_style = False  # a shipped any-style model: refuse to run before set_style
        if backend == "onnxruntime":
            self.use_onnxruntime(required=True)

    @classmethod
    def load(cls, checkpoint: str | Path, device: str | torch.device = "auto", precision: str = "auto", *,
             backend: str = "auto", registry: Registry | None = None, ema: bool = True,
             keep_freed_memory: bool = True) -> Stylizer:
        """Load a checkpoint file or a run directory's newest checkpoint; no other settings needed.

        `ema`: use the generator's weight average when the run kept one (train.ema), else the raw weights.
        `keep_freed_memory`: as in the constructor."""
        return cls(load_generator(checkpoint, device="cpu", registry=registry, ema=ema), device=device,
                   precision=precision, backend=backend, keep_freed_memory=keep_freed_memory)

    def use_onnxruntime(self, *, required: bool = True) -> bool:
        """Run through ONNX Runtime from now on: export to ONNX (a temporary file) and check parity first.

        Only for image generators in fp32 on the CPU. When not possible (or the parity check fails): raises
        UsageError if `required`, else logs why and keeps PyTorch. Returns whether ONNX Runtime is in use.
        """
        session, why = onnx_session(self.module, self.family, self.device, self.precision, self._auto_precision)
        if session is not None:
            self._session = session
        if why is not None:
            if required:
                raise UsageError(f"Cannot use --backend onnxruntime for {self.name}: {why}. Use --backend torch.")
            log.info("stylize runs on PyTorch: %s", why)
            return False
        self.backend, self.precision = "onnxruntime", "fp32"
        return True

    def _run(self, x: Tensor) -> Tensor:
        if self._session is not None:
            name = self._session.get_inputs()[0].name
            return torch.from_numpy(self._session.run(None, {name: x.detach().float().cpu().numpy()})[0])
        x = x.to(self.device, torch.float32)
        bf16 = self.precision == "bf16"
        low = self._bf16_module() if bf16 else None
        with torch.inference_mode():
            if low is not None:
                y = low(x.to(torch.bfloat16)).float()
            else:
                with torch.autocast(self.device.type, torch.bfloat16, enabled=bf16):
                    y = self.module(x, **self._cond).float()
        return y.clone()  # a normal tensor, usable outside inference mode

    def _bf16_module(self) -> nn.Module | None:
        """bf16 for unconditional generators: a copy with bfloat16 weights (`backends.bf16_copy`)."""
        if self.family not in ("image", "noise") or self.takes_style or hasattr(self.module, "num_labels"):
            return None
        if self._bf16 is None:
            self._bf16 = bf16_copy(self.module)
        return self._bf16

    # -- conditions: reference styles (gen/adain) and style labels (gen/cin) ------------------------------------
    @property
    def takes_style(self) -> bool:
        """Whether the generator is reference-guided (takes style images: `set_style`)."""
        return bool(getattr(self.module, "needs_style", False))

    @property
    def labels(self) -> tuple[str, ...]:
        """The style labels of a label-conditioned generator (`set_labels`); empty for others."""
        return tuple(getattr(self.module, "labels", ())) if hasattr(self.module, "num_labels") else ()

    def set_style(self, refs: Sequence[str | Path | Image.Image | Tensor] | str | Path | Image.Image | Tensor,
                  weights: Sequence[float] | None = None, *, alpha: float = 1.0, size: int | None = 512) -> Stylizer:
        """Reference style image(s) for a reference-guided generator; returns self.

        `refs`: paths, PIL images or (3, H, W) tensors in [-1, 1]; several are interpolated with `weights`
        (>= 0, normalised to sum 1; default equal). `alpha`: 0 keeps the content, 1 is the full style.
        `size`: the style images' shorter side is reduced to this first (None: as they are).
        """
        _check_size(size, "The style size (--style-size, size=)")
        if not self.takes_style:
            raise UsageError(f"{self.name} does not take a style image; only reference-guided generators "
                             "(gen/adain) do." + (f" It knows the labels {', '.join(self.labels)}: use a style label."
                                                  if self.labels else ""))
        items = list(refs) if isinstance(refs, (list, tuple)) else [cast("str | Path | Image.Image | Tensor", refs)]
        if not items:
            raise UsageError("Give at least one style image.")
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"--alpha must be between 0 and 1, got {alpha}.")
        ws = _mix_weights(weights, len(items), "style image")
        styles = [_style_tensor(r, size).to(self.device) for r in items]
        with torch.inference_mode():
            stats = cast(Any, self.module).style_stats(styles, ws)  # reference-guided generators only
        self._cond = {"style_stats": stats, "alpha": float(alpha)}
        return self

    def set_labels(self, spec: str | int | Mapping[str, float] | Sequence[str]) -> Stylizer:
        """Style label(s) for a label-conditioned generator; returns self.

        A name (or index), {name: weight} to mix styles, or CLI-style strings ["a:0.5", "b:0.5"] (a bare name
        weighs 1). Weights are >= 0 and normalised to sum 1. An unknown name is a UsageError listing the labels.
        """
        labels = self.labels
        if not labels:
            raise UsageError(f"{self.name} has no style labels; only label-conditioned generators (gen/cin) do."
                             + (" Give it a style image instead." if self.takes_style else ""))
        pairs = _label_pairs(spec)
        if not pairs:
            raise UsageError("Give at least one style label.")
        w = torch.zeros(len(labels))
        for name, weight in pairs:
            idx = labels.index(name) if name in labels else None
            if idx is None:
                head, colon, tail = name.rpartition(":")
                if colon and (head in labels or head.isdigit()):
                    raise UsageError(f"--style-label {name!r}: the weight after ':' must be a number, got {tail!r} "
                                     f"(e.g. {head}:0.5).")
                raise UsageError(f"Unknown style label {name!r}: {self.name} knows {', '.join(labels)}.")
            w[idx] += weight
        self._cond = {"label_weights": torch.tensor(_mix_weights(w.tolist(), len(labels), "label"))}
        return self

    def clear_condition(self) -> Stylizer:
        """Forget the style or labels set before (then `condition_note` says what the generator uses); returns self."""
        self._cond = {}
        return self

    @property
    def label_weights(self) -> Tensor | None:
        """The label mix (L,) `set_labels` chose, summing to 1; None before one was set."""
        w = self._cond.get("label_weights")
        return None if w is None else cast(Tensor, w).clone()

    def condition_note(self) -> str | None:
        """What a conditional generator uses when no style or label was set (None when one was, or none is needed)."""
        if self._cond:
            return None
        if self.takes_style:
            own = getattr(self.module, "has_default_style", lambda: False)()
            return ("no --style given: using the mean style of the training style images" if own else
                    "no --style given and the checkpoint has no default style: the output only reconstructs the input")
        if self.labels:
            return f"no --style-label given: mixing all {len(self.labels)} styles equally ({', '.join(self.labels)})"
        return None

    def forward(self, x: Tensor, *, upscale: bool = True) -> Tensor:
        """Restyle (N, 3, H, W) or (3, H, W) images in [-1, 1] of any size; same shape out, on x's device.
        `upscale`: a shorter side under `train_size` is stylized at that size and resized back (`small`)."""
        if self.family == "noise":
            raise UsageError(f"{self.name} makes images from noise; use sample(n, seed) (or stylize --num N).")
        squeeze = x.dim() == 3
        xb = x[None] if squeeze else x
        if xb.dim() != 4 or xb.shape[1] != 3:
            raise UsageError(f"Expected an RGB tensor (3, H, W) or (N, 3, H, W) in [-1, 1], got {tuple(x.shape)}.")
        _check_range(xb)
        if self.requires_style and "style_stats" not in self._cond:
            raise UsageError(f"The model {self.model or self.name!r} restyles in any style and needs a style image: "
                             "--style REF.jpg (Python: set_style('REF.jpg')).")
        if upscale and self.small(xb):
            y = at_least(self._whole, xb.float(), cast(int, self.train_size)).to(x.device)
        elif xb.shape[-2] * xb.shape[-1] > self.tile_above:  # a print-sized photo: bounded memory, in tiles
            y = tiled(self._whole, xb.float(), self.tile, self.size_multiple).to(x.device)
        else:
            y = self._whole(xb).to(x.device)
        return y[0] if squeeze else y

    def small(self, x: Tensor) -> bool:
        """Whether `x`'s shorter side is under the size the generator was trained at (then `forward` brings it up)."""
        return self.train_size is not None and min(x.shape[-2:]) < self.train_size

    def _whole(self, xb: Tensor) -> Tensor:
        """The generator on (N, 3, H, W) at once: padded to its multiple, cropped back."""
        h, w = xb.shape[-2:]
        xp, (top, left) = pad_to_multiple(xb.float(), self.size_multiple, max(2 * self.size_multiple, 16))
        return self._checked(self._run(xp), xp.shape)[..., top:top + h, left:left + w].contiguous()

    def _checked(self, y: Tensor, shape: tuple[int, ...] | torch.Size) -> Tensor:
        """`y`, the generator's output for an input of `shape`, if it can be an image; else a clear error."""
        return checked_output(y, shape, self.name, self.precision)

    def __call__(self, image: Image.Image | Tensor | str | Path, size: int | None = None, *,
                 keep_mode: bool = False) -> Any:
        """Restyle one image; `size` resizes the shorter side first (else one under `train_size` is stylized at that
        size and resized back, with a logged note). PIL or path in: PIL out; tensor in: tensor out.

        A PIL image comes back RGB (RGBA when the input has alpha); `keep_mode` gives the input's own mode
        (grey in, grey out; see stylezoo.core.files.images.output_mode).
        """
        _check_size(size, "size")
        if isinstance(image, Tensor):
            x = _resize_tensor(image, size) if size is not None else image
        elif isinstance(image, (str, Path)):
            item = read_item(image, size, keep_mode)
            x = item.rgb
        elif isinstance(image, Image.Image):
            item = input_image(_to_rgb(image, keep_alpha=True), image.mode, size, keep_mode)
            x = item.rgb
        else:
            raise UsageError(f"Cannot stylize a {type(image).__name__}: give a PIL image, a tensor or a path.")
        if size is None and self.small(x):
            log.info("%s", self.small_note(1))
        y = self.forward(x, upscale=size is None)
        return y if isinstance(image, Tensor) else restore_mode(y, item)

    def small_note(self, n: int) -> str:
        """The note for `n` inputs stylized at the training size (`small`)."""
        return (f"{n} input(s) had a shorter side under the {self.train_size} px {self.name} was trained at: "
                f"stylized at {self.train_size} px and resized back; --size N (Python: size=N) stylizes at N instead.")

    def sample_tensor(self, n: int, seed: int = 0, batch: int = 16) -> Tensor:
        """`n` images (n, 3, size, size) in [-1, 1] from seeded noise; the same seed gives the same images."""
        if self.family != "noise" or self.latent_dim is None:
            raise UsageError(f"{self.name} restyles images; call it on an image instead of sample().")
        if n < 1 or batch < 1:
            raise UsageError(f"The number of samples and the batch must be >= 1 (got {n}, {batch}).")
        z = torch.randn(n, int(self.latent_dim), generator=torch.Generator().manual_seed(seed))
        gsize = getattr(self.module, "size", None)  # noise generators make images of their config's size
        size = (int(gsize),) * 2 if isinstance(gsize, int) else ()
        return torch.cat([self._checked(self._run(z[i:i + batch]), (len(z[i:i + batch]), 3, *size)).cpu()
                          for i in range(0, n, batch)])

    def sample(self, n: int, seed: int = 0, batch: int = 16) -> list[Image.Image]:
        """`n` PIL images from seeded noise."""
        return [tensor_to_pil(t) for t in self.sample_tensor(n, seed, batch)]

    # -- many files ------------------------------------------------------------------------------------------
    def stylize_files(self, inputs: Sequence[str | Path], out: str | Path, *, size: int | None = None,
                      batch: int = 1, ext: str | None = None, strict: bool = False, keep_mode: bool = False,
                      overwrite: bool = False, progress: Callable[[Path, bool], None] | None = None,
                      on_skip: Callable[[str, str], None] | None = None) -> StylizeReport:
        """Restyle image files, folders (recursively) and globs into `out` (a folder, or a file for one input).

        Same-size images run in batches of `batch`. With backend "auto" and at least AUTO_ORT_MIN_IMAGES files,
        the generator runs through ONNX Runtime (faster on the CPU for many files; docs/benchmarks.md). Unreadable
        inputs are skipped and reported (`on_skip`, default a logged warning), or refused before anything is
        written with `strict`. Outputs are RGB (RGBA with alpha) unless `keep_mode` asks for each input's own mode.
        Raises DataError when nothing could be written.
        """
        if batch < 1:
            raise UsageError(f"--batch must be >= 1, got {batch}.")
        _check_size(size, "--size")
        pairs, report = plan_outputs(inputs, out, ext, overwrite=overwrite)
        if (self.requested_backend == "auto" and self._session is None and len(pairs) >= AUTO_ORT_MIN_IMAGES
                and self.device.type == "cpu" and self.precision == "fp32"):
            self.use_onnxruntime(required=False)
        skip = on_skip or (lambda p, why: log.warning("skipped %s", why))
        if strict:
            for src, _ in pairs:  # refuse before writing anything
                try:
                    open_image(src)
                except DataError as e:
                    report.skipped.append((str(src), str(e)))
            if report.skipped:
                raise DataError(f"{report.skipped[0][1]} (refused because of --strict; {len(report.skipped)} bad "
                                "input(s); remove them or drop --strict).")
        for p, why in report.skipped:
            skip(p, why)
        pending: dict[tuple[int, int], list[tuple[InputImage, Path, Path]]] = {}
        big = small = 0  # inputs over LARGE_INPUT px, and under the training size: a note each says what --size does

        def flush(key: tuple[int, int]) -> None:
            group = pending.pop(key)
            ys = self.forward(torch.stack([it.rgb for it, _, _ in group]), upscale=size is None)
            for y, (it, src, dst) in zip(ys, group):
                data, note = encode(restore_mode(y, it), image_format(dst))
                atomic_write(dst, lambda p, d=data: p.write_bytes(d))
                report.written.append(dst)
                if note:
                    report.notes.append(f"{dst}: {note}")
                if progress:
                    progress(src, True)

        for src, dst in pairs:
            try:
                it = read_item(src, size, keep_mode)
            except DataError as e:
                report.skipped.append((str(src), str(e)))
                skip(str(src), str(e))
                if progress:
                    progress(src, False)
                continue
            key = (int(it.rgb.shape[1]), int(it.rgb.shape[2]))
            big += size is None and min(key) > LARGE_INPUT
            small += size is None and self.small(it.rgb)
            pending.setdefault(key, []).append((it, src, dst))
            if len(pending[key]) >= batch:
                flush(key)
            elif sum(map(len, pending.values())) >= 4 * batch:  # bound memory: run the oldest group
                flush(next(iter(pending)))
        for key in list(pending):
            flush(key)
        if big:
            report.notes.append(f"{big} input(s) had a shorter side over {LARGE_INPUT} px and were stylized at full "
                                "resolution in overlapping tiles, which takes time; --size 1024 (Python: size=1024) "
                                "resizes them first.")
        if small:
            report.notes.append(self.small_note(small))
        if not report.written:
            why = "; ".join(w.rstrip(".") for _, w in report.skipped[:3])
            raise DataError(f"Nothing was written: none of the inputs could be stylized ({why}).")
        return report

    def write_samples(self, out: str | Path, num: int, *, seed: int = 0, ext: str = "png", batch: int = 16,
                      progress: Callable[[Path, bool], None] | None = None) -> list[Path]:
        """Write `num` samples: into the folder `out` as sample-0000.png..., or to the file `out` (numbered if
        num > 1)."""
        paths = sample_paths(out, num, ext)
        for img, dst in zip(self.sample(num, seed, batch), paths):
            data, _ = encode(img, image_format(dst))
            atomic_write(dst, lambda p, d=data: p.write_bytes(d))
            if progress:
                progress(dst, True)
        return paths


__all__ = ["Stylizer", "LoadedGenerator", "load_generator", "checkpoint_path", "resolve_precision", "pad_to_multiple",
           "PRECISIONS", "AUTO_PRECISION", "BACKENDS", "AUTO_ORT_MIN_IMAGES", "StylizeReport", "plan_outputs"]
