"""What a run says when it goes wrong in a way the user can act on: a component that fails in the first step,
and data loading that sets the pace."""

from __future__ import annotations

import math
import traceback
from collections.abc import Sequence
from typing import Any

from ..errors import CompositionError, StylezooError
from ..files.data import ImageSet
from ..runs.runconfig import RunConfig
from .assembly import Components

ROLE_NAMES = ("gen", "disc", "feat", "adv", "gp")


def first_step_error(e: Exception, comps: Components, rc: RunConfig) -> StylezooError | None:
    """One line for an exception raised inside a component in a run's first step, naming it (found in the
    traceback: the innermost frame whose `self` is one of the run's components); None if none was."""
    c = comps
    named = {id(m): n for n, m in (("gen", c.gen), ("disc", c.disc), ("feat", c.feat), ("adv", c.adv),
                                   ("gp", c.gp), *c.losses.items()) if m is not None}
    # the innermost: a penalty or a loss that calls the discriminator blames the discriminator's own fault
    who = next((named[id(f.f_locals["self"])] for f, _ in reversed(list(traceback.walk_tb(e.__traceback__)))
                if id(f.f_locals.get("self")) in named), None)
    name = getattr(rc, who) if who in ROLE_NAMES else who
    msg = " ".join(str(e).split())[:400].rstrip(".") or "no message"
    if name is None:
        return None
    role = f"{who}." if who in ROLE_NAMES else f"{name}."
    return CompositionError(f"{name} failed in the first training step: {type(e).__name__}: {msg}. Check the "
                            f"values given with --set {role}* (`stylezoo info {name}` lists its fields); for a "
                            "plugin's component, this may be a bug to report to the plugin.")


def nan_advice(gen: str | None) -> str:
    """What to do about NaN/Inf steps; `gen`: the generator, when its own output was NaN/Inf (then no loss
    weight or learning rate made the first NaN)."""
    if gen:
        return (f"The generator {gen} itself produced NaN/Inf; try --set train.precision=fp32, and if it persists "
                "the generator (its settings, or a plugin's bug) is the cause.")
    return "In a new run, lower the learning rate or that loss's weight, or try --set train.precision=fp32."


def data_wait_warning(history: Sequence[dict[str, Any]], sets: Sequence[ImageSet], window: int = 10,
                      share: float = 0.2) -> str | None:
    """A warning when waiting for images took over `share` of the step (median of the last `window` logged
    steps after the first two), with what to do about it; None otherwise or with too few steps."""
    hist = history[2:]
    if len(hist) < window:
        return None
    wait = sorted(h["time/data_s"] for h in hist[-window:])[window // 2]
    step = sorted(h["time/step_s"] for h in hist[-window:])[window // 2]
    if wait <= share * step:
        return None
    lazy = [s for s in sets if s.lazy]
    hint = ("Keep the images decoded in memory with --set data.cache_mb="
            f"{math.ceil(max(s.decoded_mb for s in lazy) * 1.1)} (they are decoded at every draw now), or "
            "shrink them towards train.size beforehand." if lazy else
            "The images are already cached in memory: check what else loads this machine.")
    return (f"waiting for training images takes {100 * wait / step:.0f}% of each step ({wait * 1e3:.1f} of "
            f"{step * 1e3:.1f} ms, median of {window} steps). {hint}")
