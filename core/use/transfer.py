"""Classic optimisation-based style transfer (Gatys et al. 2016) with any registered extractor.

The image's pixels are optimised (L-BFGS with a strong-Wolfe line search by default; plain L-BFGS
diverges on some portrait/painting pairs) to match the style image's Gram matrices at the extractor's
style layers and the content image's features at its content layers. It is the quality reference every
trained generator is compared with. The losses are the project's own `loss/gram` and `loss/content`
plugins (Gram normalised by c*h*w, each layer's error relative to the painting's Gram by default, averaged
over the style layers; content a feature MSE).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
from PIL import Image
from torch import Tensor, nn

from ..components.config import build_config
from ..components.kinds import Extractor, StepContext
from ..components.registry import Registry, default_registry
from ..errors import ConfigError, TrainingDiverged
from ..files.images import open_image, pil_to_tensor, tensor_to_pil
from ..runtime.devices import pick_device

ImageLike = str | Path | Image.Image | Tensor
Progress = Callable[[int, int, dict[str, float]], None]  # (step, total, {"style": ..., "content": ...})


@dataclass
class TransferConfig:
    feat: str = "feat/vgg16"  # any registered extractor
    feat_set: dict[str, Any] = field(default_factory=dict)  # its config overrides, e.g. {"weights": "random"}
    size: int = 256  # longer side of the output, in pixels (the content image is resized to it)
    steps: int = 100  # optimiser iterations
    # Gram averaged over the 5 style layers. With style_normalize "target", 256 px, 100 L-BFGS steps, The Starry
    # Night on a bridge photo and a face: 1e3 paints the swirls and keeps the face recognisable; 3e2 keeps more
    # of the photo, 3e3 more of the painting (docs/benchmarks.md, #28). Below ~160 px lower it.
    style_weight: float = 1e3
    # "target": each style layer's Gram error relative to the painting's own Gram (loss/gram's normalize), so
    # relu4_1/relu5_1 (strokes, swirls) count as much as relu1_1 (colours); "none": the plain Gram MSE, which
    # the shallow layers dominate (the photo gets the palette and fine dots only)
    style_normalize: Literal["none", "target"] = "target"
    content_weight: float = 1.0
    tv_weight: float = 0.0  # total variation of the image, a smoothness prior
    optimizer: Literal["lbfgs", "adam"] = "lbfgs"
    lr: float = 0.02  # Adam's step in [-1, 1] pixel units; L-BFGS uses 1 with its line search
    init: Literal["content", "noise"] = "content"
    style_layers: tuple[str, ...] = ()  # empty = the extractor's style_layers
    content_layers: tuple[str, ...] = ()  # empty = the extractor's content_layers
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"size must be >= 16, got {self.size}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if min(self.style_weight, self.content_weight, self.tv_weight) < 0:
            raise ValueError("style_weight, content_weight and tv_weight must be >= 0")
        if self.style_normalize not in ("none", "target"):
            raise ValueError(f"style_normalize must be 'none' or 'target', got {self.style_normalize!r}")
        if self.optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"optimizer must be 'lbfgs' or 'adam', got {self.optimizer!r}")
        if self.init not in ("content", "noise"):
            raise ValueError(f"init must be 'content' or 'noise', got {self.init!r}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")


def load_image(src: ImageLike, *, longer: int | None = None, shorter: int | None = None) -> Tensor:
    """An image (path, PIL or (3, H, W) tensor in [-1, 1]) as (1, 3, H, W) in [-1, 1], resized on request."""
    if isinstance(src, Tensor):
        x = src if src.dim() == 4 else src.unsqueeze(0)
        h, w = x.shape[-2:]
    else:
        im = src.convert("RGB") if isinstance(src, Image.Image) else open_image(src)  # EXIF-oriented RGB
        w, h = im.size
    if longer is not None:
        s = longer / max(h, w)
    elif shorter is not None:
        s = shorter / min(h, w)
    else:
        s = 1.0
    size = (max(1, round(h * s)), max(1, round(w * s)))
    if isinstance(src, Tensor):
        if size != (h, w):
            x = torch.nn.functional.interpolate(x.float(), size=size, mode="bicubic", align_corners=False,
                                                antialias=True).clamp(-1, 1)
        return x.float()
    if size != (h, w):
        im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC, reducing_gap=3.0)
    return pil_to_tensor(im).unsqueeze(0).contiguous()


def _features(extractor: Extractor, x: Tensor, layers: tuple[str, ...]) -> dict[str, Tensor]:
    """Call an extractor: an nn.Module, so the call runs `forward` (the protocol's method) with its hooks."""
    return cast(nn.Module, extractor)(x, layers)


class GatysLoss:
    """Weighted style (Gram) + content (feature MSE) + optional TV loss of an image, with fixed targets."""

    def __init__(self, extractor: Extractor, content: Tensor, style: Tensor, *, style_weight: float,
                 content_weight: float, tv_weight: float = 0.0, style_layers: tuple[str, ...] = (),
                 content_layers: tuple[str, ...] = (), style_normalize: str = "target",
                 registry: Registry | None = None) -> None:
        reg = registry or default_registry()  # the zoo's own loss/gram and loss/content terms, by name
        self.extractor = extractor
        self.gram: Any = reg.build("loss/gram", {"layers": tuple(style_layers), "weight": style_weight,
                                                 "normalize": style_normalize})
        self.content: Any = reg.build("loss/content", {"layers": tuple(content_layers), "weight": content_weight})
        self.style_layers = self.gram.feature_layers(extractor)
        self.content_layers = self.content.feature_layers(extractor)
        self.layers = tuple(dict.fromkeys(self.style_layers + self.content_layers))
        self.tv_weight = tv_weight
        with torch.no_grad():
            self.gram.prepare(_features(extractor, style, self.style_layers))
            self.gram.to(style.device)
            self.content_feats = {k: v.detach() for k, v in _features(extractor, content, self.content_layers).items()}

    def __call__(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        feats = _features(self.extractor, x, self.layers)
        ctx = StepContext(fake=x, feats={"fake": feats, "content": self.content_feats}, paired=True)
        style = self.gram(ctx)
        content = self.content(ctx)
        total = self.gram.weight * style + self.content.weight * content
        parts = {"style": float(style.detach()), "content": float(content.detach())}
        if self.tv_weight:
            tv = (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()
            total = total + self.tv_weight * tv
            parts["tv"] = float(tv.detach())
        parts["total"] = float(total.detach())
        return total, parts


def optimise(extractor: Extractor, content: Tensor, style: Tensor, cfg: TransferConfig,
             progress: Progress | None = None, registry: Registry | None = None,
             ) -> tuple[Tensor, list[dict[str, float]]]:
    """Run the optimisation on (1, 3, H, W) tensors in [-1, 1]: (result in [-1, 1], per-step losses)."""
    loss_fn = GatysLoss(extractor, content, style, style_weight=cfg.style_weight,
                        content_weight=cfg.content_weight, tv_weight=cfg.tv_weight,
                        style_layers=cfg.style_layers, content_layers=cfg.content_layers,
                        style_normalize=cfg.style_normalize, registry=registry)
    if cfg.init == "content":
        x = content.detach().clone(memory_format=torch.contiguous_format)
    else:
        g = torch.Generator().manual_seed(cfg.seed)
        x = (torch.rand(content.shape, generator=g) * 2 - 1).to(content.device)
    x.requires_grad_(True)
    history: list[dict[str, float]] = []  # history[i]: the losses at iterate i (0 = the starting image)

    def record(step: int, parts: dict[str, float]) -> None:
        if not math.isfinite(parts["total"]):
            raise TrainingDiverged(f"the transfer loss became {parts['total']} at step {step}; lower "
                                   "--style-weight or use --optimizer adam.")
        history.append(parts)
        if progress is not None and step > 0:
            progress(step, cfg.steps, parts)

    def evaluate() -> tuple[Tensor, dict[str, float]]:
        opt.zero_grad(set_to_none=True)
        loss, parts = loss_fn(x)
        loss.backward()
        return loss, parts

    if cfg.optimizer == "lbfgs":
        # One call runs every iteration, so each line search reuses its last evaluation. Pixels are not
        # clamped while L-BFGS runs (that would break its curvature model), only at the end.
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            [x], lr=1.0, max_iter=cfg.steps, max_eval=cfg.steps * 2, history_size=50,
            line_search_fn="strong_wolfe")
        pending: list[Any] = [0, None]  # (iteration, losses of its latest evaluation)

        def closure() -> Tensor:
            loss, parts = evaluate()
            k = int(opt.state[x].get("n_iter", 0))  # the iteration this evaluation belongs to
            if k > pending[0] and pending[1] is not None:
                record(pending[0], pending[1])
            pending[:] = [k, parts]
            return loss

        opt.step(closure)  # type: ignore[arg-type]  # torch's stub wants a float closure; LBFGS takes the loss tensor
        record(pending[0], pending[1])
    else:
        opt = torch.optim.Adam([x], lr=cfg.lr)
        for step in range(cfg.steps):
            _, parts = evaluate()
            opt.step()
            with torch.no_grad():
                x.clamp_(-1, 1)
            record(step, parts)
        with torch.no_grad():
            record(cfg.steps, loss_fn(x)[1])
    with torch.no_grad():
        x.clamp_(-1, 1)
    return x.detach(), history


def transfer(content: ImageLike, style: ImageLike, *, extractor: Extractor | None = None,
             progress: Progress | None = None, registry: Any = None, **options: Any) -> Image.Image:
    """Paint `content` in the style of `style` (paths, PIL images or tensors in [-1, 1]); a PIL image.

    `options` are TransferConfig fields (size, steps, style_weight, optimizer, ...). A ready `extractor`
    replaces `feat`/`feat_set`.
    """
    cfg = build_config(TransferConfig, options, owner="transfer")
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    reg = registry or default_registry()
    if extractor is None:
        extractor = reg.build(cfg.feat, cfg.feat_set, kind="feat")
    extractor = cast(Any, extractor).to(device)  # an nn.Module; the protocol has no .to
    c = load_image(content, longer=cfg.size).to(device)
    s = load_image(style, shorter=min(c.shape[-2:])).to(device)
    if min(c.shape[-2:]) < 16:
        raise ConfigError(f"the content image is {tuple(c.shape[-2:])} pixels after resizing; use a larger --size.")
    result, _ = optimise(extractor, c, s, cfg, progress, reg)
    return tensor_to_pil(result[0])


__all__ = ["TransferConfig", "GatysLoss", "optimise", "transfer", "load_image"]
