"""Small bases for plugin authors: what every loss term repeats, written once.

`LossConfig` gives a config its `weight` (checked >= 0). `Loss` is a generator-side term that needs only the
generated images; override `step`, `needs` or `feature_layers` where a term differs. `FeatureLoss` reads
extractor features at the layers its config's `layers` names (empty: the extractor's defaults).
Nothing has to inherit from these: the engine calls only what core/components/kinds.py's Protocols name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from ..errors import CompositionError, ConfigError
from .kinds import Extractor, StepContext


def check_weight(weight: float) -> None:
    """Refuse a negative (or NaN) loss weight, as a config's `__post_init__` should."""
    if not weight >= 0:
        raise ValueError(f"weight must be >= 0, got {weight}")


@dataclass
class LossConfig:
    """The config of a loss term. Subclass it (as a dataclass) and add fields with defaults; a subclass may
    give `weight` another default by declaring it again."""

    weight: float = 1.0  # the term's weight in the total loss; `--loss NAME:W` sets it

    def __post_init__(self) -> None:
        check_weight(self.weight)


class Loss(nn.Module):
    """A loss term on the generator's step that needs only the generated images (`ctx.fake`).

    `self.config` is the term's config and `self.weight` its weight. Set the class attributes `step`
    ("gen" or "disc") and `needs` (see kinds.NEEDS) where the term differs, and implement `forward(ctx)`,
    returning one number (a 0-d tensor).
    """

    step: ClassVar[str] = "gen"
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Any) -> None:
        super().__init__()
        self.config = self.cfg = config
        self.weight = float(config.weight)

    def feature_layers(self, extractor: Extractor | None) -> tuple[str, ...]:
        """The extractor layers this term reads: none."""
        return ()

    def forward(self, ctx: StepContext) -> Tensor:  # pragma: no cover - the subclass's job
        raise NotImplementedError(f"{type(self).__name__} must implement forward(ctx)")


def resolve_layers(owner: str, requested: tuple[str, ...], default_attr: str,
                   extractor: Extractor | None) -> tuple[str, ...]:
    """The layers a term reads: `requested`, or the extractor's `default_attr` ("style_layers",
    "content_layers") when empty; refused with the valid names when unknown."""
    if extractor is None:
        raise CompositionError(f"{owner} needs a feature extractor: add a feat/ component (e.g. feat/vgg16).")
    layers = tuple(requested) or tuple(getattr(extractor, default_attr))
    valid = tuple(extractor.layer_names)
    bad = [n for n in layers if n not in valid]
    if bad:
        raise ConfigError(f"{owner}: unknown layer(s) {', '.join(map(repr, bad))}; valid layers: {', '.join(valid)}.")
    if not layers:
        raise ConfigError(f"{owner}: no layers given and the extractor has no {default_attr}; "
                          f"pick from {', '.join(valid)}.")
    return layers


class FeatureLoss(Loss):
    """A loss term on extractor features of the generated images (`ctx.feats["fake"]`, {layer: tensor}).

    Its config has a `layers` field (empty: the extractor's `default_layers`, "style_layers" unless set).
    Add "feats_content", "feats_target" or "style" to `needs` for the other batches' features or the
    style images' (then `prepare(style_feats, labels=None)` is called once per run before the first step).
    """

    needs: ClassVar[frozenset[str]] = frozenset({"feats_fake"})
    default_layers: ClassVar[str] = "style_layers"

    def feature_layers(self, extractor: Extractor | None) -> tuple[str, ...]:
        """The config's `layers`, or the extractor's defaults."""
        owner = getattr(self, "owner", type(self).__name__)
        return resolve_layers(owner, tuple(getattr(self.config, "layers", ())), self.default_layers, extractor)


__all__ = ["LossConfig", "Loss", "FeatureLoss", "resolve_layers", "check_weight"]
