"""Module and optimizer state in a checkpoint's tensors: every part is checked against what it is loaded into
before any is loaded, so a mismatch never leaves a module half-loaded."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import CheckpointError


def prefixed(prefix: str, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {f"{prefix}.{k}": v for k, v in state.items()}


def section(tensors: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def load_module_state(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Load a state dict strictly; a mismatch is refused with what differs, never half-loaded."""
    check_module_state(module, state, what)
    module.load_state_dict(dict(state), strict=True)


def check_buildable(factory: Any, config: Any, state: Mapping[str, Tensor], what: str) -> None:
    """Refuse a config whose module would not match `state`, before allocating it: the module is first built
    on the meta device, so an edited config cannot make us allocate more than the file holds."""
    import warnings

    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. a factory loading pretrained weights into meta tensors
            probe = factory(config)
    except Exception:  # a factory that cannot run on the meta device is checked after the real build
        return
    if isinstance(probe, nn.Module):
        check_module_state(probe, state, what)


def build_checked(factory: Any, config: Any, state: Mapping[str, Tensor], what: str) -> nn.Module:
    """`factory(config)` with `state` loaded strictly; any mismatch or unbuildable config is a CheckpointError."""
    check_buildable(factory, config, state, what)
    try:
        module = factory(config)
    except (TypeError, ValueError, OverflowError, RuntimeError, MemoryError) as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"The {what} config in the checkpoint cannot be built ({type(e).__name__}: {first}). "
                              "The file was edited or written by another version; nothing was loaded.") from None
    load_module_state(module, state, what)
    return module


