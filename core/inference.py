"""Load a trained generator from a checkpoint or run directory with no flags: the composition and its
configs come from the checkpoint's metadata."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checkpoint as ckpt
from .errors import CheckpointError, UnknownComponentError
from .registry import Registry, default_registry


@dataclass
class LoadedGenerator:
    """A generator ready for inference plus what its checkpoint says about it."""

    module: nn.Module
    name: str
    family: str
    meta: dict[str, Any]
    path: Path


def checkpoint_path(spec: str | Path) -> Path:
    """A checkpoint file, or the newest valid checkpoint of a run directory."""
    p = Path(spec)
    if p.is_dir():
        from .engine import newest_valid_checkpoint

        return newest_valid_checkpoint(p)
    return p


def load_generator(spec: str | Path, *, device: str | torch.device = "cpu",
                   registry: Registry | None = None) -> LoadedGenerator:
    """Rebuild and load the generator of a checkpoint (file or run dir) in eval mode."""
    reg = registry or default_registry()
    path = checkpoint_path(spec)
    tensors, meta = ckpt.load(path, device=device)
    try:
        name = meta["composition"]["gen"]
        cfg = meta["configs"]["gen"]
    except (KeyError, TypeError):
        raise CheckpointError(f"{path}: its metadata does not describe a generator; is it a stylezoo checkpoint?") from None
    try:
        entry = reg.get(name)
    except UnknownComponentError:
        dist = _dist_of(meta, name)
        raise CheckpointError(
            f"{path} needs the component {name!r}, which no installed plugin provides"
            + (f"; install the plugin package {dist!r} (pip install {dist})" if dist else "")
            + ". Run `stylezoo list` to see what is installed."
        ) from None
    from .config import build_config

    module = entry.factory(build_config(entry.config, cfg, owner=name))
    ckpt.load_module_state(module, ckpt.section(tensors, "gen"), "generator")
    module.to(device).eval()
    family = getattr(module, "family", meta.get("family", "image"))
    return LoadedGenerator(module, name, family, meta, path)


def _dist_of(meta: dict[str, Any], name: str) -> str | None:
    versions = meta.get("versions", {})
    others = [d for d in versions if d not in ("stylezoo", "torch")]
    return others[0] if len(others) == 1 else None
