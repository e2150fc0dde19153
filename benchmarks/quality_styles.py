"""Style quality on images no recipe trained on or was tuned on (issue #28).

    python -m stylezoo.benchmarks.quality_styles [--minutes 3] [--gatys-steps 100] [--gatys-images 4]
                                                 [--recipes default,portrait-painting,any] [--quick]

Data: DATA (default ../shared/data/dev beside the repository, research-only: read in place, never copied into
the repository) split once, below (SPLIT): the tuning side chose recipe settings, the score side is only
scored. Every image is taken at 256 px (shorter side, centre crop), the style images too. Rows per recipe:

- default: trained through the engine (`Trainer.train_step`, quality_faces.train_for) for `--minutes` on its
  own data (the bundled photos, The Starry Night); restyles the score photos and faces.
- portrait-painting: trained for `--minutes` on every DATA/faces/celeba_hq face toward PORTRAIT_STYLE (a
  portrait painting no setting was tuned on); restyles the codeformer faces only.
- any: the shipped any-style model `any` (`stylezoo.load_model("any")`), each score photo and face restyled with each
  score painting; scored per painting against that painting, then averaged over the paintings.

Each recipe beside the unchanged inputs and the Gatys reference (core/use/transfer.py through
quality_faces.gatys: `--gatys-steps` L-BFGS iterations on the first `--gatys-images` score images; for any
image i goes toward painting i mod 5); the model is also scored on those same images, the row the Gatys one
is compared with. Metrics (core/evaluation/evaluate.py's Evaluator, VGG16):

- style ratio (lower: more of the style; 1: none): style_gram of the outputs / style_gram of the unchanged
  inputs, against the same style image (relative Gram distance, relu1_1..relu5_1).
- worst tile: each output and its input cut into 2x2 tiles of 128 px; per tile the Gram distance ratio
  output / input; each image's worst tile, averaged over the images (a style painted on part of the image only
  shows here, not in the style ratio).
- content_feat (lower: closer to the input; relu4_2) and content_ssim (higher: same structure).
- any only: the mean pairwise L1 (RGB in [0, 1]) between the outputs of one input under different paintings
  (0: the reference changes nothing).

Prints a table per recipe, then the targets with the measured values; writes bench-results/
quality_styles-<time>.json and one PNG grid per recipe (input | model | Gatys for the first 6 images; any:
a row of the paintings, then input | one column per painting). bench-results/ is git-ignored: the grids
show research-only faces. Without DATA it prints "skipped: ..." and exits 0. `--quick` (to check the
harness): 0.5 min training, 5 Gatys steps on 2 images, 6 score images.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .quality_faces import DEFAULT_DATA, fmt, gatys, load_faces, train_for

# The fixed split, paths relative to DATA (a folder stands for every image in it). The tuning side was used to
# choose recipe settings; the score side never was, and is only scored here.
SPLIT: dict[str, dict[str, tuple[str, ...]]] = {
    "photos": {
        "tune": ("content/golden_gate.jpg", "content/tubingen.jpg", "faces/celeba_hq"),
        "score": ("content/brad_pitt.jpg", "content/hoovertowernight.jpg", "faces/codeformer"),
    },
    "paintings": {  # none of them among the six bundled paintings
        "tune": tuple(f"styles/paintings/{n}.jpg" for n in ("candy", "mosaic", "udnie", "la_muse")),
        "score": tuple(f"styles/paintings/{n}.jpg"
                       for n in ("escher_sphere", "frida_kahlo", "picasso_selfport1907", "rain_princess",
                                 "seated_nude")),
    },
}
FACES = "faces/codeformer"  # the score faces (portrait-painting is scored on these only)
PORTRAIT_TRAIN = "faces/celeba_hq"  # portrait-painting's training faces (tuning side)
PORTRAIT_STYLE = "styles/paintings/picasso_selfport1907.jpg"  # a portrait painting, never tuned on
Group = tuple[Path, Tensor, Tensor]  # (style painting, input images, their outputs)
SIZE = 256  # every image's side: inputs, outputs, style images, Gatys
RECIPES = ("default", "portrait-painting", "any")  # any: the "adain" target
GRID = 6  # score images shown per grid
TARGETS: dict[str, tuple[tuple[str, str, str], ...]] = {  # (label, metric key, "<=" or ">=" and its bound)
    "default": (("style ratio", "style_ratio", "<= 0.3"), ("content SSIM", "content_ssim", ">= 0.5"),
                ("worst tile", "worst_tile", "<= 0.5")),
    "portrait-painting": (("style ratio", "style_ratio", "<= 0.3"),),
    "any": (("style ratio", "style_ratio", "<= 0.4"), ("worst tile", "worst_tile", "<= 0.5")),
}


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; `--quick` replaces the budget, the Gatys settings and the number of score images."""
    p = argparse.ArgumentParser(prog="python -m stylezoo.benchmarks.quality_styles",
                                description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="development data root (default: %(default)s)")
    p.add_argument("--minutes", type=float, default=3.0, help="training wall-clock budget per recipe (default: 3)")
    p.add_argument("--gatys-steps", type=int, default=100, help="L-BFGS iterations of the Gatys reference (100)")
    p.add_argument("--gatys-images", type=int, default=4, help="score images given a Gatys reference (default: 4)")
    p.add_argument("--gatys-style-weight", type=float, default=1e3, help="Gatys style weight (default: 1e3)")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated, of %(default)s")
    p.add_argument("--images", type=int, default=0, help="score only the first N images (default 0: all)")
    p.add_argument("--quick", action="store_true",
                   help="check the harness: 0.5 min training, 5 Gatys steps on 2 images, 6 score images")
    p.add_argument("--out", type=Path, default=Path("bench-results"), help="results folder (default: %(default)s)")
    args = p.parse_args(argv)
    if args.quick:
        args.minutes, args.gatys_steps, args.gatys_images, args.images = 0.5, 5, 2, 6
    args.recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown or not args.recipes:
        p.error(f"--recipes: {', '.join(unknown) or 'none given'}; choose from {', '.join(RECIPES)}")
    if not args.minutes > 0 or args.gatys_steps < 1 or args.gatys_images < 1 or args.images < 0:
        p.error("--minutes must be positive, --gatys-steps and --gatys-images at least 1, --images at least 0")
    return args


