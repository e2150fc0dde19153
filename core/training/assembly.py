"""Assembling a run before its first step: the components built from the resolved config, the data, the
modules placed on the device (precision, memory format, DDP, torch.compile) and the plan of which
extractor layers each image batch needs. `Trainer.__init__` (core/training/engine.py) calls these in order.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, SupportsInt, cast

import torch
from torch import nn

from ..runtime import distributed as D
from ..files.data import ImageSet, PairSet, _seed, pair_folders
from ..errors import CompositionError, ConfigError, DataError, PluginError
from ..components.kinds import Extractor, LossTerm
from ..components.registry import Registry
from ..runs.rundir import holds_run
from ..runs.runconfig import ROLES, RunConfig, component_config

if TYPE_CHECKING:
    from .engine import Trainer

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


def check_new_out(out: str | Path) -> None:
    """Refuse to start a new run in a folder that already holds one (it would mix the two runs' files)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder for the run (it is created if missing).")
    if holds_run(out) and not ((out / "last.safetensors").exists() or any((out / "checkpoints").glob("*.safetensors"))):
        raise ConfigError(f"{out} holds a run that stopped before it saved a checkpoint, so there is nothing to resume: "
                          "start again with --overwrite, or give another --out (Python: overwrite=True).")
    if holds_run(out):
        raise ConfigError(f"{out} already holds a run: continue it with `stylezoo run --resume {out}`, replace it "
                          "with --overwrite, or give another --out (Python: train(resume=...) / overwrite=True).")


def judges_each_image_alone(disc: nn.Module | None) -> bool:
    """Whether a discriminator declares `per_sample` and holds no batch norm (whose statistics would mix
    the real and the fake batch if they were judged in one call)."""
    return disc is not None and bool(getattr(disc, "per_sample", False)) and not any(
        isinstance(m, nn.modules.batchnorm._BatchNorm) for m in disc.modules())


def prepare_data(tr: Trainer) -> None:
    d, size = tr.rc.data.resolved(), tr.t.size
    needs: set[str] = set().union(*(getattr(t, "needs", frozenset()) for t in tr.c.losses.values()))
    tr.pairs = None
    tr.fixed_target = None
    if d.paired:
        prepare_pairs(tr, d, size)
    else:
        wants = sorted(n for n, t in tr.c.losses.items()
                       if {"target", "feats_target"} & set(getattr(t, "needs", ())))
        if wants or tr.cond_disc:
            what = ", ".join(wants) or f"{tr.rc.disc} with cond_channels > 0"
            raise CompositionError(f"{what} needs paired data: give --pairs DIR (or --input DIR --target DIR).")
        short = round(size * d.zoom) if d.zoom else None
        tr.content = ImageSet(tr._train_content(d.content), size, what="content", strict=d.strict, stream=1,
                                cache_mb=d.cache_mb, short=short) \
            if (tr.family == IMAGE or (d.content and not d.data)) else None
        real_spec = d.data or (d.style if tr.family == IMAGE else d.content)
        tr.real = None
        if tr.c.disc is not None or "feats_content" in needs:
            if real_spec:
                tr.real = ImageSet(real_spec, size, what="real", strict=d.strict, stream=2, cache_mb=d.cache_mb,
                                     short=short)
        if tr.family == NOISE and tr.real is None and tr.content is not None:
            tr.real = tr.content
        if tr.family == NOISE and d.content and d.data and d.content != d.data and tr.rank == 0:
            log.warning("%s makes images from noise and learns them from --data (%s); --content %s is not "
                        "used: give --data %s to learn those images", tr.rc.gen, d.data, d.content, d.content)
    tr.style_images = None
    tr.style_files = []
    if "style" in needs:
        # paired runs with no --style take the style (Gram) targets from the target images
        spec = d.style or (tr.pairs.target_files() if tr.pairs is not None else d.data)
        if not spec:
            raise DataError("The style losses need style images: give --style FILE_OR_DIR.")
        ss = tr.t.style_size or min(2 * size, 512)
        st = ImageSet(spec, ss, what="style", strict=d.strict, stream=3, short=ss)
        tr.style_images = st.fixed(len(st))
        tr.style_files = list(st.files)
    if tr.pairs is not None:
        tr.fixed_input, tr.fixed_target = tr.pairs.fixed(tr.t.num_samples)
    elif tr.family == IMAGE:
        assert tr.content is not None
        tr.fixed_input = tr.content.fixed(tr.t.num_samples)
    else:
        g = torch.Generator().manual_seed(_seed(tr.t.seed, 99))
        tr.fixed_input = torch.randn(tr.t.num_samples, cast(int, tr.c.gen.latent_dim), generator=g)
    epochs = tr.t.epochs
    if epochs > 0:
        n = len(tr.pairs) if tr.pairs is not None else \
            len(tr.content) if tr.content is not None else len(tr.real or [])
        tr.t = dataclasses.replace(tr.t, steps=max(1, math.ceil(epochs * n / tr.t.batch)))

def prepare_pairs(tr: Trainer, d: Any, size: int) -> None:
    """Paired data: the generator input is the input image, the discriminator's real images the targets."""
    if tr.family != IMAGE:
        raise CompositionError(f"{tr.rc.gen} generates from noise; paired data needs an image generator.")
    if d.pairs and (d.input or d.target):
        raise DataError("Give paired data either as --pairs DIR or as --input DIR --target DIR, not both.")
    if not d.pairs and not (d.input and d.target):
        raise DataError("Paired data needs both --input DIR and --target DIR (files matched by name).")
    ignored = [f"--{k} {getattr(d, k)}" for k in ("content", "data") if getattr(d, k)]
    if ignored:
        log.warning("paired data: ignoring %s (the pairs' inputs and targets take their place)", ", ".join(ignored))
    inputs, targets = pair_folders(d.pairs) if d.pairs else (d.input, d.target)
    tr.pairs = PairSet(inputs, targets, size, strict=d.strict, stream=1,
                         short=round(size * d.zoom) if d.zoom else None)
    tr.content, tr.real = None, None

@torch.no_grad()
def check_gen_size(tr: Trainer) -> None:
    """Refuse, before any work, a training size the generator cannot take or make (one eval-mode forward)."""
    gen, size = tr.c.gen, tr.t.size
    x = torch.zeros(1, int(cast(SupportsInt, gen.latent_dim))) if tr.family == NOISE \
        else torch.zeros(1, 3, size, size)
    gen.eval()
    try:
        with torch.no_grad():
            shape = tuple(gen(x).shape)
    except Exception as e:  # a plugin's own exception types too: one line, not a traceback
        m = getattr(gen, "size_multiple", None)
        hint = f", a multiple of {m}" if m and size % m else ""
        msg = " ".join(str(e).split()) or type(e).__name__
        raise CompositionError(f"{tr.rc.gen} failed on a {tuple(x.shape)} input at --size {size}: "
                               f"{type(e).__name__}: {msg}. Try another --size{hint}; if none works, the "
                               "generator itself is broken.") from None
    finally:
        gen.train()
    if len(shape) != 4 or shape[1] != 3:
        raise PluginError(f"{tr.rc.gen} returned a {shape} tensor for a {tuple(x.shape)} input: a generator "
                          "must return RGB images (N, 3, H, W).")
    if shape != (1, 3, size, size):
        m = getattr(gen, "size_multiple", None)
        hint = f" (a multiple of {m})" if m and size % m else ""
        raise CompositionError(f"{tr.rc.gen} cannot train at --size {size}: it makes {shape[-2:]} images "
                               f"instead. Choose another --size{hint}.")

def place_modules(tr: Trainer) -> None:
    mf = torch.channels_last if tr.channels_last else torch.contiguous_format
    if tr.world > 1:  # batch norm over the global batch, as one process would compute it
        tr.c.gen = D.sync_batch_norm(tr.c.gen, tr.device)
        if tr.c.disc is not None:
            tr.c.disc = D.sync_batch_norm(tr.c.disc, tr.device)
    for m in (tr.c.gen, tr.c.disc, tr.c.feat, tr.c.adv, tr.c.gp, *tr.c.losses.values()):
        if m is not None:
            m.to(tr.device, memory_format=mf)  # type: ignore[call-overload]  # torch's stub lacks this overload
    if tr.c.feat is not None:
        tr.c.feat.eval()
        for p in tr.c.feat.parameters():
            p.requires_grad_(False)
        if tr.amp:  # autocast re-casts frozen weights at every call (it caches only trainable ones)
            tr.c.feat.to(torch.bfloat16)
    # channels_last "extractor": the extractor alone runs channels_last. On the CPU under bf16, oneDNN's
    # convolutions and pools need no reorders on it: whole steps 4-8% faster (with the Gram reading its
    # features in place, plugins/perceptual.py), but portrait-painting's style_gram came out 0.010 worse
    # on average over 12 seeds (worse in 10), so it is not the default. features() hands the gradients back in that layout
    tr.feat_cl = tr.c.feat is not None and tr.t.channels_last == "extractor"
    if tr.feat_cl:
        assert tr.c.feat is not None
        tr.c.feat.to(memory_format=torch.channels_last)
    # DDP (when distributed) wraps one forward per backward: the generator's, and the discriminator's call
    # on real images. D on fakes, the gradient penalty's double backward and the generator step's D call
    # (D frozen) use the bare module (`disc_plain`, `c.disc`): autograd sums every path's gradient into
    # D's parameters before DDP's hooks fire, once per parameter, inside the D step's single backward.
    tr.gen_fwd = D.wrap(tr.c.gen, tr.device)
    tr.disc_fwd = None
    tr.disc_plain = tr.c.disc
    tr.joint_d = judges_each_image_alone(tr.c.disc)  # real and fake in one call (see _judge)
    if tr.c.disc is not None:
        tr.disc_fwd = D.wrap(tr.c.disc, tr.device)
    if tr.t.compile:  # compiles lazily: the first step's time includes it (logged as time/step_s)
        # dynamic=False: one static graph per input shape; a run has two or three (D sees B and 2B images).
        # torch's automatic dynamic shapes, switched on when the same module code meets a second image size (a
        # second Trainer at another --size in one process), failed inside inductor on PatchGAN ("cannot
        # determine truth value of Relational"), torch 2.14.1
        compile_ = functools.partial(torch.compile, dynamic=False)
        tr.gen_fwd = compile_(tr.gen_fwd)
        if tr.c.disc is not None:
            tr.disc_fwd = compile_(tr.disc_fwd)
            tr.disc_plain = tr.disc_fwd if tr.world == 1 else compile_(tr.c.disc)
    elif tr.world == 1:
        tr.disc_plain = tr.disc_fwd

def plan_features(tr: Trainer) -> None:
    """Which layers each image batch needs, gathered over all active terms."""
    # in name order: checkpoints store the losses as a sorted table, so a resumed run sums its terms in
    # the same order as the run it continues (float sums depend on the order)
    terms = sorted(tr.c.losses.items())
    tr.g_terms = {n: t for n, t in terms if getattr(t, "step", "gen") == "gen"}
    tr.d_terms = {n: t for n, t in terms if getattr(t, "step", "gen") == "disc"}
    fake: set[str] = set()
    content: set[str] = set()
    target: set[str] = set()
    style: set[str] = set()
    for t in tr.c.losses.values():
        needs: frozenset[str] = getattr(t, "needs", frozenset())
        layers = tuple(cast(LossTerm, t).feature_layers(cast(Extractor, tr.c.feat))) \
            if tr.c.feat is not None else ()
        if "feats_fake" in needs:
            fake.update(layers)
        if "feats_content" in needs:
            content.update(layers)
        if "feats_target" in needs:
            target.update(layers)
        if "style" in needs:
            style.update(layers)
    order = getattr(tr.c.feat, "layer_names", ())
    key = (lambda n: order.index(n)) if order else (lambda n: n)
    tr.layers = {k: tuple(sorted(v, key=key)) for k, v in
                   (("fake", fake), ("content", content), ("target", target), ("style", style))}
