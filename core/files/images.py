"""Reading and writing images robustly: EXIF orientation, every PIL mode, bad files, decompression bombs;
and stylized images written back in colour with their source's alpha and file format (or, asked, its mode).

Everything returns float tensors in [-1, 1] (the project's image convention, core/components/kinds.py) or PIL images.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import Tensor

from ..errors import DataError, UsageError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm", ".ppm"}
MAX_PIXELS = 64_000_000  # larger declared sizes are refused as possible decompression bombs


class BadImage(DataError):
    """One unreadable image (the message says which and why)."""


# a JPEG is decoded at a reduced scale only while its shorter side stays at least this many times the size
# wanted after resizing, so the final (bicubic) resize still has that much resolution to work from
DRAFT_MARGIN = 4


def open_image(path: str | Path, *, keep_alpha: bool = False, short: int | None = None) -> Image.Image:
    """Open an image file as RGB (or RGBA with keep_alpha), EXIF orientation applied.

    Grey, palette, 16-bit, CMYK and alpha images are converted; alpha is composited on white unless kept.
    Raises BadImage for missing, empty, truncated, corrupt or oversized files. With `short` (the shorter
    side the caller will resize to), a large JPEG is decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling)
    while its shorter side stays at least DRAFT_MARGIN x `short`: a 2048 px photo for 128 px training
    decodes in a fraction of the time.
    """
    path = Path(path)
    if path.is_dir():
        raise BadImage(f"{path} is a folder: give one image file here.")
    if not path.is_file():
        raise BadImage(f"{path}: no such image file.")
    if path.stat().st_size == 0:
        raise BadImage(f"{path}: the file is empty (0 bytes).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadImage(f"{path}: declared size {w}x{h} is too large (over {MAX_PIXELS} pixels); refused "
                                   "as a possible decompression bomb. Downscale it first.")
                if short is not None and im.format == "JPEG" and min(w, h) >= 2 * DRAFT_MARGIN * short:
                    f = DRAFT_MARGIN * short / min(w, h)
                    im.draft(im.mode, (math.ceil(w * f), math.ceil(h * f)))
                im.load()
                return _to_rgb(ImageOps.exif_transpose(im), keep_alpha)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{path}: refused as a possible decompression bomb (huge declared size).") from None
    except Image.UnidentifiedImageError:
        raise BadImage(f"{path}: not an image (unknown or corrupt format).") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise BadImage(f"{path}: not a readable image ({type(e).__name__}: {e}).") from None


def _to_rgb(im: Image.Image, keep_alpha: bool) -> Image.Image:
    mode = im.mode
    if mode == "I" or mode.startswith("I;16"):
        arr = np.asarray(im, dtype=np.float64)
        # 16-bit modes span 0..65535 however dark the picture; plain 32-bit "I" has no declared range
        hi = 65535.0 if mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        im = Image.fromarray(((arr - lo) / max(hi - lo, 1e-12) * 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        if keep_alpha:
            return rgba
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def pil_to_tensor(im: Image.Image) -> Tensor:
    """PIL RGB image to a (3, H, W) float tensor in [-1, 1]."""
    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def tensor_to_pil(x: Tensor) -> Image.Image:
    """A (3, H, W) tensor in [-1, 1] to a PIL RGB image."""
    arr = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(arr, "RGB")


def resize_short(im: Image.Image, short: int, *, name: str | Path = "an image") -> Image.Image:
    """Resize so the shorter side is `short`, keeping the aspect ratio (high-quality filter).

    A result over MAX_PIXELS (a thin strip blown up) is a BadImage naming `name`."""
    w, h = im.size
    s = short / min(w, h)
    size = (max(short, round(w * s)), max(short, round(h * s)))
    if size[0] * size[1] > MAX_PIXELS:  # a thin strip blown up: a few bytes on disk, gigabytes in memory
        raise BadImage(f"{name}: {w}x{h} would become {size[0]}x{size[1]} (over {MAX_PIXELS} pixels) with its "
                       f"shorter side at {short} px; refused. Crop it to a less elongated shape first.")
    return im.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0) if size != im.size else im


def center_crop(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def load_tensor(path: str | Path, size: int | None = None) -> Tensor:
    """Load one image as (3, size, size) in [-1, 1] (shorter side resized, centre crop); any size if None."""
    im = open_image(path)
    if size is not None:
        im = center_crop(resize_short(im, size, name=path), size)
    return pil_to_tensor(im)


def find_images(spec: str | Path, *, recursive: bool = True) -> list[Path]:
    """Image files named by a file, a folder (recursively) or a glob; sorted for determinism."""
    p = Path(spec)
    if p.is_file():
        return [p]
    if p.is_dir():
        it: Iterable[Path] = _walk(p) if recursive else p.glob("*")
        return sorted(f for f in it if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
    import glob

    hits = sorted(Path(f) for f in glob.glob(str(spec), recursive=True))
    if hits:
        return [f for f in hits if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES]
    raise DataError(f"{spec}: no such file or folder. Give an image file, a folder of images or a glob.")


def _walk(root: Path) -> Iterator[Path]:
    """Every file under `root`, following linked folders (each real folder once: a link loop ends)."""
    import os

    seen: set[str] = set()
    for d, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(d)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        yield from (Path(d) / f for f in files)


GRID_STEP_KEY = "stylezoo:step"  # the PNG text chunk that says which training step a sample grid shows


def save_grid(rows: Sequence[Tensor], path: str | Path, *, pad: int = 2, step: int | None = None) -> Path:
    """Save rows of images ([-1, 1], each (N, 3, H, W) with equal N) as one PNG grid, atomically; `step`
    (the training step shown) goes into its metadata, read back by `grid_step`."""
    from PIL.PngImagePlugin import PngInfo
    from torchvision.utils import make_grid

    from .checkpoint import atomic_write

    batch = torch.cat([r.detach().float().cpu() for r in rows], 0)
    nrow = rows[0].shape[0]
    grid = make_grid((batch.clamp(-1, 1) + 1) / 2, nrow=nrow, padding=pad, pad_value=1.0)
    arr = (grid * 255).round().byte().permute(1, 2, 0).numpy()
    path = Path(path)
    info = PngInfo()
    if step is not None:
        info.add_text(GRID_STEP_KEY, str(int(step)))
    atomic_write(path, lambda tmp: Image.fromarray(arr, "RGB").save(tmp, format="PNG", pnginfo=info))
    return path


def grid_step(path: str | Path) -> int | None:
    """The training step a grid written by `save_grid` shows (None when it does not say, or is unreadable)."""
    try:
        with Image.open(path) as im:
            raw = getattr(im, "text", {}).get(GRID_STEP_KEY)
    except (OSError, ValueError, SyntaxError):
        return None
    return int(raw) if isinstance(raw, str) and raw.isdigit() else None


# ---------------------------------------------------------------- stylized images back in their source's mode
# Output modes (decided here, documented in `output_mode`): the output has the input's size (after --size),
# is colour (restyling paints in the style's colours) and keeps the input's alpha; with keep_mode, it also
# takes the input's own mode back, as far as the output format allows.
GREY16 = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})
GREY8 = frozenset({"L", "1", "F"})
_FALLBACK = {"I;16": "L", "LA": "L", "RGBA": "RGB", "P": "RGB", "CMYK": "RGB", "L": "RGB"}


def output_mode(src_mode: str, has_alpha: bool, keep_mode: bool = False) -> str:
    """The mode of a stylized image given its source's mode.

    By default "RGB", or "RGBA" when the input has alpha (kept aside and put back): a grey or palette
    photo restyled as a painting comes back in colour. With `keep_mode` the input's mode comes back:
    single-channel inputs give grey outputs (16-bit "I;16" and "I" stay 16-bit "I;16", at full precision
    from the float output; "L", "1", "F" give "L"), the generator's RGB output reduced to luma (ITU-R 601);
    "LA" stays "LA"; palette inputs get a new adaptive palette ("P"; "RGBA" when the palette had
    transparency), because restyling invents colours the old palette lacks; "CMYK" stays "CMYK"; any other
    mode gives "RGB". The generator always sees RGB (grey is replicated). When the output format cannot
    store the mode (JPEG and alpha, ...), a simpler one is written and a note says so.
    """
    if not keep_mode:
        return "RGBA" if has_alpha else "RGB"
    if src_mode in GREY16:
        return "I;16"
    if src_mode in GREY8:
        return "L"
    if src_mode in ("LA", "La"):
        return "LA"
    if src_mode == "P":
        return "RGBA" if has_alpha else "P"
    if src_mode == "CMYK":
        return "CMYK"
    return "RGBA" if has_alpha else "RGB"


@dataclass
class InputImage:
    """An image as the generator's input, plus what restores its mode afterwards (`restore_mode`)."""

    rgb: Tensor  # (3, h, w) in [-1, 1]
    alpha: Image.Image | None  # mode "L", same size
    mode: str  # output mode