# -- data ----------------------------------------------------------------------------------------------------------
def expand(data: Path, entries: Sequence[str]) -> list[Path]:
    """The image files the entries name under `data` (a folder: its images, sorted), in order."""
    from stylezoo.core.files.images import find_images

    return [f for e in entries for f in find_images(data / e)]


def missing(data: Path) -> list[str]:
    """The split's entries (and the portrait painting) not present under `data`."""
    entries = [e for side in SPLIT.values() for files in side.values() for e in files] + [PORTRAIT_STYLE]
    return [e for e in entries if not (data / e).exists()]


# -- pure measures -------------------------------------------------------------------------------------------------
def tiles(x: Tensor, n: int = 2) -> Tensor:
    """(N, C, H, W) cut into n x n tiles: (N * n * n, C, H / n, W / n), each image's tiles together."""
    b, c, h, w = x.shape
    if h % n or w % n:
        raise ValueError(f"{h}x{w} images do not cut into {n}x{n} equal tiles")
    t = x.reshape(b, c, n, h // n, n, w // n).permute(0, 2, 4, 1, 3, 5)
    return t.reshape(b * n * n, c, h // n, w // n)


def worst_tile(dist: Callable[[Tensor], Tensor], outputs: Tensor, inputs: Tensor, n: int = 2) -> Tensor:
    """Per image (N,): the largest over its n x n tiles of dist(output tile) / dist(input tile); `dist` maps
    images to a per-image distance to the style (lower: more of it)."""
    ratio = dist(tiles(outputs, n)) / dist(tiles(inputs, n)).clamp_min(1e-12)
    return ratio.reshape(outputs.shape[0], n * n).amax(1)


def pairwise_l1(outputs: Sequence[Tensor]) -> float:
    """Mean L1 (RGB in [0, 1]) between the outputs of the same inputs under different references: `outputs`
    holds one (N, 3, H, W) tensor in [-1, 1] per reference, aligned by input."""
    pairs = list(itertools.combinations(outputs, 2))
    if not pairs:
        return float("nan")
    return sum(float((a.float() - b.float()).abs().mean()) / 2 for a, b in pairs) / len(pairs)


# -- scoring ---------------------------------------------------------------------------------------------------------
def evaluator(painting: Path, device: torch.device, reg: Any) -> Any:
    from stylezoo.core.evaluation.evaluate import Evaluator, style_images

    return Evaluator(style=style_images(painting, SIZE), device=device, registry=reg)


def gram_dist(ev: Any) -> Callable[[Tensor], Tensor]:
    """Images -> their per-image Gram distance to the evaluator's style (its style_gram, image by image)."""
    from stylezoo.core.ops import metrics

    layers = tuple(ev.vgg.style_layers)

    def dist(x: Tensor) -> Tensor:
        return torch.cat([metrics.gram_distance(ev.vgg_feats(c, layers), ev.style_targets).cpu()
                          for c in x.split(ev.batch)])
    return dist


def score_groups(groups: Sequence[Group], device: torch.device, reg: Any) -> dict[str, float]:
    """Scores of (painting, inputs, outputs) groups: style ratio per painting, averaged over the paintings;
    worst tile, style_gram and content metrics averaged over every image."""
    ratios, per_image, n = [], dict.fromkeys(("worst_tile", "style_gram", "content_feat", "content_ssim"), 0.0), 0
    for painting, inputs, outputs in groups:
        ev = evaluator(painting, device, reg)
        model, identity = ev.score(outputs, content=inputs), ev.score(inputs)
        ratios.append(model["style_gram"] / identity["style_gram"])
        k = inputs.shape[0]
        per_image["worst_tile"] += float(worst_tile(gram_dist(ev), outputs, inputs).sum())
        for key in ("style_gram", "content_feat", "content_ssim"):
            per_image[key] += model[key] * k
        n += k
    return {"style_ratio": sum(ratios) / len(ratios), **{k: v / n for k, v in per_image.items()}, "images": n}


def rows_for(groups: list[Group], ref: list[Group], same: list[Group], device: torch.device,
             reg: Any) -> dict[str, dict[str, float]]:
    """The table's rows: unchanged inputs, the model, the model on the Gatys images (`same`), Gatys."""
    return {"inputs": score_groups([(p, x, x) for p, x, _ in groups], device, reg),
            "model": score_groups(groups, device, reg),
            "model_gatys_images": score_groups(same, device, reg),
            "gatys": score_groups(ref, device, reg)}


def gatys_groups(ev_vgg: Any, pairs: list[tuple[Path, Tensor]], args: argparse.Namespace,
                 device: torch.device) -> tuple[list[Group], float]:
    """Gatys outputs of (painting, input images) pairs, one group per painting; seconds taken in all."""
    from stylezoo.core.evaluation.evaluate import style_images

    groups, seconds = [], 0.0
    for painting, x in pairs:
        print(f"  Gatys: {args.gatys_steps} L-BFGS iterations x {x.shape[0]} image(s) toward {painting.name} ...",
              flush=True)
        out, s = gatys(ev_vgg, x, style_images(painting, SIZE), args.gatys_steps, args.gatys_style_weight, device)
        groups.append((painting, x, out))
        seconds += s
    return groups, seconds


# -- recipes ---------------------------------------------------------------------------------------------------------
def run_trained(name: str, args: argparse.Namespace, files: list[Path], cli: dict[str, Any], run_dir: Path,
                reg: Any) -> dict[str, Any]:
    """Train a recipe for the budget, restyle `files`, score them beside the inputs and Gatys."""
    from stylezoo.core.evaluation.evaluate import generate
    from stylezoo.core.runs.runconfig import resolve
    from stylezoo.core.training.engine import Trainer

    rc = resolve(reg, recipe=name, cli=cli)
    painting = Path(rc.data.resolved().style)
    trainer = Trainer(rc, run_dir, registry=reg)
    print(f"quality_styles: {name}: {trainer.describe()}; style {painting.name}; budget {args.minutes:g} min; "
          f"load {os.getloadavg()[0]:.1f}", flush=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    trained = train_for(trainer, args.minutes * 60)
    trainer.save_checkpoint(keep=False)
    device, x = trainer.device, load_faces(files, SIZE)
    t0 = time.perf_counter()
    y = generate(trainer.infer_gen, x, device=device)
    infer_s = time.perf_counter() - t0
    n = min(args.gatys_images, x.shape[0])
    ref, gatys_s = gatys_groups(evaluator(painting, device, reg).vgg, [(painting, x[:n])], args, device)
    rows = rows_for([(painting, x, y)], ref, [(painting, x[:n], y[:n])], device, reg)
    return {"style": str(painting), "train_size": rc.train.size, "infer_s": infer_s, "gatys_s": gatys_s,
            **{key: v for key, v in trained.items() if key != "trace"}, "rows": rows,
            "grid_rows": trained_grid(x, y, ref[0][2])}


def run_any(args: argparse.Namespace, files: list[Path], paintings: list[Path], reg: Any) -> dict[str, Any]:
    """The shipped `any` model: every score image restyled with every score painting."""
    import stylezoo
    from stylezoo.core.evaluation.evaluate import style_images

    st = stylezoo.load_model("any", registry=reg)
    device = st.device
    x = load_faces(files, SIZE)
    t0 = time.perf_counter()
    outs = [torch.cat([st.set_style(p, size=SIZE)(c.to(device)).float().cpu() for c in x.split(8)])
            for p in paintings]
    infer_s = time.perf_counter() - t0
    print(f"quality_styles: any: the shipped model `any`, {x.shape[0]} images x {len(paintings)} paintings in "
          f"{infer_s:.1f} s", flush=True)
    k = min(args.gatys_images, x.shape[0])
    by_painting: dict[Path, list[int]] = {}
    for i in range(k):
        by_painting.setdefault(paintings[i % len(paintings)], []).append(i)
    ref, gatys_s = gatys_groups(evaluator(paintings[0], device, reg).vgg,
                                [(p, x[idx]) for p, idx in by_painting.items()], args, device)
    groups = [(p, x, y) for p, y in zip(paintings, outs, strict=True)]
    same = [(p, x[idx], outs[paintings.index(p)][idx]) for p, idx in by_painting.items()]
    n = min(GRID, x.shape[0])
    header = torch.cat([torch.ones(1, 3, SIZE, SIZE), *(style_images(p, SIZE)[:1] for p in paintings)])
    grid = [header, *(torch.cat([x[i:i + 1], *(o[i:i + 1] for o in outs)]) for i in range(n))]
    return {"paintings": [str(p) for p in paintings], "infer_s": infer_s, "gatys_s": gatys_s,
            "pairwise_l1": pairwise_l1(outs), "rows": rows_for(groups, ref, same, device, reg), "grid_rows": grid}


def trained_grid(x: Tensor, y: Tensor, ref: Tensor) -> list[Tensor]:
    """Rows input | model | Gatys for the first GRID images (white where an image has no Gatys reference)."""
    blank = torch.ones(1, 3, SIZE, SIZE)
    return [torch.cat([x[i:i + 1], y[i:i + 1], ref[i:i + 1] if i < ref.shape[0] else blank])
            for i in range(min(GRID, x.shape[0]))]


# -- report ----------------------------------------------------------------------------------------------------------
def print_table(name: str, res: dict[str, Any]) -> None:
    """One table per recipe: a row per scored set, a column per metric and the seconds taken."""
    from rich.console import Console
    from rich.table import Table

    cols = (("style ratio ↓", "style_ratio"), ("worst tile ↓", "worst_tile"), ("style_gram ↓", "style_gram"),
            ("content_feat ↓", "content_feat"), ("content_ssim ↑", "content_ssim"), ("images", "images"))
    train = (f"{res['train_s']:.0f} s train ({res['steps']} steps at {res['train_size']} px), "
             if "train_s" in res else "shipped, ")
    labels = {"inputs": ("unchanged inputs", ""),
              "model": (f"stylezoo {name}", f"{train}{res['infer_s']:.1f} s inference"),
              "model_gatys_images": ("  same, on the Gatys images", ""),
              "gatys": (f"Gatys, {res['gatys_steps']} L-BFGS it.", f"{res['gatys_s']:.0f} s")}
    table = Table(title=f"{name} at {SIZE} px", caption="style ratio: style_gram / the inputs' (1: no style); "
                  "worst tile: each image's worst 128 px tile, output / input")
    table.add_column("")
    for head, _ in cols:
        table.add_column(head, justify="right")
    table.add_column("time")
    for key, row in res["rows"].items():
        label, t = labels[key]
        table.add_row(label, *[str(row[c]) if c == "images" else fmt(row.get(c)) for _, c in cols], t)
    console = Console(highlight=False)
    if not console.is_terminal:
        console.width = 150
    console.print(table)
    if "pairwise_l1" in res:
        print(f"  each reference visibly different: mean pairwise L1 between one input's outputs under different "
              f"paintings = {res['pairwise_l1']:.4f} (RGB in [0, 1])")


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the recipes run: its measured value and whether it is met."""
    out = []
    for name, res in results.items():
        model = res["rows"]["model"]
        for label, key, bound in TARGETS[name]:
            op, limit = bound.split()
            v = model[key]
            out.append({"recipe": name, "target": f"{label} {bound}", "value": v,
                        "met": v <= float(limit) if op == "<=" else v >= float(limit)})
        if name == "default":  # the loop ends after the step that crosses the budget
            v, last = res["train_s"], res["train_s"] / res["steps"]
            out.append({"recipe": name, "target": "training s <= 180 (+ its last step)", "value": v,
                        "met": v <= 180 + last})
        if name == "portrait-painting":
            v, g = res["rows"]["model_gatys_images"]["content_feat"], res["rows"]["gatys"]["content_feat"]
            out.append({"recipe": name, "target": f"content_feat <= Gatys' ({fmt(g)}, same faces)", "value": v,
                        "met": v <= g})
    return out


def print_targets(rows: list[dict[str, Any]]) -> None:
    print("targets:")
    for r in rows:
        print(f"  {r['recipe']:18s} {r['target']:42s} {fmt(r['value']):>8s}  {'met' if r['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    absent = missing(args.data)
    if absent:
        print(f"quality_styles: skipped: {args.data} lacks {', '.join(absent)} (the development data is "
              "research-only and not bundled; give --data DIR)")
        return 0
    from stylezoo.core.components.registry import default_registry
    from stylezoo.core.files.images import save_grid

    reg = default_registry()
    cut = slice(None, args.images or None)
    scored, faces = expand(args.data, SPLIT["photos"]["score"])[cut], expand(args.data, (FACES,))[cut]
    paintings = expand(args.data, SPLIT["paintings"]["score"])
    stamp = time.strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    results: dict[str, Any] = {}
    for name in args.recipes:
        run_dir = args.out / f"quality_styles-{stamp}" / name
        if name == "default":
            res = run_trained(name, args, scored, {}, run_dir, reg)
        elif name == "portrait-painting":
            cli = {"data": {"content": str(args.data / PORTRAIT_TRAIN), "style": str(args.data / PORTRAIT_STYLE)}}
            res = run_trained(name, args, faces, cli, run_dir, reg)
        else:
            res = run_any(args, scored, paintings, reg)
        res["gatys_steps"] = args.gatys_steps
        res["grid"] = str(save_grid(res.pop("grid_rows"), args.out / f"quality_styles-{stamp}-{name}.png"))
        results[name] = res
        print_table(name, res)
    met = targets(results)
    print_targets(met)
    result = {"benchmark": "quality_styles", "time": stamp,
              "command": " ".join(["python -m stylezoo.benchmarks.quality_styles",
                                   *(argv if argv is not None else sys.argv[1:])]),
              "data": str(args.data), "split": SPLIT, "portrait_style": PORTRAIT_STYLE, "size": SIZE,
              "scored": [f"{f.parent.name}/{f.name}" for f in scored], "scored_portrait": [f.name for f in faces],
              "budget_minutes": args.minutes, "gatys": {"steps": args.gatys_steps, "images": args.gatys_images,
                                                        "style_weight": args.gatys_style_weight},
              "recipes": results, "targets": met,
              "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "loadavg_start": load_start,
                          "loadavg_end": os.getloadavg()}}
    path = args.out / f"quality_styles-{stamp}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path} and {', '.join(r['grid'] for r in results.values())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
