"""The four kinds of component and the small interfaces the engine calls on each.

Components are plain `nn.Module`s with one dataclass config each. These Protocols hold only what the
engine uses; nothing has to inherit from them.

Image convention, stated once: every image tensor that moves between components is float RGB,
shape (N, 3, H, W), in [-1, 1] (the generators' tanh range). Extractors convert to their own input
convention internally.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

from torch import Tensor, nn

from ..ops.ranges import IMAGE_RANGE, from_unit, to_unit

KINDS: dict[str, str] = {
    "gen": "generator",
    "disc": "discriminator",
    "feat": "feature extractor",
    "loss": "loss term",
    "gp": "gradient penalty",
}


@runtime_checkable
class Generator(Protocol):
    """Noise (family "noise", input (N, latent_dim)) or an image (family "image") to an image in [-1, 1].

    Noise generators also have `latent_dim: int` and `size: int` (the output side). Image generators
    have `size_multiple: int`: input sides must be multiples of it (stylize pads to it).
    """

    family: ClassVar[str]

    def forward(self, x: Tensor, **cond: Any) -> Tensor: ...


@runtime_checkable
class Discriminator(Protocol):
    """Image to logits: (N,) or a patch map (N, 1, h, w). Never applies a sigmoid.

    Optional: `per_sample = True` declares that each image's logits depend on that image (and its
    conditions) alone: no batch norm, no minibatch statistics. The engine then judges the real and the
    fake batch in one call on their concatenation, which runs faster than two calls.
    """

    def forward(self, image: Tensor, **cond: Any) -> Tensor: ...


@runtime_checkable
class Extractor(Protocol):
    """Frozen backbone: features at named layers, computed only up to the deepest layer asked for.

    `layer_names` lists the addressable layers in forward order; `weights` says which weights are loaded
    (for example "hed-bsds500" or "random"); `style_layers`/`content_layers` are its sensible defaults.
    """

    layer_names: tuple[str, ...]
    style_layers: tuple[str, ...]
    content_layers: tuple[str, ...]
    weights: str

    def forward(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]: ...


@dataclass
class StepContext:
    """What the engine hands every loss term in one step; terms never run the extractor themselves."""

    fake: Tensor  # generator output, [-1, 1]
    real: Tensor | None = None  # target-domain images the discriminator learns from
    content: Tensor | None = None  # generator input images (image family); None for noise generators
    target: Tensor | None = None  # paired target images (pix2pix-style data), else None
    paired: bool = False  # True when content[i] is the input that produced fake[i]
    logits_fake: Tensor | None = None
    logits_real: Tensor | None = None
    feats: dict[str, dict[str, Tensor]] = field(default_factory=dict)  # {"fake"|"content"|"target": {layer: t}}
    cond: dict[str, Any] = field(default_factory=dict)  # e.g. {"label": LongTensor} for conditional models
    step: int = 0


# What a loss term may ask for in `needs`.
NEEDS = frozenset({"feats_fake", "feats_content", "feats_target", "style", "logits", "target", "content"})


@runtime_checkable
class LossTerm(Protocol):
    """A weighted training signal for one step ("gen" or "disc").

    `feature_layers(extractor)` names the extractor layers it reads (empty for none). Terms that need
    "style" get `prepare(style_feats)` once per run with the style images' features ({layer: (S, C, H, W)},
    plus `labels` (S,) when the style set is labelled) and cache their targets.
    """

    step: ClassVar[str]
    needs: ClassVar[frozenset[str]]
    weight: float

    def feature_layers(self, extractor: Extractor | None) -> tuple[str, ...]: ...

    def forward(self, ctx: StepContext) -> Tensor: ...


@runtime_checkable
class AdversarialLoss(Protocol):
    """The real/fake objective: `d_loss` for the discriminator step, `g_loss` for the generator's."""

    adversarial: ClassVar[bool]  # always True; tells it apart from other loss terms

    def d_loss(self, logits_real: Tensor, logits_fake: Tensor) -> Tensor: ...

    def g_loss(self, logits_fake: Tensor, logits_real: Tensor | None = None) -> Tensor: ...


@runtime_checkable
class Penalty(Protocol):
    """A gradient penalty added to the discriminator loss; already multiplied by its own weight."""

    def forward(self, disc: nn.Module, real: Tensor, fake: Tensor, **cond: Any) -> Tensor: ...


Role = Literal["gen", "disc", "feat", "loss", "gp"]


def frozen(module: nn.Module) -> nn.Module:
    """Put a module in eval mode with no trainable parameters (for extractors)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


__all__ = [
    "KINDS", "IMAGE_RANGE", "Generator", "Discriminator", "Extractor", "StepContext", "NEEDS",
    "LossTerm", "AdversarialLoss", "Penalty", "frozen", "to_unit", "from_unit",
]
