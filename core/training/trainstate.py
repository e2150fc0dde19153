"""What a Trainer saves and loads: its modules' and optimizers' tensors, and the metadata that rebuilds it.

A checkpoint is one safetensors file: `gen.*`, `ema.*`, `disc.*`, `opt_g.*`, `opt_d.*` tensors, and in its
metadata the run config, every component's config, the step, versions, the plugins to install and the
optimizers' layout. `stylezoo run --resume`, `stylezoo stylize` and best.safetensors all read this format.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..files import checkpoint as ckpt
from .ema import GeneratorEMA
from ..errors import CheckpointError
from ..runs.runconfig import ROLES

if TYPE_CHECKING:
    from .engine import Trainer

log = logging.getLogger("stylezoo")


def component_names(tr: Trainer) -> list[str]:
    """The registered names a run is composed of (roles, then loss terms)."""
    return [n for n in [getattr(tr.rc, r) for r in ROLES] + list(tr.rc.losses) if n]


def run_meta(tr: Trainer) -> dict[str, Any]:
    """The metadata that rebuilds the run: composition, configs, step, versions, plugin packages."""
    from ..version import __version__
    from ..components.registry import _dist_version

    names = component_names(tr)
    versions = {"stylezoo": __version__, "torch": torch.__version__}
    for d in sorted({e.dist for e in [tr.reg.get(n) for n in names] if e.dist}):
        versions[d] = _dist_version(d) or "unknown"
    plugins = {n: e.dist for n in names if (e := tr.reg.get(n)).dist}  # which package to install
    ema = {"ema": {"decay": tr.ema.decay, "updates": tr.ema.updates}} if tr.ema is not None else {}
    run = tr.rc.to_dict()
    run["train"] = {**run["train"], "steps": tr.t.steps, "epochs": 0.0}  # the length it trains for, epochs resolved
    bad = {"bad_steps": tr.bad_steps} if tr.bad_steps else {}  # a streak of NaN steps goes on across a resume
    return ema | bad | {"run": run, "configs": tr.c.configs, "step": tr.step, "family": tr.family,
                  "composition": {r: getattr(tr.rc, r) for r in ROLES} | {"losses": list(tr.rc.losses)},
                  "versions": versions, "plugins": plugins}


def run_state(tr: Trainer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Everything a checkpoint holds: the tensors, and the metadata (with the optimizers' layout)."""
    t = ckpt.prefixed("gen", tr.c.gen.state_dict())
    if tr.ema is not None:
        t |= ckpt.prefixed("ema", tr.ema.state_dict())
    if tr.c.disc is not None:
        t |= ckpt.prefixed("disc", tr.c.disc.state_dict())
    optim: dict[str, Any] = {}
    for key, opt in (("opt_g", tr.opt_g), ("opt_d", tr.opt_d)):
        if opt is not None:
            tensors, optim[key] = ckpt.optimizer_state(opt)
            t |= ckpt.prefixed(key, tensors)
    return t, run_meta(tr) | {"optim": optim}


def load_run_state(tr: Trainer, path: Path) -> None:
    """Load a checkpoint into `tr`: every part is checked before any is loaded, so a mismatch never leaves
    the run half-loaded."""
    tensors, meta = ckpt.load(path, device=tr.device)
    optim = meta.get("optim", {})
    parts = [("gen", tr.c.gen, "generator"), ("disc", tr.c.disc, "discriminator")]
    has_ema = any(k.startswith("ema.") for k in tensors)
    if tr.ema is not None and has_ema:
        parts.append(("ema", tr.ema.module, "generator weight average (ema)"))
    for key, module, what in parts:
        if module is not None:
            ckpt.check_module_state(module, ckpt.section(tensors, key), what)
    opts = [(k, o) for k, o in (("opt_g", tr.opt_g), ("opt_d", tr.opt_d)) if o is not None]
    for key, opt in opts:
        ckpt.check_optimizer_state(opt, ckpt.section(tensors, key), optim.get(key, {}))
    owners = {k for k, m, _ in parts if m is not None} | {k for k, _ in opts}
    stray = sorted(k for k in tensors if k.split(".", 1)[0] not in owners)
    if has_ema and tr.ema is None and all(k.startswith("ema.") for k in stray):
        raise CheckpointError(f"{path} holds a generator weight average (ema.*) but this run has train.ema = 0: "
                              "resume without overriding train.ema, or --set train.ema=DECAY; nothing was loaded.")
    if stray:
        raise CheckpointError(f"{path} holds {len(stray)} tensors this run has no place for (e.g. {stray[0]}). "
                              "The file was edited or belongs to another composition; nothing was loaded.")
    for key, module, what in parts:
        if module is not None:
            ckpt.load_module_state(module, ckpt.section(tensors, key), what)
    for key, opt in opts:
        ckpt.load_optimizer_state(opt, ckpt.section(tensors, key), optim.get(key, {}))
    tr.step = int(meta["step"])
    bad = meta.get("bad_steps", 0)
    tr.bad_steps = bad if isinstance(bad, int) and not isinstance(bad, bool) and bad >= 0 else 0
    if tr.ema is not None:
        if has_ema:
            tr.ema.updates = int(meta.get("ema", {}).get("updates", tr.step))
        else:  # train.ema switched on at resume: the average starts from the loaded weights
            log.info("%s has no weight average; train.ema starts one from its generator", path.name)
            tr.ema = GeneratorEMA(tr.c.gen, tr.t.ema)
