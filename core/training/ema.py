"""An exponential moving average of the generator's weights, the copy that samples, evaluation and inference use.

Averaging the weights of the last few thousand steps removes most of the step-to-step noise of GAN training
(the "G_ema" of ProGAN/StyleGAN, the `ema` of StudioGAN) at no cost to the training step beyond one fused
`lerp` over the parameters. The trained generator keeps its own weights; the average is a second copy.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


def ema_decay(decay: float, updates: int) -> float:
    """The decay used at update number `updates` (1-based): `decay`, ramped in as min(decay, (1+n)/(10+n)).

    Early in training the average would otherwise be dominated by the random initial weights for
    about 1/(1-decay) steps; the ramp makes it follow the trained weights closely at first.
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


class GeneratorEMA:
    """A frozen copy of `gen` whose trainable parameters follow an exponential moving average of gen's.

    Frozen parameters are the generator's own tensors (no second copy of a pretrained encoder)."""

    def __init__(self, gen: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.module = copy.deepcopy(gen).eval().requires_grad_(False)
        self.updates = 0
        self._pairs(gen)

    def _pairs(self, gen: nn.Module) -> None:
        own = dict(self.module.named_parameters())
        src = dict(gen.named_parameters())
        if own.keys() != src.keys():
            raise ValueError("the EMA copy and the generator have different parameters")
        names = [n for n, p in src.items() if p.requires_grad]
        self._avg: list[Tensor] = [own[n] for n in names]
        self._src: list[Tensor] = [src[n] for n in names]
        # frozen parameters (a pretrained encoder inside the generator) are shared, not copied or averaged
        for n, p in src.items():
            if not p.requires_grad:
                owner, _, leaf = n.rpartition(".")
                setattr(self.module.get_submodule(owner), leaf, p)
        # buffers (norm statistics, default styles) follow the generator's
        bufs = dict(self.module.named_buffers())
        self._copy = [(bufs[n], b) for n, b in gen.named_buffers() if n in bufs]

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the generator's current weights (call after each generator step)."""
        self.updates += 1
        d = ema_decay(self.decay, self.updates)
        if self._avg:
            torch._foreach_lerp_(self._avg, self._src, 1.0 - d)
        for dst, src in self._copy:
            dst.copy_(src)

    def state_dict(self) -> dict[str, Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Tensor], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates
