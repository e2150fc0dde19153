"""Checks and conversions of what users hand a Stylizer: tensors, sizes, style references and label mixes."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from ..errors import UsageError
from ..files.images import _to_rgb, open_image, pil_to_tensor, resize_short

TILE_ABOVE = 2048 * 2048  # pixels: larger images are stylized in overlapping tiles, in bounded memory
TILE, OVERLAP = 1024, 128  # a tile's side, and how far neighbouring tiles overlap (blended linearly there)


def tiled(run: Callable[[Tensor], Tensor], x: Tensor, tile: int = TILE, multiple: int = 1) -> Tensor:
    """`run` (an image-to-image function) over (N, 3, H, W) in overlapping tiles of about `tile` px, blended with
    linear ramps where they overlap, so that seams do not show; the result is on the CPU. Memory grows with the
    tile, not the photo. Normalisation inside a generator sees one tile at a time, so tiles of a photo with very
    different regions may differ slightly in tone; the overlap blends them."""
    n, _, h, w = x.shape
    tile = max(multiple, tile // multiple * multiple)
    overlap = min(OVERLAP, tile // 4)
    out = torch.zeros(n, 3, h, w)
    weight = torch.zeros(1, 1, h, w)

    def starts(length: int) -> list[int]:
        if length <= tile:
            return [0]
        return sorted({*range(0, length - tile, tile - overlap), length - tile})

    def ramp(length: int, first: bool, last: bool) -> Tensor:
        i = torch.arange(length, dtype=torch.float32) + 0.5
        r = torch.ones(length)
        if not first:
            r = torch.minimum(r, i / overlap)
        if not last:
            r = torch.minimum(r, (length - i) / overlap)
        return r

    ys, xs = starts(h), starts(w)
    for y0 in ys:
        for x0 in xs:
            part = x[..., y0:y0 + tile, x0:x0 + tile]
            th, tw = part.shape[-2:]
            wgt = ramp(th, y0 == ys[0], y0 == ys[-1])[:, None] * ramp(tw, x0 == xs[0], x0 == xs[-1])[None, :]
            out[..., y0:y0 + th, x0:x0 + tw] += run(part).float().cpu() * wgt
            weight[..., y0:y0 + th, x0:x0 + tw] += wgt
    return out / weight


def pad_to_multiple(x: Tensor, multiple: int, min_side: int = 1) -> tuple[Tensor, tuple[int, int]]:
    """Pad (N, C, H, W) so both sides are multiples of `multiple` and at least `min_side`, centred.

    Reflection padding where the image is larger than the pad, edge replication otherwise (tiny images).
    Returns the padded tensor and the (top, left) offset of the original inside it.
    """
    h, w = x.shape[-2:]
    th = max(math.ceil(h / multiple) * multiple, math.ceil(min_side / multiple) * multiple)
    tw = max(math.ceil(w / multiple) * multiple, math.ceil(min_side / multiple) * multiple)
    top, left = (th - h) // 2, (tw - w) // 2
    pads = (left, tw - w - left, top, th - h - top)
    if not any(pads):
        return x, (0, 0)
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    return F.pad(x, pads, mode=mode), (top, left)


def _check_range(x: Tensor) -> None:
    """Refuse tensors that are not images in [-1, 1]: 0-255 or 0-1 pixels, integers, NaN (a wrong picture else)."""
    if not x.is_floating_point():
        raise UsageError(f"Expected a float tensor in [-1, 1], got {x.dtype}: for 0-255 pixels give "
                         "x.float() / 127.5 - 1 (or a PIL image or a path).")
    if not bool(torch.isfinite(x).all()):
        raise UsageError("The input tensor holds NaN or Inf values.")
    lo, hi = float(x.min()), float(x.max())
    if lo < -1.05 or hi > 1.05:
        how = " (0-255 pixels? give x / 127.5 - 1)" if hi > 2 and lo >= 0 else ""
        raise UsageError(f"Expected a tensor in [-1, 1], got values in [{lo:.3g}, {hi:.3g}]{how}; images in [0, 1] "
                         "go in as x * 2 - 1.")


def _mix_weights(weights: Sequence[float] | None, n: int, what: str) -> list[float]:
    """`n` mixing weights (default equal), checked: >= 0 with a positive sum; normalised to sum 1."""
    ws = [1.0] * n if weights is None else [float(w) for w in weights]
    if len(ws) != n:
        raise UsageError(f"{len(ws)} weight(s) for {n} {what}(s): give one weight per {what}.")
    if any(not math.isfinite(w) or w < 0 for w in ws) or not sum(ws) > 0:
        raise UsageError(f"{what} weights must be >= 0 with a positive sum, got {ws}.")
    return [w / sum(ws) for w in ws]


def _label_pairs(spec: str | int | Mapping[str, float] | Sequence[str]) -> list[tuple[str, float]]:
    """(name, weight) pairs from a label spec: a name, an index (as its string), {name: w}, or ["a:0.5", "b"]."""
    if isinstance(spec, Mapping):
        return [(str(k), float(v)) for k, v in spec.items()]
    items = [spec] if isinstance(spec, (str, int)) else list(spec)
    out = []
    for it in items:
        name, colon, w = str(it).rpartition(":")
        if colon:
            try:
                out.append((name, float(w)))
                continue
            except ValueError:
                pass
        out.append((str(it), 1.0))
    return out


def _check_size(size: int | None, what: str) -> None:
    """Refuse a resize target that is not a positive whole number of pixels (None: no resizing)."""
    if size is None:
        return
    try:
        ok = not isinstance(size, bool) and operator.index(size) >= 1  # numpy integers too, not 2.5 or "512"
    except TypeError:
        ok = False
    if not ok:
        raise UsageError(f"{what} must be a whole number of pixels >= 1 (or None to keep the size), got {size!r}.")


def _style_tensor(ref: str | Path | Image.Image | Tensor, size: int | None) -> Tensor:
    """A style reference as (3, H, W) in [-1, 1], its shorter side reduced to `size` (never enlarged)."""
    if isinstance(ref, Tensor):
        x = ref[0] if ref.dim() == 4 and ref.shape[0] == 1 else ref
        if x.dim() != 3 or x.shape[0] != 3:
            raise UsageError(f"A style tensor must be (3, H, W) in [-1, 1], got {tuple(ref.shape)}.")
        return _resize_tensor(x, size) if size is not None and min(x.shape[-2:]) > size else x.float()
    if isinstance(ref, (str, Path)):
        im = open_image(ref)
    elif isinstance(ref, Image.Image):
        im = _to_rgb(ref, keep_alpha=False)
    else:
        raise UsageError(f"Cannot use a {type(ref).__name__} as a style image: give a path, a PIL image or a tensor.")
    if size is not None and min(im.size) > size:
        im = resize_short(im, size)
    return pil_to_tensor(im)


def _resize_tensor(x: Tensor, size: int) -> Tensor:
    h, w = x.shape[-2:]
    s = size / min(h, w)
    xb = x[None] if x.dim() == 3 else x
    y = F.interpolate(xb.float(), size=(max(size, round(h * s)), max(size, round(w * s))), mode="bicubic",
                      antialias=True, align_corners=False).clamp(-1, 1)
    return y[0] if x.dim() == 3 else y


def at_least(run: Callable[[Tensor], Tensor], x: Tensor, short: int) -> Tensor:
    """`run` on (N, 3, H, W) `x` whose shorter side is under `short`: brought up to `short` first and the output
    resized back to x's size, so a generator trained on `short` px images restyles a small photo at the scale it
    learned (its strokes and receptive field fit that size). Larger inputs run as they are."""
    h, w = x.shape[-2:]
    if min(h, w) >= short:
        return run(x)
    y = run(_resize_tensor(x, short)).float()
    return F.interpolate(y, size=(h, w), mode="bicubic", antialias=True, align_corners=False).clamp(-1, 1)

