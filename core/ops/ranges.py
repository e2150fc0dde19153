"""Image value ranges. Images move between components as float RGB in [-1, 1] (the generators' tanh range)."""

from __future__ import annotations

from torch import Tensor

IMAGE_RANGE = (-1.0, 1.0)


def to_unit(x: Tensor) -> Tensor:
    """[-1, 1] images to [0, 1]."""
    return (x.clamp(-1, 1) + 1) * 0.5


def from_unit(x: Tensor) -> Tensor:
    """[0, 1] images to [-1, 1]."""
    return x * 2 - 1
