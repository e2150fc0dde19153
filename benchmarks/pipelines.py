"""Whole commands beside the model passes they need: `stylezoo eval` against its extractors' forwards, and
`stylezoo stylize` of a folder against the generator's bare forward.

    python -m stylezoo.benchmarks.pipelines [--eval-images 48] [--stylize-images 100] [--rounds 2]

eval: a paired run (gen/unet, portrait-sketch, untrained weights: the scores do not matter, the time does) on
N pairs from `../shared/data/dev/pairs/cufs` (beside the repository root; STYLEZOO_DEV_PAIRS to move it),
or on pairs cut from the bundled photos when that is absent. The whole `evaluate_checkpoint` (what `stylezoo
eval RUN` runs, with its defaults: content and references from the run's pairs, 256 px, the targets as the
style set at 512 px and as the real side of FID/KID) is timed beside the extractor forward passes it needs:
each image through each extractor once, batched by 8, in the default precision and the Evaluator's layout
(bf16 autocast and channels_last where the CPU has fast bfloat16, VGG16's weights then bfloat16 as the
Evaluator holds them), the style side once: VGG16 on the outputs
(every layer any metric reads), the inputs (content layers), the references (perceptual layers) and the
style images (style layers); EfficientNet-Lite0 on the outputs and the real side.

stylize: a folder of N photos at 512 px (JPEGs cut from the bundled photos) restyled by gen/encdec (the
default recipe's generator), `Stylizer.stylize_files` as `stylezoo stylize` runs it (decode, resize,
forward, encode, write), beside the Stylizer's own forward on the same images already decoded, one at a
time: images/s of each and their ratio.

The two sides of each comparison alternate, `--rounds` times after an untimed round (one process); medians.
The untimed round runs the same work on fewer images (eval: 8 + N mod 8 pairs, every batch shape of the
timed rounds; stylize: 16 of the photos, which takes the same backend): it sets up kernels, and repeating
all of it took a minute of `make bench`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stylezoo.core.components.registry import Registry
from stylezoo.core.files.images import center_crop, load_tensor, open_image, resize_short
from stylezoo.core.runtime.devices import bf16_supported

ROOT = Path(__file__).resolve().parents[1]
CONTENT = ROOT / "data" / "samples" / "content"
BATCH = 8  # the Evaluator's batch
DEV_PAIRS = ROOT.parent / "shared" / "data" / "dev" / "pairs" / "cufs"


def _alternate(fns: dict[str, Callable[[], Any]], rounds: int,
               warm: dict[str, Callable[[], Any]] | None = None) -> dict[str, list[float]]:
    """Seconds of each call per round, after one untimed round (first calls at each shape set up kernels):
    the calls themselves, or `warm`'s (the same work on fewer images, with every batch shape of the real one)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in (warm or fns).values():
        f()
    for _ in range(rounds):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return times


# -------------------------------------------------------------------------------------------- eval
def _pairs(dst: Path, n: int) -> str:
    """A pairs folder (photo/, sketch/) of n pairs: the dev CUFS pairs when present, else bundled crops."""
    src = Path(os.environ.get("STYLEZOO_DEV_PAIRS") or DEV_PAIRS)
    for sub in ("photo", "sketch"):
        (dst / sub).mkdir(parents=True)
    names = sorted(p.name for p in (src / "photo").glob("*.png"))[:n] if (src / "photo").is_dir() else []
    if len(names) == n and all((src / "sketch" / k).is_file() for k in names):
        for k in names:
            for sub in ("photo", "sketch"):
                (dst / sub / k).symlink_to(src / sub / k)
        return f"{n} CUFS pairs ({src})"
    photos = sorted(CONTENT.glob("*.jpg"))
    for i in range(n):
        im = open_image(photos[i % len(photos)]).convert("RGB")
        w, h = im.size
        s = min(w, h) // 2
        box = ((i * 37) % (w - s), (i * 53) % (h - s))
        crop = im.crop((box[0], box[1], box[0] + s, box[1] + s)).resize((64, 64))
        crop.save(dst / "photo" / f"p{i:04d}.png")
        crop.convert("L").save(dst / "sketch" / f"p{i:04d}.png")
    return f"{n} pairs cut from the bundled photos (no CUFS at {src})"