def check_module_state(module: nn.Module, state: Mapping[str, Tensor], what: str) -> None:
    """Raise CheckpointError unless `state` has exactly the module's tensors, with the same shapes."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    # a float parameter given as int8 or bool (or the reverse) would load, cast, as a different model
    bad_dtype = sorted(k for k in set(own) & set(state) if k not in bad_shape and (
        own[k].is_floating_point() != state[k].is_floating_point()
        or (own[k].dtype == torch.bool) != (state[k].dtype == torch.bool)))
    if missing or unexpected or bad_shape or bad_dtype:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if bad_shape:
            k = bad_shape[0]
            parts.append(f"{len(bad_shape)} of the wrong shape (e.g. {k}: {tuple(state[k].shape)} "
                         f"vs {tuple(own[k].shape)})")
        if bad_dtype:
            k = bad_dtype[0]
            parts.append(f"{len(bad_dtype)} of the wrong type (e.g. {k}: {str(state[k].dtype).removeprefix('torch.')} "
                         f"vs {str(own[k].dtype).removeprefix('torch.')})")
        raise CheckpointError(
            f"The {what} tensors do not match the composition the checkpoint declares: {'; '.join(parts)}. "
            "The file was edited or belongs to another model; nothing was loaded."
        )
    bad = next((k for k in sorted(state) if state[k].is_floating_point() and not state[k].is_meta
                and not bool(torch.isfinite(state[k]).all())), None)
    if bad is not None:
        n = int((~torch.isfinite(state[bad])).sum())
        raise CheckpointError(f"The {what} tensor {bad} holds {n} NaN or Inf values (the run that wrote it diverged, "
                              "or the file was edited), so nothing was loaded: use an earlier checkpoint "
                              "(checkpoints/step-*.safetensors).")


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
    state = check_optimizer_state(opt, tensors, info)
    try:
        opt.load_state_dict(state)
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"The optimizer state in the checkpoint does not match the model: {e}") from None
    match_param_layout(opt)


def match_param_layout(opt: torch.optim.Optimizer) -> None:
    """Give each per-parameter state tensor (Adam's moments) its parameter's memory layout.

    Checkpoints store contiguous tensors; a channels_last parameter's moments must be channels_last too, or
    fused Adam on CUDA refuses the step ("must have same dtype, device, and layout": it compares strides).
    """
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if isinstance(v, Tensor) and v.shape == p.shape and v.stride() != p.stride():
                    opt.state[p][k] = torch.empty_like(p, dtype=v.dtype).copy_(v)


STATE_SHAPING = ("amsgrad",)  # optimizer settings whose saved value must equal the running one


def _same_kind(saved: Any, own: Any) -> bool:
    """Whether a saved optimizer hyper-parameter has the type of the current one (numbers, bools, tuples)."""
    if own is None:
        return True
    if isinstance(own, bool):
        return isinstance(saved, bool)
    if isinstance(own, (int, float)):  # finite, and within float32 (torch turns them into float32 scalars)
        if isinstance(saved, bool) or not isinstance(saved, (int, float)):
            return False
        if isinstance(saved, int):
            return abs(saved) < 2**63
        return math.isfinite(saved) and abs(saved) <= torch.finfo(torch.float32).max
    if isinstance(own, (list, tuple)):
        return isinstance(saved, (list, tuple)) and len(saved) == len(own) and all(map(_same_kind, saved, own))
    return isinstance(saved, type(own))


def check_optimizer_state(opt: torch.optim.Optimizer, tensors: Mapping[str, Tensor],
                          info: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer state dict stored as (tensors, info), checked against `opt`'s parameters."""
    params = [p for g in opt.param_groups for p in g["params"]]
    groups = info.get("param_groups", [])
    state: dict[int, dict[str, Any]] = {}
    try:
        for key, v in tensors.items():
            num, k = key.split(".", 1)
            state.setdefault(int(num), {})[k] = v
        for pid, st in info.get("scalars", {}).items():
            state.setdefault(int(pid), {}).update(st)
        sizes = [len(g["params"]) for g in groups]
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"The optimizer state in the checkpoint is malformed ({e}); "
                              "nothing was loaded.") from None
    problem = None
    if sizes != [len(g["params"]) for g in opt.param_groups]:
        problem = f"{sum(sizes)} parameters in groups {sizes}, the model has {len(params)}"
    elif [i for g in groups for i in g["params"]] != list(range(len(params))):  # torch numbers them in order
        problem = "the parameter numbering is not 0, 1, 2, ..."
    for saved, own in zip(groups, opt.param_groups) if not problem else ():
        # keys a newer torch added may be missing (torch fills in their defaults); "lr" may not
        bad = [k for k in own if k != "params" and (k in saved or k == "lr")
               and not (k in saved and _same_kind(saved[k], own[k]))]
        # settings that change which state entries the optimizer reads (amsgrad: max_exp_avg_sq) must agree
        bad += [k for k in STATE_SHAPING if k in saved and k in own and saved[k] != own[k] and k not in bad]
        if bad:
            problem = f"the setting {bad[0]!r} is {saved.get(bad[0])!r}"
            break
    keys = set().union(*state.values()) if state else set()
    for pid, st in state.items():
        if problem:
            break
        if set(st) != keys:  # every parameter with a state has the same entries (Adam: step, exp_avg, ...)
            problem = f"parameter {pid} lacks {sorted(keys - set(st))[0]!r}"
        elif not 0 <= pid < len(params):
            problem = f"state for parameter {pid}, the model has {len(params)}"
        else:
            shape = tuple(params[pid].shape)
            wrong = [k for k, v in st.items() if isinstance(v, Tensor) and v.dim() > 0 and tuple(v.shape) != shape]
            # NaN moments would turn the first update's weights into NaN, saved as "the last good ones"
            nan = [k for k, v in st.items() if isinstance(v, Tensor) and v.is_floating_point()
                   and not bool(torch.isfinite(v).all())]
            if wrong:
                problem = f"{wrong[0]} of parameter {pid} has shape {tuple(st[wrong[0]].shape)}, the parameter {shape}"
            elif nan:
                problem = f"{nan[0]} of parameter {pid} holds NaN or Inf values (the run diverged)"
    if problem:
        raise CheckpointError(f"The optimizer state in the checkpoint does not match the model: {problem}. "
                              "The file was edited or belongs to another model; nothing was loaded.")
    return {"state": state, "param_groups": groups}
