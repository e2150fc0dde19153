"""Train the models shipped in models/ and describe them in registry.toml (issue #28).

    python -m stylezoo.benchmarks.train_zoo [--minutes-cin M] [--minutes-any M] [--out DIR] [--write]
                                            [--recipe-cin multi-style] [--recipe-any wct] [--only cin|any]
                                            [--steps-cin N] [--steps-any N] [--set RECIPE:ROLE.FIELD=VALUE ...]

Two trainings through the ordinary engine (`Trainer.train_step`), each for a wall-clock budget (or a step
count), on the bundled images only (data/samples: the five photos and six paintings, as each recipe uses them;
a `--set` that points the data elsewhere is refused):

- `--recipe-cin` (default multi-style, a label-conditioned gen/cin): one file, models/multi-style.safetensors,
  served as six models (starry-night, the-scream, ...), one style label each;
- `--recipe-any` (default wct, gen/wct; or adain, gen/adain): models/any.safetensors, the model `any`, which
  takes --style REF.

Each run's final generator (its weight average when the recipe keeps one) becomes a small shipped checkpoint:
only the generator's tensors, floating ones in fp16 (where they fit), and the run's metadata (composition,
configs, step), so it loads with no flags; optimizer and discriminator state are dropped. The shipped file
itself is then scored with the project's Evaluator (core/evaluation/evaluate.py) at `--eval-size` on held-out
images, never trained on nor used to choose settings (benchmarks/quality_styles.py's SPLIT, its score side): two
DATA/content photos and the first `--faces` of DATA/faces/codeformer (sorted by name).
style_ratio = style_gram(outputs) / style_gram(unchanged inputs) against the model's painting (lower:
more of the style; 1: none), content_ssim = SSIM of outputs to inputs. The any-style model is scored on the
score side's unseen paintings (DATA/styles/paintings, none among the six bundled ones; their mean).

Writes DIR (default bench-results/train_zoo-<time>/): the runs, the shipped files and results.json. With
`--write` it copies the shipped files into models/ and updates registry.toml's [models.*] tables (sha256,
steps, time, scores, ...) in place, keeping their other lines and comments; missing tables are added.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dev"
SAMPLES = REPO / "data" / "samples"
LICENCE = "Apache-2.0"  # the weights' licence: the code's (trained on public-domain / CC0 images)
# the label-conditioned models: name -> (style label = the bundled painting's stem, description)
PAINTINGS: dict[str, tuple[str, str]] = {
    "starry-night": ("starry_night", "Van Gogh, The Starry Night (1889)"),
    "the-scream": ("the_scream", "Munch, The Scream (1893)"),
    "great-wave": ("great_wave", "Hokusai, The Great Wave off Kanagawa (c. 1831)"),
    "shipwreck": ("shipwreck_of_the_minotaur", "Turner, The Shipwreck of the Minotaur (c. 1810)"),
    "composition-vii": ("composition_vii", "Kandinsky, Composition VII (1913)"),
    "woman-with-a-hat": ("woman_with_a_hat", "Matisse, Woman with a Hat (1905)"),
}
ANY = "any"
ANY_GENS = ("gen/wct", "gen/adain")  # reference-guided generators the any-style model may be
ANY_DESCRIPTION = {"gen/wct": "Any style image (whitening-colouring transforms)",
                   "gen/adain": "Any style image (AdaIN)"}
FILES = {"cin": "models/multi-style.safetensors", "any": "models/any.safetensors"}
TRAINING_DATA = "data/samples: 5 photos, 6 paintings"
TOML_SECTION = "# ---------------------------------------------------------------- shipped models"


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m stylezoo.benchmarks.train_zoo", description=__doc__.split("\n")[0])
    p.add_argument("--minutes-cin", type=float, default=30.0, help="budget of the label-conditioned model (30)")
    p.add_argument("--minutes-any", type=float, default=30.0, help="budget of the any-style model (30)")
    p.add_argument("--steps-cin", type=int, default=0, help="stop the label-conditioned model here (0: the budget)")
    p.add_argument("--steps-any", type=int, default=0, help="stop the any-style model here (0: the budget)")
    p.add_argument("--recipe-cin", default="multi-style", help="its recipe (default: %(default)s; a gen/cin one)")
    p.add_argument("--recipe-any", default="wct",
                   help="the any-style recipe (default: %(default)s; a gen/wct or gen/adain one)")
    p.add_argument("--only", choices=("cin", "any"), help="train and write only this one")
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="ROLE.FIELD=VALUE for both, or RECIPE:ROLE.FIELD=VALUE for one; repeatable")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="held-out data root: content/, faces/codeformer/, styles/paintings/ (default: %(default)s)")
    p.add_argument("--faces", type=int, default=12, help="score faces (CodeFormer) added to the held-out photos (12)")
    p.add_argument("--eval-size", type=int, default=256, help="side the held-out images are scored at (256)")
    p.add_argument("--out", type=Path, default=None, help="results folder (default: bench-results/train_zoo-TIME)")
    p.add_argument("--write", action="store_true", help="copy the files into models/ and update registry.toml")
    args = p.parse_args(argv)
    for name in ("minutes_cin", "minutes_any"):
        if not getattr(args, name) > 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    if args.faces < 0 or args.eval_size < 16 or args.steps_cin < 0 or args.steps_any < 0:
        p.error("--faces and --steps-* must be >= 0, --eval-size >= 16")
    return args


# -- training ----------------------------------------------------------------------------------------------------
def recipe_sets(sets: list[str], recipe: str) -> list[str]:
    """The --set items for one recipe: unqualified ones and those written `RECIPE:ROLE.FIELD=VALUE`."""
    out = []
    for item in sets:
        name, colon, rest = item.partition(":")
        if colon and "=" not in name:
            if name == recipe:
                out.append(rest)
        else:
            out.append(item)
    return out


def train(recipe: str, gens: tuple[str, ...], minutes: float, max_steps: int, sets: list[str], run_dir: Path,
          reg: Any) -> tuple[Path, dict[str, Any]]:
    """Train `recipe` on the bundled images for the budget; (its checkpoint, {steps, train_s, device, ...})."""
    from stylezoo.core.runs.runconfig import resolve
    from stylezoo.core.training.engine import Trainer

    rc = resolve(reg, recipe=recipe, sets=recipe_sets(sets, recipe))
    if rc.gen not in gens:
        raise SystemExit(f"train_zoo: recipe {recipe} trains {rc.gen}; this model needs {' or '.join(gens)}")
    d = rc.data.resolved()
    outside = [f"{k}={v}" for k, v in (("content", d.content), ("style", d.style), ("data", d.data), ("pairs", d.pairs))
               if v and not Path(v).resolve().is_relative_to(SAMPLES)]
    if outside:
        raise SystemExit(f"train_zoo: the shipped models train on the bundled images only (data/samples); "
                         f"got {', '.join(outside)}")
    trainer = Trainer(rc, run_dir, registry=reg)
    print(f"train_zoo: {recipe}: {trainer.describe()}; budget {minutes:g} min"
          + (f" or {max_steps} steps" if max_steps else ""), flush=True)
    t0 = time.perf_counter()
    next_log = t0 + 30
    while trainer.step == 0 or (time.perf_counter() - t0 < minutes * 60 and not 0 < max_steps <= trainer.step):
        logs = trainer.train_step(trainer.step)
        trainer.step += 1
        if time.perf_counter() >= next_log:
            print(f"  {time.perf_counter() - t0:6.0f}s  step {trainer.step:5d}  G {logs.get('g/loss', math.nan):.3f}",
                  flush=True)
            next_log += 30
    train_s = time.perf_counter() - t0
    run_dir.mkdir(parents=True, exist_ok=True)
    path = trainer.save_checkpoint(keep=False)
    dev = trainer.device
    where = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    return path, {"recipe": recipe, "gen": rc.gen, "steps": trainer.step, "train_s": round(train_s, 1), "device": where,
                  "run": rc.to_dict()}


def ship(src: Path, dest: Path) -> dict[str, Any]:
    """The generator of the checkpoint `src` (its weight average when it has one) as a small shipped checkpoint:
    floating tensors in fp16 where they stay finite, the run's metadata kept, optimizer/discriminator state
    dropped. Checked to load and to match the fp32 generator; returns what it did."""
    from stylezoo.core.files import checkpoint as ckpt
    from stylezoo.core.use.loading import load_generator

    tensors, meta = ckpt.load(src)
    part = "ema" if any(k.startswith("ema.") for k in tensors) else "gen"
    small: dict[str, torch.Tensor] = {}
    for k, v in ckpt.section(tensors, part).items():
        half = v.half() if v.is_floating_point() else v
        small[k] = half if bool(torch.isfinite(half).all()) else v
    keep = ("run", "configs", "composition", "family", "versions", "plugins", "step")
    shipped = {k: meta[k] for k in keep if k in meta} | {"shipped": {"weights": part, "by": "benchmarks/train_zoo.py"}}
    run = dict(shipped.get("run", {}))  # the bundled images by their package names, not this machine's paths
    run["data"] = {k: _portable(v) for k, v in dict(run.get("data", {})).items()}
    shipped["run"] = run
    ckpt.save(dest, ckpt.prefixed("gen", small), shipped)
    full, small_gen = load_generator(src, ema=True).module, load_generator(dest).module
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    cond = _conditions(small_gen, x)
    with torch.no_grad():
        diff = float((full(x, **cond) - small_gen(x, **cond)).abs().max())
    if not diff < 0.05:
        raise SystemExit(f"train_zoo: the fp16 copy of {src} differs from it by {diff:.3f} (of 2); not shipped")
    return {"weights": part, "fp16_tensors": sum(t.dtype == torch.float16 for t in small.values()),
            "tensors": len(small), "bytes": dest.stat().st_size, "fp16_max_diff": diff}


def _portable(v: Any) -> Any:
    """A path under data/samples as `samples:REL` (how recipes name the bundled images); anything else as it is."""
    if isinstance(v, str) and v and Path(v).is_absolute() and Path(v).resolve().is_relative_to(SAMPLES):
        return "samples:" + Path(v).resolve().relative_to(SAMPLES).as_posix()
    return v


def _conditions(gen: torch.nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """Conditions for a parity check: the first label, or the input as its own style."""
    if hasattr(gen, "num_labels"):
        w = torch.zeros(1, int(gen.num_labels))
        w[0, 0] = 1.0
        return {"label_weights": w}
    if getattr(gen, "needs_style", False):
        return {"style": x}
    return {}


# -- scoring -----------------------------------------------------------------------------------------------------
def held_out(data: Path, faces: int, size: int) -> tuple[torch.Tensor, list[str]]:
    """The held-out images (photos, then faces) at `size` (centre crops), and their names."""
    from stylezoo.core.files.images import find_images, load_tensor

    from .quality_styles import SPLIT  # the score side: never trained on, never used to choose settings

    files = [f for spec in SPLIT["photos"]["score"] for f in find_images(data / spec)]
    files = [f for f in files if f.parent.name == "content"] + [f for f in files if f.parent.name != "content"][:faces]
    if not files:
        raise SystemExit(f"train_zoo: no held-out images under {data} ({', '.join(SPLIT['photos']['score'])}); "
                         "give --data DIR")
    return torch.stack([load_tensor(f, size) for f in files]), [f"{f.parent.name}/{f.name}" for f in files]


def score(outputs: torch.Tensor, inputs: torch.Tensor, painting: Path, size: int, reg: Any) -> dict[str, float]:
    """style_ratio, content_ssim and style_gram of `outputs` (made from `inputs`) against one painting."""
    from stylezoo.core.evaluation.evaluate import Evaluator, style_images

    ev = Evaluator(style=style_images(painting, min(2 * size, 512)), registry=reg)
    model, identity = ev.score(outputs, content=inputs), ev.score(inputs)
    return {"style_ratio": model["style_gram"] / identity["style_gram"], "content_ssim": model["content_ssim"],
            "style_gram": model["style_gram"]}


def score_cin(path: Path, x: torch.Tensor, size: int, reg: Any) -> dict[str, dict[str, float]]:
    """Each painting model's scores: the shipped file with its label, against its bundled painting."""
    from stylezoo.core.use.stylizer import Stylizer

    st = Stylizer.load(path, device="cpu", precision="fp32", registry=reg)
    out = {}
    for name, (label, _) in PAINTINGS.items():
        out[name] = score(st.set_labels(label)(x), x, _bundled(label), size, reg)
        print(f"  {name}: {_fmt(out[name])}", flush=True)
    return out


