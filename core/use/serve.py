"""`stylezoo serve`'s service: the models, the limits and the server's temporary folder, everything but HTTP
(the routes and the server: core/use/serve_http.py; the page: core/use/serve_page.py).

The models are run folders, checkpoints or exports (ONNX, TorchScript) named on the command line, loaded once
as `Stylizer`s, so a photo is restyled exactly as `stylezoo stylize` restyles it (EXIF orientation, padding to
the generator's multiple, alpha, style references, label mixes); a photo whose shorter side is over
`Limits.size` is reduced to it first, as `stylize --size` does.

Limits: the request's bytes (`max_upload_bytes`, counted as the body arrives), the declared pixels of each image
(`max_pixels`, read from its header before decoding), at most `max_pending` photos at once (503 beyond). Uploads
are written only into the server's own temporary folder, under names it makes, and removed after each request
(starlette's form parser may also spool a part over 1 MB to an unnamed temporary file, in TMPDIR too); one model
restyles one photo at a time (its style or labels are set per request under a lock).
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DataError, StylezooError, UsageError

if TYPE_CHECKING:
    from .stylizer import Stylizer

DEFAULT_MAX_UPLOAD_MB = 20.0
DEFAULT_MAX_MEGAPIXELS = 25.0  # a 6000 x 4000 camera photo fits; decoded, 25 MP are 75 MB of RGB
DEFAULT_SIZE = 1024  # a photo's shorter side above this is reduced to it first (stylize --size)
ELONGATION = 4  # with `size`, at most ELONGATION * size^2 pixels are restyled (a thin strip stays a strip)
DEFAULT_MAX_PENDING = 4  # photos being restyled or waiting at once; more get 503 "busy"
EXPORT_SUFFIXES = (".onnx", ".pt", ".ts", ".torchscript")


class ServeError(StylezooError):
    """A request the server refuses; `status` is its HTTP status, the message is shown on the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. `size`: None restyles photos at full resolution."""

    max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6)
    max_pixels: int = int(DEFAULT_MAX_MEGAPIXELS * 1e6)
    size: int | None = DEFAULT_SIZE
    style_size: int = 512
    max_pending: int = DEFAULT_MAX_PENDING

    def __post_init__(self) -> None:
        from ..files.images import MAX_PIXELS

        if self.max_upload_bytes < 1:
            raise UsageError(f"--max-upload-mb must be positive, got {self.max_upload_bytes / 1e6:g}.")
        if not 1 <= self.max_pixels <= MAX_PIXELS:
            raise UsageError(f"--max-megapixels must be in (0, {MAX_PIXELS / 1e6:g}], got {self.max_pixels / 1e6:g}.")
        if self.size is not None and self.size < 16:
            raise UsageError(f"--size must be at least 16 px (or 0 for full resolution), got {self.size}.")
        if self.style_size < 16:
            raise UsageError(f"--style-size must be at least 16 px, got {self.style_size}.")
        if self.max_pending < 1:
            raise UsageError(f"--max-pending must be at least 1, got {self.max_pending}.")

    def public(self) -> dict[str, Any]:
        """The limits as the page shows them."""
        return {"max_upload_mb": round(self.max_upload_bytes / 1e6, 3),
                "max_megapixels": round(self.max_pixels / 1e6, 3),
                "size": self.size, "style_size": self.style_size}


# ------------------------------------------------------------------------------------------------- models
@dataclass
class Model:
    """One model the page offers: a loaded Stylizer, used by one request at a time."""

    id: str
    name: str
    source: Path
    stylizer: Stylizer
    lock: threading.Lock = field(default_factory=threading.Lock)

    def info(self) -> dict[str, Any]:
        st = self.stylizer
        own = bool(getattr(st.module, "has_default_style", lambda: False)()) if st.takes_style else False
        return {"id": self.id, "name": self.name, "source": str(self.source), "generator": st.name,
                "takes_style": st.takes_style, "has_default_style": own, "labels": list(st.labels)}


def load_models(specs: Sequence[str | Path], *, device: str = "auto", precision: str = "auto",
                ema: bool = True) -> list[Model]:
    """Load each run folder, checkpoint or export; refuses (UsageError) what cannot restyle a photo."""
    from .stylizer import Stylizer

    if not specs:
        raise UsageError("Give at least one model: a run folder, a .safetensors checkpoint or an export (.onnx, .pt).")
    models: list[Model] = []
    names: set[str] = set()
    for i, spec in enumerate(specs):
        path = Path(spec)
        if path.suffix.lower() in EXPORT_SUFFIXES and path.is_file():
            st = load_export(path)
        else:
            st = Stylizer.load(path, device=device, precision=precision, ema=ema)
        if st.family != "image":
            raise UsageError(f"{path}: {st.name} makes images from noise; serve restyles photos (`stylezoo stylize "
                             f"{path} --num 8` samples it).")
        name = path.resolve().name if path.is_dir() else f"{path.resolve().parent.name}/{path.name}"
        while name in names:  # two models of the same name: tell them apart
            name = f"{name} ({i + 1})"
        names.add(name)
        models.append(Model(f"m{i}", name, path, st))
    return models


def _export_module(path: Path, fmt: str, size_multiple: int) -> Any:
    """An ONNX export of an image generator as a module run by onnxruntime, so that a Stylizer pads, runs and
    crops it as any generator; `names` are its inputs."""
    import torch
    from torch import Tensor, nn

    class Exported(nn.Module):
        family = "image"

        def __init__(self) -> None:
            super().__init__()
            self.size_multiple = size_multiple
            from .onnx import ort_session

            self.session: Any = ort_session(path)
            self.names = [i.name for i in self.session.get_inputs()]

        def forward(self, x: Tensor) -> Tensor:
            return torch.from_numpy(self.session.run(None, {self.names[0]: x.detach().float().cpu().numpy()})[0])

    return Exported()


def load_export(path: Path) -> Stylizer:
    """A Stylizer for an unconditional image generator exported by `stylezoo export` (its .parity.json beside it
    says its generator and size multiple). Conditional exports are refused: serve their checkpoint instead."""
    from .export import format_of, parity_path
    from .loading import LoadedGenerator
    from .stylizer import Stylizer

    fmt = format_of(path, None)
    if fmt != "onnx":  # never unpickle what a page serves (docs/promises.md)
        raise UsageError(f"{path}: a TorchScript export is a pickle-based archive, which stylezoo never loads; "
                         "serve its ONNX export (stylezoo export RUN --format onnx) or its checkpoint.")
    info_path = parity_path(path)
    info: dict[str, Any] = {}
    if info_path.is_file():
        try:
            info = dict(json.loads(info_path.read_text(encoding="utf-8")))
        except (ValueError, TypeError, OSError):
            info = {}
    if info.get("family", "image") != "image":
        raise UsageError(f"{path}: an export of {info.get('generator', 'a noise generator')}, which makes images from "
                         "noise; serve restyles photos.")
    try:
        module = _export_module(path, fmt, int(info.get("size_multiple", 1) or 1))
    except ImportError:
        raise UsageError(f"{path}: running an ONNX export needs onnxruntime: pip install 'stylezoo[export]'.") from None
    except Exception as e:  # a file that is not what its suffix says
        raise UsageError(f"{path}: not a loadable {fmt} export ({type(e).__name__}: {str(e).splitlines()[0][:200]}).") \
            from None
    if len(module.names) > 1:
        src = info.get("checkpoint") or "the checkpoint it was exported from"
        raise UsageError(f"{path}: a conditional export (style or labels as inputs); serve its checkpoint ({src}), "
                         "which knows its styles and labels.")
    loaded = LoadedGenerator(module, str(info.get("generator") or path.name), "image", {}, path)
    return Stylizer(loaded, device="cpu", precision="fp32", backend="torch")


# ------------------------------------------------------------------------------------------------ the work
@dataclass
class Result:
    """A restyled photo, PNG-encoded."""

    png: bytes
    width: int
    height: int
    seconds: float
    note: str | None
    filename: str


class Service:
    """Models, limits and the server's temporary folder: everything but HTTP. `close()` removes the folder."""

    def __init__(self, models: Sequence[Model], limits: Limits | None = None) -> None:
        if not models:
            raise UsageError("serve needs at least one model.")
        self.models = {m.id: m for m in models}
        self.limits = limits or Limits()
        self._tmp = tempfile.TemporaryDirectory(prefix="stylezoo-serve-")
        self.tmp = Path(self._tmp.name)  # 0700, made by tempfile: uploads are written here and nowhere else
        self.pending = threading.BoundedSemaphore(self.limits.max_pending)

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def catalogue(self) -> dict[str, Any]:
        return {"models": [m.info() for m in self.models.values()], "limits": self.limits.public()}

    def _save(self, data: bytes, what: str) -> Path:
        if not data:
            raise ServeError(400, f"The {what} is empty (0 bytes): choose an image file.")
        path = self.tmp / f"{uuid.uuid4().hex}.upload"  # our name, never the client's
        with path.open("xb") as f:
            f.write(data)
        return path

    def _probe(self, path: Path, what: str, client_name: str) -> tuple[int, int]:
        """The image's declared size, from its header alone; refuses non-images and too many pixels."""
        from PIL import Image

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(path) as im:
                    w, h = im.size
        except Image.DecompressionBombError:
            raise ServeError(413, f"{client_name}: its declared size is far too large; refused as a possible "
                                  "decompression bomb.") from None
        except Image.UnidentifiedImageError:
            raise ServeError(415, f"{client_name} is not an image (or not one of the formats read here: JPEG, PNG, "
                                  f"WebP, TIFF, BMP, GIF). Choose a photo for the {what}.") from None
        except (OSError, ValueError, SyntaxError, EOFError) as e:
            raise ServeError(415, f"{client_name} is not a readable image ({type(e).__name__}).") from None
        if w * h > self.limits.max_pixels:
            raise ServeError(413, f"{client_name} is {w} x {h} ({w * h / 1e6:.1f} megapixels); the limit is "
                                  f"{self.limits.max_pixels / 1e6:g} megapixels. Downscale it first.")
        return w, h

    def restyle(self, model_id: str, image: bytes, filename: str = "photo", *, style: bytes | None = None,
                style_name: str = "style", alpha: float | None = None,
                labels: dict[str, float] | None = None) -> Result:
        """Restyle one uploaded photo with one model and its conditions; raises ServeError or StylezooError."""
        model = self.models.get(model_id)
        if model is None:
            raise ServeError(404, f"No model {model_id!r} here; this server has {', '.join(self.models)}.")
        st = model.stylizer
        if style is not None and not st.takes_style:
            raise ServeError(400, f"{model.name} does not take a style image.")
        if labels is not None and not st.labels:
            raise ServeError(400, f"{model.name} has no style labels.")
        if alpha is not None and style is None:
            raise ServeError(400, "The strength (alpha) goes with a style image.")
        client = _display_name(filename)
        paths: list[Path] = []
        try:
            src = self._save(image, "photo")
            paths.append(src)
            w, h = self._probe(src, "photo", client)
            size = self._size_for(w, h, client)
            ref = None
            if style is not None:
                ref = self._save(style, "style image")
                paths.append(ref)
                self._probe(ref, "style reference", _display_name(style_name))
            with model.lock:  # the Stylizer's style and labels are per request
                t0 = time.perf_counter()
                st.clear_condition()
                try:
                    if ref is not None:
                        st.set_style([ref], alpha=1.0 if alpha is None else alpha, size=self.limits.style_size)
                    if labels is not None:
                        st.set_labels(labels)
                    note = _note(st)
                    out = st(src, size=size)
                finally:
                    st.clear_condition()
                seconds = time.perf_counter() - t0
        except DataError as e:  # unreadable after all (truncated, corrupt): name the upload, not our file
            raise ServeError(415, _without_paths(str(e), paths, [client, _display_name(style_name)])) from None
        finally:
            for p in paths:
                p.unlink(missing_ok=True)
        from ..files.images import encode

        png, _ = encode(out, "PNG")
        if size is not None:
            note = "; ".join(n for n in (note, f"reduced to {size} px on its shorter side") if n)
        return Result(png, out.width, out.height, round(seconds, 2), note, _download_name(client))

    def _size_for(self, w: int, h: int, client: str) -> int | None:
        """The shorter side to reduce the photo to (None: as it is); refuses a strip too long to restyle."""
        size = self.limits.size
        if size is None:
            return None
        short = min(size, min(w, h))
        work = w * h * (short / min(w, h)) ** 2
        if work > ELONGATION * size * size:
            raise ServeError(413, f"{client} is {w} x {h}: too long and thin to restyle here (over {ELONGATION}x the "
                                  f"area of a {size} px square with its shorter side at {short} px). Crop it first.")
        return size if min(w, h) > size else None


def _note(st: Stylizer) -> str | None:
    """What a conditional model uses when nothing was chosen, in the page's words."""
    if st.condition_note() is None:
        return None
    if st.takes_style:
        own = getattr(st.module, "has_default_style", lambda: False)()
        return "no style reference: the mean training style" if own else "no style reference: reconstruction only"
    return f"an equal mix of {', '.join(st.labels)}" if st.labels else None


def _display_name(name: str) -> str:
    """The client's file name, for messages and the download's name only (never a path here)."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = "".join(c for c in base if c.isprintable() and c not in '"<>|:*?')[:120]
    return base or "photo"


def _download_name(client: str) -> str:
    """NAME-stylized.png in ASCII letters, digits, dots, dashes and underscores (it goes into HTTP headers)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(client).stem).strip("._") or "photo"
    return f"{stem[:80]}-stylized.png"


def _without_paths(message: str, paths: Sequence[Path], names: Sequence[str]) -> str:
    for p, n in zip(paths, names):
        message = message.replace(str(p), n)
    return message
