"""Training data: images decoded and resized once, kept in memory, cropped and flipped per draw.

Batches are a pure function of (seed, stream, step): the same run resumed at step s draws exactly the
batches the uninterrupted run drew, and each distributed rank takes its own slice of the global batch.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
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
            im = resize_short(open_image(f, short=short), short, name=f)
        except BadImage as e:
            if strict:
                raise DataError(f"{e} (refused because of --strict; remove the file or drop --strict).") from None
            bad.append(str(e))
            continue
        good.append(torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous())
        kept.append(f)
    if bad and warn:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        log.warning("skipped %d file(s) in the %s images that cannot be used: %s", len(bad), what, shown)
    return good, kept, bad


def epoch_indices(n: int, step: int, batch: int, seed: int, stream: int) -> list[int]:
    """Indices of `n` items for a step: consecutive positions in per-epoch permutations of (seed, stream)."""
    out = []
    perms: dict[int, Tensor] = {}
    for pos in range(step * batch, step * batch + batch):
        epoch, j = divmod(pos, n)
        if epoch not in perms:
            g = torch.Generator().manual_seed(_seed(seed, stream, epoch))
            perms[epoch] = torch.randperm(n, generator=g)
        out.append(int(perms[epoch][j]))
    return out


class LazyImages:
    """Images decoded when drawn, by worker threads, for sets too large to keep decoded in memory.

    `prefetch(indices)` starts decoding in the background (the next step's images while this step trains);
    `images[i]` waits for it (or decodes at once). PIL releases the GIL while decoding and resizing, so the
    threads run beside the training step. An unreadable file is skipped for the next readable one (with one
    warning), or refused with `strict`.
    """

    def __init__(self, files: Sequence[Path], short: int, *, strict: bool = False, what: str = "data",
                 workers: int | None = None) -> None:
        import os
        from concurrent.futures import ThreadPoolExecutor

        self.files, self.short, self.strict, self.what = list(files), short, strict, what
        self.pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                       thread_name_prefix="stylezoo-data")
        self.pending: dict[int, Any] = {}
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, i: int) -> Tensor:
        for j in [*range(i, len(self.files)), *range(i)]:
            if j in self.bad:
                continue
            try:
                im = resize_short(open_image(self.files[j], short=self.short), self.short, name=self.files[j])
                return torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()
            except BadImage as e:
                if self.strict:
                    raise DataError(f"{e} (refused because of --strict; remove the file or drop --strict).") from None
                self.bad.add(j)
                log.warning("skipped a %s image that cannot be used: %s", self.what, e)
        raise DataError(f"None of the {len(self.files)} {self.what} images could be read; see the warnings above.")

    def prefetch(self, indices: Sequence[int]) -> None:
        for i in indices:
            if i not in self.pending:
                self.pending[i] = self.pool.submit(self._decode, i)

    def __getitem__(self, i: int) -> Tensor:
        fut = self.pending.pop(i, None)
        return fut.result() if fut is not None else self._decode(i)


class ImageSet:
    """A set of images for one stream of a run (content, real/style domain, ...).

    Decoded and resized once and kept in memory while that takes at most about `cache_mb`; larger sets are
    decoded per draw by worker threads (LazyImages), the next step's images while the current step trains.
    """

    def __init__(self, spec: str | Path | Sequence[Path], size: int, *, what: str = "data", strict: bool = False,
                 stream: int = 0, short: int | None = None, cache_mb: float = 4096) -> None:
        files = list(spec) if isinstance(spec, (list, tuple)) else find_images(cast("str | Path", spec))
        if not files:
            raise DataError(f"No images found for the {what} ({spec}). Point it at a folder of .jpg/.png files.")
        if short is None:
            # few images (a painting or two): draw varied crops from a larger copy; else a small jitter
            short = size * 2 if len(files) < 8 else round(size * 1.125)
        self.size, self.stream, self.what = size, stream, what
        self.decoded_mb = len(files) * 3 * short * short * 4 / 3 / 2**20  # decoded uint8, 4:3 pictures
        self.lazy = self.decoded_mb > cache_mb
        self.images: Any
        self.skipped: list[str]
        if self.lazy:
            log.info("%d %s images: decoded per draw by worker threads (over the %g MB cache budget)",
                     len(files), what, cache_mb)
            self.images, self.files, self.skipped = LazyImages(files, short, strict=strict, what=what), files, []
            return
        self.images, self.files, self.skipped = load_images(files, short, strict=strict, what=what)
        if not self.images:
            raise DataError(f"None of the {len(files)} {what} image(s) could be read ({spec}); see the warnings above.")

    def __len__(self) -> int:
        return len(self.images)

    def indices(self, step: int, batch: int, seed: int) -> list[int]:
        """Indices for a step: consecutive positions in per-epoch permutations (no image twice per epoch)."""
        return epoch_indices(len(self.images), step, batch, seed, self.stream)

    def batch(self, step: int, batch: int, seed: int, *, rank: int = 0, world: int = 1) -> Tensor:
        """(batch // world, 3, size, size) in [-1, 1]: this rank's slice of the global batch for `step`."""
        idx = self.indices(step, batch, seed)
        per = batch // world
        mine = range(rank * per, rank * per + per)
        if self.lazy:  # decode this batch in parallel threads
            self.images.prefetch([idx[k] for k in mine])
        ims = {i: self.images[i] for i in dict.fromkeys(idx[k] for k in mine)}  # each image once, if drawn twice
        out = []
        for k in mine:
            g = torch.Generator().manual_seed(_seed(seed, self.stream, step, k))
            out.append(random_crop_flip([ims[idx[k]]], self.size, g)[0])
        x = torch.stack(out).float().div_(127.5).sub_(1.0)
        if self.lazy:  # and the next step's while this one trains (started last: the threads take the GIL)
            nxt = self.indices(step + 1, batch, seed)
            self.images.prefetch([nxt[k] for k in mine])
        return x

    def fixed(self, n: int) -> Tensor:
        """The first n images, centre-cropped: a fixed batch for sample grids."""
        n = min(n, len(self.images))
        ims = [_center(self.images[i], self.size) for i in range(n)]
        return torch.stack(ims).float().div_(127.5).sub_(1.0)

    def take(self, idx: Sequence[int], step: int, seed: int, first: int = 0) -> Tensor:
        """Random crops of the images at `idx` (e.g. chosen by label); crop k is seeded as batch position first + k."""
        out = []
        for k, i in enumerate(idx):
            g = torch.Generator().manual_seed(_seed(seed, self.stream, step, first + k))
            out.append(random_crop_flip([self.images[i]], self.size, g)[0])
        return torch.stack(out).float().div_(127.5).sub_(1.0)


def style_labels(spec: str | Path) -> tuple[tuple[str, ...], list[Path], list[int]]:
    """(label names, files, label index of each file) of a style set, for label-conditioned generators.

    A folder of sub-folders: one label per sub-folder (its images, recursively). A flat folder, a file or a
    glob: one label per image, named by its file stem. Images loose beside sub-folders are refused.
    """
    root = Path(spec)
    files = find_images(spec)
    if not files:
        raise DataError(f"No style images found in {spec}. Point --style at a folder of .jpg/.png files.")
    subs = sorted({f.relative_to(root).parts[0] for f in files if len(f.relative_to(root).parts) > 1}) \
        if root.is_dir() else []
    if subs:
        loose = [f.name for f in files if len(f.relative_to(root).parts) == 1]
        if loose:
            raise DataError(f"--style {spec}: images beside the style sub-folders ({', '.join(loose[:3])}); move "
                            "them into a sub-folder (one per style label) or remove them.")
        names = tuple(subs)
        return names, files, [names.index(f.relative_to(root).parts[0]) for f in files]
    # by stem; where stems repeat (a.jpg, a.png), by file name; where those repeat too (s1/a.jpg, s2/a.jpg from
    # a glob), by the path below the folder the files share
    common = Path(os.path.commonpath([f.parent for f in files]))
    for naming in ([f.stem for f in files], [f.name for f in files],
                   [f.relative_to(common).as_posix() for f in files]):
        if len(set(naming)) == len(naming):
            return tuple(naming), files, list(range(len(files)))
    return tuple(str(f) for f in files), files, list(range(len(files)))


# -- paired data (pix2pix-style): an input image and its target, matched by file stem --------------------------
PAIR_NAMES = (("photo", "sketch"), ("input", "target"), ("source", "target"), ("A", "B"), ("a", "b"))


def pair_folders(root: str | Path) -> tuple[Path, Path]:
    """(input folder, target folder) of a pairs folder: `photo/` + `sketch/` (or another known naming), else
    its only two sub-folders in sorted order (the first is the input; a warning says which)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"--pairs {root}: no such folder. Give a folder with photo/ and sketch/ sub-folders.")
    for a, b in PAIR_NAMES:
        if (root / a).is_dir() and (root / b).is_dir():
            return root / a, root / b
    subs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(subs) != 2:
        names = ", ".join(p.name for p in subs) or "none"
        raise DataError(f"--pairs {root}: expected photo/ and sketch/ (or exactly two sub-folders), found {names}. "
                        "Name the folders with --input DIR --target DIR instead.")
    log.warning("pairs in %s: input = %s/, target = %s/ (sorted order; use --input/--target to choose)",
                root, subs[0].name, subs[1].name)
    return subs[0], subs[1]


def _by_stem(folder: Path, side: str) -> dict[str, Path]:
    """{relative path without suffix: file} for the images under `folder`; two files per stem is an error."""
    out: dict[str, Path] = {}
    for f in find_images(folder):
        key = f.relative_to(folder).with_suffix("").as_posix() if folder.is_dir() else f.stem
        if key in out:
            raise DataError(f"{side} images {out[key]} and {f} share the stem {key!r}: "
                            "keep one so pairs are unambiguous.")
        out[key] = f
    return out


def match_pairs(inputs: str | Path, targets: str | Path, *, strict: bool = False) -> list[tuple[str, Path, Path]]:
    """(stem, input file, target file) for every stem present on both sides, sorted by stem.

    Files with no partner are reported in one warning (a few names and the count), or refused with `strict`.
    """
    a, b = _by_stem(Path(inputs), "input"), _by_stem(Path(targets), "target")
    if not a:
        raise DataError(f"No input images found in {inputs}. Point it at a folder of .jpg/.png files.")
    if not b:
        raise DataError(f"No target images found in {targets}. Point it at a folder of .jpg/.png files.")
    only_a, only_b = sorted(set(a) - set(b)), sorted(set(b) - set(a))
    problems = []
    for side, names in (("input", only_a), ("target", only_b)):
        if names:
            shown = ", ".join(names[:5]) + (f", and {len(names) - 5} more" if len(names) > 5 else "")
            other = "target" if side == "input" else "input"
            problems.append(f"{len(names)} {side} file(s) with no {other} of the same name: {shown}")
    if problems and strict:
        raise DataError("; ".join(problems) + " (refused because of --strict; pair them up or drop --strict).")
    if problems:
        log.warning("unmatched pairs skipped: %s", "; ".join(problems))
    both = sorted(set(a) & set(b))
    if not both:
        raise DataError(f"No input image in {inputs} has a target of the same file name in {targets}: "
                        "pairs are matched by file name without the extension.")
    return [(k, a[k], b[k]) for k in both]


class PairSet:
    """Paired images (input, target) kept in memory; the same crop and flip are applied to both of a pair.

    Batches are a pure function of (seed, stream, step) like ImageSet's, so a resumed run repeats them.
    A target whose size differs from its input is resized to the input's size (with a warning when that
    changes its aspect ratio).
    """

    def __init__(self, inputs: str | Path, targets: str | Path, size: int, *, strict: bool = False,
                 stream: int = 1, short: int | None = None) -> None:
        pairs = match_pairs(inputs, targets, strict=strict)
        if short is None:
            short = size * 2 if len(pairs) < 8 else round(size * 1.125)
        self.size, self.stream = size, stream
        ins, kept_in, bad_in = load_images([p[1] for p in pairs], short, strict=strict, what="input", warn=False)
        tgs, kept_tg, bad_tg = load_images([p[2] for p in pairs], short, strict=strict, what="target", warn=False)
        by_in = {f: t for f, t in zip(kept_in, ins)}
        by_tg = {f: t for f, t in zip(kept_tg, tgs)}
        self.stems: list[str] = []
        self.inputs: list[Tensor] = []
        self.targets: list[Tensor] = []
        self.files: list[tuple[Path, Path]] = []
        stretched: list[str] = []
        for stem, fi, ft in pairs:
            if fi not in by_in or ft not in by_tg:
                continue
            x, y = by_in[fi], by_tg[ft]
            if abs(math.log((y.shape[-1] / y.shape[-2]) / (x.shape[-1] / x.shape[-2]))) > 0.02:
                stretched.append(stem)  # another aspect ratio: the target is stretched to its input's shape
            if y.shape != x.shape:
                y = torch.nn.functional.interpolate(y[None].float(), size=tuple(x.shape[-2:]), mode="bicubic",
                                                    align_corners=False, antialias=True)[0].round().clamp(0, 255).byte()
            self.stems.append(stem)
            self.inputs.append(x)
            self.targets.append(y)
            self.files.append((fi, ft))
        if stretched:
            log.warning("%d pair(s) have a target of another aspect ratio than its input (%s): the targets were "
                        "stretched to their inputs' shape; crop them alike if that is not what you want",
                        len(stretched), ", ".join(stretched[:5]) + (" ..." if len(stretched) > 5 else ""))
        bad = bad_in + bad_tg
        if bad:
            shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
            log.warning("skipped %d pair(s) with an image that cannot be used: %s", len(bad), shown)
        if not self.inputs:
            raise DataError(f"None of the {len(pairs)} pairs could be read ({inputs}, {targets}); "
                            "see the warnings above.")

    def __len__(self) -> int:
        return len(self.inputs)

    def indices(self, step: int, batch: int, seed: int) -> list[int]:
        """Pair indices for a step: consecutive positions in per-epoch permutations."""
        return epoch_indices(len(self.inputs), step, batch, seed, self.stream)

    def batch(self, step: int, batch: int, seed: int, *, rank: int = 0, world: int = 1) -> tuple[Tensor, Tensor]:
        """(inputs, targets), each (batch // world, 3, size, size) in [-1, 1], identically cropped and flipped."""
        idx = self.indices(step, batch, seed)
        per = batch // world
        xs, ys = [], []
        for k in range(rank * per, rank * per + per):
            g = torch.Generator().manual_seed(_seed(seed, self.stream, step, k))
            x, y = random_crop_flip([self.inputs[idx[k]], self.targets[idx[k]]], self.size, g)
            xs.append(x)
            ys.append(y)
        return _unit(torch.stack(xs)), _unit(torch.stack(ys))

    def fixed(self, n: int) -> tuple[Tensor, Tensor]:
        """The first n pairs, centre-cropped: (inputs, targets) for sample grids."""
        n = min(n, len(self.inputs))
        xs = [_center(self.inputs[i], self.size) for i in range(n)]
        ys = [_center(self.targets[i], self.size) for i in range(n)]
        return _unit(torch.stack(xs)), _unit(torch.stack(ys))

    def target_files(self) -> list[Path]:
        return [ft for _, ft in self.files]


def _unit(x: Tensor) -> Tensor:
    """uint8 images to float [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


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


__all__ = ["ImageSet", "PairSet", "match_pairs", "pair_folders", "load_images", "random_crop_flip",
           "center_crop", "find_images", "style_labels"]
