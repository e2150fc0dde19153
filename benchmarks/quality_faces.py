"""Face-recipe quality: train each face recipe for a fixed wall-clock budget, score it on unseen faces.

    python -m stylezoo.benchmarks.quality_faces [--minutes 4] [--recipes portrait-painting,faces-dcgan-gram]
                                                [--data DIR] [--gatys-steps 12] [--set ROLE.FIELD=VALUE ...]

Data: DIR/faces/celeba_hq and DIR/faces/codeformer (default DIR: ../shared/data/dev beside the repository;
aligned 256 px portraits, research-only: they are read in place or copied to a temporary folder, never into
the repository). A fixed set of celeba_hq faces (`--holdout`, a seeded permutation of the sorted file names)
is held out; every other face (celeba_hq and codeformer) trains the recipe through the ordinary engine
(`Trainer.train_step`) until `--minutes` are spent. The recipe's style image is kept. The project's own
`core/evaluate.Evaluator` then scores each row (metric extractors fixed, whatever the run trained with):

- style_gram (lower better): Gram distance to the style image, VGG16 relu1_1..relu5_1, relative (0 = same
  statistics); the style image is taken at the scale the engine takes it (`train.style_size`, or 2 x size).
- content_feat (lower better): VGG16 relu4_2 feature distance to the input face, relative (0 = unchanged).
- content_ssim (higher better): SSIM of the output's luminance to the input's (1 = same structure).
- fid_effl0 / kid_effl0 (lower better): Frechet / kernel distance on EfficientNet-Lite0 pooled features
  (not comparable with Inception FIDs; tiny sets here, so read them as a ranking, not absolute values).

Rows per recipe:

- portrait-painting (image to image): the model restyles the held-out faces. FID/KID are measured against
  random crops of the style painting (as `stylezoo eval` does), content metrics against the input faces.
- faces-dcgan-gram (noise to image): `--samples` images from fixed noise (default: as many as held-out
  faces). FID/KID are measured against the held-out real faces; there are no content metrics.
- Gatys reference: the optimisation-based transfer (core/use/transfer.py: L-BFGS, strong-Wolfe line search,
  style weight `--gatys-style-weight`, VGG16 default layers) of each held-out face toward the same style
  image at the recipe's size, with `--gatys-steps` iterations (default 12, fewer than `stylezoo transfer`'s
  100: measured here at about 0.6 s per iteration and face at 128 px and 0.15 s at 64 px, so both recipes'
  references cost about 2 minutes on a lightly loaded 2-core CPU, several times more when other jobs share
  the cores; the table states the time taken).
  For the DCGAN it is "what a perfect styled-face generator would produce".
- identity: the held-out faces unchanged, the unstyled end of the scale (for the DCGAN they are also FID's
  real side, so their FID is 0 by construction; only their style_gram says something there).
- real training faces (DCGAN only): as many real celeba_hq training faces, unchanged: the distance between
  two real face sets, the FID/KID a perfect unstyled face generator would get.

Writes bench-results/quality_faces-<time>.json, one PNG grid per recipe (held-out input | model | Gatys per
row; for the DCGAN, rows of samples then a row of held-out faces and a row of their Gatys restyling) and the
runs' checkpoints under bench-results/quality_faces-<time>/. bench-results/ is git-ignored: the grids show
research-only faces and must not be committed. Without the data folder it prints "skipped: ..." and exits 0.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dev"
FACE_SETS = ("celeba_hq", "codeformer")  # the first is the one faces are held out from
RECIPES = ("portrait-painting", "faces-dcgan-gram")
COLUMNS = ("style_gram", "content_feat", "content_ssim", "fid_effl0", "kid_effl0")


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m stylezoo.benchmarks.quality_faces", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="development data root holding faces/celeba_hq and faces/codeformer (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=4.0, help="training wall-clock budget per recipe (default: 4)")
    p.add_argument("--steps", type=int, default=0,
                   help="stop after this many steps (within --minutes): for side-by-side runs whose speeds differ")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated face recipes (default: %(default)s)")
    p.add_argument("--holdout", type=int, default=12, help="celeba_hq faces held out for scoring (default: 12)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split and the DCGAN noise")
    p.add_argument("--samples", type=int, default=0, help="DCGAN samples scored (default 0: as many as held out)")
    p.add_argument("--gatys-steps", type=int, default=12, help="L-BFGS iterations of the Gatys reference (default: 12)")
    p.add_argument("--gatys-style-weight", type=float, default=1e3,
                   help="Gatys style weight (default: 1e3, as stylezoo transfer)")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="ROLE.FIELD=VALUE override for every recipe, or RECIPE:ROLE.FIELD=VALUE for one; repeatable")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="results folder (default: %(default)s)")
    p.add_argument("--grid", type=int, default=6, help="held-out faces (rows) / samples per row shown in the grids")
    args = p.parse_args(argv)
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    if not args.minutes > 0:
        p.error(f"--minutes must be positive, got {args.minutes}")
    for name, v, low in (("--gatys-steps", args.gatys_steps, 1), ("--samples", args.samples, 0),
                         ("--steps", args.steps, 0), ("--grid", args.grid, 1), ("--holdout", args.holdout, 2)):
        if v < low:
            p.error(f"{name} must be at least {low}, got {v}")
    if not args.recipes:
        p.error("--recipes: name at least one recipe")
    return args


def recipe_family(reg: Any, name: str, sets: list[str]) -> str:
    """"image" or "noise": the family of the recipe's generator (resolved with the recipe's own data)."""
    from stylezoo.core.runs.runconfig import resolve

    rc = resolve(reg, recipe=name, sets=sets)
    entry = reg.get(rc.gen)
    return str(entry.card.get("family") or getattr(entry.factory, "family", "image"))


def face_files(data: Path) -> dict[str, list[Path]]:
    """{face set: sorted image files} for the face sets present under DATA/faces."""
    from stylezoo.core.files.images import find_images

    return {s: find_images(data / "faces" / s) for s in FACE_SETS if (data / "faces" / s).is_dir()}


def split(files: list[Path], holdout: int, seed: int) -> tuple[list[Path], list[Path]]:
    """(train, test): a seeded permutation of the files sorted by name; its first `holdout` are the test set."""
    files = sorted(files, key=lambda f: f.name)
    if not 0 < holdout < len(files):
        raise SystemExit(f"--holdout {holdout}: need between 1 and {len(files) - 1} of the {len(files)} faces")
    perm = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed)).tolist()
    test = sorted((files[i] for i in perm[:holdout]), key=lambda f: f.name)
    train = sorted((files[i] for i in perm[holdout:]), key=lambda f: f.name)
    return train, test


def recipe_sets(sets: list[str], recipe: str) -> list[str]:
    """The --set items for one recipe: unqualified ones and those written `RECIPE:ROLE.FIELD=VALUE`."""
    out = []
    for item in sets:
        key = item.partition("=")[0]
        if ":" in key:
            name, _, rest = item.partition(":")
            if name == recipe:
                out.append(rest)
        else:
            out.append(item)
    return out


def stage(files: list[Path], dest: Path) -> Path:
    """Copy the training faces into `dest` (a temporary folder), prefixed by their face set to keep names unique."""
    dest.mkdir(parents=True, exist_ok=True)
    for f in files:
        shutil.copy2(f, dest / f"{f.parent.name}_{f.name}")
    return dest


def train_for(trainer: Any, seconds: float, log_every_s: float = 30.0, max_steps: int = 0) -> dict[str, Any]:
    """Run engine steps (at least one) until the budget, or `max_steps` if given, is spent; returns steps,
    epochs, speed and a loss trace."""
    n = len(trainer.data.content if trainer.data.content is not None else trainer.data.real)
    batch = trainer.train_cfg.batch
    t0 = time.perf_counter()
    next_log, window, trace = t0 + log_every_s, [], []
    while trainer.step == 0 or (time.perf_counter() - t0 < seconds and not 0 < max_steps <= trainer.step):
        logs = trainer.train_step(trainer.step)
        trainer.step += 1
        window.append(logs)
        now = time.perf_counter()
        if now >= next_log:
            mean = {k: sum(w.get(k, math.nan) for w in window) / len(window)
                    for k in ("g/loss", "d/loss", "g/loss/gram", "g/loss/content")}
            trace.append({"s": round(now - t0, 1), "step": trainer.step, **mean})
            print(f"  {now - t0:6.0f}s  step {trainer.step:5d}  epoch {trainer.step * batch / n:5.2f}  "
                  f"G {mean['g/loss']:.3f}  gram {mean['g/loss/gram']:.3f}  D {mean['d/loss']:.3f}", flush=True)
            window, next_log = [], now + log_every_s
    elapsed = time.perf_counter() - t0
    return {"train_s": elapsed, "steps": trainer.step, "epochs": trainer.step * batch / n,
            "images_per_s": trainer.step * batch / elapsed, "trace": trace}


def gatys(extractor: nn.Module, faces: Tensor, style: Tensor, steps: int, style_weight: float,
          device: torch.device) -> tuple[Tensor, float]:
    """Each face restyled by core/transfer.optimise toward `style`: (outputs on the CPU, seconds taken)."""
    from stylezoo.core.use.transfer import TransferConfig, optimise

    if next(extractor.parameters()).dtype != torch.float32:  # the Evaluator's bf16 VGG16: optimise in float32
        extractor = copy.deepcopy(extractor).float()
    for p in extractor.parameters():  # only the pixels are optimised
        p.requires_grad_(False)
    cfg = TransferConfig(size=faces.shape[-1], steps=steps, style_weight=style_weight, device=str(device))
    s = style.to(device)
    t0 = time.perf_counter()
    outs = []
    for i in range(faces.shape[0]):
        torch.manual_seed(cfg.seed)
        out, _ = optimise(extractor, faces[i:i + 1].to(device), s, cfg)  # type: ignore[arg-type]
        outs.append(out.float().cpu())
    return torch.cat(outs), time.perf_counter() - t0


def load_faces(files: list[Path], size: int) -> Tensor:
    """(N, 3, size, size) in [-1, 1]: shorter side resized, centre crop, as the engine's fixed batches."""
    from stylezoo.core.files.images import load_tensor

    return torch.stack([load_tensor(f, size) for f in files])


