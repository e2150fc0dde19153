"""Gradient penalties on the discriminator: none, WGAN-GP, R1 and DRAGAN.

`forward(disc, real, fake, **cond)` returns the penalty already multiplied by `weight`, with a graph
(create_graph=True) so it trains D's parameters. The pass through D runs in float32 with autocast off:
squared input gradients overflow or lose all precision in bfloat16. Random draws use the global torch
RNG, which the engine seeds per step.

Compatibility: the penalties only look at D's input gradients, so all are valid with every adversarial
loss. WGAN-GP was derived for the Wasserstein critic, but it also stabilises the non-saturating,
least-squares and hinge losses in practice (Fedus et al. 2018, Many Paths to Equilibrium,
arXiv:1710.08446). `gp/none` leaves out `loss/wgan`: a Wasserstein critic with no Lipschitz constraint
is unbounded and diverges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from stylezoo.core.components.base import check_weight
from stylezoo.core.components.hookspecs import hookimpl

ADVERSARIAL = ("loss/bce", "loss/lsgan", "loss/hinge", "loss/wgan")


def input_grad(disc: nn.Module, x: Tensor, cond: dict[str, Any]) -> Tensor:
    """d sum(D(x)) / dx per sample, flattened to (N, -1), float32, with a graph for D's parameters."""
    x = x.detach().float().requires_grad_(True)
    cond32 = {k: v.detach().float() if torch.is_tensor(v) and v.is_floating_point() else v for k, v in cond.items()}
    with torch.autocast(device_type=x.device.type, enabled=False):
        out = disc(x, **cond32).float()
        (grad,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    return grad.flatten(1)


def _norm(grad: Tensor) -> Tensor:
    """Per-sample L2 norm with a tiny floor, so its own gradient is finite where grad is 0."""
    return (grad.pow(2).sum(1) + 1e-12).sqrt()


@dataclass
class NoPenaltyConfig:
    pass


class NoPenalty(nn.Module):
    """No penalty: a float32 zero."""

    def __init__(self, cfg: NoPenaltyConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = 0.0

    def forward(self, disc: nn.Module, real: Tensor, fake: Tensor, **cond: Any) -> Tensor:
        return real.new_zeros((), dtype=torch.float32)


@dataclass
class PenaltyConfig:
    weight: float = 10.0  # lambda (gamma for R1)

    def __post_init__(self) -> None:
        check_weight(self.weight)


@dataclass
class DraganConfig:
    weight: float = 10.0  # lambda
    noise: float = 0.5  # perturbation scale c: x + c * std(x) * U[0, 1)

    def __post_init__(self) -> None:
        check_weight(self.weight)
        if not self.noise > 0:
            raise ValueError(f"noise must be > 0, got {self.noise}")


class _Penalty(nn.Module):
    def __init__(self, cfg: PenaltyConfig | DraganConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.weight = cfg.weight


class WGANGP(_Penalty):
    """weight * mean((||grad D(x_hat)||_2 - 1)^2), x_hat = eps*real + (1-eps)*fake, eps ~ U[0,1) per sample.

    When the batches differ in size, the first min(len(real), len(fake)) samples of each are used.
    """

    def forward(self, disc: nn.Module, real: Tensor, fake: Tensor, **cond: Any) -> Tensor:
        n = min(real.shape[0], fake.shape[0])
        real, fake = real[:n].detach().float(), fake[:n].detach().float()
        cond = {k: v[:n] if torch.is_tensor(v) and v.dim() > 0 and v.shape[0] > n else v for k, v in cond.items()}
        eps = torch.rand((n,) + (1,) * (real.dim() - 1), device=real.device)
        grad = input_grad(disc, eps * real + (1 - eps) * fake, cond)
        return self.weight * (_norm(grad) - 1).pow(2).mean()


class R1(_Penalty):
    """R1: 0.5 * gamma * E ||grad D(real)||^2, gamma = weight.

    The 0.5 follows Mescheder et al. (gamma/2); StyleGAN's r1_gamma uses the same convention, so a
    gamma from either paper means the same here.
    """

    def forward(self, disc: nn.Module, real: Tensor, fake: Tensor, **cond: Any) -> Tensor:
        grad = input_grad(disc, real, cond)
        return 0.5 * self.weight * grad.pow(2).sum(1).mean()


class Dragan(_Penalty):
    """DRAGAN: weight * mean((||grad D(x_p)|| - 1)^2) at x_p = real + noise * std(real) * U[0, 1).

    std is over the whole real batch, as in Kodali et al.'s reference code.
    """

    def forward(self, disc: nn.Module, real: Tensor, fake: Tensor, **cond: Any) -> Tensor:
        x = real.detach().float()
        x_p = x + self.cfg.noise * x.std() * torch.rand_like(x)
        grad = input_grad(disc, x_p, cond)
        return self.weight * (_norm(grad) - 1).pow(2).mean()


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("gp/none", NoPenalty, config=NoPenaltyConfig, compatible=("loss/bce", "loss/lsgan", "loss/hinge"))
    register("gp/wgan-gp", WGANGP, config=PenaltyConfig, compatible=ADVERSARIAL)
    register("gp/r1", R1, config=PenaltyConfig, compatible=ADVERSARIAL)
    register("gp/dragan", Dragan, config=DraganConfig, compatible=ADVERSARIAL)
