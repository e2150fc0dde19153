"""Where `stylize` writes: input files, folders and globs paired with output paths, and the checks that
keep it from restyling its own outputs or writing over an input or over a user's own image; where a noise
generator's samples go; and the check that what a generator returned can be written as images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from ..errors import DataError, PluginError, UsageError
from ..files.images import find_images, image_format, is_stylezoo_output


@dataclass
class StylizeReport:
    """What `Stylizer.stylize_files` did: files written, inputs skipped (path, why), format notes."""

    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _glob_base(spec: str) -> Path:
    parts = Path(spec).parts
    keep = []
    for p in parts:
        if any(c in p for c in "*?["):
            break
        keep.append(p)
    return Path(*keep) if keep else Path(".")


def plan_outputs(inputs: Sequence[str | Path], out: str | Path, ext: str | None = None, *,
                 overwrite: bool = False) -> tuple[list[tuple[Path, Path]], StylizeReport]:
    """(input, output) pairs: outputs keep the input's name (and sub-folders) under `out`, or `out` itself
    when it has an image suffix and there is one input. Inputs that name nothing go to report.skipped.
    Images found in a folder or by a glob that carry stylize's mark (earlier outputs) are left out, with a
    note; an input that names such a file itself is stylized."""
    out = Path(out)
    report = StylizeReport()
    found: list[tuple[Path, Path]] = []
    seen: set[Path] = set()
    to_file = bool(out.suffix) and not out.is_dir() and out.suffix.lower() in Image.registered_extensions()
    out_root = None if to_file else out.resolve()
    inside: set[Path] = set()  # images the inputs name that lie inside the output folder (not stylized)
    roots: set[Path] = set()  # the folders the inputs come from (a folder, a glob's fixed part, a file's folder)
    marked: set[Path] = set()  # earlier outputs found in a folder or by a glob (not stylized unless named)
    for spec in inputs:
        try:
            files = find_images(spec)
        except DataError as e:
            report.skipped.append((str(spec), str(e)))
            continue
        if not files:
            report.skipped.append((str(spec), f"{spec}: no image files (.jpg, .png, ...) found there."))
            continue
        p = Path(spec)
        base = p if p.is_dir() else None if p.is_file() else _glob_base(str(spec))
        roots.update({base.resolve()} if base is not None else {f.resolve().parent for f in files})
        for f in files:
            if out_root and f.resolve().is_relative_to(out_root):  # never re-stylize earlier outputs
                inside.add(f.resolve())
                continue
            if f.resolve() in seen:
                continue
            if not p.is_file() and is_stylezoo_output(f):  # found by walking, not named: an earlier output
                marked.add(f.resolve())
                continue
            seen.add(f.resolve())
            rel = f.relative_to(base) if base is not None and f.is_relative_to(base) else Path(f.name)
            found.append((f, rel))
    marked -= seen  # named as a file too: the user asked for it
    if not found and inside:
        raise UsageError(f"All {len(inside)} input image(s) are inside the output folder {out}; write elsewhere (-o).")
    if not found and marked:
        raise UsageError(f"All {len(marked)} image(s) found are stylezoo's own outputs (EXIF Software: stylezoo), "
                         "which stylize skips in folders and globs: name such a file itself to stylize it again.")
    if not found:
        why = "; ".join(w.rstrip(".") for _, w in report.skipped[:3]) or "no inputs given"
        raise DataError(f"Nothing to stylize: {why}.")
    suffix = f".{ext.lstrip('.')}" if ext else None
    if to_file:
        if len(found) > 1:
            raise UsageError(f"-o {out} names one file but there are {len(found)} images: give a folder instead.")
        image_format(out)
        pairs = [(found[0][0], out)]
    else:
        pairs, used = [], set()
        for src, rel in found:
            dst = out / (rel.with_suffix(suffix) if suffix else rel)
            if not suffix and Image.registered_extensions().get(dst.suffix.lower()) not in Image.SAVE:
                dst = dst.with_suffix(".png")  # an input named oddly (photo.dat, notes.txt): written as PNG
            k = 1
            while dst in used:
                dst = dst.with_name(f"{dst.stem.rsplit('~', 1)[0]}~{k}{dst.suffix}")
                k += 1
            used.add(dst)
            image_format(dst)
            pairs.append((src, dst))
    # an output folder among the user's photos may hold their own images: replace only stylize's own outputs
    among_inputs = out_root is not None and any(out_root.is_relative_to(r) for r in roots)
    for src, dst in pairs:
        if dst.resolve() == src.resolve():
            raise UsageError(f"{dst} would overwrite its own input; write to another folder (-o).")
        if not overwrite and (dst.resolve() in inside or (among_inputs and dst.is_file())) \
                and not is_stylezoo_output(dst):
            raise UsageError(f"Stylizing {src} would overwrite {dst}, an image stylize did not mark as its own output "
                             "(one of yours, an output of an older stylezoo, or a BMP/GIF/PPM output, which cannot "
                             "carry the mark); write to another folder (-o), or give --overwrite "
                             "(Python: overwrite=True) to replace it.")
    if marked:
        report.notes.append(f"skipped {len(marked)} image(s) found among the inputs that stylezoo wrote (earlier "
                            "outputs, EXIF Software: stylezoo); name such a file itself to stylize it again.")
    others = len(inside) - sum(dst.resolve() in inside for _, dst in pairs)
    if others:
        report.notes.append(f"{others} image(s) inside the output folder {out} were left out of the inputs "
                            "(stylize never restyles what lies in its own output folder).")
    return pairs, report


def sample_paths(out: str | Path, num: int, ext: str) -> list[Path]:
    """Where `num` samples of a noise generator go: the folder `out` as sample-0000.EXT..., or the file `out`
    (numbered when num > 1). An unknown format is a UsageError before anything is made."""
    out = Path(out)
    if out.suffix and not out.is_dir():
        image_format(out)
        return [out] if num == 1 else [out.with_name(f"{out.stem}-{i:04d}{out.suffix}") for i in range(num)]
    paths = [out / f"sample-{i:04d}.{ext.lstrip('.')}" for i in range(num)]
    image_format(paths[0])
    return paths


def checked_output(y: Tensor, shape: tuple[int, ...] | torch.Size, name: str, precision: str) -> Tensor:
    """`y`, generator `name`'s output for an input of `shape`, if it can be an image; else a clear error."""
    want = (shape[0], 3, *shape[-2:]) if len(shape) == 4 else None
    if y.dim() != 4 or y.shape[1] != 3 or (want is not None and tuple(y.shape) != want):
        raise PluginError(f"{name} returned a {tuple(y.shape)} tensor for a {tuple(shape)} input: a generator must "
                          f"return RGB images{' of its input size' if want else ''} (N, 3, H, W).")
    bad = int((~torch.isfinite(y)).sum())
    if bad:
        raise PluginError(f"{name} returned NaN or Inf in {bad} of {y.numel()} values; nothing was written. Its "
                          f"weights may come from a diverged run, or it overflows in {precision}: try --precision "
                          "fp32 (Python: precision='fp32').")
    return y

