"""Label-conditioned image-to-image generator: conditional instance normalisation (Dumoulin et al. 2017).

`gen/cin` is gen/encdec's network (its convolution and upsampling layout, built from its `_conv` pieces) with
every instance norm replaced by a conditional one: one scale and shift per style label. One model learns
several styles; `gen(x, label=LongTensor(N))` picks one per image and `label_weights=(N, L)` mixes them
(a convex combination of the scales and shifts). The engine sets `num_labels` and `labels` from the style
data (one label per sub-folder of --style, or per image of a flat folder), so checkpoints know the names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.ops.layers import ReflectionPad2d, upsample_nearest
from stylezoo.plugins.encdec import _conv


@dataclass
class CINConfig:
    channels: int = 32  # width of the first conv; doubles at each downsampling (as gen/encdec)
    n_res: int = 5  # residual blocks at the lowest resolution
    in_channels: int = 3  # RGB in
    out_channels: int = 3  # RGB out
    n_down: int = 2  # stride-2 downsamplings (and as many upsamplings); input sides are multiples of 2**n_down
    residual: bool = False  # add the input (pre-tanh) to the output: starts near identity, keeps content early
    num_labels: int = 1  # styles the model learns; the engine sets it from the style data
    labels: tuple[str, ...] = ()  # their names, in label order (set by the engine); empty = "0", "1", ...

    def __post_init__(self) -> None:
        for name in ("channels", "in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_res < 0:
            raise ValueError(f"n_res must be >= 0, got {self.n_res}")
        if not 0 <= self.n_down <= 5:
            raise ValueError(f"n_down must be between 0 and 5, got {self.n_down}")
        if self.residual and self.in_channels != self.out_channels:
            raise ValueError("residual needs in_channels == out_channels")
        if self.num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {self.num_labels}")
        if self.labels and len(self.labels) != self.num_labels:
            raise ValueError(f"{len(self.labels)} label names for num_labels={self.num_labels}")
        if len(set(self.labels)) != len(self.labels):
            raise ValueError(f"label names must be unique, got {list(self.labels)}")


class CondInstanceNorm(nn.Module):
    """Instance norm whose scale and shift are picked (or mixed) per sample from one pair per label."""

    def __init__(self, channels: int, num_labels: int) -> None:
        super().__init__()
        self.norm = nn.InstanceNorm2d(channels, affine=False)
        self.scale = nn.Parameter(torch.ones(num_labels, channels))
        self.shift = nn.Parameter(torch.zeros(num_labels, channels))

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        """`w`: (N, num_labels) label weights (one-hot rows pick one style)."""
        w = w.to(self.scale.dtype)
        gamma, beta = w @ self.scale, w @ self.shift
        return self.norm(x) * gamma[..., None, None].to(x.dtype) + beta[..., None, None].to(x.dtype)


class CondBlock(nn.Module):
    """(pad, conv) layers, then a conditional instance norm and optionally ReLU."""

    def __init__(self, convs: list[nn.Module], channels: int, num_labels: int, relu: bool = True) -> None:
        super().__init__()
        self.conv = nn.Sequential(*convs)
        self.norm = CondInstanceNorm(channels, num_labels)
        self.relu = relu

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        x = self.norm(self.conv(x), w)
        return F.relu(x) if self.relu else x


class CondResBlock(nn.Module):
    """x + (conv3x3, CIN, ReLU, conv3x3, CIN)(x)."""

    def __init__(self, c: int, num_labels: int) -> None:
        super().__init__()
        self.a = CondBlock(_conv(c, c, 3), c, num_labels)
        self.b = CondBlock(_conv(c, c, 3), c, num_labels, relu=False)

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return x + self.b(self.a(x, w), w)


class CINGenerator(nn.Module):
    """Image (N, 3, H, W) + style label(s) to an image (N, 3, H, W) in [-1, 1]; gen/encdec's layout with CIN.

    `forward(x, label=None, label_weights=None)`: `label` (N,) or a single int picks a style per image,
    `label_weights` (N, L) or (L,) mixes styles (rows are normalised to sum to 1); neither gives an equal mix
    of all the styles. Input sides must be multiples of `size_multiple`.
    """

    family: ClassVar[str] = "image"
    export_conditions: ClassVar[tuple[tuple[str, str], ...]] = (("label_weights", "labels"),)

    def __init__(self, cfg: CINConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_labels = cfg.num_labels
        self.labels: tuple[str, ...] = tuple(cfg.labels) or tuple(str(i) for i in range(cfg.num_labels))
        self.size_multiple = 2**cfg.n_down
        n = cfg.num_labels
        widths = [cfg.channels * 2**i for i in range(cfg.n_down + 1)]
        self.stem = CondBlock(_conv(cfg.in_channels, widths[0], 7), widths[0], n)
        self.down = nn.ModuleList(CondBlock(_conv(a, b, 3, stride=2), b, n) for a, b in zip(widths[:-1], widths[1:]))
        self.res = nn.ModuleList(CondResBlock(widths[-1], n) for _ in range(cfg.n_res))
        self.up = nn.ModuleList(CondBlock(_conv(a, b, 3), b, n) for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.head = nn.Sequential(ReflectionPad2d(3), nn.Conv2d(widths[0], cfg.out_channels, 7), nn.Tanh())
        if cfg.residual:  # start as the identity; training learns the change of style
            nn.init.zeros_(self.head[1].weight)
            nn.init.zeros_(self.head[1].bias)

    def label_weights(self, n: int, label: Tensor | int | None = None, label_weights: Tensor | None = None,
                      device: torch.device | None = None) -> Tensor:
        """(n, num_labels) weights from a label, label weights or neither (an equal mix)."""
        L = self.num_labels
        if label is not None and label_weights is not None:
            raise ValueError("gen/cin: give label or label_weights, not both")
        if label_weights is not None:
            w = label_weights.float()
            w = w.reshape(1, -1).expand(n, -1) if w.dim() == 1 else w
            if w.shape[-1] != L:
                raise ValueError(f"gen/cin: label_weights has {w.shape[-1]} columns for {L} labels")
            return (w / w.sum(-1, keepdim=True).clamp_min(1e-12)).to(device)
        if label is None:
            return torch.full((n, L), 1.0 / L, device=device)
        lab = torch.as_tensor(label, device=device).long().reshape(-1)
        if lab.numel() == 1:
            lab = lab.expand(n)
        if not torch.jit.is_tracing() and bool(((lab < 0) | (lab >= L)).any()):
            raise ValueError(f"gen/cin: labels must be in 0..{L - 1} ({', '.join(self.labels)}), got {lab.tolist()}")
        return F.one_hot(lab, L).float()

    def forward(self, x: Tensor, label: Tensor | int | None = None, label_weights: Tensor | None = None) -> Tensor:
        w = self.label_weights(x.shape[0], label, label_weights, x.device)
        inp = x
        x = self.stem(x, w)
        levels = []
        for down in self.down:
            levels.append(x)
            x = down(x, w)
        for block in self.res:
            x = block(x, w)
        for up, like in zip(self.up, reversed(levels)):
            x = up(upsample_nearest(x, like.shape[-2:]), w)
        if self.cfg.residual:  # tanh(head + atanh(input)): the identity when the head outputs zero
            return torch.tanh(self.head[:-1](x) + torch.atanh(inp.clamp(-0.995, 0.995)))
        return self.head(x)


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("gen/cin", CINGenerator, config=CINConfig, family="image")