def _paired_run(tmp: Path, n: int) -> tuple[Path, str]:
    from stylezoo.core.runs.runconfig import resolve
    from stylezoo.core.training.engine import Trainer

    what = _pairs(tmp / "pairs", n)
    reg = Registry()
    rc = resolve(reg, recipe="portrait-sketch", cli={"data": {"pairs": str(tmp / "pairs")}, "train": {
        "size": 64, "steps": 1, "sample_every": 0, "ckpt_every": 0, "device": "cpu", "batch": 1}})
    tr = Trainer(rc, tmp / "run", registry=reg, rank=0, world=1)
    tr.fit()
    return tmp / "run", what


class ExtractorPasses:
    """The extractor forwards a paired `stylezoo eval` needs, alone (see the module's docstring)."""

    def __init__(self, pairs: Path, side: int = 256, batch: int = BATCH) -> None:
        from stylezoo.core.evaluation.evaluate import DIST_FEAT, STYLE_FEAT, bf16_eval_layout, style_images
        from stylezoo.core.ops.metrics import PERCEPTUAL_LAYERS

        reg = Registry()
        self.bf16 = bf16_supported(torch.device("cpu"))
        fmt = torch.channels_last if self.bf16 else torch.contiguous_format
        # the Evaluator's modules: under bf16 channels_last, VGG16 with bfloat16 weights
        self.vgg = bf16_eval_layout(reg.build(STYLE_FEAT).eval()) if self.bf16 else reg.build(STYLE_FEAT).eval()
        self.eff = bf16_eval_layout(reg.build(DIST_FEAT).eval()) if self.bf16 else reg.build(DIST_FEAT).eval()
        self.fmt, self.batch = fmt, batch
        photos = sorted((pairs / "photo").iterdir())
        targets = sorted((pairs / "sketch").iterdir())
        self.inputs = torch.stack([load_tensor(f, side) for f in photos])
        self.refs = torch.stack([load_tensor(f, side) for f in targets])
        self.style = style_images(targets, min(2 * side, 512))
        v: Any = self.vgg
        self.style_l, self.content_l = tuple(v.style_layers), tuple(v.content_layers)
        self.all_l = tuple(dict.fromkeys(self.style_l + self.content_l + PERCEPTUAL_LAYERS))
        self.pl = PERCEPTUAL_LAYERS

    def _vgg(self, x: torch.Tensor, layers: tuple[str, ...]) -> None:
        for c in x.split(self.batch):
            self.vgg(c.contiguous(memory_format=self.fmt), layers)

    @torch.no_grad()
    def __call__(self) -> None:
        with torch.autocast("cpu", torch.bfloat16, enabled=self.bf16):
            self._vgg(self.inputs, self.all_l)  # the outputs (the same shape as the inputs)
            self._vgg(self.inputs, self.content_l)
            self._vgg(self.refs, self.pl)
            self._vgg(self.style, self.style_l)
            for x in (self.inputs, self.refs):  # outputs and the real side
                for c in x.split(self.batch):
                    self.eff.pooled(c.contiguous(memory_format=self.fmt))


