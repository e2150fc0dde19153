"""What a run saves and loads: its modules' and optimizers' tensors, and the metadata that rebuilds it.

A checkpoint is one safetensors file: `gen.*`, `ema.*`, `disc.*`, `opt_g.*`, `opt_d.*` tensors, and in its
metadata the run config, every component's config, the step, versions, the plugins to install and the
optimizers' layout. `stylezoo run --resume`, `stylezoo stylize` and best.safetensors all read this format.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..components.registry import Registry, _dist_version
from ..errors import CheckpointError
from ..files import checkpoint as ckpt
from ..runs.runconfig import ROLES, RunConfig, TrainConfig
from ..version import __version__
from .ema import GeneratorEMA

log = logging.getLogger("stylezoo")


@dataclass(frozen=True)
class RunModules:
    """The trained state of a run: what a checkpoint holds tensors of."""

    gen: nn.Module
    disc: nn.Module | None
    ema: GeneratorEMA | None
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer | None


def component_names(rc: RunConfig) -> list[str]:
    """The registered names a run is composed of (roles, then loss terms)."""
    return [n for n in [getattr(rc, r) for r in ROLES] + list(rc.losses) if n]


def run_meta(rc: RunConfig, train: TrainConfig, reg: Registry, *, configs: dict[str, dict[str, Any]], step: int,
             family: str, ema: GeneratorEMA | None, bad_steps: int) -> dict[str, Any]:
    """The metadata that rebuilds the run: composition, configs, step, versions, plugin packages."""
    names = component_names(rc)
    versions = {"stylezoo": __version__, "torch": torch.__version__}
    for d in sorted({e.dist for e in [reg.get(n) for n in names] if e.dist}):
        versions[d] = _dist_version(d) or "unknown"
    plugins = {n: e.dist for n in names if (e := reg.get(n)).dist}  # which package to install
    average = {"ema": {"decay": ema.decay, "updates": ema.updates}} if ema is not None else {}
    run = rc.to_dict()
    run["train"] = {**run["train"], "steps": train.steps, "epochs": 0.0}  # the length it trains for, epochs resolved
    bad = {"bad_steps": bad_steps} if bad_steps else {}  # a streak of NaN steps goes on across a resume
    return average | bad | {"run": run, "configs": configs, "step": step, "family": family,
                            "composition": {r: getattr(rc, r) for r in ROLES} | {"losses": list(rc.losses)},
                            "versions": versions, "plugins": plugins}


def run_state(m: RunModules, meta: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Everything a checkpoint holds: the tensors, and `meta` with the optimizers' layout added."""
    t = ckpt.prefixed("gen", m.gen.state_dict())
    if m.ema is not None:
        t |= ckpt.prefixed("ema", m.ema.state_dict())
    if m.disc is not None:
        t |= ckpt.prefixed("disc", m.disc.state_dict())
    optim: dict[str, Any] = {}
    for key, opt in (("opt_g", m.opt_g), ("opt_d", m.opt_d)):
        if opt is not None:
            tensors, optim[key] = ckpt.optimizer_state(opt)
            t |= ckpt.prefixed(key, tensors)
    return t, meta | {"optim": optim}


@dataclass(frozen=True)
class LoadedState:
    """What loading a checkpoint into a run's modules gives back besides the weights."""

    step: int
    bad_steps: int
    ema: GeneratorEMA | None  # the run's average, or a new one when train.ema was switched on at resume


def load_run_state(m: RunModules, path: Path, *, device: torch.device, ema_decay: float) -> LoadedState:
    """Load a checkpoint into a run's modules: every part is checked before any is loaded, so a mismatch
    never leaves the run half-loaded."""
    tensors, meta = ckpt.load(path, device=device)
    optim = meta.get("optim", {})
    parts = [("gen", m.gen, "generator"), ("disc", m.disc, "discriminator")]
    has_ema = any(k.startswith("ema.") for k in tensors)
    if m.ema is not None and has_ema:
        parts.append(("ema", m.ema.module, "generator weight average (ema)"))
    for key, module, what in parts:
        if module is not None:
            ckpt.check_module_state(module, ckpt.section(tensors, key), what)
    opts = [(k, o) for k, o in (("opt_g", m.opt_g), ("opt_d", m.opt_d)) if o is not None]
    for key, opt in opts:
        ckpt.check_optimizer_state(opt, ckpt.section(tensors, key), optim.get(key, {}))
    owners = {k for k, mod, _ in parts if mod is not None} | {k for k, _ in opts}
    stray = sorted(k for k in tensors if k.split(".", 1)[0] not in owners)
    if has_ema and m.ema is None and all(k.startswith("ema.") for k in stray):
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
    step = int(meta["step"])
    bad = meta.get("bad_steps", 0)
    bad_steps = bad if isinstance(bad, int) and not isinstance(bad, bool) and bad >= 0 else 0
    ema = m.ema
    if ema is not None:
        if has_ema:
            ema.updates = int(meta.get("ema", {}).get("updates", step))
        else:  # train.ema switched on at resume: the average starts from the loaded weights
            log.info("%s has no weight average; train.ema starts one from its generator", path.name)
            ema = GeneratorEMA(m.gen, ema_decay)
    return LoadedState(step, bad_steps, ema)
