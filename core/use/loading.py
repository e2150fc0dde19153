"""Loading a trained generator with no flags: the composition and its configs come from the checkpoint's metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..components.config import build_config
from ..components.registry import Registry, default_registry
from ..errors import CheckpointError, ConfigError, UnknownComponentError
from ..files import checkpoint as ckpt
from ..runs.rundir import newest_valid_checkpoint


@dataclass
class LoadedGenerator:
    """A generator ready for inference plus what its checkpoint says about it."""

    module: nn.Module
    name: str
    family: str
    meta: dict[str, Any]
    path: Path
    averaged: bool = False  # the weights are the checkpoint's moving average (train.ema), not the raw ones


def checkpoint_path(spec: str | Path) -> Path:
    """A checkpoint file, or the newest valid checkpoint of a run directory."""
    p = Path(spec)
    if p.is_dir():
        return newest_valid_checkpoint(p, to="load")
    return p


def load_generator(spec: str | Path, *, device: str | torch.device = "cpu",
                   registry: Registry | None = None, ema: bool = True) -> LoadedGenerator:
    """Rebuild and load the generator of a checkpoint (file or run dir) in eval mode.

    A run trained with `train.ema` saves its generator's weight average too; `ema=True` loads that
    average (what the run's samples showed), `ema=False` the raw trained weights.
    """
    reg = registry or default_registry()
    path = checkpoint_path(spec)
    tensors, meta = ckpt.load(path, device=device)
    try:
        name = meta["composition"]["gen"]
        cfg = meta["configs"]["gen"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: its metadata does not describe a generator; "
                              "is it a stylezoo checkpoint?") from None
    try:
        entry = reg.get(name)
    except UnknownComponentError:
        raise ckpt.missing_component(path, name, _dist_of(meta, name), reg) from None
    try:
        config: Any = build_config(entry.config, cfg, owner=name)
    except ConfigError as e:
        raise CheckpointError(f"{path}: the generator config it holds is not valid here ({e}).") from None
    averaged = ema and any(k.startswith("ema.") for k in tensors)
    try:
        module = ckpt.build_checked(entry.factory, config, ckpt.section(tensors, "ema" if averaged else "gen"),
                                    "generator weight average (ema)" if averaged else "generator")
    except CheckpointError as e:
        if not averaged:
            raise
        raise CheckpointError(f"{e} The raw trained weights may still load: --no-ema (Python: ema=False).") from None
    module.to(device).eval()
    family = getattr(module, "family", meta.get("family", "image"))
    return LoadedGenerator(module, name, family, meta, path, averaged)


def _dist_of(meta: dict[str, Any], name: str) -> str | None:
    return ckpt.plugin_hint(meta, name)
