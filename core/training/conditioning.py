"""What conditional generators get each training step besides their input: a reference style or a style label.

Two kinds, both chosen by the generator (nothing to configure):
- reference-guided (`needs_style = True`, gen/adain): each step draws a batch of style crops from --style and
  passes it as `style=`; the loss terms get the styles' extractor features in `ctx.cond["style_feats"]` (so
  loss/moments compares each output with its own reference) and the generator's AdaIN target in
  `ctx.cond["adain_target"]`.
- label-conditioned (a `num_labels` field in the generator's config, gen/cin): the labels are the
  sub-folders of --style (or its images, one label each). Each step draws one label per sample, passed as
  `label=` to the generator, to a discriminator with `num_labels` (projection), and as `ctx.cond["label"]`;
  the discriminator's real images are style images of the same labels; style targets are per label.
Every draw is a pure function of (seed, step), like the engine's batches, so resumed runs repeat them.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from ..components.registry import Registry
from ..errors import CompositionError, DataError
from ..files.data import ImageSet, _seed, style_labels
from ..runs.runconfig import RunConfig, TrainConfig
from .assembly import Components, DataPlan

log = logging.getLogger("stylezoo")
NONE, STYLE, LABEL = "none", "style", "label"
MAX_LABEL_ROWS = 8  # label rows in a sample grid
MAX_DEFAULT_STYLES = 64  # style images averaged into a reference-guided generator's default style


def _fields(reg: Registry, name: str) -> set[str]:
    return {f.name for f in dataclasses.fields(reg.get(name).config)} if name else set()


def conditioning_kind(reg: Registry, rc: RunConfig) -> str:
    """"style", "label" or "none", from the generator alone."""
    entry = reg.get(rc.gen)
    if getattr(entry.factory, "needs_style", False):
        return STYLE
    return LABEL if "num_labels" in _fields(reg, rc.gen) else NONE


def with_labels(reg: Registry, rc: RunConfig) -> RunConfig:
    """The run with the style labels filled in: gen `num_labels`/`labels`, and disc `num_labels` when its real
    images are the labelled style images. A run resumed on changed style folders is refused."""
    if conditioning_kind(reg, rc) != LABEL:
        return rc
    d = rc.data.resolved()
    if d.paired:
        raise CompositionError(f"{rc.gen} learns one style per label of --style; paired data is not supported.")
    if not d.style:
        raise DataError(f"{rc.gen} learns one style per label: give --style DIR (one sub-folder per style, or "
                        "a folder of images, one style each).")
    names, _, _ = style_labels(d.style)
    sets = {k: dict(v) for k, v in rc.set.items()}
    gen = sets.setdefault("gen", {})
    old = gen.get("labels")
    if old is not None and tuple(old) != names:
        raise DataError(f"The style labels in --style {d.style} ({', '.join(names)}) differ from the run's "
                        f"({', '.join(old)}); restore the folders or start a new run.")
    gen.update(num_labels=len(names), labels=list(names))
    if rc.disc and "num_labels" in _fields(reg, rc.disc) and not d.data:
        sets.setdefault("disc", {})["num_labels"] = len(names)
    return dataclasses.replace(rc, set=sets)


class Conditioning:
    """Per-step conditions of a run (nothing for unconditional generators).

    `place` moves a batch to the run's device in its memory format (the Trainer's `place`)."""

    def __init__(self, reg: Registry, rc: RunConfig, train: TrainConfig, comps: Components, data: DataPlan, *,
                 device: torch.device, rank: int, world: int, place: Callable[[Tensor], Tensor]) -> None:
        self.kind = conditioning_kind(reg, rc)
        self.rc, self.train, self.comps, self.data = rc, train, comps, data
        self.device, self.rank, self.world, self.place = device, rank, world, place
        d = rc.data.resolved()
        self.style_set: ImageSet | None = None
        self.fixed_style: Tensor | None = None
        self.names: tuple[str, ...] = ()
        self.label_of: dict[Path, int] = {}
        self.members: list[list[int]] = []
        self.disc_label = int(comps.configs.get("disc", {}).get("num_labels", 0) or 0) > 0
        if self.kind == STYLE:
            self._set_up_styles(d)
        elif self.kind == LABEL:
            self._set_up_labels(d)
        reads = set().union(*(getattr(t, "cond_needs", frozenset()) for t in comps.losses.values()))
        if "adain_target" in reads:
            self._check_encoder()

    # -- set-up ----------------------------------------------------------------------------------------------
    def _set_up_styles(self, d: Any) -> None:
        if d.paired:
            raise CompositionError(f"{self.rc.gen} is reference-guided (content + style image); paired data is not "
                                   "supported: give --content DIR and --style DIR.")
        if not d.style:
            raise DataError(f"{self.rc.gen} learns from reference styles: give --style DIR (a folder of style images).")
        size = self.train.size
        self.style_set = ImageSet(d.style, size, what="style", strict=d.strict, stream=6, short=2 * size)
        n = self.data.fixed_input.shape[0]
        fixed = self.style_set.fixed(len(self.style_set))
        self.fixed_style = fixed[torch.arange(n) % fixed.shape[0]]  # one reference per sample-grid column
        if hasattr(self.comps.gen, "set_default_style"):
            cast(Any, self.comps.gen).set_default_style(fixed[:MAX_DEFAULT_STYLES].to(self.device))

    def _set_up_labels(self, d: Any) -> None:
        self.names, files, labels = style_labels(d.style)
        self.label_of = {f: y for f, y in zip(files, labels)}
        if self.disc_label:
            real = self.data.real
            if real is None:
                raise CompositionError(f"{self.rc.disc} is label-conditioned but the run has no real images.")
            self.members = [[] for _ in self.names]
            for i, f in enumerate(real.files):
                self.members[self.label_of[f]].append(i)
            empty = [self.names[y] for y, m in enumerate(self.members) if not m]
            if empty:
                raise DataError(f"style label(s) {', '.join(empty)} have no readable image; fix or remove them.")

    def _check_encoder(self) -> None:
        c, rc = self.comps, self.rc
        if not hasattr(c.gen, "last_target"):
            raise CompositionError(f"{', '.join(n for n, t in c.losses.items() if getattr(t, 'cond_needs', ()))} "
                                   f"compares with an AdaIN target, which {rc.gen} does not make: use --gen adain.")
        enc = getattr(c.gen, "encoder_id", None)
        own = (rc.feat, str(getattr(c.feat, "weights", "")))
        if enc is not None and c.feat is not None and tuple(enc) != own:
            raise CompositionError(f"The AdaIN content loss reads the run's extractor ({own[0]}, weights {own[1]}) "
                                   f"but {rc.gen} encodes with {enc[0]} (weights {enc[1]}): make them the same "
                                   "(--feat and --set feat.weights=... / gen.weights=...).")

    def style_label_tensor(self, files: list[Path]) -> Tensor | None:
        """Labels (S,) of style images (per-label style targets), or None for unlabelled runs."""
        if self.kind != LABEL:
            return None
        return torch.tensor([self.label_of[Path(f)] for f in files], dtype=torch.long)

    # -- per step --------------------------------------------------------------------------------------------
    def draw(self, step: int, real: Tensor | None,
             seed: int | None = None) -> tuple[dict[str, Any], dict[str, Any], Tensor | None]:
        """(generator kwargs, discriminator kwargs, real images) for a step; seed the run's by default."""
        b, per, rank, world = self.train.batch, self.train.batch // self.world, self.rank, self.world
        seed = self.train.seed if seed is None else seed
        if self.kind == STYLE:
            assert self.style_set is not None
            style = self.place(self.style_set.batch(step, b, seed, rank=rank, world=world))
            return {"style": style}, {}, real
        if self.kind == LABEL:
            g = torch.Generator().manual_seed(_seed(seed, 13, step))
            labels = torch.randint(len(self.names), (b,), generator=g)[rank * per:(rank + 1) * per]
            if not self.disc_label:
                return {"label": labels.to(self.device)}, {}, real
            idx = []
            for k, y in enumerate(labels.tolist()):
                m = self.members[y]
                gk = torch.Generator().manual_seed(_seed(seed, 14, step, rank * per + k))
                idx.append(m[int(torch.randint(len(m), (1,), generator=gk))])
            assert self.data.real is not None
            real = self.place(self.data.real.take(idx, step, seed, first=rank * per))
            lab = labels.to(self.device)
            return {"label": lab}, {"label": lab}, real
        return {}, {}, real

    @torch.no_grad()
    def step_cond(self, gcond: dict[str, Any], style_features: Callable[[Tensor], dict[str, Tensor]] | None,
                  ) -> dict[str, Any]:
        """ctx.cond for the loss terms, after the generator ran: labels, style features (`style_features`
        of the style batch, None when no term reads them), the AdaIN target."""
        cond: dict[str, Any] = {}
        if "label" in gcond:
            cond["label"] = gcond["label"]
        if "style" in gcond and style_features is not None:
            cond["style_feats"] = style_features(gcond["style"])
        target = getattr(self.comps.gen, "last_target", None)
        if self.kind == STYLE and target is not None:
            cond["adain_target"] = target
        return cond

    # -- samples ---------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample_rows(self, gen: nn.Module, autocast: Callable[[], Any]) -> list[Tensor]:
        """Reference-guided: content | style | output. Labelled: content, then one output row per label.
        `gen`: the generator that samples (the weight average when there is one)."""
        fixed = self.data.fixed_input
        x = self.place(fixed)
        gen.eval()
        try:
            with autocast():
                if self.kind == STYLE:
                    assert self.fixed_style is not None
                    out = gen(x, style=self.place(self.fixed_style)).float().cpu()
                    return [fixed, self.fixed_style, out]
                rows = [fixed]
                for y in range(min(len(self.names), MAX_LABEL_ROWS)):
                    lab = torch.full((x.shape[0],), y, dtype=torch.long, device=self.device)
                    rows.append(gen(x, label=lab).float().cpu())
                return rows
        finally:
            self.comps.gen.train()
