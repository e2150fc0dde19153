"""An estimate of the memory a training step needs, from the composition, checked before any data is read.

The generator and discriminator run once on the meta device (no memory, no arithmetic) at the run's batch and
size; the sizes of every module's outputs stand for the activations kept for the backward pass. Weights count
with their gradient and Adam's two moments. The extractor counts its activations for the fake and the
content batch. It is an estimate, close to what a default-recipe step was measured to take (not a bound):
runs that clearly cannot fit are refused, saying how much they need and what to lower; borderline ones are
left to try.
"""

from __future__ import annotations

import contextlib
import copy
import os
from typing import Any, SupportsInt, cast

import torch
from torch import nn

from ..errors import ConfigError
from .assembly import NOISE, Components

MARGIN = 1.2  # the estimate times this must fit: allocator slack, temporaries, the data


def activation_bytes(module: nn.Module, *inputs: Any, **kwargs: Any) -> int | None:
    """Bytes of every module output in one forward of `module` on meta tensors (None if it cannot run on meta)."""
    total = 0

    def hook(_: nn.Module, __: Any, out: Any) -> None:
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()

    handles = [m.register_forward_hook(hook) for m in module.modules()]
    try:
        with torch.no_grad():
            meta = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs]
            module.to("meta")(*meta, **kwargs)
    except Exception:  # a plugin's forward that needs real data: no estimate
        return None
    finally:
        for h in handles:
            h.remove()
    return total


def param_bytes(module: nn.Module | None, trained: bool) -> int:
    """Weights, plus gradient and Adam's two moments when `trained`."""
    if module is None:
        return 0
    n = sum(p.numel() * p.element_size() for p in module.parameters())
    return n * (4 if trained else 1)


def available_bytes(device: torch.device) -> int | None:
    """Memory free for this process on `device` (None when unknown)."""
    if device.type == "cuda":
        with contextlib.suppress(Exception):
            return int(torch.cuda.mem_get_info(device)[0])
        return None
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    with contextlib.suppress(AttributeError, ValueError, OSError):
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    return None


def check_memory(estimate: int, device: torch.device, batch: int, size: int) -> None:
    """Refuse (ConfigError) a run whose estimate, with MARGIN, exceeds what the device has free."""
    free = available_bytes(device)
    if free is None or estimate * MARGIN <= free:
        return
    gib = 1024**3
    raise ConfigError(f"This run needs about {estimate / gib:.1f} GiB for a training step at --batch {batch} and "
                      f"--size {size}, and {device} has {free / gib:.1f} GiB free: lower --batch or --size (memory "
                      "grows with batch x size^2).")


def step_memory(comps: Components, family: str, batch: int, size: int) -> int | None:
    """Estimated bytes of one training step (core/training/memory.py), from copies of the modules run on the
    meta device; None when a component cannot run there."""
    # bytes as the meta forward counts them, in float32: under bf16 autocast the activations are half that, but
    # the float32 copies (casts, loss terms, Gram matrices) made a measured default-recipe step match this count
    x = torch.zeros(batch, int(cast(SupportsInt, comps.gen.latent_dim)), device="meta") if family == NOISE \
        else torch.zeros(batch, 3, size, size, device="meta")
    gen = activation_bytes(copy.deepcopy(comps.gen).train(), x)
    if gen is None:
        return None
    total = gen  # the outputs kept for the backward (its temporaries come and go)
    if comps.disc is not None:
        both = torch.zeros(2 * batch, 3, size, size, device="meta")  # real and fake
        total += activation_bytes(copy.deepcopy(comps.disc), both) or 0
    layers = tuple(getattr(comps.feat, "layer_names", ())[-1:])
    if comps.feat is not None and layers:  # the fake and the content batch, to its deepest layer
        both = torch.zeros(2 * batch, 3, size, size, device="meta")
        total += activation_bytes(copy.deepcopy(comps.feat), both, layers) or 0
    return total + param_bytes(comps.gen, True) + param_bytes(comps.disc, True) + param_bytes(comps.feat, False)


def check_step_memory(comps: Components, family: str, device: torch.device, batch: int, world: int,
                      size: int) -> None:
    """Estimate a step's memory on this process (its share of the batch) and refuse a run that cannot fit."""
    need = step_memory(comps, family, max(1, batch // world), size)
    if need is not None:
        check_memory(need, device, batch, size)
