"""A plugin with one component of each kind, written from docs/plugins.md alone, on the public API only.

tests/test_plugin_guide.py runs stylezoo's component checks on it and trains a run composed of nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import stylezoo


# ---- generator: image to image, sides any multiple of 2
@dataclass
class FxGenConfig:
    channels: int = 8  # width of the hidden layers

    def __post_init__(self) -> None:
        if self.channels < 1:
            raise ValueError(f"channels must be >= 1, got {self.channels}")


class FxGen(nn.Module):
    family: ClassVar[str] = "image"
    size_multiple = 2

    def __init__(self, config: FxGenConfig) -> None:
        super().__init__()
        c = config.channels
        self.down = nn.Conv2d(3, c, 4, 2, 1)
        self.norm = nn.InstanceNorm2d(c, affine=True)
        self.up = nn.ConvTranspose2d(c, 3, 4, 2, 1)

    def forward(self, x: Tensor, **cond: Any) -> Tensor:
        return torch.tanh(x + self.up(F.relu(self.norm(self.down(x)))))


# ---- discriminator: a patch map, each image judged alone
@dataclass
class FxDiscConfig:
    channels: int = 8


class FxDisc(nn.Module):
    per_sample = True

    def __init__(self, config: FxDiscConfig) -> None:
        super().__init__()
        c = config.channels
        self.net = nn.Sequential(nn.Conv2d(3, c, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(c, 1, 4, 2, 1))

    def forward(self, image: Tensor, **cond: Any) -> Tensor:
        return self.net(image)


# ---- extractor: frozen random convolutions with two named layers
@dataclass
class FxFeatConfig:
    weights: str = "random"  # no pretrained weights: a fixed random network
    seed: int = 0  # the random weights come from this seed alone


class FxFeat(nn.Module):
    layer_names = ("conv1", "conv2")
    style_layers = ("conv1", "conv2")
    content_layers = ("conv2",)

    def __init__(self, config: FxFeatConfig) -> None:
        super().__init__()
        self.weights = config.weights
        g = torch.Generator().manual_seed(config.seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        stylezoo.frozen(self)

    def forward(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        out = {"conv1": F.relu(self.conv1(image))}
        if "conv2" in layers:  # stop at the deepest layer asked for
            out["conv2"] = F.relu(self.conv2(out["conv1"]))
        return {k: v for k, v in out.items() if k in layers}


# ---- loss term: Gram-matrix style against the style images, prepared once per run
@dataclass
class FxStyleConfig(stylezoo.LossConfig):
    weight: float = 10.0
    layers: tuple[str, ...] = ()  # empty: the extractor's style_layers


class FxStyle(stylezoo.FeatureLoss):
    needs: ClassVar[frozenset[str]] = frozenset({"feats_fake", "style"})

    def prepare(self, style_feats: dict[str, Tensor], labels: Tensor | None = None) -> None:
        for name, f in style_feats.items():
            self.register_buffer(f"target_{name}", stylezoo.gram_matrix(f).mean(0, keepdim=True), persistent=False)

    def forward(self, ctx: stylezoo.StepContext) -> Tensor:
        total = ctx.fake.new_zeros((), dtype=torch.float32)
        for name, f in ctx.feats["fake"].items():
            target = getattr(self, f"target_{name}")
            total = total + F.mse_loss(stylezoo.gram_matrix(f), target.expand(f.shape[0], -1, -1))
        return total


# ---- adversarial loss: the hinge objective
@dataclass
class FxHingeConfig(stylezoo.LossConfig):
    pass


class FxHinge(nn.Module):
    adversarial: ClassVar[bool] = True

    def __init__(self, config: FxHingeConfig) -> None:
        super().__init__()
        self.weight = config.weight

    def d_loss(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor:
        return F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean()

    def g_loss(self, logits_fake: Tensor, logits_real: Tensor | None = None) -> Tensor:
        return -logits_fake.mean()


# ---- penalty: R1 on the real images, already weighted
@dataclass
class FxR1Config:
    weight: float = 1.0

    def __post_init__(self) -> None:
        stylezoo.check_weight(self.weight)


class FxR1(nn.Module):
    def __init__(self, config: FxR1Config) -> None:
        super().__init__()
        self.weight = config.weight

    def forward(self, disc: nn.Module, real: Tensor, fake: Tensor, **cond: Any) -> Tensor:
        real = real.detach().float().requires_grad_(True)
        (grad,) = torch.autograd.grad(disc(real, **cond).float().sum(), real, create_graph=True)
        return self.weight * 0.5 * grad.pow(2).flatten(1).sum(1).mean()


@stylezoo.hookimpl
def register_components(register: stylezoo.Register) -> None:
    register("gen/fx-gen", FxGen, config=FxGenConfig, description="fixture generator", family="image")
    register("disc/fx-disc", FxDisc, config=FxDiscConfig, description="fixture discriminator")
    register("feat/fx-feat", FxFeat, config=FxFeatConfig, description="fixture extractor")
    register("loss/fx-style", FxStyle, config=FxStyleConfig, description="fixture Gram style loss")
    register("loss/fx-hinge", FxHinge, config=FxHingeConfig, description="fixture hinge", role="adversarial")
    register("gp/fx-r1", FxR1, config=FxR1Config, description="fixture R1", compatible=("loss/fx-hinge",))
