"""stylezoo beside the reference implementations, at their own architectures: pytorch/examples' dcgan and
fast_neural_style, each reference step built from its own model and loss code, loaded by path.

    python -m stylezoo.benchmarks.peers [--which dcgan fns128 fns256] [--steps 5] [--peers DIR]

The reference code is read from `../shared/peers/pytorch-examples` (beside the repository root; --peers
or STYLEZOO_PEERS to move it) and skipped with a note when absent. Their scripts train at import time,
so the model classes and the loss helpers are taken out of the files (ast) and executed alone; the step is
the body of their training loop, float32, as they ship. Their VGG16 downloads ImageNet weights: here it
is built with random weights (timing only), and stylezoo uses its cached feat/vgg16 weights.

stylezoo trains the same architectures through its engine (Trainer.train_step):
- dcgan: gen/dcgan (latent 100, 64 channels, 64 px) and disc/dcgan (64 channels), loss/bce, batch 64.
  disc/dcgan differs from the reference's D in its norms (instance norm instead of batch norm, which lets
  it judge real and fake in one call) and its head (a linear layer over the 4x4 map where the reference
  has a 4x4 convolution: the same products).
- fns128 / fns256: gen/encdec as TransformerNet (32 channels, 5 residual blocks, 9x9 outer convolutions,
  instance norm, nearest upsampling + 3x3 conv), feat/vgg16, content relu2_2 (weight 1e5) and Gram
  relu1_2, relu2_2, relu3_3, relu4_3 (1e10), no discriminator, batch 4, lr 1e-3.
Every step is interleaved with the others of its comparison in one process: reference fp32, stylezoo in
its default precision and stylezoo in float32, so the gain of the precision and of the engine show apart.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stylezoo.core.components.registry import Registry
from stylezoo.core.runs.runconfig import resolve
from stylezoo.core.training.engine import Trainer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PEERS = ROOT.parent / "shared" / "peers" / "pytorch-examples"
SAMPLES = ROOT / "data" / "samples"


def peers_dir(given: str | Path | None = None) -> Path:
    return Path(given or os.environ.get("STYLEZOO_PEERS") or DEFAULT_PEERS)


def _defs(path: Path, names: set[str], namespace: dict[str, Any]) -> dict[str, Any]:
    """Execute only the named top-level classes and functions of a script (its imports given in `namespace`)."""
    tree = ast.parse(path.read_text())
    body = [n for n in tree.body if isinstance(n, (ast.ClassDef, ast.FunctionDef)) and n.name in names]
    missing = names - {n.name for n in body}
    if missing:
        raise RuntimeError(f"{path} no longer defines {', '.join(sorted(missing))}")
    exec(compile(ast.Module(body=body, type_ignores=[]), str(path), "exec"), namespace)  # noqa: S102
    return namespace


def _module(path: Path, name: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# -------------------------------------------------------------------------------------------- references
class RefDCGAN:
    """dcgan/main.py's Generator, Discriminator, weights_init, BCELoss and Adam; `step` is its loop body."""

    def __init__(self, root: Path, batch: int = 64, nz: int = 100, ngf: int = 64, ndf: int = 64) -> None:
        ns = _defs(root / "dcgan" / "main.py", {"Generator", "Discriminator", "weights_init"},
                   {"torch": torch, "nn": nn, "nz": nz, "ngf": ngf, "ndf": ndf, "nc": 3})
        self.netG, self.netD = ns["Generator"](1), ns["Discriminator"](1)
        self.netG.apply(ns["weights_init"])
        self.netD.apply(ns["weights_init"])
        self.criterion = nn.BCELoss()
        self.optimizerD = torch.optim.Adam(self.netD.parameters(), lr=0.0002, betas=(0.5, 0.999))
        self.optimizerG = torch.optim.Adam(self.netG.parameters(), lr=0.0002, betas=(0.5, 0.999))
        self.nz = nz
        self.real = torch.rand(batch, 3, 64, 64) * 2 - 1  # the data loader's batch, already decoded

    def step(self, i: int) -> None:
        netD, netG, criterion, real_cpu = self.netD, self.netG, self.criterion, self.real
        netD.zero_grad()
        batch_size = real_cpu.size(0)
        label = torch.full((batch_size,), 1, dtype=real_cpu.dtype)
        output = netD(real_cpu)
        errD_real = criterion(output, label)
        errD_real.backward()
        output.mean().item()
        noise = torch.randn(batch_size, self.nz, 1, 1)
        fake = netG(noise)
        label.fill_(0)
        output = netD(fake.detach())
        errD_fake = criterion(output, label)
        errD_fake.backward()
        output.mean().item()
        errD = errD_real + errD_fake
        self.optimizerD.step()
        netG.zero_grad()
        label.fill_(1)
        output = netD(fake)
        errG = criterion(output, label)
        errG.backward()
        output.mean().item()
        self.optimizerG.step()
        errD.item(), errG.item()


