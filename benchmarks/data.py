"""Does data loading starve the training step? Images kept decoded in memory against images decoded per draw.

    python -m stylezoo.benchmarks.data [--content DIR] [--photos 48] [--side 2048] [--size 128]
        [--steps 8] [--rounds 2] [--recipe default] [--full-decode]

Trains one recipe twice on the same photos: with the decoded images cached in memory (the default for sets
under `data.cache_mb`) and with a `data.cache_mb` budget below the photos' size (above the style
images'), which decodes each drawn photo in worker threads while the previous step trains (core/files/data.py,
LazyImages). Per variant: the median step time, the median wait for the step's images inside it (the
Trainer's time/data_s), and, for scale, what decoding one batch takes when nothing else runs. Without
--content the photos are the bundled samples enlarged to `--side` pixels and
saved as JPEG (camera-sized files, so decoding costs what it costs on real data). The variants run in
alternating blocks of `--steps` steps, never interleaved step by step: the lazy run's decoding threads
would otherwise run inside the other's steps.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from stylezoo.core.components.registry import Registry
from stylezoo.core.files.images import find_images
from stylezoo.core.runs.runconfig import SAMPLES, resolve
from stylezoo.core.training.engine import Trainer


def make_photos(out: Path, n: int, side: int) -> list[Path]:
    """`n` JPEGs with a long side of `side` px, from the bundled content photos (cycled, mirrored)."""
    from PIL import Image, ImageOps

    src = find_images(str(SAMPLES / "content"))
    files = []
    for i in range(n):
        im = Image.open(src[i % len(src)]).convert("RGB")
        if (i // len(src)) % 2:
            im = ImageOps.mirror(im)
        scale = side / max(im.size)
        im = im.resize((round(im.width * scale), round(im.height * scale)), Image.Resampling.BICUBIC)
        files.append(out / f"photo-{i:03d}.jpg")
        im.save(files[-1], quality=92)
    return files


def measure(args: argparse.Namespace, content: str) -> dict[str, Any]:
    reg = Registry()
    cli = {"train": {"size": args.size, "steps": 10**6, "sample_every": 0, "ckpt_every": 0},
           "data": {"content": content}}
    trainers: dict[str, Trainer] = {}
    with tempfile.TemporaryDirectory() as tmp:
        rc = resolve(reg, recipe=args.recipe, cli=cli)
        trainers["cached"] = tr = Trainer(rc, Path(tmp) / "cached", registry=reg, rank=0, world=1)
        # a budget under the photos' but over the style images' (as when the photos are many and large)
        others = [s.decoded_mb for s in (tr.data.real,) if s is not None and s is not tr.data.content]
        budget = ((max(others) + tr.data.content.decoded_mb) / 2
                  if others and max(others) < tr.data.content.decoded_mb else 0)
        rc = resolve(reg, recipe=args.recipe, cli=cli, sets=[f"data.cache_mb={budget}"])
        trainers["decoded per draw"] = Trainer(rc, Path(tmp) / "lazy", registry=reg, rank=0, world=1)
        lazy = trainers["decoded per draw"].data.content
        assert lazy is not None and lazy.lazy and not trainers["cached"].data.content.lazy
        rows: dict[str, dict[str, list[float]]] = {n: {"step_s": [], "data_s": []} for n in trainers}
        steps = dict.fromkeys(trainers, 0)  # consecutive per trainer: the lazy set prefetches step + 1
        for tr in trainers.values():  # warm-up
            tr.train_step(0)
        for _ in range(args.rounds):
            for name, tr in trainers.items():
                for _ in range(args.steps):
                    steps[name] += 1
                    t = time.perf_counter()
                    tr.train_step(steps[name])
                    rows[name]["step_s"].append(time.perf_counter() - t)
                    rows[name]["data_s"].append(tr.stepper.data_s)
        # what one batch costs to decode with nothing else running (the lazy set, fresh indices)
        time.sleep(0.5)
        decode = []
        for k in range(3):
            idx = [(k * args.batch_probe + j) % len(lazy) for j in range(args.batch_probe)]
            t = time.perf_counter()
            [lazy.images._decode(i) for i in idx]
            decode.append(time.perf_counter() - t)
        batch = trainers["cached"].train_cfg.batch
    out = {n: {"step_ms": statistics.median(r["step_s"]) * 1e3, "data_ms": statistics.median(r["data_s"]) * 1e3,
               "samples": r} for n, r in rows.items()}
    return {"recipe": args.recipe, "size": args.size, "batch": batch, "photos": len(find_images(content)),
            "full_decode": args.full_decode,
            "decode_batch_ms": statistics.median(decode) * 1e3 * batch / args.batch_probe,
            "threads": torch.get_num_threads(), "variants": out}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stylezoo.benchmarks.data", description=__doc__.split("\n")[0])
    ap.add_argument("--content", help="a folder of photos (default: the bundled samples enlarged)")
    ap.add_argument("--photos", type=int, default=48)
    ap.add_argument("--side", type=int, default=2048)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--steps", type=int, default=8, help="steps per block")
    ap.add_argument("--rounds", type=int, default=2, help="blocks per variant, alternating")
    ap.add_argument("--full-decode", action="store_true",
                    help="decode JPEGs at full size before resizing (no reduced-scale decoding; the ablation)")
    ap.add_argument("--out", default="bench-results/data.json")
    args = ap.parse_args(argv)
    if args.full_decode:
        from stylezoo.core.files import images

        images.DRAFT_MARGIN = 1 << 30
    args.batch_probe = 4
    with tempfile.TemporaryDirectory() as tmp:
        content = args.content or str(Path(tmp))
        if not args.content:
            make_photos(Path(tmp), args.photos, args.side)
        result = measure(args, content)
    table = Table(title=f"{result['recipe']} at {result['size']}px, batch {result['batch']}, {result['photos']} photos"
                        f"{'' if args.content else f' ({args.side} px JPEGs)'}: medians of {args.steps * args.rounds} "
                        f"steps, {result['threads']} threads")
    for col in ("images", "step ms", "waiting for images, ms", "share of the step"):
        table.add_column(col, justify="left" if col == "images" else "right")
    for name, r in result["variants"].items():
        table.add_row(name, f"{r['step_ms']:.0f}", f"{r['data_ms']:.1f}", f"{100 * r['data_ms'] / r['step_ms']:.1f}%")
    con = Console()
    con.print(table)
    con.print(f"Decoding one batch with nothing else running: {result['decode_batch_ms']:.0f} ms.")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    con.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