def input_image(im: Image.Image, src_mode: str, size: int | None, keep_mode: bool = False) -> InputImage:
    """`im` is RGB or RGBA (from open_image(keep_alpha=True) or _to_rgb); `keep_mode`: see output_mode."""
    if size is not None:
        im = resize_short(im, size)
    alpha = im.getchannel("A") if im.mode == "RGBA" else None
    return InputImage(pil_to_tensor(im), alpha, output_mode(src_mode, alpha is not None, keep_mode))


def read_item(path: str | Path, size: int | None = None, keep_mode: bool = False) -> InputImage:
    """An image file as the generator's input (EXIF orientation applied) plus its output mode."""
    im = open_image(path, keep_alpha=True)
    with Image.open(path) as raw:
        src_mode = raw.mode
    return input_image(im, src_mode, size, keep_mode)


def restore_mode(y: Tensor, item: InputImage) -> Image.Image:
    """The generator's output (3, h, w) back in the source's mode, alpha re-attached."""
    mode = item.mode
    if mode == "I;16":
        unit = ((y.detach().float().cpu().clamp(-1, 1) + 1) * 0.5).numpy().astype(np.float64)
        luma = 0.299 * unit[0] + 0.587 * unit[1] + 0.114 * unit[2]
        return Image.fromarray(np.round(luma * 65535.0).astype("<u2"))  # mode I;16
    rgb = tensor_to_pil(y)
    if mode == "L":
        return rgb.convert("L")
    if mode == "LA" and item.alpha is not None:
        return Image.merge("LA", (rgb.convert("L"), item.alpha))
    if mode == "RGBA" and item.alpha is not None:
        rgb.putalpha(item.alpha)
        return rgb
    if mode == "P":
        return rgb.quantize(256)
    if mode == "CMYK":
        return rgb.convert("CMYK")
    return rgb


