"""Paired photo-to-sketch quality: train `portrait-sketch` for a fixed wall-clock budget, score unseen pairs.

    python -m stylezoo.benchmarks.quality_pairs [--minutes 19] [--data DIR] [--set train.batch=4 ...]
                                                [--loss l1:100 ...]

Data: ../shared/data/dev/pairs/cufs (photo/ + sketch/, 64x64; research-only, never bundled). A fixed 38
pairs (a seeded permutation of the sorted stems) are held out; the rest train the recipe through the
ordinary engine until the budget is spent. Each held-out photo then goes through the generator (eval
mode); the output, turned grey (ITU-R 601 luma) and resized to 64x64, is compared with the 64x64 grey
sketch: mean SSIM (torchmetrics, Gaussian 11x11, sigma 1.5, data range 1) and mean L1 in [0, 1] units.
The grey photo's own SSIM to the sketch is the floor a model must beat.

Reference (canonical pix2pix, U-Net 128 on the pairs upsampled to 128, vanilla GAN + 100 x L1, batch 1,
16 epochs, about 19 minutes on this kind of 2-core CPU, same scoring): SSIM 0.70, L1 0.089; grey photo
SSIM 0.54. Writes bench-results/quality_pairs-<time>.json, a PNG grid (input | output | true sketch)
and the run directory beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dev" / "pairs" / "cufs"
REFERENCE = {"ssim": 0.70, "l1": 0.089, "photo_ssim": 0.54, "minutes": 19,
             "what": "canonical pix2pix, U-Net 128 (pairs upsampled), vanilla GAN + 100 x L1, batch 1, 16 epochs"}
EVAL_SIDE = 64
LUMA = (0.299, 0.587, 0.114)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m stylezoo.benchmarks.quality_pairs", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="folder with photo/ and sketch/ (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=19.0,
                   help="training wall-clock budget (default: 19, the reference's); training stops at the recipe's "
                        "length or the budget, whichever comes first")
    p.add_argument("--fill", action="store_true", help="train until the budget is spent, past the recipe's length")
    p.add_argument("--holdout", type=int, default=38, help="pairs held out for scoring (default: 38)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the fixed held-out split (default: 0)")
    p.add_argument("--recipe", default="portrait-sketch")
    p.add_argument("--set", dest="sets", action="append", default=[], help="ROLE.FIELD=VALUE override, repeatable")
    p.add_argument("--loss", dest="losses", action="append", default=None,
                   help="NAME[:WEIGHT], repeatable; replaces the recipe's loss terms, as `stylezoo run --loss` does")
    p.add_argument("--out", type=Path, default=Path("bench-results"))
    p.add_argument("--grid", type=int, default=8, help="held-out pairs shown in the PNG grid")
    return p.parse_args(argv)


def split(stems: list[str], holdout: int, seed: int) -> tuple[list[str], list[str]]:
    """(train, test) stems: a seeded permutation of the sorted stems; its first `holdout` are the test set."""
    stems = sorted(stems)
    if not 0 < holdout < len(stems):
        raise SystemExit(f"--holdout {holdout}: need between 1 and {len(stems) - 1} of the {len(stems)} pairs")
    perm = torch.randperm(len(stems), generator=torch.Generator().manual_seed(seed)).tolist()
    test = sorted(stems[i] for i in perm[:holdout])
    train = sorted(stems[i] for i in perm[holdout:])
    return train, test


def grey64(x: Tensor) -> Tensor:
    """Images in [-1, 1] (N, 3, H, W) to grey (N, 1, 64, 64) in [0, 1]."""
    w = torch.tensor(LUMA, dtype=torch.float32).view(1, 3, 1, 1)
    g = ((x.float().clamp(-1, 1) + 1) / 2 * w).sum(1, keepdim=True)
    if g.shape[-2:] != (EVAL_SIDE, EVAL_SIDE):
        g = F.interpolate(g, size=(EVAL_SIDE, EVAL_SIDE), mode="bicubic", align_corners=False, antialias=True)
    return g.clamp(0, 1)


def ssim_per_image(a: Tensor, b: Tensor) -> Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(a, b, data_range=1.0, reduction="none")


def train_for(trainer: Any, seconds: float, log_every_s: float = 30.0, *, fill: bool = False) -> dict[str, Any]:
    """Run engine steps until the recipe's length (`train.steps`/`epochs`) is done or the budget is spent,
    whichever comes first (`fill=True`: until the budget is spent); returns steps, epochs, time, L1 trace."""
    import dataclasses

    n = len(trainer.data.pairs)
    batch = trainer.train_cfg.batch
    t0 = time.perf_counter()
    next_log, l1_window, trace = t0 + log_every_s, [], []
    # a learning-rate decay needs the total number of steps: if the budget looks too short for the recipe's
    # length (or fill), the total is estimated from the speed of the first 5%
    calibrate = trainer.train_cfg.lr_decay > 0
    end = float("inf") if fill else trainer.train_cfg.steps
    while time.perf_counter() - t0 < seconds and trainer.step < end:
        if calibrate and time.perf_counter() - t0 >= 0.05 * seconds:
            total = int(trainer.step / (time.perf_counter() - t0) * seconds)
            if fill or total < trainer.train_cfg.steps:
                trainer.train_cfg = dataclasses.replace(trainer.train_cfg, steps=max(total, trainer.step + 1))
                print(f"  lr decay over the last {trainer.train_cfg.lr_decay:g} of an estimated {total} steps",
                      flush=True)
            calibrate = False
        logs = trainer.train_step(trainer.step)
        trainer.step += 1
        l1_window.append(next((v for k, v in logs.items() if k.startswith("g/loss/l")), float("nan")))
        now = time.perf_counter()
        if now >= next_log:
            mean = sum(l1_window) / len(l1_window)
            trace.append({"s": round(now - t0, 1), "step": trainer.step, "g_recon": mean})
            print(f"  {now - t0:6.0f}s  step {trainer.step:5d}  epoch {trainer.step * batch / n:5.2f}  "
                  f"weighted recon {mean:.3f}  D {logs.get('d/loss', float('nan')):.3f}", flush=True)
            l1_window, next_log = [], now + log_every_s
    elapsed = time.perf_counter() - t0
    return {"train_s": elapsed, "steps": trainer.step, "epochs": trainer.step * batch / n,
            "images_per_s": trainer.step * batch / elapsed, "trace": trace}


@torch.no_grad()
def evaluate(trainer: Any, data: Path, stems: list[str], size: int, raw: bool = False) -> dict[str, Any]:
    """Score the generator on held-out pairs: per-image SSIM and L1 of grey 64x64 output vs sketch.

    The generator is the one `stylezoo stylize` would load: the weight average when the recipe keeps one
    (train.ema), else the trained weights; `raw=True` scores the trained weights regardless."""
    from stylezoo.core.files.images import find_images, load_tensor

    photos = {f.stem: f for f in find_images(data / "photo")}
    sketches = {f.stem: f for f in find_images(data / "sketch")}
    x = torch.stack([load_tensor(photos[s], size) for s in stems])
    y = torch.stack([load_tensor(sketches[s], EVAL_SIDE) for s in stems])  # CUFS files are 64x64 already
    gen = trainer.components.gen if raw else trainer.infer_gen
    gen.eval()
    out = torch.cat([gen(b.to(trainer.device)).float().cpu() for b in x.split(8)])
    trainer.components.gen.train()
    g_out, g_true, g_photo = grey64(out), grey64(y), grey64(x)
    ssim = ssim_per_image(g_out, g_true)
    l1 = (g_out - g_true).abs().flatten(1).mean(1)
    return {"x": x, "out": out, "y": y, "ssim": ssim, "l1": l1, "photo_ssim": ssim_per_image(g_photo, g_true),
            "photo_l1": (g_photo - g_true).abs().flatten(1).mean(1)}


def save_pairs_grid(res: dict[str, Any], n: int, path: Path) -> Path:
    """One row per held-out pair: input | output | true sketch."""
    from stylezoo.core.files.images import save_grid

    n = min(n, res["x"].shape[0])
    side = res["out"].shape[-1]

    def fit(t: Tensor) -> Tensor:
        if t.shape[-1] == side:
            return t
        return F.interpolate(t, size=(side, side), mode="bicubic", align_corners=False, antialias=True)

    rows = [torch.cat([fit(res[k][i:i + 1]) for k in ("x", "out", "y")]) for i in range(n)]
    return save_grid(rows, path)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    data = args.data
    if not ((data / "photo").is_dir() and (data / "sketch").is_dir()):
        print(f"quality_pairs: skipped, no paired data at {data} (it needs photo/ and sketch/; the CUFS "
              "development pairs are research-only and not bundled; give --data DIR)")
        return 0
    from rich.console import Console
    from rich.table import Table

    from stylezoo.core.components.registry import default_registry
    from stylezoo.core.files.data import match_pairs
    from stylezoo.core.runs.runconfig import resolve
    from stylezoo.core.training.engine import Trainer

    pairs = match_pairs(data / "photo", data / "sketch")
    train_stems, test_stems = split([s for s, _, _ in pairs], args.holdout, args.split_seed)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    run_dir = args.out / f"quality_pairs-{stamp}"
    reg = default_registry()
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        tdir = Path(tmp)
        for sub in ("photo", "sketch"):
            (tdir / sub).mkdir()
        by_stem = {s: (a, b) for s, a, b in pairs}
        for s in train_stems:
            a, b = by_stem[s]
            shutil.copy2(a, tdir / "photo" / a.name)
            shutil.copy2(b, tdir / "sketch" / b.name)
        rc = resolve(reg, recipe=args.recipe, cli={"data": {"pairs": str(tdir)}}, sets=args.sets, losses=args.losses)
        print(f"quality_pairs: recipe {rc.recipe}: {rc.gen} + {rc.disc} ({rc.adv}), losses "
              f"{', '.join(f'{k} x {v:g}' for k, v in rc.losses.items())}; size {rc.train.size}, batch "
              f"{rc.train.batch}, lr {rc.train.lr:g}; {len(train_stems)} training pairs, {len(test_stems)} held out; "
              f"budget {args.minutes:g} min; torch threads {torch.get_num_threads()}, load {load_start[0]:.1f}",
              flush=True)
        trainer = Trainer(rc, run_dir, registry=reg)
        print(f"  the recipe's length: {trainer.train_cfg.steps} steps "
              f"({trainer.train_cfg.steps * rc.train.batch / len(train_stems):.1f} "
              f"epochs){'; --fill: training past it until the budget is spent' if args.fill else ''}", flush=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        trained = train_for(trainer, args.minutes * 60, fill=args.fill)
    trainer.save_checkpoint(keep=False)
    res = evaluate(trainer, data, test_stems, rc.train.size)
    grid = save_pairs_grid(res, args.grid, args.out / f"quality_pairs-{stamp}.png")
    figures = {"ssim": float(res["ssim"].mean()), "l1": float(res["l1"].mean()),
               "photo_ssim": float(res["photo_ssim"].mean()), "photo_l1": float(res["photo_l1"].mean())}
    if trainer.ema is not None:  # the trained weights too, so the average's share of the result is visible
        raw = evaluate(trainer, data, test_stems, rc.train.size, raw=True)
        figures |= {"raw_ssim": float(raw["ssim"].mean()), "raw_l1": float(raw["l1"].mean())}
    table = Table(title=f"portrait-sketch on {len(test_stems)} unseen pairs (grey, 64x64)")
    for col in ("", "SSIM (higher better)", "L1 in [0,1] (lower better)", "training"):
        table.add_column(col)
    what = f" (weight average, ema {rc.train.ema:g})" if trainer.ema is not None else ""
    table.add_row(f"stylezoo {rc.recipe}{what}", f"{figures['ssim']:.3f}", f"{figures['l1']:.3f}",
                  f"{trained['train_s'] / 60:.1f} min, {trained['steps']} steps, {trained['epochs']:.1f} epochs")
    if "raw_ssim" in figures:
        table.add_row("  the same run's raw weights", f"{figures['raw_ssim']:.3f}", f"{figures['raw_l1']:.3f}", "")
    table.add_row("reference pix2pix", f"{REFERENCE['ssim']:.2f}", f"{REFERENCE['l1']:.3f}", "about 19 min, 16 epochs")
    table.add_row("grey photo (floor)", f"{figures['photo_ssim']:.3f}", f"{figures['photo_l1']:.3f}", "")
    Console(highlight=False).print(table)
    result = {
        "benchmark": "quality_pairs", "time": stamp,
        "command": " ".join(["python -m stylezoo.benchmarks.quality_pairs",
                             *(argv if argv is not None else sys.argv[1:])]),
        "recipe": rc.to_dict(), "data": str(data), "train_pairs": len(train_stems), "test_stems": test_stems,
        "budget_minutes": args.minutes, **{k: v for k, v in trained.items()}, **figures,
        "per_image": {s: {"ssim": float(a), "l1": float(b)} for s, a, b in zip(test_stems, res["ssim"], res["l1"])},
        "reference": REFERENCE, "grid": str(grid), "run_dir": str(run_dir),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "device": str(trainer.device),
                    "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
    }
    path = args.out / f"quality_pairs-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path} and {grid}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