def run_recipe(name: str, args: argparse.Namespace, train_files: list[Path], test_files: list[Path],
               run_dir: Path, grid_path: Path, reg: Any) -> dict[str, Any]:
    """Train one face recipe for the budget, score it, its Gatys reference and the identity; save its grid."""
    from stylezoo.core.evaluation.evaluate import Evaluator, domain_images, generate, style_images
    from stylezoo.core.files.images import save_grid
    from stylezoo.core.runs.runconfig import resolve
    from stylezoo.core.training.engine import Trainer

    family = recipe_family(reg, name, recipe_sets(args.sets, name))
    with tempfile.TemporaryDirectory(prefix="quality_faces-") as tmp:
        faces_dir = stage(train_files, Path(tmp) / "faces")
        key = "content" if family == "image" else "data"
        rc = resolve(reg, recipe=name, cli={"data": {key: str(faces_dir)}}, sets=recipe_sets(args.sets, name))
        d, size = rc.data.resolved(), rc.train.size
        if not d.style:
            raise SystemExit(f"quality_faces: {name} has no style image; give one with --set data.style=FILE")
        print(f"quality_faces: recipe {name}: {rc.gen} + {rc.disc} ({rc.adv}), losses "
              f"{', '.join(f'{k} x {v:g}' for k, v in rc.losses.items())}; size {size}, batch {rc.train.batch}, "
              f"lr {rc.train.lr:g}; style {d.style}; {len(train_files)} training faces, {len(test_files)} held out; "
              f"budget {args.minutes:g} min; torch threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}",
              flush=True)
        trainer = Trainer(rc, run_dir, registry=reg)
        if getattr(trainer.cond, "kind", "none") != "none":
            raise SystemExit(f"quality_faces: {name} has a conditional generator ({rc.gen}); only plain "
                             "image-to-image and noise recipes are benchmarked here")
        run_dir.mkdir(parents=True, exist_ok=True)
        trained = train_for(trainer, args.minutes * 60, max_steps=args.steps)
    trainer.save_checkpoint(keep=False)
    device = trainer.device
    style_spec = d.style
    style = style_images(style_spec, rc.train.style_size or min(2 * size, 512))
    real = load_faces(test_files, size)
    gen = trainer.infer_gen  # what stylize loads: the weight average when the recipe keeps one
    if family == "image":
        outputs = generate(gen, real, device=device)
        ev = Evaluator(style=style, domain=domain_images(style_spec, size, real.shape[0]), device=device, registry=reg)
        others: dict[str, Tensor] = {}
        real_names: list[str] = []
    else:
        n = args.samples or real.shape[0]
        z = torch.randn(n, gen.latent_dim, generator=torch.Generator().manual_seed(args.split_seed + 1))
        outputs = generate(gen, z, device=device)
        ev = Evaluator(style=style, domain=real, device=device, registry=reg)
        pool = [f for f in train_files if f.parent.name == FACE_SETS[0]] or train_files
        pick = torch.randperm(len(pool), generator=torch.Generator().manual_seed(args.split_seed + 2))[:n].tolist()
        real_names = [pool[i].name for i in sorted(pick)]
        others = {"real": load_faces([pool[i] for i in sorted(pick)], size)}
    del trainer
    print(f"  Gatys reference: {args.gatys_steps} L-BFGS iterations x {real.shape[0]} faces at {size} px ...",
          flush=True)
    ref, gatys_s = gatys(ev.vgg, real, style, args.gatys_steps, args.gatys_style_weight, device)
    content = real if family == "image" else None
    rows = {"model": ev.score(outputs, content=content), "gatys": ev.score(ref, content=content),
            "identity": ev.score(real, content=content)}
    rows |= {k: ev.score(v) for k, v in others.items()}
    if family == "image":
        k = min(args.grid, real.shape[0])
        grid = save_grid([torch.cat([real[i:i + 1], outputs[i:i + 1], ref[i:i + 1]]) for i in range(k)], grid_path)
    else:
        cols = min(args.grid, outputs.shape[0], real.shape[0])
        sample_rows = [outputs[i:i + cols] for i in range(0, outputs.shape[0] - cols + 1, cols)]
        grid = save_grid([*sample_rows, real[:cols], ref[:cols]], grid_path)
    return {"recipe": rc.to_dict(), "family": family, "size": size, "style": style_spec, **trained,
            "device": str(device), "scored": outputs.shape[0], "rows": rows,
            "real_faces": real_names,
            "gatys": {"steps": args.gatys_steps, "style_weight": args.gatys_style_weight, "seconds": gatys_s,
                      "faces": real.shape[0], "optimizer": "lbfgs (strong Wolfe)"},
            "grid": str(grid), "run_dir": str(run_dir)}


def fmt(v: float | None) -> str:
    """A metric for the table: three significant decimals, '-' where it does not apply."""
    if v is None:
        return "-"
    return f"{v:.4f}" if abs(v) < 0.01 else f"{v:.3f}"


def print_table(name: str, res: dict[str, Any], minutes: float) -> None:
    """One rich table per recipe: a row per scored set (model, Gatys reference, identity), a column per metric."""
    from rich.console import Console
    from rich.table import Table

    from stylezoo.core.ops.metrics import METRICS

    cols = [c for c in COLUMNS if any(c in r for r in res["rows"].values())]
    image = res["family"] == "image"
    g = res["gatys"]
    what = f"{g['faces']} held-out faces" if image else f"{res['scored']} samples vs {g['faces']} held-out real faces"
    train_s = res["train_s"]
    rows = {
        "model": (f"stylezoo {name}", f"{train_s / 60:.1f} min" if train_s >= 60 else f"{train_s:.0f} s",
                  f"{res['steps']} steps, {res['epochs']:.1f} epochs"),
        "gatys": (f"Gatys, {g['steps']} L-BFGS it.", f"{g['seconds']:.0f} s", f"{g['faces']} faces"),
        "identity": ("identity: held-out faces", "", "FID 0 by construction" if not image else "the inputs"),
        "real": ("real training faces", "", "real-vs-real FID floor"),
    }
    table = Table(title=f"{name} at {res['size']} px, {what} (budget {minutes:g} min)",
                  caption="↓ lower is better, ↑ higher. style_gram: to the style image; "
                          + ("content_*: to the input face; FID/KID (EfficientNet-Lite0): to crops of the painting"
                             if image else "FID/KID (EfficientNet-Lite0): to the held-out real faces"))
    table.add_column("")
    for c in cols:
        table.add_column(f"{c} {'↓' if METRICS[c].direction == 'min' else '↑'}", justify="right")
    table.add_column("time", justify="right")
    table.add_column("notes")
    for key, m in res["rows"].items():
        label, t, note = rows[key]
        table.add_row(label, *[fmt(m.get(c)) for c in cols], t, note)
    console = Console(highlight=False)
    if not console.is_terminal:  # logs and captured output: do not wrap the table at 80 columns
        console.width = 150
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    sets = face_files(args.data)
    if not sets.get(FACE_SETS[0]):
        print(f"quality_faces: skipped: no faces at {args.data / 'faces' / FACE_SETS[0]} (the development faces "
              "are research-only and not bundled; give --data DIR holding faces/celeba_hq and faces/codeformer)")
        return 0
    from stylezoo.core.components.registry import default_registry
    from stylezoo.core.ops.metrics import METRICS

    reg = default_registry()
    unknown = [r for r in args.recipes if r not in reg.recipes()]
    if unknown:
        raise SystemExit(f"quality_faces: unknown recipe(s) {', '.join(unknown)}; try {', '.join(RECIPES)}")
    held_train, test = split(sets[FACE_SETS[0]], args.holdout, args.split_seed)
    train = held_train + [f for s in FACE_SETS[1:] for f in sets.get(s, [])]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    for name in args.recipes:
        results[name] = run_recipe(name, args, train, test, args.out / f"quality_faces-{stamp}" / name,
                                   args.out / f"quality_faces-{stamp}-{name}.png", reg)
        print_table(name, results[name], args.minutes)
    result = {
        "benchmark": "quality_faces", "time": stamp,
        "command": " ".join(["python -m stylezoo.benchmarks.quality_faces",
                             *(argv if argv is not None else sys.argv[1:])]),
        "data": str(args.data), "faces": {s: len(f) for s, f in sets.items()}, "train_faces": len(train),
        "held_out": [f.name for f in test], "budget_minutes": args.minutes, "max_steps": args.steps or None,
        "recipes": results,
        "metrics": {c: METRICS[c].description for c in COLUMNS},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "loadavg_start": load_start, "loadavg_end": os.getloadavg()},
    }
    path = args.out / f"quality_faces-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path} and {', '.join(r['grid'] for r in results.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
