"""Adversarial objectives (BCE, least squares, hinge, Wasserstein) and the discriminator entropy term.

Every objective works on raw discriminator outputs ("logits": (N,) or a patch map (N, 1, h, w)), averages
over all of them, and computes in float32 even when the logits are bfloat16. `d_loss` is the sum of the
real and the fake part (the original formulation, not their average). `g_loss` is unweighted: the engine
multiplies it by the loss's `weight`, like every other term.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stylezoo.core.components.base import check_weight
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import Extractor, StepContext


@dataclass
class AdvConfig:
    weight: float = 1.0  # generator-side weight of the adversarial term

    def __post_init__(self) -> None:
        check_weight(self.weight)


@dataclass
class BCEConfig:
    weight: float = 1.0  # generator-side weight of the adversarial term
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - label_smoothing (0.1 is common)

    def __post_init__(self) -> None:
        check_weight(self.weight)
        if not 0.0 <= self.label_smoothing < 0.5:
            raise ValueError(f"label_smoothing must be in [0, 0.5), got {self.label_smoothing}")


class _Adversarial(nn.Module):
    adversarial: ClassVar[bool] = True

    def __init__(self, cfg: AdvConfig | BCEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = cfg.weight


class BCE(_Adversarial):
    """Non-saturating GAN loss: D minimises BCE(real, 1) + BCE(fake, 0), G minimises BCE(fake, 1).

    Computed from logits with softplus (BCE(l, 1) = softplus(-l), BCE(l, 0) = softplus(l)), so it never
    takes the log of a saturated sigmoid.
    """

    def __init__(self, cfg: BCEConfig) -> None:
        super().__init__(cfg)

    def d_loss(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        real, fake = logits_real.float(), logits_fake.float()
        target = torch.full_like(real, 1.0 - self.cfg.label_smoothing)
        return F.binary_cross_entropy_with_logits(real, target) + F.softplus(fake).mean()

    def g_loss(self, logits_fake: Tensor, logits_real: Tensor | None = None) -> Tensor:
        return F.softplus(-logits_fake.float()).mean()


class LSGAN(_Adversarial):
    """Least squares with targets 1 (real) and 0 (fake) on the raw outputs used as scores.

    D: mean((real - 1)^2) + mean(fake^2); G: mean((fake - 1)^2). (Mao et al. halve both; the factor only
    rescales the learning signal and is left to `weight` and the learning rate.)
    """

    def d_loss(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        return (logits_real.float() - 1).pow(2).mean() + logits_fake.float().pow(2).mean()

    def g_loss(self, logits_fake: Tensor, logits_real: Tensor | None = None) -> Tensor:
        return (logits_fake.float() - 1).pow(2).mean()


class Hinge(_Adversarial):
    """Hinge loss. D: mean(relu(1 - real)) + mean(relu(1 + fake)); G: -mean(fake)."""

    def d_loss(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        return F.relu(1 - logits_real.float()).mean() + F.relu(1 + logits_fake.float()).mean()

    def g_loss(self, logits_fake: Tensor, logits_real: Tensor | None = None) -> Tensor:
        return -logits_fake.float().mean()


class WGAN(_Adversarial):
    """Wasserstein critic loss. D: mean(fake) - mean(real); G: -mean(fake). Needs a gradient penalty."""

    def d_loss(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        return logits_fake.float().mean() - logits_real.float().mean()

    def g_loss(self, logits_fake: Tensor, logits_real: Tensor | None = None) -> Tensor:
        return -logits_fake.float().mean()


@dataclass
class EntropyConfig:
    weight: float = 0.1  # alpha; > 0 makes D confident, < 0 rewards uncertainty (a smoothing regulariser)

    def __post_init__(self) -> None:
        if not math.isfinite(self.weight):
            raise ValueError(f"weight must be a finite number, got {self.weight}")


def binary_entropy(logits: Tensor) -> Tensor:
    """Elementwise H(sigmoid(l)) in nats, stable for any logit (0 at +-inf, ln 2 at 0), in float32."""
    x = logits.float()
    p = torch.sigmoid(x)
    return -(p * F.logsigmoid(x) + (1 - p) * F.logsigmoid(-x))


class Entropy(nn.Module):
    """The original design's alpha * E[H(X)] term, added to the discriminator's loss.

    With p = sigmoid(logit), H(p) = -p log p - (1 - p) log(1 - p) (nats, computed from the logit with
    logsigmoid so it is exact where the sigmoid saturates). E is the mean over every real and fake logit
    of the step (patch maps included); a missing side (None) is skipped. `forward` returns E[H]
    unweighted and the engine adds `weight * E[H]` (alpha) to the discriminator loss. Since D minimises its
    loss, a positive alpha pushes it towards confident outputs (probabilities near 0 or 1) and a negative
    alpha rewards uncertainty, acting as a smoothing regulariser like label smoothing.

    Only meaningful with `loss/bce`: the entropy reads sigmoid(output) as a probability, which is what
    the BCE discriminator models. LSGAN scores target 0/1 directly (their sigmoid is not a probability),
    and hinge/WGAN critics are unbounded scores, where a positive alpha would just reward growing |score|.
    """

    step: ClassVar[str] = "disc"
    needs: ClassVar[frozenset[str]] = frozenset({"logits"})

    def __init__(self, cfg: EntropyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = cfg.weight

    def feature_layers(self, extractor: Extractor | None) -> tuple[str, ...]:
        return ()

    def forward(self, ctx: StepContext) -> Tensor:
        parts = [t.reshape(-1) for t in (ctx.logits_real, ctx.logits_fake) if t is not None]
        if not parts:
            raise RuntimeError("loss/entropy needs the discriminator's logits (ctx.logits_real/logits_fake)")
        return binary_entropy(torch.cat([p.float() for p in parts])).mean()


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("loss/bce", BCE, config=BCEConfig, role="adversarial")
    register("loss/lsgan", LSGAN, config=AdvConfig, role="adversarial")
    register("loss/hinge", Hinge, config=AdvConfig, role="adversarial")
    register("loss/wgan", WGAN, config=AdvConfig, role="adversarial")
    register("loss/entropy", Entropy, config=EntropyConfig, compatible=("loss/bce",))
