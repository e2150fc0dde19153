"""Assembling a run before its first step: the components built from the resolved config, the data, the
modules placed on the device (precision, memory format, DDP, torch.compile) and the plan of which
extractor layers each image batch needs. Each step takes values and returns a value (`Components`,
`DataPlan`, `Placement`, `FeaturePlan`); `Trainer.__init__` (core/training/engine.py) calls them in order.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, SupportsInt, cast

import torch
from torch import Tensor, nn

from ..components.kinds import Extractor, LossTerm
from ..components.registry import Registry
from ..errors import CompositionError, ConfigError, DataError, PluginError
from ..files.data import ImageSet, PairSet, _seed, pair_folders
from ..ops.layers import grad_in_layout
from ..runs.runconfig import ROLES, DataConfig, RunConfig, TrainConfig, component_config
from ..runtime import distributed as dist

NOISE, IMAGE = "noise", "image"
log = logging.getLogger("stylezoo")


@dataclasses.dataclass
class Components:
    """The built modules of a run."""

    gen: nn.Module
    disc: nn.Module | None
    feat: nn.Module | None
    adv: nn.Module | None
    gp: nn.Module | None
    losses: dict[str, nn.Module]
    configs: dict[str, dict[str, Any]]


def build_components(reg: Registry, rc: RunConfig) -> Components:
    """Build every component of a run from its resolved config."""
    from ..components.config import config_to_dict

    built: dict[str, Any] = {}
    configs: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        name = getattr(rc, role)
        if not name:
            built[role] = None
            continue
        cfg = component_config(reg, rc, role)
        configs[role] = config_to_dict(cfg)
        built[role] = reg.build(name, config=cfg)
    losses = {}
    for name in rc.losses:
        cfg = component_config(reg, rc, name)
        configs[name] = config_to_dict(cfg)
        losses[name] = reg.build(name, config=cfg)
    if built["gp"] is not None and rc.gp == "gp/none":
        built["gp"] = None
    return Components(built["gen"], built["disc"], built["feat"], built["adv"], built["gp"], losses, configs)


def check_batch_split(batch: int, world: int) -> None:
    """Refuse a global batch that does not split evenly over `world` processes."""
    if batch % world:
        raise ConfigError(f"--batch {batch} does not split over {world} processes: the global batch must be a "
                          f"multiple of the number of processes (e.g. {world * max(1, batch // world)}).")


def judges_each_image_alone(disc: nn.Module | None) -> bool:
    """Whether a discriminator declares `per_sample` and holds no batch norm (whose statistics would mix
    the real and the fake batch if they were judged in one call)."""
    return disc is not None and bool(getattr(disc, "per_sample", False)) and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in disc.modules())


@dataclasses.dataclass(frozen=True)
class DataPlan:
    """What a run trains on, and the fixed images its sample grids show."""

    content: ImageSet | None  # the generator's input images (image generators, unpaired data)
    real: ImageSet | None  # what the discriminator learns as real: the style images, or --data
    pairs: PairSet | None  # paired data (input, target) instead of content and real
    fixed_input: Tensor  # the inputs (or noise) the sample grids show, the same all run
    fixed_target: Tensor | None  # their true targets, for paired data
    style_images: Tensor | None  # the style images the style targets come from, once per run
    style_files: list[Path]
    steps: int  # the run's length in steps (train.epochs resolved against the data)


def prepare_data(rc: RunConfig, train: TrainConfig, comps: Components, *, family: str, cond_disc: bool,
                 rank: int, content_files: Any = None) -> DataPlan:
    """Open the run's images. `content_files`: the content to train on when some are held aside for evaluation."""
    d, size = rc.data.resolved(), train.size
    needs: set[str] = set().union(*(getattr(t, "needs", frozenset()) for t in comps.losses.values()))
    pairs = content = real = None
    if d.paired:
        pairs = open_pairs(d, size, family, rc.gen)
    else:
        wants = sorted(n for n, t in comps.losses.items()
                       if {"target", "feats_target"} & set(getattr(t, "needs", ())))
        if wants or cond_disc:
            what = ", ".join(wants) or f"{rc.disc} with cond_channels > 0"
            raise CompositionError(f"{what} needs paired data: give --pairs DIR (or --input DIR --target DIR).")
        short = round(size * d.zoom) if d.zoom else None
        content = ImageSet(content_files if content_files is not None else d.content, size, what="content",
                           strict=d.strict, stream=1, cache_mb=d.cache_mb, short=short) \
            if (family == IMAGE or (d.content and not d.data)) else None
        real_spec = d.data or (d.style if family == IMAGE else d.content)
        if (comps.disc is not None or "feats_content" in needs) and real_spec:
            real = ImageSet(real_spec, size, what="real", strict=d.strict, stream=2, cache_mb=d.cache_mb, short=short)
        if family == NOISE and real is None and content is not None:
            real = content
        if family == NOISE and d.content and d.data and d.content != d.data and rank == 0:
            log.warning("%s makes images from noise and learns them from --data (%s); --content %s is not "
                        "used: give --data %s to learn those images", rc.gen, d.data, d.content, d.content)
    style_images, style_files = None, []
    if "style" in needs:
        # paired runs with no --style take the style (Gram) targets from the target images
        spec = d.style or (pairs.target_files() if pairs is not None else d.data)
        if not spec:
            raise DataError("The style losses need style images: give --style FILE_OR_DIR.")
        ss = train.style_size or min(2 * size, 512)
        st = ImageSet(spec, ss, what="style", strict=d.strict, stream=3, short=ss)
        style_images, style_files = st.fixed(len(st)), list(st.files)
    fixed_target = None
    if pairs is not None:
        fixed_input, fixed_target = pairs.fixed(train.num_samples)
    elif family == IMAGE:
        assert content is not None
        fixed_input = content.fixed(train.num_samples)
    else:
        g = torch.Generator().manual_seed(_seed(train.seed, 99))
        fixed_input = torch.randn(train.num_samples, cast(int, comps.gen.latent_dim), generator=g)
    steps = train.steps
    if train.epochs > 0:
        n = len(pairs) if pairs is not None else len(content) if content is not None else len(real or [])
        steps = max(1, math.ceil(train.epochs * n / train.batch))
    return DataPlan(content, real, pairs, fixed_input, fixed_target, style_images, style_files, steps)


def open_pairs(d: DataConfig, size: int, family: str, gen: str) -> PairSet:
    """Paired data: the generator input is the input image, the discriminator's real images the targets."""
    if family != IMAGE:
        raise CompositionError(f"{gen} generates from noise; paired data needs an image generator.")
    if d.pairs and (d.input or d.target):
        raise DataError("Give paired data either as --pairs DIR or as --input DIR --target DIR, not both.")
    if not d.pairs and not (d.input and d.target):
        raise DataError("Paired data needs both --input DIR and --target DIR (files matched by name).")
    ignored = [f"--{k} {getattr(d, k)}" for k in ("content", "data") if getattr(d, k)]
    if ignored:
        log.warning("paired data: ignoring %s (the pairs' inputs and targets take their place)", ", ".join(ignored))
    inputs, targets = pair_folders(d.pairs) if d.pairs else (d.input, d.target)
    return PairSet(inputs, targets, size, strict=d.strict, stream=1, short=round(size * d.zoom) if d.zoom else None)


@torch.no_grad()
def check_gen_size(gen: nn.Module, name: str, family: str, size: int) -> None:
    """Refuse, before any work, a training size the generator cannot take or make (one eval-mode forward)."""
    x = torch.zeros(1, int(cast(SupportsInt, gen.latent_dim))) if family == NOISE \
        else torch.zeros(1, 3, size, size)
    gen.eval()
    try:
        with torch.no_grad():
            shape = tuple(gen(x).shape)
    except Exception as e:  # a plugin's own exception types too: one line, not a traceback
        m = getattr(gen, "size_multiple", None)
        hint = f", a multiple of {m}" if m and size % m else ""
        msg = " ".join(str(e).split()) or type(e).__name__
        raise CompositionError(f"{name} failed on a {tuple(x.shape)} input at --size {size}: "
                               f"{type(e).__name__}: {msg}. Try another --size{hint}; if none works, the "
                               "generator itself is broken.") from None
    finally:
        gen.train()
    if len(shape) != 4 or shape[1] != 3:
        raise PluginError(f"{name} returned a {shape} tensor for a {tuple(x.shape)} input: a generator "
                          "must return RGB images (N, 3, H, W).")
    if shape != (1, 3, size, size):
        m = getattr(gen, "size_multiple", None)
        if family == IMAGE and not _makes_its_size(gen, int(m or 1) * 16):  # another size would not help either
            raise PluginError(f"{name} returned {shape[-2:]} images for {size}x{size} inputs, and does not match its "
                              f"input size at a multiple of its size_multiple ({m or 1}) either: its output does not "
                              "follow its declared sizes (a bug to report to the plugin).")
        hint = f" (a multiple of {m})" if m and size % m else ""
        raise CompositionError(f"{name} cannot train at --size {size}: it makes {shape[-2:]} images "
                               f"instead. Choose another --size{hint}.")

