"""Evaluate a generator: style, content, distribution and paired metrics (core/ops/metrics.py) on image sets.

`evaluate_checkpoint` serves `stylezoo eval`; `RunEval` serves the engine (every `train.eval_every` steps on
content images held aside from training, keeping `best.safetensors` by `train.eval_metric`). The metric
extractors are fixed, whatever the run trained with: feat/vgg16 (style/content/perceptual) and
feat/efficientnet-lite0 (FID/KID), both with their offline pretrained weights.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..components.kinds import Extractor
from ..components.registry import Registry, default_registry
from ..errors import CheckpointError, DataError, UsageError
from ..files import checkpoint as ckpt
from ..files.data import ImageSet, PairSet
from ..files.images import find_images, load_tensor, save_grid
from ..ops import metrics
from ..runs.runconfig import DataConfig, TrainConfig
from ..runtime.devices import bf16_supported

log = logging.getLogger("stylezoo")
STYLE_FEAT, DIST_FEAT = "feat/vgg16", "feat/efficientnet-lite0"
BEST = "best.safetensors"
DEFAULT_SIZE = 256  # the side `stylezoo eval` restyles at, without --size
EVAL_PRECISIONS = ("auto", "fp32", "bf16")


# -- running a generator --------------------------------------------------------------------------------------
@torch.no_grad()
def generate(gen: nn.Module, x: Tensor, *, batch: int = 8, device: torch.device | str = "cpu") -> Tensor:
    """Run a generator in eval mode over `x` (images, or latents for noise generators) in chunks; returns
    float32 images on the CPU. Image sides are reflect-padded to the generator's `size_multiple` and cropped
    back. The generator's train/eval mode is restored afterwards."""
    was_training = gen.training
    gen.eval()
    mult = int(getattr(gen, "size_multiple", 1) or 1)
    out = []
    try:
        for chunk in x.split(batch):
            chunk = chunk.to(device)
            if chunk.dim() == 4 and mult > 1:
                h, w = chunk.shape[-2:]
                ph, pw = (-h) % mult, (-w) % mult
                padded = torch.nn.functional.pad(chunk, (0, pw, 0, ph), mode="reflect") if ph or pw else chunk
                out.append(gen(padded)[..., :h, :w].float().cpu())
            else:
                out.append(gen(chunk).float().cpu())
    finally:
        gen.train(was_training)
    return torch.cat(out)


# -- image sets ------------------------------------------------------------------------------------------------
def load_folder(spec: str | Path, size: int) -> tuple[Tensor, list[Path]]:
    """Every image named by `spec`, its shorter side resized to `size` and centre-cropped: (N, 3, size, size)."""
    files = find_images(spec)
    if not files:
        raise DataError(f"No images found in {spec}. Point it at a folder of .jpg/.png files.")
    return torch.stack([load_tensor(f, size) for f in files]), files


def style_images(spec: str | Path | Sequence[Path], size: int) -> Tensor:
    """Style images as the engine takes them for its Gram targets: shorter side `size`, centre crop."""
    st = ImageSet(spec, size, what="style", short=size)
    return st.fixed(len(st))


def domain_images(spec: str | Path | Sequence[Path], size: int, n: int, *, seed: int = 0) -> Tensor:
    """The real side of FID/KID at `size`: every image of a set of at least `n` (centre crops), or else `n`
    random crops drawn from the few there are (a single painting gives `n` of its patches)."""
    files = list(spec) if isinstance(spec, (list, tuple)) else find_images(cast("str | Path", spec))
    if len(files) >= n:
        st = ImageSet(files, size, what="style domain", short=size)
        return st.fixed(len(st))
    return ImageSet(files, size, what="style domain", stream=4).batch(0, max(n, 2), seed)


def match_by_stem(files: Sequence[Path], ref_dir: str | Path) -> tuple[list[tuple[int, Path]], list[str]]:
    """Pair each file with the reference of the same stem: ([(index in files, reference)], stems with none)."""
    refs: dict[str, Path] = {}
    for r in find_images(ref_dir):
        if r.stem in refs:
            raise DataError(f"references {refs[r.stem]} and {r} share the stem {r.stem!r}: keep one of them.")
        refs[r.stem] = r
    pairs = [(i, refs[f.stem]) for i, f in enumerate(files) if f.stem in refs]
    missing = [f.stem for f in files if f.stem not in refs]
    return pairs, missing


