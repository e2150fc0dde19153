"""Tiny feature maps under bfloat16: oneDNN's convolution against core/ops/layers.py's matrix product.

    python -m stylezoo.benchmarks.small_convs [--repeats 15] [--all-matmul]

Forward plus backward (input and weight gradients) of the U-Net/DCGAN layer shapes, batch 4, kernel 4,
stride 2, each as the stock layer and as stylezoo.core.ops.layers' subclass, under CPU bfloat16 autocast and in
float32 (where the subclass is the stock layer). Calls are interleaved; medians in ms. The numbers in
core/ops/layers.py's docstring come from this table.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from rich.console import Console
from rich.table import Table
from torch import nn

from stylezoo.core.ops import layers as L

# (kind, batch, in channels, side, out channels)
SHAPES = [("conv", 4, 512, 4, 512), ("conv", 4, 512, 2, 512), ("conv", 4, 256, 8, 512), ("conv", 4, 128, 16, 256),
          ("convT", 4, 512, 2, 512), ("convT", 4, 1024, 4, 256), ("convT", 4, 512, 8, 128)]


def _step(m: nn.Module, x: torch.Tensor, bf16: bool) -> Callable[[], None]:
    def f() -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            y = m(x)
        y.float().sum().backward()
    return f


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stylezoo.benchmarks.small_convs", description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--all-matmul", action="store_true",
                    help="time the matrix product for every shape, past core/ops/layers.py's thresholds")
    args = ap.parse_args(argv)
    if args.all_matmul:
        L.CONV_MAX_POSITIONS = L.CONVT_MAX_POSITIONS = 1 << 30
    table = Table(title=f"forward + backward, medians of {args.repeats} ms ({torch.get_num_threads()} threads)")
    for col in ("layer", "in -> out", "stock fp32", "stock bf16", "stylezoo bf16", "path"):
        table.add_column(col, justify="right")
    for kind, n, c, side, o in SHAPES:
        stock_cls, ours_cls = (nn.Conv2d, L.Conv2d) if kind == "conv" else (nn.ConvTranspose2d, L.ConvTranspose2d)
        stock, ours = stock_cls(c, o, 4, 2, 1), ours_cls(c, o, 4, 2, 1)
        ours.load_state_dict(stock.state_dict())
        x = torch.randn(n, c, side, side, requires_grad=True)
        fns = {"stock fp32": _step(stock, x, False), "stock bf16": _step(stock, x, True),
               "ours bf16": _step(ours, x, True)}
        for f in fns.values():
            f()
        times: dict[str, list[float]] = {k: [] for k in fns}
        for _ in range(args.repeats):
            for k, f in fns.items():
                t = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        out_side = side // 2 if kind == "conv" else side * 2
        small = side // 2 if kind == "conv" else side
        limit = L.CONV_MAX_POSITIONS if kind == "conv" else L.CONVT_MAX_POSITIONS
        table.add_row(f"{'Conv2d' if kind == 'conv' else 'ConvTranspose2d'} {c}->{o}",
                      f"{side}x{side} -> {out_side}x{out_side}", f"{med['stock fp32']:.1f}", f"{med['stock bf16']:.1f}",
                      f"{med['ours bf16']:.1f}", "matmul" if small * small <= limit else "stock")
    Console(highlight=False).print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
