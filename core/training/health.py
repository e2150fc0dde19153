"""Whether a run's samples show that training failed although every loss stayed finite: a constant image, pixels
saturated at -1/1, or the same output for different inputs. Checked on the outputs of the sample grids the
engine writes; the final grid's figures go into the last metrics.jsonl line (`samples/...`) and the final
checkpoint's metadata (`samples`), and a problem ends the run with a warning saying what to try."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..components.registry import Registry
from ..runs.runconfig import RunConfig

CONSTANT_STD = 0.02  # every channel of every image varies less than this (std, images in [-1, 1]): constant
SATURATED_AT = 0.98  # a value this close to -1 or 1 is saturated ...
SATURATED_SHARE = 0.9  # ... and this share of them saturated is a failed run (a sketch's white paper is less)
IDENTICAL = 0.01  # outputs closer than this (mean absolute difference) for inputs that differ are identical
INPUTS_DIFFER = 0.05  # inputs differ when they are this far apart (same measure)


@dataclass(frozen=True)
class SampleCheck:
    """Figures of one sample grid's outputs."""

    std: float  # the largest standard deviation of one channel of one image over its pixels
    saturated: float  # the share of values saturated at -1/1
    spread: float | None  # the largest mean absolute difference between outputs for differing inputs; None: n/a

    def problems(self) -> list[str]:
        """What is wrong, one phrase each (empty when nothing is)."""
        out = []
        if self.std < CONSTANT_STD:
            out.append(f"the samples are a constant image (std {self.std:.3g})")
        if self.saturated >= SATURATED_SHARE:
            out.append(f"{100 * self.saturated:.0f}% of pixels saturated at -1/1")
        if self.spread is not None and self.spread < IDENTICAL and self.std >= CONSTANT_STD:
            out.append(f"the outputs for different inputs are identical (mean difference {self.spread:.3g})")
        return out

    def figures(self) -> dict[str, float]:
        """The figures for metrics.jsonl."""
        spread = {} if self.spread is None else {"samples/spread": self.spread}
        return {"samples/std": self.std, "samples/saturated": self.saturated} | spread


def check_samples(outputs: Sequence[Tensor], inputs: Tensor | None) -> SampleCheck:
    """The figures of `outputs` (rows of (N, 3, H, W) in [-1, 1], each row one output per input); `inputs`: the
    images they were made from (None: inputs that differ, such as noise vectors)."""
    out = torch.stack([o.detach().float().cpu().clamp(-1, 1) for o in outputs])  # (rows, N, 3, H, W)
    std = float(out.flatten(3).std(dim=3).amax())  # per channel: a constant colour has channels far apart
    saturated = float((out.abs() >= SATURATED_AT).float().mean())
    spread = None
    n = out.shape[1]
    if n > 1:
        differ = [i for i in range(1, n) if inputs is None or _distance(inputs[i], inputs[0]) > INPUTS_DIFFER]
        if differ:
            spread = max(_distance(row[i], row[0]) for row in out for i in differ)
    return SampleCheck(std, saturated, spread)


def _distance(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().mean())


def sample_warning(check: SampleCheck | None, rc: RunConfig, reg: Registry, lr: float) -> str | None:
    """The warning a run whose final samples failed ends with: the symptoms and what to try; None if fine."""
    problems = check.problems() if check is not None else []
    if not problems:
        return None
    own = reg.get(rc.gen).card.get("recipe")
    if own and own != rc.recipe:
        try_recipe = f"the recipe made for {rc.gen} (--recipe {own})"
    else:
        try_recipe = "a recipe that trains this kind of model (`stylezoo list --kind recipe`, then --recipe NAME)"
    return (f"{'; '.join(problems)} in samples/final.png: training failed although its losses stayed finite. "
            f"Try a lower learning rate (--lr {lr / 10:g}), or {try_recipe}.")


def sample_record(check: SampleCheck | None, warning: str | None) -> dict[str, Any] | None:
    """What the final checkpoint's metadata keeps of the check (`samples`: the figures and the warning)."""
    if check is None:
        return None
    return {"samples": {**{k.removeprefix("samples/"): v for k, v in check.figures().items()}, "warning": warning}}
