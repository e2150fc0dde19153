"""Pixel-space loss terms: total variation (smoothness), L1/L2 reconstruction and SSIM to a paired target, and
the squared distance to the generator's own input (identity)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from stylezoo.core.components.base import Loss, LossConfig
from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import StepContext


@dataclass
class TVConfig(LossConfig):
    weight: float = 1e-4  # multiplies the mean absolute difference between neighbouring pixels


class TotalVariation(Loss):
    """Anisotropic total variation of the generated image: mean |dx| + mean |dy|."""

    def forward(self, ctx: StepContext) -> Tensor:
        x = ctx.fake.float()  # loss terms compute in float32 (a bf16 mean of differences is ~0.2% off)
        return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


@dataclass
class ReconConfig(LossConfig):
    weight: float = 100.0  # pix2pix uses 100 x L1 beside the adversarial loss


class Reconstruction(Loss):
    """A distance of the output to its paired target; subclasses say which (`distance`)."""

    needs: ClassVar[frozenset[str]] = frozenset({"target"})

    def distance(self, fake: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, ctx: StepContext) -> Tensor:
        if ctx.target is None:
            raise RuntimeError("this loss needs paired data (--pairs or --input/--target)")
        return self.distance(ctx.fake.float(), ctx.target.float())


class L1(Reconstruction):
    """Mean absolute per-pixel difference to the paired target."""

    def distance(self, fake: Tensor, target: Tensor) -> Tensor:
        return (fake - target).abs().mean()


class L2(Reconstruction):
    """Mean squared per-pixel difference to the paired target."""

    def distance(self, fake: Tensor, target: Tensor) -> Tensor:
        return (fake - target).pow(2).mean()


@dataclass
class IdentityConfig(LossConfig):
    weight: float = 1.0  # multiplies the mean squared pixel difference to the input


class Identity(Loss):
    """Mean squared per-pixel difference to the generator's own input: an autoencoder's reconstruction term
    (gen/wct's decoders learn with it), or CycleGAN's identity term."""

    needs: ClassVar[frozenset[str]] = frozenset({"content"})

    def forward(self, ctx: StepContext) -> Tensor:
        if ctx.content is None:
            raise RuntimeError("loss/identity compares with the generator's input image; noise generators have none")
        return (ctx.fake.float() - ctx.content.float()).pow(2).mean()


@dataclass
class SSIMConfig(LossConfig):
    weight: float = 10.0  # beside 100 x L1: SSIM's 0..1 range is ~10x a sketch's mean L1, so both pull alike


class SSIMLoss(Reconstruction):
    """1 - SSIM between the luminances of output and paired target (torchmetrics' Gaussian-window SSIM,
    the same function `stylezoo eval` scores with). L1 alone matches mean intensities and blurs edges;
    SSIM rewards local contrast and structure, which is what a sketch is made of (Zhao et al. 2017,
    "Loss Functions for Image Restoration with Neural Networks", mix L1 and SSIM for the same reason)."""

    def distance(self, fake: Tensor, target: Tensor) -> Tensor:
        from stylezoo.core.ops.metrics import ssim

        return 1.0 - ssim(fake, target).mean()


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("loss/tv", TotalVariation, config=TVConfig)
    register("loss/identity", Identity, config=IdentityConfig)
    register("loss/l1", L1, config=ReconConfig, paired=True)
    register("loss/l2", L2, config=ReconConfig, paired=True)
    register("loss/ssim", SSIMLoss, config=SSIMConfig, paired=True)