class RefFastNeuralStyle:
    """fast_neural_style's TransformerNet, Vgg16 (random weights) and utils; `step` is train()'s loop body."""

    def __init__(self, root: Path, size: int, batch: int = 4) -> None:
        import torchvision

        src = root / "fast_neural_style" / "neural_style"
        self.utils = _module(src / "utils.py", "peer_fns_utils")
        tnet = _module(src / "transformer_net.py", "peer_fns_transformer_net")
        vgg = _module(src / "vgg.py", "peer_fns_vgg")
        # their Vgg16 asks torchvision for ImageNet weights (a download): the same network, random weights
        vgg.models = types.SimpleNamespace(vgg16=lambda weights=None: torchvision.models.vgg16(weights=None),
                                           VGG16_Weights=types.SimpleNamespace(IMAGENET1K_V1=None))
        self.transformer = tnet.TransformerNet()
        self.optimizer = torch.optim.Adam(self.transformer.parameters(), 1e-3)
        self.mse_loss = torch.nn.MSELoss()
        self.vgg = vgg.Vgg16(requires_grad=False)
        g = torch.Generator().manual_seed(0)
        style = torch.rand(batch, 3, size, size, generator=g) * 255
        self.gram_style = [self.utils.gram_matrix(y) for y in self.vgg(self.utils.normalize_batch(style))]
        self.x = torch.rand(batch, 3, size, size, generator=g) * 255
        self.content_weight, self.style_weight = 1e5, 1e10

    def step(self, i: int) -> None:
        utils, vgg, mse_loss = self.utils, self.vgg, self.mse_loss
        x = self.x.clone()  # their loader hands a fresh batch each step; normalize_batch divides it in place
        n_batch = len(x)
        self.optimizer.zero_grad()
        y = self.transformer(x)
        y = utils.normalize_batch(y)
        x = utils.normalize_batch(x)
        features_y = vgg(y)
        features_x = vgg(x)
        content_loss = self.content_weight * mse_loss(features_y.relu2_2, features_x.relu2_2)
        style_loss = 0.
        for ft_y, gm_s in zip(features_y, self.gram_style):
            gm_y = utils.gram_matrix(ft_y)
            style_loss += mse_loss(gm_y, gm_s[:n_batch, :, :])
        style_loss *= self.style_weight
        total_loss = content_loss + style_loss
        total_loss.backward()
        self.optimizer.step()
        content_loss.item(), style_loss.item()


# -------------------------------------------------------------------------------------------- stylezoo's side
def dcgan_cli(batch: int = 64) -> dict[str, Any]:
    return {"gen": "gen/dcgan", "disc": "disc/dcgan", "feat": "", "adv": "loss/bce", "gp": "gp/none", "losses": {},
            "data": {"data": str(SAMPLES / "content"), "content": ""},
            "set": {"gen": {"latent_dim": 100, "channels": 64}, "disc": {"channels": 64}},
            "train": {"size": 64, "batch": batch, "lr": 0.0002, "betas": [0.5, 0.999], "sample_every": 0,
                      "ckpt_every": 0, "device": "cpu"}}


def fns_cli(size: int, batch: int = 4) -> dict[str, Any]:
    return {"gen": "gen/encdec", "disc": "", "feat": "feat/vgg16", "adv": "", "gp": "gp/none",
            "losses": {"loss/content": 1e5, "loss/gram": 1e10},
            "set": {"gen": {"channels": 32, "n_res": 5, "outer_kernel": 9, "residual": False},
                    "loss/content": {"layers": ["relu2_2"]},
                    "loss/gram": {"layers": ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]}},
            "train": {"size": size, "batch": batch, "lr": 0.001, "sample_every": 0, "ckpt_every": 0, "device": "cpu"}}


def _trainer(reg: Registry, cli: dict[str, Any], tmp: str, precision: str) -> Trainer:
    cli = {**cli, "train": {**cli["train"], "precision": precision}}
    return Trainer(resolve(reg, recipe="default", cli=cli), tmp, registry=reg, rank=0, world=1)


def _interleave(fns: dict[str, Callable[[int], Any]], steps: int, warmup: int = 2) -> dict[str, float]:
    """Median seconds per step of each function, called round-robin."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(warmup + steps):
        for k, f in fns.items():
            t = time.perf_counter()
            f(i)
            if i >= warmup:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def compare(which: str, steps: int, root: Path, reg: Registry | None = None) -> dict[str, Any]:
    """images/s of the reference step, stylezoo's default and stylezoo fp32, interleaved; ratios to the reference."""
    reg = reg or Registry()
    if not (root / "dcgan" / "main.py").is_file():
        return {"skipped": f"reference code not found at {root}"}
    if which == "dcgan":
        batch, ref, cli = 64, RefDCGAN(root), dcgan_cli()
        what = "dcgan 64px, batch 64, nz 100, ngf = ndf = 64, BCE"
    else:
        size = int(which.removeprefix("fns"))
        batch, ref, cli = 4, RefFastNeuralStyle(root, size), fns_cli(size)
        what = f"fast_neural_style {size}px, batch 4, VGG16 content relu2_2 + style relu1_2..relu4_3"
    with tempfile.TemporaryDirectory() as tmp:
        default = _trainer(reg, cli, tmp, "auto")
        fp32 = _trainer(reg, cli, tmp, "fp32")
        prec = "bf16" if default.placement.amp else "fp32"
        fns: dict[str, Callable[[int], Any]] = {"reference fp32": ref.step, f"stylezoo default ({prec})":
                                                default.train_step}
        if prec != "fp32":
            fns["stylezoo fp32"] = fp32.train_step
        med = _interleave(fns, steps)
    ref_s = med["reference fp32"]
    rows = {k: {"step_ms": v * 1e3, "images_per_s": batch / v, "x_reference": ref_s / v} for k, v in med.items()}
    return {"what": what, "batch": batch, "steps": steps, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--which", nargs="+", default=["dcgan", "fns128", "fns256"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--peers", help="the pytorch/examples checkout")
    args = ap.parse_args(argv)
    reg = Registry()
    for w in args.which:
        r = compare(w, args.steps, peers_dir(args.peers), reg)
        print(w, r, flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