def is_stylezoo_output(path: Path) -> bool:
    """Whether the image file at `path` was written by stylezoo (its EXIF Software tag says so)."""
    try:
        with Image.open(path) as im:
            return str(im.getexif().get(_SOFTWARE, "")).startswith(OUTPUT_MARK)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):  # read (and refused) later
        return False


def image_format(path: Path) -> str:
    """The PIL format name for a file name's suffix (UsageError when PIL cannot write it)."""
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise UsageError(f"Cannot write images with the suffix {path.suffix or '(none)'!r} ({path.name}): "
                         "use .png, .jpg, .webp, .tif or .bmp (or --ext).")
    return fmt


# stylize's outputs say so in their EXIF Software tag, so a later run can tell them from a user's own images
OUTPUT_MARK = "stylezoo"
MARKABLE = ("PNG", "JPEG", "WEBP", "TIFF")  # formats whose EXIF Pillow writes (BMP, GIF, PPM keep none)
_SOFTWARE = 0x0131


def encode(im: Image.Image, fmt: str) -> tuple[bytes, str | None]:
    """`im` encoded as `fmt` (marked as stylezoo's output where the format can carry EXIF); when the format
    cannot store its mode, a simpler mode and a note saying so."""
    opts: dict[str, object] = dict({"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}.get(fmt, {}))
    if fmt in MARKABLE:
        exif = Image.Exif()
        exif[_SOFTWARE] = OUTPUT_MARK
        opts = {**opts, "exif": exif.tobytes()}
    cur, note = im, None
    while True:
        buf = io.BytesIO()
        try:
            cur.save(buf, format=fmt, **opts)
            return buf.getvalue(), note
        except (OSError, KeyError, ValueError):
            nxt = _FALLBACK.get(cur.mode)
            if nxt is None:
                raise
            if cur.mode in ("RGBA", "LA"):  # flatten on white, as open_image does
                cur = Image.alpha_composite(Image.new("RGBA", cur.size, (255, 255, 255, 255)), cur.convert("RGBA"))
            cur = cur.convert(nxt)
            note = f"{fmt} cannot store mode {im.mode}; wrote {nxt}"
