"""`stylezoo transfer CONTENT STYLE -o OUT`: classic optimisation-based style transfer (Gatys et al.)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ..errors import UsageError
from .progress import StepProgress

err = Console(stderr=True, highlight=False)


def _feat_overrides(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().removeprefix("feat.")
        if not sep or not key or "." in key:
            raise UsageError(f"--set {item!r}: use --set feat.KEY=VALUE (a key of the extractor's config).")
        out[key] = value.strip()
    return out


def transfer_cmd(
    content: Annotated[Path, typer.Argument(help="The photo to repaint.")],
    style: Annotated[Path, typer.Argument(help="The painting whose style to copy.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output image (.png, .jpg, ...).")],
    feat: Annotated[str, typer.Option("--feat", help="Feature extractor (`stylezoo list --kind feat`).")] = "vgg16",
    size: Annotated[int, typer.Option("--size", help="Longer side of the output in pixels.")] = 256,
    steps: Annotated[int, typer.Option("--steps", help="Optimiser iterations.")] = 100,
    style_weight: Annotated[float, typer.Option(
        "--style-weight", help="Strength of the style: 1e4 paints more boldly, 1e2 keeps more of the photo.")] = 1e3,
    style_normalize: Annotated[str, typer.Option(
        "--style-normalize", help="target: every style layer counts alike (strokes as well as colours); "
                                  "none: the plain Gram MSE (mostly colours and fine dots).")] = "target",
    content_weight: Annotated[float, typer.Option("--content-weight")] = 1.0,
    tv_weight: Annotated[float, typer.Option("--tv-weight", help="Smoothness prior.")] = 0.0,
    optimizer: Annotated[str, typer.Option("--optimizer", help="lbfgs (strong-Wolfe line search) or adam.")] = "lbfgs",
    lr: Annotated[float, typer.Option("--lr", help="Adam's learning rate.")] = 0.02,
    init: Annotated[str, typer.Option("--init", help="Start from the content image or from noise.")] = "content",
    seed: Annotated[int, typer.Option("--seed")] = 0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    sets: Annotated[list[str] | None, typer.Option("--set", help="Extractor config, e.g. feat.weights=random.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Repaint CONTENT in the style of STYLE by optimising its pixels (the quality reference)."""
    from ..files.checkpoint import atomic_write
    from ..use.transfer import transfer

    options: dict[str, Any] = dict(feat=feat, feat_set=_feat_overrides(sets or []), size=size, steps=steps,
                                   style_weight=style_weight, style_normalize=style_normalize,
                                   content_weight=content_weight, tv_weight=tv_weight, optimizer=optimizer, lr=lr,
                                   init=init, seed=seed, device=device)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF"}.get(out.suffix.lower())
    if fmt is None:
        raise UsageError(f"--out {out}: use an image suffix (.png, .jpg, .webp, .bmp, .tif).")
    from ..components.registry import default_registry

    # build the extractor before the progress bar starts, so a weights error prints on its own
    extractor = default_registry().build(feat, options.pop("feat_set"), kind="feat")
    options.pop("feat")
    if quiet:
        image = transfer(content, style, extractor=extractor, **options)
    else:
        with StepProgress("transfer") as bar:
            def update(step: int, total: int, parts: dict[str, float]) -> None:
                bar(step, total, " ".join(f"{k}={v:.3g}" for k, v in parts.items() if k != "total"))

            image = transfer(content, style, extractor=extractor, progress=update, **options)
    atomic_write(out, lambda tmp: image.save(tmp, format=fmt))
    err.print(f"wrote {out} ({image.width}x{image.height})")


def register(app: typer.Typer) -> None:
    app.command("transfer")(transfer_cmd)