def split_holdout(spec: str | Path, n: int) -> tuple[list[Path], list[Path]]:
    """(files to train on, files held aside): `n` evenly spaced files, at most half of them (the 5 bundled
    photos keep 3 to train on, not 1)."""
    files = find_images(spec)
    k = min(n, len(files) // 2)
    if k <= 0:
        return files, []
    held = sorted({min(len(files) - 1, int((i + 0.5) * len(files) / k)) for i in range(k)})
    return [f for i, f in enumerate(files) if i not in held], [files[i] for i in held]


# -- the evaluator ---------------------------------------------------------------------------------------------
def bf16_eval_layout(mod: nn.Module) -> nn.Module:
    """A frozen extractor as the Evaluator runs it under bf16 autocast: channels_last, and its weights in
    bfloat16 when it has no normalisation layer (batch norm's statistics stay float32)."""
    mod = mod.to(memory_format=torch.channels_last)
    if not any(isinstance(m, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)) for m in mod.modules()):
        mod = mod.to(torch.bfloat16)
    return mod


class Evaluator:
    """Scores generated images. Style targets and the real side's features are computed once, here."""

    def __init__(self, *, style: Tensor | None = None, domain: Tensor | None = None,
                 device: torch.device | str = "cpu", registry: Registry | None = None, batch: int = 8,
                 style_weights: Tensor | None = None, precision: str = "auto") -> None:
        """`style_weights` (S,): the style target is the Grams' weighted mean (a label mix), not their mean.
        `precision`: the extractors' forwards in "fp32", "bf16" (autocast) or "auto" (bf16 where the device has
        fast bfloat16, as training's default); features are cast to float32 before every metric."""
        self.device, self.batch = torch.device(device), batch
        if precision not in EVAL_PRECISIONS:
            raise UsageError(f"precision must be one of {', '.join(EVAL_PRECISIONS)}, got {precision!r}.")
        self.precision = "bf16" if precision == "bf16" or (precision == "auto" and bf16_supported(self.device)) \
            else "fp32"
        self.reg = registry or default_registry()
        self._vgg: nn.Module | None = None
        self._effl0: nn.Module | None = None
        self.style_targets: dict[str, Tensor] | None = None
        if style is not None:
            self.style_targets = self._mean_grams(style, style_weights)
        self.domain_feats = self.pooled(domain) if domain is not None else None

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def vgg(self) -> nn.Module:
        if self._vgg is None:
            self._vgg = self._extractor(STYLE_FEAT)
        return self._vgg

    @property
    def effl0(self) -> nn.Module:
        if self._effl0 is None:
            self._effl0 = self._extractor(DIST_FEAT)
        return self._effl0

    def _extractor(self, name: str) -> nn.Module:
        """A metric extractor, channels_last under bf16: oneDNN's bf16 convolutions then skip their reorders
        (no gradient is taken here, so no layout mixes in a backward). Under bf16 an extractor without
        normalisation layers (VGG16) also holds bfloat16 weights: autocast re-casts frozen weights at every
        call, to the same values (the engine does the same with its extractor)."""
        mod = self.reg.build(name).to(self.device).eval()
        return bf16_eval_layout(mod) if self.precision == "bf16" else mod

    def _input(self, x: Tensor) -> Tensor:
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.precision == "bf16" else x

    @torch.no_grad()
    def vgg_feats(self, x: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """Features of a few images (one batch's worth); `score` reduces each batch before the next. They are
        bfloat16 under bf16: every metric computes in float32 (the Gram multiplies bfloat16 features, exact in
        float32, with float32 sums, core/ops/stats.py)."""
        with self._autocast():
            return dict(self.vgg(self._input(x), layers))

    @torch.no_grad()
    def _mean_grams(self, style: Tensor, weights: Tensor | None = None) -> dict[str, Tensor]:
        """The style images' mean Gram matrix per layer (weighted by `weights`, normalised), one batch at a time
        (all their feature maps at once took 10 GB for 150 style images)."""
        layers = tuple(cast(Extractor, self.vgg).style_layers)
        if weights is not None and (weights.shape != style.shape[:1] or (weights < 0).any() or not weights.sum() > 0):
            raise UsageError(f"style weights {tuple(weights.shape)} must be >= 0, one per style image, with a "
                             "positive sum.")
        w = None if weights is None else (weights.double() / weights.double().sum()).split(self.batch)
        sums: dict[str, Tensor] = {}
        for i, c in enumerate(style.split(self.batch)):
            for k, g in metrics.gram_targets(self.vgg_feats(c, layers), None if w is None else w[i]).items():
                sums[k] = sums.get(k, 0) + (g * c.shape[0] if w is None else g)
        return {k: v / style.shape[0] if w is None else v for k, v in sums.items()}

    @torch.no_grad()
    def pooled(self, x: Tensor) -> Tensor:
        with self._autocast():
            return torch.cat([cast(Any, self.effl0).pooled(self._input(c)).double().cpu()
                              for c in x.split(self.batch)])

    def perceptual_layers(self) -> tuple[str, ...]:
        vgg = cast(Extractor, self.vgg)
        names = tuple(vgg.layer_names)
        return (metrics.PERCEPTUAL_LAYERS if all(n in names for n in metrics.PERCEPTUAL_LAYERS)
                else tuple(vgg.style_layers))

    def score(self, outputs: Tensor, *, content: Tensor | None = None, reference: Tensor | None = None,
              ref_index: Sequence[int] | None = None) -> dict[str, float]:
        """Every metric that applies: style (with style images), content (with `content`, the inputs that
        produced `outputs` in order), FID/KID (with a real side and 2+ outputs), paired (with `reference`,
        aligned with `outputs[ref_index]`, or with `outputs` when `ref_index` is None)."""
        out: dict[str, float] = {}
        vgg = cast(Extractor, self.vgg)
        style_l = tuple(vgg.style_layers) if self.style_targets is not None else ()
        content_l = tuple(vgg.content_layers) if content is not None else ()
        n = outputs.shape[0]
        sel_index = list(range(n)) if ref_index is None else list(ref_index)
        pl = self.perceptual_layers() if reference is not None else ()
        # each output goes through VGG once, to every layer any metric reads (paired ones included)
        layers = tuple(dict.fromkeys(style_l + content_l + pl))
        if content is not None and content.shape != outputs.shape:
            raise UsageError(f"outputs {tuple(outputs.shape)} and inputs {tuple(content.shape)} differ in shape.")
        if reference is not None:
            sel = outputs[sel_index]
            if reference.shape != sel.shape:
                raise UsageError(f"references {tuple(reference.shape)} and outputs {tuple(sel.shape)} differ in shape.")
        per_image: dict[str, list[Tensor]] = {}  # every distance is per image: reduced batch by batch
        for i in range(0, n, self.batch) if layers else ():
            o = outputs[i:i + self.batch]
            feats = self.vgg_feats(o, layers)
            if self.style_targets is not None:
                per_image.setdefault("style_gram", []).append(
                    metrics.gram_distance({k: feats[k] for k in style_l}, self.style_targets))
            if content is not None:
                c = content[i:i + self.batch]
                cf = self.vgg_feats(c, content_l)
                per_image.setdefault("content_feat", []).append(
                    metrics.feature_distance({k: feats[k] for k in content_l}, cf))
                per_image.setdefault("content_ssim", []).append(metrics.ssim(o, c))
            js = [j for j, k in enumerate(sel_index) if i <= k < i + self.batch] if pl else []
            if js:  # the references of this batch's outputs
                at = [sel_index[j] - i for j in js]
                mine = feats if at == list(range(o.shape[0])) else {k: feats[k][at] for k in pl}  # no copy if all
                per_image.setdefault("ref_perceptual", []).append(metrics.perceptual_distance(
                    {k: mine[k] for k in pl}, self.vgg_feats(cast(Tensor, reference)[js], pl)))
        fid_kid: dict[str, float] = {}
        if self.domain_feats is not None and self.domain_feats.shape[0] >= 2 and n >= 2:
            fid_kid = metrics.fid_kid(self.domain_feats, self.pooled(outputs))
        if reference is not None:
            for i in range(0, sel.shape[0], self.batch):
                a, b = sel[i:i + self.batch], reference[i:i + self.batch]
                per_image.setdefault("ref_ssim", []).append(metrics.ssim(a, b))
                per_image.setdefault("ref_l1", []).append(metrics.l1(a, b))
        mean = {k: float(torch.cat([v.flatten().cpu() for v in vs]).mean()) for k, vs in per_image.items()}
        out |= {k: mean[k] for k in ("style_gram", "content_feat", "content_ssim") if k in mean}
        out |= fid_kid
        out |= {k: mean[k] for k in ("ref_ssim", "ref_l1", "ref_perceptual") if k in mean}
        return out


# -- during training ------------------------------------------------------------------------------------------
class RunEval:
    """The engine's evaluation: held-aside inputs, metrics as `eval/NAME`, and whether a metric improved.

    Image generators are scored on the content images held aside from training (`eval_files`) against the
    style images; noise generators on fixed latents against (up to 64 of) the real images. The engine
    saves `best.safetensors` when `__call__` says the run's `eval_metric` improved.
    """

    def __init__(self, data: DataConfig, train: TrainConfig, *, out: Path, family: str, eval_files: Sequence[Path],
                 pairs: PairSet | None, fixed_input: Tensor, real: ImageSet | None, latent_dim: int | None,
                 styled: bool, device: torch.device, registry: Registry | None = None) -> None:
        """`styled`: the run has style targets (a style loss uses --style)."""
        d, size = data.resolved(), train.size
        self.metric = train.eval_metric
        self.path = out / BEST
        self.samples = out / "samples" / "eval.png"
        self.device = device
        self.best = best_value(self.path, self.metric)
        self.image = family == "image"
        self.reference: Tensor | None = None
        style_size = train.style_size or min(2 * size, 512)
        if pairs is not None:
            log.warning("eval: paired runs are evaluated on their first %d training pairs (none held aside)",
                        train.eval_holdout)
            self.inputs, self.reference = (t.float().cpu() for t in pairs.fixed(train.eval_holdout))
            st = style_images(d.style, style_size) if d.style else None
            domain: Tensor | None = domain_images(pairs.target_files(), size, max(2, self.inputs.shape[0]))
        elif self.image:
            if eval_files:
                self.inputs = torch.stack([load_tensor(f, size) for f in eval_files])
            else:
                log.warning("eval: too few content images to hold any aside; evaluating on training images")
                self.inputs = fixed_input[: train.eval_holdout].float().cpu()
            style_spec = d.style or d.data
            real_spec = d.data or d.style
            st = style_images(style_spec, style_size) if style_spec else None
            domain = domain_images(real_spec, size, max(2, self.inputs.shape[0])) if real_spec else None
        else:
            domain = real.fixed(min(len(real), 64)) if real is not None else None
            n = domain.shape[0] if domain is not None else train.num_samples
            g = torch.Generator().manual_seed(train.seed + 1234)
            self.inputs = torch.randn(max(n, 2), int(cast(int, latent_dim)), generator=g)
            # a style the samples are pulled toward (faces-dcgan-gram): scored as for image generators; only
            # when a style loss uses it (a plain DCGAN run still carries the default recipe's style image)
            st = style_images(d.style, style_size) if d.style and styled else None
        self.evaluator = Evaluator(style=st, domain=domain, device=device, registry=registry)
        self.warned = False

    def __call__(self, gen: nn.Module) -> tuple[dict[str, float], bool]:
        """Score `gen` now and write the eval grid: (eval/ logs, whether `eval_metric` improved on the best)."""
        outputs = generate(gen, self.inputs, device=self.device)
        m = self.evaluator.score(outputs, content=self.inputs if self.image else None, reference=self.reference)
        save_grid([self.inputs, outputs] if self.image else [outputs], self.samples)
        value = m.get(self.metric)
        improved = False
        if value is None:
            if not self.warned:
                log.warning("eval: %s cannot be computed in this run (computed: %s); no %s is kept",
                            self.metric, ", ".join(m) or "nothing", BEST)
                self.warned = True
        elif metrics.better(self.metric, value, self.best):
            self.best, improved = value, True
        return {f"eval/{k}": v for k, v in m.items()}, improved

    def best_meta(self, logs: dict[str, float]) -> dict[str, Any]:
        """What best.safetensors adds to a checkpoint's metadata: the scores (from `logs`) and the metric."""
        return {"eval": {k.removeprefix("eval/"): v for k, v in logs.items()}, "eval_metric": self.metric}


def best_value(path: Path, metric: str) -> float | None:
    """The `metric` value stored in a best checkpoint's metadata (None without one, or for another metric)."""
    if not path.is_file():
        return None
    try:
        meta = ckpt.read_meta(path)
    except CheckpointError:  # a torn file is replaced by the next improvement
        return None
    v = meta.get("eval", {}).get(metric) if meta.get("eval_metric") == metric else None
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


__all__ = ["Evaluator", "RunEval", "bf16_eval_layout", "generate", "match_by_stem", "split_holdout", "domain_images",
           "style_images", "load_folder", "best_value"]