@dataclasses.dataclass(frozen=True)
class Placement:
    """How the engine calls the modules once they are on their device."""

    gen_fwd: Callable[..., Tensor]  # the generator's forward (DDP-wrapped and compiled as asked)
    disc_fwd: Callable[..., Tensor] | None  # the discriminator's forward on real images (DDP-wrapped)
    disc_plain: Callable[..., Tensor] | None  # the discriminator's other calls (see below)
    joint_d: bool  # real and fake judged in one call
    feat_cl: bool  # the extractor alone runs channels_last
    device: torch.device
    amp: bool  # bfloat16 autocast
    channels_last: bool  # batches go to the device channels_last

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The run's precision: bfloat16 autocast, or nothing."""
        if self.amp:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def place(self, x: Tensor) -> Tensor:
        """A batch on the run's device, in its memory format."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def features(self, feat: nn.Module, x: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """The extractor's features of `x` at `layers`, run in the extractor's memory format (with gradients
        handed back in that layout: loss terms' NCHW gradients made the extractor's backward mix layouts)."""
        if not self.feat_cl:
            return feat(x, layers)
        out = feat(x.contiguous(memory_format=torch.channels_last), layers)
        return {k: grad_in_layout(v) for k, v in out.items()} if torch.is_grad_enabled() else out


@torch.no_grad()
def _makes_its_size(gen: nn.Module, side: int) -> bool:
    """Whether an image generator returns (1, 3, side, side) for a (1, 3, side, side) input (in eval mode)."""
    gen.eval()
    try:
        return tuple(gen(torch.zeros(1, 3, side, side)).shape) == (1, 3, side, side)
    except Exception:
        return False
    finally:
        gen.train()


def place_modules(comps: Components, device: torch.device, *, channels_last: bool, amp: bool, world: int,
                  train: TrainConfig) -> tuple[Components, Placement]:
    """Move the modules to `device` in their memory format and precision; (the components, how to call them).
    With several processes the components come back with synchronised batch norm."""
    mf = torch.channels_last if channels_last else torch.contiguous_format
    if world > 1:  # batch norm over the global batch, as one process would compute it
        comps = dataclasses.replace(comps, gen=dist.sync_batch_norm(comps.gen, device),
                                    disc=dist.sync_batch_norm(comps.disc, device) if comps.disc is not None else None)
    for m in (comps.gen, comps.disc, comps.feat, comps.adv, comps.gp, *comps.losses.values()):
        if m is not None:
            m.to(device, memory_format=mf)  # type: ignore[call-overload]  # torch's stub lacks this overload
    if comps.feat is not None:
        comps.feat.eval()
        for p in comps.feat.parameters():
            p.requires_grad_(False)
        if amp:  # autocast re-casts frozen weights at every call (it caches only trainable ones)
            comps.feat.to(torch.bfloat16)
    # channels_last "extractor": the extractor alone runs channels_last (on the CPU under bf16, oneDNN's
    # convolutions and pools need no reorders on it; docs/benchmarks.md). Off by default: it trained a
    # slightly weaker style. Trainer.features() hands the gradients back in that layout.
    feat_cl = comps.feat is not None and train.channels_last == "extractor"
    if feat_cl:
        assert comps.feat is not None
        comps.feat.to(memory_format=torch.channels_last)
    # DDP (when distributed) wraps one forward per backward: the generator's, and the discriminator's call
    # on real images. D on fakes, the gradient penalty's double backward and the generator step's D call
    # (D frozen) use the bare module (`disc_plain`, `comps.disc`): autograd sums every path's gradient into
    # D's parameters before DDP's hooks fire, once per parameter, inside the D step's single backward.
    gen_fwd: Callable[..., Tensor] = dist.wrap(comps.gen, device)
    disc_fwd: Callable[..., Tensor] | None = dist.wrap(comps.disc, device) if comps.disc is not None else None
    disc_plain: Callable[..., Tensor] | None = comps.disc
    if train.compile:  # compiles lazily: the first step's time includes it (logged as time/step_s)
        # dynamic=False: one static graph per input shape; a run has two or three (D sees B and 2B images).
        # torch's automatic dynamic shapes, switched on when the same module code meets a second image size (a
        # second Trainer at another --size in one process), failed inside inductor on PatchGAN ("cannot
        # determine truth value of Relational"), torch 2.14.1
        compile_ = functools.partial(torch.compile, dynamic=False)
        gen_fwd = compile_(gen_fwd)
        if comps.disc is not None:
            disc_fwd = compile_(disc_fwd)
            disc_plain = disc_fwd if world == 1 else compile_(comps.disc)
    elif world == 1:
        disc_plain = disc_fwd
    return comps, Placement(gen_fwd, disc_fwd, disc_plain, judges_each_image_alone(comps.disc), feat_cl, device, amp,
                            channels_last)


@dataclasses.dataclass(frozen=True)
class FeaturePlan:
    """The loss terms of each update, and the extractor layers each image batch needs."""

    g_terms: dict[str, nn.Module]  # loss terms of the generator step, in name order
    d_terms: dict[str, nn.Module]  # loss terms of the discriminator step
    layers: dict[str, tuple[str, ...]]  # extractor layers per image batch: fake, content, target, style


def plan_features(comps: Components) -> FeaturePlan:
    """Which layers each image batch needs, gathered over all active terms."""
    # in name order: checkpoints store the losses as a sorted table, so a resumed run sums its terms in
    # the same order as the run it continues (float sums depend on the order)
    terms = sorted(comps.losses.items())
    sets: dict[str, set[str]] = {"fake": set(), "content": set(), "target": set(), "style": set()}
    for t in comps.losses.values():
        needs: frozenset[str] = getattr(t, "needs", frozenset())
        layers = tuple(cast(LossTerm, t).feature_layers(cast(Extractor, comps.feat))) \
            if comps.feat is not None else ()
        for batch, need in (("fake", "feats_fake"), ("content", "feats_content"), ("target", "feats_target"),
                            ("style", "style")):
            if need in needs:
                sets[batch].update(layers)
    order = getattr(comps.feat, "layer_names", ())
    key = (lambda n: order.index(n)) if order else (lambda n: n)
    return FeaturePlan({n: t for n, t in terms if getattr(t, "step", "gen") == "gen"},
                       {n: t for n, t in terms if getattr(t, "step", "gen") == "disc"},
                       {k: tuple(sorted(v, key=key)) for k, v in sets.items()})
