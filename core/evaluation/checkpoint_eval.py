"""`stylezoo eval`: score a trained checkpoint on content and style image sets (or its run's own data)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from ..components.registry import Registry, default_registry
from ..errors import DataError, StylezooError, UsageError
from ..files.data import ImageSet
from ..files.images import find_images, load_tensor
from .evaluate import DEFAULT_SIZE, Evaluator, domain_images, generate, load_folder, match_by_stem, style_images

log = logging.getLogger("stylezoo")


# -- stylezoo eval --------------------------------------------------------------------------------------------
@dataclass
class EvalResult:
    metrics: dict[str, float]
    checkpoint: Path
    step: int
    n: int  # images generated and scored
    missing_reference: list[str] = field(default_factory=list)  # content stems with no reference
    notes: list[str] = field(default_factory=list)
    inputs: dict[str, Any] = field(default_factory=dict)  # what was evaluated on (for eval.jsonl)

    def record(self) -> dict[str, Any]:
        import time

        return {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "checkpoint": str(self.checkpoint), "step": self.step,
                "n": self.n, **self.inputs, "missing_reference": self.missing_reference, "metrics": self.metrics}


def run_dir_of(path: Path) -> Path | None:
    """A run directory itself, or the run a checkpoint lies in (its folder, or two up for checkpoints/step-N)."""
    for d in [path] if path.is_dir() else list(path.parents)[:2]:
        if (d / "config.toml").is_file():
            return d
    return None


def evaluate_checkpoint(spec: str | Path, *, content: str | None = None, style: str | None = None,
                        reference: str | None = None, data: str | None = None, size: int | None = None,
                        num: int = 64, device: str = "cpu", registry: Registry | None = None, seed: int = 0,
                        ema: bool = True, style_label: Sequence[str] | None = None,
                        precision: str = "auto") -> EvalResult:
    """Evaluate the generator of a checkpoint (or a run's newest one) on `content` (restyled, centre-cropped
    to `size`, default 256), against `style` (Gram), `data` (the real side of FID/KID; default: the style
    images) and `reference` (paired, by file stem). Sets not given come from the run's config: then they are
    training images, not held out, and a note says so. A reference-guided generator (gen/adain) given `style` is
    conditioned on it, and a label-conditioned one (gen/cin) on `style_label`, as `stylezoo stylize --style`
    / `--style-label` would; otherwise they run unconditioned (their mean training style).

    Style images are taken at twice the scored side (at most 512). A noise generator is scored at its own
    output size with the run's `train.style_size` when set, as its in-run evaluation is; it takes no
    `content`, and a `size` other than its own is refused. `precision` is the metric extractors' (Evaluator)."""
    from ..runs.runconfig import DataConfig
    from ..use.stylizer import load_generator

    if size is not None and size < 16:
        raise UsageError(f"--size must be at least 16, got {size}.")
    reg = registry or default_registry()
    given_style = style
    g = load_generator(spec, device=device, registry=reg, ema=ema)
    if style_label and g.family == "noise":
        raise UsageError(f"{g.name} makes images from noise and has no style labels; drop --style-label.")
    if content and g.family == "noise":
        raise UsageError(f"{g.name} makes images from noise and restyles no --content; drop it (the real images "
                         "FID/KID compare with are --data).")
    run_data = DataConfig(**{k: v for k, v in g.meta.get("run", {}).get("data", {}).items()
                             if k in DataConfig.__dataclass_fields__})
    d = run_data.resolved()
    notes: list[str] = []
    if g.family == "image" and getattr(d, "paired", False):
        content, reference, data, style = _paired_sets(d, content, reference, data, style, notes)
    elif g.family == "image" and content is None and d.content:
        content = d.content
        notes.append(f"content from the run's config ({content}): training images, not held out")
    # a noise run's data is its real side, and its style image counts only when a style loss used it
    if style is None:
        own = d.style if g.family == "image" or _uses_style(reg, g.meta) else ""
        style = own or (d.data if g.family == "image" else "") or None
        if style:
            notes.append(f"style from the run's config ({style})")
    if g.family == "noise" and data is None:
        data = d.data or d.content or None
    missing: list[str] = []
    if g.family == "image":
        if not content:
            raise UsageError("Give the images to restyle with --content DIR.")
        side = DEFAULT_SIZE if size is None else size
        x, files = load_folder(content, side)
        outputs, label_weights = _conditioned(g, x, device, given_style, style_label, notes)
        real_spec = data or style
        n = x.shape[0]
        style_side = min(2 * side, 512)
    else:
        gen = torch.Generator().manual_seed(seed)
        x, files, label_weights = None, [], None
        outputs = generate(g.module, torch.randn(num, cast(int, g.module.latent_dim), generator=gen), device=device)
        side = int(outputs.shape[-1])
        if size is not None and size != side:
            raise UsageError(f"--size {size}: {g.name} makes {side} px images from noise and is scored at that "
                             "size, as in training; drop --size.")
        real_spec = data
        n = num
        # as RunEval: the run's train.style_size, else twice the generator's size
        style_side = int(g.meta.get("run", {}).get("train", {}).get("style_size", 0) or 0) or min(2 * side, 512)
    evaluated_on: dict[str, Any] = {"size": side, "content": content, "style": style, "reference": reference,
                                    "data": data, "weights": "ema" if g.averaged else "raw"}
    if style_label:
        evaluated_on["style_label"] = list(style_label)
    ref = ref_index = None
    if reference:
        if g.family != "image":
            raise UsageError("--reference needs an image-to-image generator (matched to --content by file name).")
        pairs, missing = match_by_stem(files, reference)
        if missing:
            notes.append(f"{len(missing)} content image(s) with no reference of the same name: "
                         + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if not pairs:
            raise DataError(f"No content image has a reference of the same file name in {reference}.")
        ref_index = [i for i, _ in pairs]
        ref = torch.stack([load_tensor(p, side) for _, p in pairs])
    st = sw = None
    if style and label_weights is not None:
        st, sw = _label_style(style, style_side, tuple(getattr(g.module, "labels", ())), label_weights, notes)
    elif style:
        st = style_images(style, style_side)  # noise generators too (faces-dcgan-gram)
    domain = domain_images(real_spec, outputs.shape[-1], n) if real_spec else None
    ev = Evaluator(style=st, domain=domain, device=device, registry=reg, style_weights=sw, precision=precision)
    evaluated_on["precision"] = ev.precision
    m = ev.score(outputs, content=x, reference=ref, ref_index=ref_index)
    return EvalResult(m, g.path, int(g.meta.get("step", 0)), n, missing, notes, evaluated_on)


def _paired_sets(d: Any, content: str | None, reference: str | None, data: str | None, style: str | None,
                 notes: list[str]) -> tuple[str | None, str | None, str | None, str | None]:
    """(content, reference, data, style) of a paired run: its inputs and targets without --content; its
    targets, the domain the outputs should look like, as the real side and the Gram targets either way."""
    from ..files.data import pair_folders

    if content is None:
        inputs, targets = pair_folders(d.pairs) if d.pairs else (Path(d.input), Path(d.target))
        notes.append(f"content and references from the run's pairs ({inputs}, {targets}): training pairs")
        return str(inputs), reference or str(targets), data or str(targets), style or d.style or str(targets)
    if reference is None:
        notes.append("no paired metrics: give --reference DIR with the targets of --content's images (same file names)")
    style = style or d.style or None
    if data and style:
        return content, reference, data, style
    try:
        target_dir = str(pair_folders(d.pairs)[1] if d.pairs else d.target)
        found = bool(find_images(target_dir))
    except DataError:
        found = False
    if not found:
        notes.append(f"the run's target images ({d.pairs or d.target}) are gone: give --data and --style to "
                     "score FID/KID and style")
        return content, reference, data, style
    what = " and ".join(w for w, given in (("FID/KID", data), ("style", style)) if not given)
    notes.append(f"{what} against the run's target images ({target_dir}): training images, not held out")
    return content, reference, data or target_dir, style or target_dir


def _uses_style(reg: Registry, meta: dict[str, Any]) -> bool:
    """Whether a run's loss terms matched style statistics (a term whose class `needs` "style")."""
    for name in meta.get("run", {}).get("losses", {}):
        try:
            factory = reg.get(name).factory
        except StylezooError:
            continue
        if "style" in getattr(factory, "needs", frozenset()):
            return True
    return False


def _label_style(spec: str, side: int, labels: tuple[str, ...], weights: Tensor,
                 notes: list[str]) -> tuple[Tensor, Tensor | None]:
    """Style images for a label mix (L,): those of the labels weighted above 0, each weighing its label's
    weight over its label's image count, as training's per-label Gram targets (the mean of each label's
    images). A style set not labelled as the generator is (another --style) counts as one style."""
    from ..files.data import style_labels

    names, files, ys = style_labels(spec)
    if names != labels:
        notes.append(f"style_gram against all of --style {spec}: its labels are not the generator's "
                     f"({', '.join(labels)})")
        return style_images(spec, side), None
    label_of = dict(zip(files, ys))
    st = ImageSet([f for f in files if weights[label_of[f]] > 0], side, what="style", short=side)
    y = torch.tensor([label_of[f] for f in st.files])
    counts = torch.bincount(y, minlength=len(names))
    empty = [names[i] for i in range(len(names)) if weights[i] > 0 and counts[i] == 0]
    if empty:
        raise DataError(f"style label(s) {', '.join(empty)} have no readable image in {spec}; fix or remove them.")
    mix = ", ".join(f"{names[i]} {float(weights[i]):.3g}" for i in range(len(names)) if weights[i] > 0)
    notes.append(f"style_gram against the images of the label(s) {mix} in {spec}")
    return st.fixed(len(st)), weights.double()[y] / counts[y]


def _conditioned(g: Any, x: Tensor, device: str, style: str | None, labels: Sequence[str] | None,
                 notes: list[str]) -> tuple[Tensor, Tensor | None]:
    """The generator's outputs for `x`, conditioned as stylize would be when a style / labels are given, and
    the label mix (L,) when labels were."""
    from ..use.stylizer import Stylizer

    st = Stylizer(g, device=device, precision="fp32", backend="torch", keep_freed_memory=False)
    use_style = bool(style) and st.takes_style
    if labels:
        st.set_labels(list(labels))  # a UsageError for generators without labels
        notes.append(f"outputs for the style label(s) {', '.join(labels)}")
    if use_style:
        assert style is not None
        st.set_style(find_images(style))
        notes.append(f"outputs conditioned on --style {style}, as `stylezoo stylize --style` restyles")
    if not labels and not use_style:
        return generate(g.module, x, device=device), None
    return torch.cat([st.forward(c).float().cpu() for c in x.split(8)]), st.label_weights
