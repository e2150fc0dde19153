"""Checkpoints and weights: safetensors only, with the composition and configs in the metadata.

A checkpoint is one `.safetensors` file. Tensor keys are prefixed by their owner (`gen.`, `disc.`,
`opt_g.`, `opt_d.`, ...); metadata key `stylezoo` holds JSON with the composition, each component's
resolved config, the step and the versions involved, so a checkpoint loads with no flags.
Writes go to a temporary file that is fsynced and renamed: a crash never leaves a half-written file
under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import CheckpointError

META_KEY = "stylezoo"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = {".pt", ".pth", ".pkl", ".ckpt", ".bin"}


def atomic_write(path: Path, write: Any) -> None:
    """Call `write(tmp_path)` then fsync and rename onto `path`; on any error the old file stays."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        if e.errno == 28:  # ENOSPC
            raise CheckpointError(
                f"No space left on the device while writing {path}; the previous file is intact. "
                "Free some disk space or write to another --out."
            ) from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save(path: str | Path, tensors: Mapping[str, Tensor], meta: Mapping[str, Any]) -> Path:
    """Write `tensors` and the JSON-able `meta` to a safetensors file, atomically."""
    path = Path(path)
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    header = {META_KEY: json.dumps({"format": FORMAT_VERSION, **meta}, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(plain, str(tmp), metadata=header))
    return path


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"{path} looks like a pickled PyTorch file: stylezoo loads only .safetensors files, because "
            "unpickling runs arbitrary code. Convert a file you trust with "
            "`safetensors.torch.save_file(torch.load(p, weights_only=True), 'model.safetensors')`."
        )


def read_meta(path: str | Path) -> dict[str, Any]:
    """The `stylezoo` metadata of a checkpoint, without reading its tensors."""
    from safetensors import safe_open

    path = _existing(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(META_KEY)
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a valid safetensors file ({e}). Is it truncated or corrupt?") from None
    if raw is None:
        raise CheckpointError(f"{path} is a safetensors file but not a stylezoo checkpoint (no '{META_KEY}' metadata).")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its stylezoo metadata is not valid JSON; the file is corrupt.") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its stylezoo metadata is not a table; the file is corrupt.")
    return meta


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read a checkpoint: (tensors, stylezoo metadata). Never unpickles anything."""
    path = _existing(path)
    meta = read_meta(path)
    try:
        tensors = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} could not be read ({e}); it is truncated or corrupt.") from None
    return tensors, meta


def _existing(path: str | Path) -> Path:
    path = Path(path)
    refuse_pickle(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}.")
    return path


def prefixed(prefix: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def section(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def load_module_state(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Load a state dict strictly; a mismatch is refused with what differs, never half-loaded."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shape:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad_shape:
            k = bad_shape[0]
            parts.append(f"{len(bad_shape)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise CheckpointError(
            f"The {what} tensors do not match the composition the checkpoint declares: {'; '.join(parts)}. "
            "The file was edited or belongs to another model; nothing was loaded."
        )
    module.load_state_dict(dict(state), strict=True)


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer's state as flat tensors plus JSON (param groups and scalar state)."""
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, Tensor):
                tensors[f"{pid}.{k}"] = v
            else:
                scalars.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor], info: Mapping[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    for pid, st in info.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    try:
        opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"The optimizer state in the checkpoint does not match the model: {e}") from None
