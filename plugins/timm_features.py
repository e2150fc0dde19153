"""Any timm model as a feature extractor: `timm.create_model(model, features_only=True)`.

Layers are named stage0..stage{N-1} after timm's `feature_info` (resnet18: act1, layer1..layer4 at
/2../32). Weights (config `weights`): "default" = timm's pretrained weights (downloaded once from the
Hugging Face hub or a URL; a file already in the hub cache loads offline, otherwise an offline machine
gets a WeightsError at once), "random" (only when named, warns on every build), or a path to a local
`.safetensors` file of the full model (loaded by timm's own file loader).
The forward stops after the deepest requested stage for timm's generic FeatureListNet/FeatureDictNet
wrappers (most CNNs); models whose features_only class has its own forward (EfficientNet, hook-based
wrappers) run their whole feature pyramid and the unrequested stages are dropped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.components.kinds import frozen
from stylezoo.core.errors import UsageError, WeightsError, did_you_mean
from stylezoo.core.files import weights as pretrained


@dataclass
class TimmConfig:
    model: str = "resnet18"  # any timm model name that supports features_only (`timm.list_models()`)
    # "default" (timm's pretrained weights: needs a network once), "random", or a .safetensors path
    weights: str = "default"

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise ValueError("model must name a timm model, e.g. 'resnet18'")
        if not self.weights.strip():
            raise ValueError("weights must not be empty: use 'default', 'random' or a .safetensors path")


def _hub_cached_file(cfg: dict[str, Any]) -> str | None:
    """A pretrained file for this config already on disk (Hugging Face cache or torch hub), else None."""
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(hub_id, fname)
                if isinstance(hit, str) and os.path.isfile(hit):
                    return hit
        except ImportError:
            pass
    url = cfg.get("url")
    if url and pretrained.torch_hub_cached(url):
        return str(torch.hub.get_dir()) + "/checkpoints/" + os.path.basename(url)
    return None


class TimmFeatures(nn.Module):
    """Frozen timm backbone; input RGB in [-1, 1], normalised here with the model's own mean and std."""

    def __init__(self, cfg: TimmConfig) -> None:
        super().__init__()
        import timm

        self.cfg = cfg
        name = f"feat/timm ({cfg.model})"
        if not timm.is_model(cfg.model):
            raise UsageError(f"feat/timm: unknown timm model {cfg.model!r}."
                             f"{did_you_mean(cfg.model, timm.list_models())} See `timm.list_models()`.")
        make = lambda **kw: timm.create_model(cfg.model, features_only=True, **kw)  # noqa: E731
        spec = cfg.weights
        try:
            if spec == "random":
                pretrained.warn_random(name)
                self.net, self.weights = make(pretrained=False), "random"
            elif spec == "default":
                pcfg = timm.models.get_pretrained_cfg(cfg.model)
                pdict = pcfg.to_dict() if pcfg is not None else {}
                if not (pdict.get("hf_hub_id") or pdict.get("url")):
                    raise WeightsError(f"timm has no pretrained weights for {cfg.model!r}. "
                                       f"{pretrained.OFFLINE_ALTERNATIVES}")
                local = _hub_cached_file(pdict)
                hub = pdict.get("hf_hub_id")  # timm prefers the hub when both are given
                url = f"https://huggingface.co/{hub}" if hub else pdict["url"]
                if local:
                    load = lambda: make(pretrained=True, pretrained_cfg_overlay={"file": local})  # noqa: E731
                else:
                    load = lambda: make(pretrained=True)  # noqa: E731
                self.net = pretrained.fetch_or_fail(f"timm's pretrained {cfg.model}", url, load,
                                                    cached=local is not None)
                self.weights = f"timm:{pdict.get('hf_hub_id') or cfg.model}"
            elif spec.endswith(".safetensors") or "/" in spec or "\\" in spec:
                pretrained.load_local(spec)  # checks the file (suffix, presence, readability) before timm reads it
                self.net = make(pretrained=True, pretrained_cfg_overlay={"file": os.path.expanduser(spec)})
                self.weights = f"file:{spec}"
            else:
                raise UsageError(f"feat/timm: weights={spec!r} is neither 'default', 'random' nor a .safetensors path.")
        except RuntimeError as e:  # timm's loader: the file's keys/shapes do not fit the model
            raise WeightsError(f"feat/timm: the weights do not fit {cfg.model!r} ({str(e)[:200]}).") from None
        info = self.net.feature_info
        self.layer_names = tuple(f"stage{i}" for i in range(len(info)))
        n = len(self.layer_names)
        self.style_layers = self.layer_names[:-1] if n > 2 else self.layer_names
        self.content_layers = (self.layer_names[n // 2],)
        self.channels = tuple(info.channels())
        self.reductions = tuple(info.reduction())
        # the return id FeatureDictNet uses for each stage, in stage order
        self._ids = tuple(str(i) for i in info.out_indices)
        pcfg = getattr(self.net, "pretrained_cfg", {}) or {}
        mean, std = pcfg.get("mean", (0.485, 0.456, 0.406)), pcfg.get("std", (0.229, 0.224, 0.225))
        # plain floats, not buffers: non-persistent buffers become extra inputs in TorchScript-based ONNX exports
        self._mean, self._std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        frozen(self)

    def normalise(self, image: Tensor) -> Tensor:
        """[-1, 1] RGB to the model's own input convention (its pretrained mean and std)."""
        mean = image.new_tensor(self._mean).reshape(1, 3, 1, 1)
        std = image.new_tensor(self._std).reshape(1, 3, 1, 1)
        return ((image + 1) * 0.5 - mean) / std

    @property
    def stops_early(self) -> bool:
        """True when the forward can stop after the deepest requested stage (timm's generic wrappers)."""
        from timm.models._features import FeatureDictNet

        return isinstance(self.net, FeatureDictNet)

    def forward(self, image: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
        """Features at `layers` ({stageK: (N, C, h, w)})."""
        layers = tuple(layers)
        bad = [n for n in layers if n not in self.layer_names]
        if bad:
            raise UsageError(f"feat/timm ({self.cfg.model}) has no layer {bad[0]!r}; layers: "
                             f"{', '.join(self.layer_names)}.")
        if not layers:
            return {}
        x = self.normalise(image)
        if not torch.is_autocast_enabled(x.device.type):
            x = x.to(next(self.net.parameters()).dtype)
        wanted = {self._ids[self.layer_names.index(n)]: n for n in layers}
        out: dict[str, Tensor] = {}
        if self.stops_early:
            net: Any = self.net
            for mod_name, module in net.items():
                x = module(x)
                rid = net.return_layers.get(mod_name)
                if rid in wanted:
                    out[wanted[rid]] = torch.cat(x, 1) if net.concat and isinstance(x, (tuple, list)) else (
                        x[0] if isinstance(x, (tuple, list)) else x)
                    if len(out) == len(wanted):
                        break
        else:
            feats = self.net(x)
            feats = list(feats.values()) if isinstance(feats, dict) else list(feats)
            out = {n: feats[self.layer_names.index(n)] for n in layers}
        return {n: out[n] for n in layers}


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("feat/timm", TimmFeatures, config=TimmConfig)