def score_any(path: Path, x: torch.Tensor, data: Path, size: int, reg: Any) -> dict[str, Any]:
    """The any-style model's mean scores over the unseen paintings (not among the bundled six), and each's."""
    from stylezoo.core.files.images import find_images
    from stylezoo.core.use.stylizer import Stylizer

    from .quality_styles import SPLIT

    bundled = [f.stem for f in find_images(SAMPLES / "style")]
    unseen = [data / p for p in SPLIT["paintings"]["score"] if (data / p).is_file()]
    assert not any(p.stem.startswith(b) for p in unseen for b in bundled)
    if not unseen:
        raise SystemExit(f"train_zoo: no unseen paintings in {data / 'styles' / 'paintings'}")
    st = Stylizer.load(path, device="cpu", precision="fp32", registry=reg)
    each = {p.name: score(st.set_style(p)(x), x, p, size, reg) for p in unseen}
    mean = {k: sum(s[k] for s in each.values()) / len(each) for k in ("style_ratio", "content_ssim", "style_gram")}
    print(f"  any: {_fmt(mean)} (mean of {len(each)} unseen paintings)", flush=True)
    return mean | {"paintings": each}


def _bundled(label: str) -> Path:
    from stylezoo.core.files.images import find_images

    match = [f for f in find_images(SAMPLES / "style") if f.stem == label]
    if not match:
        raise SystemExit(f"train_zoo: no bundled painting {label!r} in {SAMPLES / 'style'}")
    return match[0]