def eval_speed(n: int, rounds: int) -> dict[str, Any]:
    """Seconds of the whole paired eval and of its extractor passes alone (medians of `rounds` alternations)."""
    from stylezoo.core.evaluation.checkpoint_eval import evaluate_checkpoint

    with tempfile.TemporaryDirectory(prefix="stylezoo-evalbench-") as d:
        tmp = Path(d)
        run, what = _paired_run(tmp, n)
        alone = ExtractorPasses(tmp / "pairs")
        # the untimed round on a few pairs with the same batch shapes (8, and n's remainder): set-up, not work
        k = BATCH + n % BATCH if n > BATCH else n
        (tmp / "warm").mkdir()
        warm_run, _ = _paired_run(tmp / "warm", k)
        warm_alone = ExtractorPasses(tmp / "warm" / "pairs")
        times = _alternate({"eval": lambda: evaluate_checkpoint(run, device="cpu"), "extractors": alone}, rounds,
                           warm={"eval": lambda: evaluate_checkpoint(warm_run, device="cpu"), "extractors": warm_alone})
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"what": what, "images": n, "eval_s": med["eval"], "extractors_s": med["extractors"],
            "ratio": med["eval"] / med["extractors"], "samples_s": times,
            "precision": "bf16, channels_last" if alone.bf16 else "fp32"}


# -------------------------------------------------------------------------------------------- stylize a folder
def _photo_folder(dst: Path, n: int, side: int) -> None:
    """n JPEGs of side x side px, each a different crop of a bundled photo."""
    dst.mkdir(parents=True)
    photos = [open_image(p).convert("RGB") for p in sorted(CONTENT.glob("*.jpg"))]
    for i in range(n):
        im = photos[i % len(photos)]
        big = resize_short(im, side + 8 * (i // len(photos)) % 64 + side // 8)
        center_crop(big, side).save(dst / f"photo-{i:04d}.jpg", quality=90)


def stylize_speed(n: int, rounds: int, side: int = 512) -> dict[str, Any]:
    """images/s of `stylize_files` on a folder and of the bare forward on the same (decoded) images."""
    from stylezoo.core.use.stylizer import LoadedGenerator, Stylizer

    gen = Registry().build("gen/encdec", {"channels": 32, "n_res": 3, "residual": True}).eval()
    st = Stylizer(LoadedGenerator(module=gen, name="gen/encdec", family="image", meta={}, path=Path("bench")),
                  device="cpu")
    with tempfile.TemporaryDirectory(prefix="stylezoo-stylizebench-") as d:
        src, out = Path(d) / "photos", Path(d) / "out"
        _photo_folder(src, n, side)
        warm_src = Path(d) / "warm"  # the untimed round: 16 photos, as a folder of 16+ takes the same backend
        warm_src.mkdir()
        for f in sorted(src.iterdir())[:16]:
            (warm_src / f.name).symlink_to(f)
        # contiguous, as stylize_files batches them (torch.stack); a decoded image alone is channels_last-strided
        xs = [load_tensor(f, side)[None].contiguous() for f in sorted(src.iterdir())]

        def folder() -> None:
            shutil.rmtree(out, ignore_errors=True)
            st.stylize_files([str(src)], out)

        def bare(xs: list[Tensor] = xs) -> None:
            with torch.no_grad():
                for x in xs:
                    st.forward(x)

        def warm_folder() -> None:
            shutil.rmtree(out, ignore_errors=True)
            st.stylize_files([str(warm_src)], out)

        times = _alternate({"folder": folder, "forward": bare}, rounds,
                           warm={"folder": warm_folder, "forward": lambda: bare(xs[:16])})
        written = len(list(out.iterdir()))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"images": n, "side": side, "written": written, "precision": st.precision, "backend": st.backend,
            "folder_images_per_s": n / med["folder"], "forward_images_per_s": n / med["forward"],
            "ratio": med["forward"] / med["folder"], "samples_s": times}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval-images", type=int, default=150)
    ap.add_argument("--stylize-images", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", choices=["eval", "stylize"])
    args = ap.parse_args(argv)
    if args.only != "stylize":
        print("eval", eval_speed(args.eval_images, args.rounds), flush=True)
    if args.only != "eval":
        print("stylize", stylize_speed(args.stylize_images, args.rounds), flush=True)


if __name__ == "__main__":
    main()
