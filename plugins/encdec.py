"""Encoder-decoder image-to-image generator in the style of Johnson et al.'s fast style transfer network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from stylezoo.core.components.hookspecs import hookimpl
from stylezoo.core.ops.layers import ReflectionPad2d, upsample_nearest


@dataclass
class EncDecConfig:
    channels: int = 32  # width of the first conv; doubles at each downsampling
    n_res: int = 5  # residual blocks at the lowest resolution
    in_channels: int = 3  # RGB in
    out_channels: int = 3  # RGB out
    n_down: int = 2  # stride-2 downsamplings (and as many upsamplings); input sides are multiples of 2**n_down
    # "reflect" (Johnson et al.; no dark borders) or "zeros" (conv padding: cheaper backward on CPU,
    # see benchmarks/speed.py --ablation)
    padding: str = "reflect"
    residual: bool = False  # add the input (pre-tanh) to the output: starts near identity, keeps content early
    outer_kernel: int = 7  # side of the first and last convs (odd); Johnson et al.'s TransformerNet has 9
    # "instance": affine instance norm after every conv but the last (Ulyanov et al.): the strongest style, but
    # at 128 px training it grows round black "droplet" blots (StyleGAN2's instance-norm artefact) in the outputs;
    # "instance-encoder": instance norm in the stem and downsampling only: no blots, less style (docs/benchmarks.md)
    norm: str = "instance"

    def __post_init__(self) -> None:
        for name in ("channels", "in_channels", "out_channels"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_res < 0:
            raise ValueError(f"n_res must be >= 0, got {self.n_res}")
        if not 0 <= self.n_down <= 5:
            raise ValueError(f"n_down must be between 0 and 5, got {self.n_down}")
        if self.padding not in PADDINGS:
            raise ValueError(f"padding must be one of {', '.join(map(repr, PADDINGS))}, got {self.padding!r}")
        if self.outer_kernel < 1 or self.outer_kernel % 2 == 0:
            raise ValueError(f"outer_kernel must be odd and >= 1, got {self.outer_kernel}")
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}, got {self.norm!r}")
        if self.residual and self.in_channels != self.out_channels:
            raise ValueError("residual needs in_channels == out_channels")


PADDINGS = ("reflect", "zeros")
NORMS = ("instance", "instance-encoder")


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, padding: str = "reflect",
          bias: bool = False) -> list[nn.Module]:
    """Reflection pad + conv, or a zero-padded conv (no bias by default: an affine instance norm follows)."""
    if padding == "zeros":
        return [nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=bias)]
    return [ReflectionPad2d(k // 2), nn.Conv2d(c_in, c_out, k, stride, bias=bias)]


def _norm(c: int, kind: str = "instance") -> nn.Module:
    return nn.Identity() if kind == "none" else nn.InstanceNorm2d(c, affine=True)


def _norm_relu(c: int, kind: str = "instance") -> list[nn.Module]:
    return [_norm(c, kind), nn.ReLU(inplace=True)]


class ResBlock(nn.Module):
    """x + (conv3x3, IN, ReLU, conv3x3, IN)(x)."""

    def __init__(self, c: int, padding: str = "reflect", norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(c, c, 3, padding=padding, bias=norm == "none"), *_norm_relu(c, norm),
                                  *_conv(c, c, 3, padding=padding, bias=norm == "none"), _norm(c, norm))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Up(nn.Module):
    """Nearest-neighbour upsampling then a 3x3 conv (no transposed conv, so no checkerboard artefacts).

    The upsampling goes to the exact side of the matching encoder level, so odd intermediate sides
    (inputs that are not multiples of `size_multiple`) still come back at the input's size.
    """

    def __init__(self, c_in: int, c_out: int, padding: str = "reflect", norm: str = "instance") -> None:
        super().__init__()
        self.body = nn.Sequential(*_conv(c_in, c_out, 3, padding=padding, bias=norm == "none"),
                                  *_norm_relu(c_out, norm))

    def forward(self, x: Tensor, like: Tensor) -> Tensor:
        return self.body(upsample_nearest(x, like.shape[-2:]))


class EncDecGenerator(nn.Module):
    """Image (N, in_channels, H, W) to image (N, out_channels, H, W) in [-1, 1].

    `outer_kernel` (7) conv, `n_down` stride-2 3x3 convs, `n_res` residual blocks, `n_down` upsampling
    stages, `outer_kernel` conv and tanh; reflection padding everywhere and affine instance norm after every
    conv but the last (`norm = "instance-encoder"`: after the stem and downsampling convs only). Every op
    exports to ONNX (reflection pad, instance norm, nearest resize).
    """

    family: ClassVar[str] = "image"

    def __init__(self, cfg: EncDecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.size_multiple = 2**cfg.n_down
        widths = [cfg.channels * 2**i for i in range(cfg.n_down + 1)]
        pad = cfg.padding
        k = cfg.outer_kernel
        enc, dec = "instance", "none" if cfg.norm == "instance-encoder" else "instance"
        self.stem = nn.Sequential(*_conv(cfg.in_channels, widths[0], k, padding=pad), *_norm_relu(widths[0], enc))
        self.down = nn.ModuleList(
            nn.Sequential(*_conv(a, b, 3, stride=2, padding=pad), *_norm_relu(b, enc))
            for a, b in zip(widths[:-1], widths[1:])
        )
        self.res = nn.Sequential(*(ResBlock(widths[-1], pad, dec) for _ in range(cfg.n_res)))
        self.up = nn.ModuleList(Up(a, b, pad, dec) for a, b in zip(widths[:0:-1], widths[-2::-1]))
        self.head = nn.Sequential(*_conv(widths[0], cfg.out_channels, k, padding=pad, bias=True), nn.Tanh())
        if cfg.residual:  # start as the identity; training learns the change of style
            nn.init.zeros_(self.head[-2].weight)  # the last conv (after its padding, if any)
            nn.init.zeros_(self.head[-2].bias)

    def forward(self, x: Tensor, **cond: Any) -> Tensor:
        inp = x
        x = self.stem(x)
        levels = []
        for down in self.down:
            levels.append(x)
            x = down(x)
        x = self.res(x)
        for up, like in zip(self.up, reversed(levels)):
            x = up(x, like)
        if self.cfg.residual:  # tanh(head + atanh(input)): the identity when the head outputs zero
            return torch.tanh(self.head[:-1](x) + torch.atanh(inp.clamp(-0.995, 0.995)))
        return self.head(x)


@hookimpl
def register_components(register) -> None:  # noqa: ANN001
    register("gen/encdec", EncDecGenerator, config=EncDecConfig, family="image")