def _fmt(s: dict[str, float]) -> str:
    return f"style ratio {s['style_ratio']:.3f}, content SSIM {s['content_ssim']:.3f}"


# -- registry.toml -------------------------------------------------------------------------------------------
def toml_value(v: Any) -> str:
    """One TOML value: strings, booleans, numbers and (inline) tables of them."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # a JSON string is a TOML basic string
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"no TOML for {type(v).__name__}")


def update_models(text: str, tables: dict[str, dict[str, Any]], owned: set[str]) -> str:
    """registry.toml's text with each `[models.NAME]` table's `owned` keys set from `tables` (other lines,
    comments included, kept); a missing table is added whole at the end, under the shipped-models heading."""
    lines = text.splitlines()
    for name, values in tables.items():
        head = next((i for i, ln in enumerate(lines) if ln.strip() in (f"[models.{name}]", f'[models."{name}"]')), None)
        if head is None:
            if TOML_SECTION not in lines:
                lines += ["", TOML_SECTION]
            lines += ["", f"[models.{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
            continue
        end = next((i for i in range(head + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
        for key in (k for k in values if k in owned):
            line = f"{key} = {toml_value(values[key])}"
            at = next((i for i in range(head + 1, end) if lines[i].split("=", 1)[0].strip() == key), None)
            if at is not None:
                lines[at] = line
            else:
                last = max((i for i in range(head + 1, end) if "=" in lines[i]), default=head)
                lines.insert(last + 1, line)
                end += 1
    return "\n".join(lines) + "\n"


def model_tables(results: dict[str, Any], held: list[str]) -> dict[str, dict[str, Any]]:
    """The [models.*] tables of what was trained."""
    photos = sum(n.startswith("content/") for n in held)
    tables = {}
    for kind, res in results.items():
        common = {"file": FILES[kind], "sha256": res["sha256"], "gen": res["gen"],
                  "recipe": res["recipe"], "licence": LICENCE, "training_data": TRAINING_DATA,
                  "steps": res["steps"], "train_s": res["train_s"], "device": res["device"]}
        if kind == "cin":
            for name, (label, what) in PAINTINGS.items():
                s = res["scores"][name]
                tables[name] = {"description": what, **common, "style_label": label,
                                "held_out": f"{photos} dev photos + {len(held) - photos} CodeFormer faces, "
                                            f"{res['eval_size']} px",
                                "scores": {k: round(s[k], 4) for k in ("style_ratio", "content_ssim")}}
        else:
            s = res["scores"]
            tables[ANY] = {"description": ANY_DESCRIPTION[res["gen"]], **common, "takes_style": True,
                              "held_out": f"{photos} dev photos + {len(held) - photos} CodeFormer faces, "
                                          f"{res['eval_size']} px, {len(s['paintings'])} unseen paintings",
                              "scores": {k: round(s[k], 4) for k in ("style_ratio", "content_ssim")}}
    return tables


OWNED = {"file", "sha256", "gen", "recipe", "training_data", "steps", "train_s", "device", "held_out", "scores",
         "style_label", "takes_style"}  # what --write keeps current; description and licence are the editors'


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from stylezoo.core.components.registry import REGISTRY_TOML, default_registry
    from stylezoo.core.files.checkpoint import atomic_write
    from stylezoo.core.files.weights import sha256_file

    reg = default_registry()
    for r in (args.recipe_cin, args.recipe_any):
        reg.recipe(r)  # an unknown recipe: its did-you-mean, before any work
    out = args.out or Path("bench-results") / f"train_zoo-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    x, held = held_out(args.data, args.faces, args.eval_size)
    plan = {"cin": (args.recipe_cin, ("gen/cin",), args.minutes_cin, args.steps_cin),
            "any": (args.recipe_any, ANY_GENS, args.minutes_any, args.steps_any)}
    results: dict[str, Any] = {}
    for kind, (recipe, gens, minutes, steps) in plan.items():
        if args.only and args.only != kind:
            continue
        ckpt_path, info = train(recipe, gens, minutes, steps, args.sets, out / f"run-{kind}", reg)
        dest = out / Path(FILES[kind]).name
        info |= ship(ckpt_path, dest) | {"sha256": sha256_file(dest), "eval_size": args.eval_size}
        print(f"train_zoo: shipped {dest} ({info['bytes'] / 1e6:.2f} MB, {info['steps']} steps in "
              f"{info['train_s'] / 60:.1f} min); scoring on {len(held)} held-out images ...", flush=True)
        info["scores"] = (score_cin(dest, x, args.eval_size, reg) if kind == "cin"
                          else score_any(dest, x, args.data, args.eval_size, reg))
        results[kind] = info
    tables = model_tables(results, held)
    report = {"command": " ".join(["python -m stylezoo.benchmarks.train_zoo", *(argv or sys.argv[1:])]),
              "held_out": held, "results": results, "tables": tables, "torch": torch.__version__,
              "loadavg": os.getloadavg()}
    (out / "results.json").write_text(json.dumps(report, indent=2, default=str))
    if args.write:
        for kind in results:
            src = out / Path(FILES[kind]).name
            atomic_write(REPO / FILES[kind], lambda p, s=src: shutil.copyfile(s, p))
        text = update_models(REGISTRY_TOML.read_text(encoding="utf-8"), tables, OWNED)
        atomic_write(REGISTRY_TOML, lambda p: p.write_text(text, encoding="utf-8"))
        print(f"train_zoo: wrote {', '.join(FILES[k] for k in results)} and {len(tables)} [models.*] tables "
              "of registry.toml")
    print(f"train_zoo: results in {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
