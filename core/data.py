"""Training data: images decoded and resized once, kept in memory, cropped and flipped per draw.

Batches are a pure function of (seed, stream, step): the same run resumed at step s draws exactly the
batches the uninterrupted run drew, and each distributed rank takes its own slice of the global batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import DataError
from .images import BadImage, center_crop, find_images, open_image, resize_short

log = logging.getLogger("stylezoo")


def _seed(*parts: int) -> int:
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) & 0xFFFFFFFFFFFF)) * 0x100000001B3 & 0xFFFFFFFFFFFFFFFF
    return h & 0x7FFFFFFFFFFFFFFF


def load_images(files: Sequence[Path], short: int, *, strict: bool = False, what: str = "data",
                warn: bool = True) -> tuple[list[Tensor], list[Path], list[str]]:
    """Decode and resize images; bad files are skipped with one warning naming them (or refused if strict)."""
    good: list[Tensor] = []
    kept: list[Path] = []
    bad: list[str] = []
    for f in files:
        try:
            im = resize_short(open_image(f), short)
        except BadImage as e:
            if strict:
                raise DataError(f"{e} (refused because of --strict; remove the file or drop --strict).") from None
            bad.append(str(e))
            continue
        good.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous())
        kept.append(f)
    if bad and warn:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        log.warning("skipped %d unreadable file(s) in the %s images: %s", len(bad), what, shown)
    return good, kept, bad


class ImageSet:
    """A set of images for one stream of a run (content, real/style domain, ...)."""

    def __init__(self, spec: str | Path | Sequence[Path], size: int, *, what: str = "data", strict: bool = False,
                 stream: int = 0, short: int | None = None) -> None:
        files = list(spec) if isinstance(spec, (list, tuple)) else find_images(spec)
        if not files:
            raise DataError(f"No images found for the {what} ({spec}). Point it at a folder of .jpg/.png files.")
        if short is None:
            # few images (a painting or two): draw varied crops from a larger copy; else a small jitter
            short = size * 2 if len(files) < 8 else round(size * 1.125)
        self.size, self.stream, self.what = size, stream, what
        self.images, self.files, self.skipped = load_images(files, short, strict=strict, what=what)
        if not self.images:
            raise DataError(f"None of the {len(files)} {what} image(s) could be read ({spec}); see the warnings above.")

    def __len__(self) -> int:
        return len(self.images)

    def indices(self, step: int, batch: int, seed: int) -> list[int]:
        """Indices for a step: consecutive positions in per-epoch permutations (no image twice per epoch)."""
        n = len(self.images)
        out = []
        perms: dict[int, Tensor] = {}
        for pos in range(step * batch, step * batch + batch):
            epoch, j = divmod(pos, n)
            if epoch not in perms:
                g = torch.Generator().manual_seed(_seed(seed, self.stream, epoch))
                perms[epoch] = torch.randperm(n, generator=g)
            out.append(int(perms[epoch][j]))
        return out

    def batch(self, step: int, batch: int, seed: int, *, rank: int = 0, world: int = 1) -> Tensor:
        """(batch // world, 3, size, size) in [-1, 1]: this rank's slice of the global batch for `step`."""
        idx = self.indices(step, batch, seed)
        per = batch // world
        out = []
        for k in range(rank * per, rank * per + per):
            g = torch.Generator().manual_seed(_seed(seed, self.stream, step, k))
            out.append(random_crop_flip([self.images[idx[k]]], self.size, g)[0])
        return torch.stack(out).float().div_(127.5).sub_(1.0)

    def fixed(self, n: int) -> Tensor:
        """The first n images, centre-cropped: a fixed batch for sample grids."""
        n = min(n, len(self.images))
        ims = [_center(self.images[i], self.size) for i in range(n)]
        return torch.stack(ims).float().div_(127.5).sub_(1.0)


def _center(img: Tensor, size: int) -> Tensor:
    _, h, w = img.shape
    top, left = (h - size) // 2, (w - size) // 2
    return img[:, top:top + size, left:left + size]


def random_crop_flip(imgs: Sequence[Tensor], size: int, g: torch.Generator) -> list[Tensor]:
    """The same random crop and horizontal flip applied to every image in `imgs` (uint8 (3, H, W))."""
    _, h, w = imgs[0].shape
    top = int(torch.randint(0, h - size + 1, (1,), generator=g))
    left = int(torch.randint(0, w - size + 1, (1,), generator=g))
    flip = bool(torch.rand((), generator=g) < 0.5)
    out = []
    for im in imgs:
        c = im[:, top:top + size, left:left + size]
        out.append(c.flip(-1) if flip else c)
    return out


__all__ = ["ImageSet", "load_images", "random_crop_flip", "center_crop", "find_images"]
