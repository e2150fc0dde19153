"""Training speed on this machine: the engine beside the naive step and the plain float32 loop, side by side.

    python -m stylezoo.benchmarks.speed [--recipes default original unet-perceptual] [--sizes 128 256]
        [--steps 5] [--large-steps 3] [--naive-steps 3] [--warmup 2] [--quick] [--ablation] [--compile] [--no-naive]
        [--naive-max-size 128] [--no-inference] [--inference-sizes 512]
        [--parts train inference peers eval stylize] [--peers DIR]
        [--threads N] [--device auto|cpu|cuda] [--out bench-results/speed.json]

It ends with issue 29's targets, each with its measured ratio and whether it is met: every recipe's step
at 128 and 256 px against the time of its convolutions and matrix products alone (with the rest of the
step by category: norms, casts and copies, optimizer, other ops, Python and dispatch, data), stylezoo
against pytorch/examples' dcgan and fast_neural_style trained at their own architectures
(benchmarks/peers.py), `stylezoo eval` against its extractors' forward passes and `stylezoo stylize` of
a folder against the bare forward (benchmarks/pipelines.py).

For each recipe and size, every variant trains on the same data, and their steps are interleaved
round-robin in one process, so the ratios are measured under the same machine load:
- engine: stylezoo's Trainer with its defaults (precision, memory format, fused Adam ...);
- engine fp32 / engine bf16: the same with --precision fp32 / bf16 (when the default is the other);
- plain fp32: the same modules trained the plain way, written here: contiguous memory, float32, no
  autocast, stock Adam; one extractor pass per image batch and cached style targets, as any careful loop;
- naive fp32: the step as the original design notes' code does it (shared/origin): the generator run again
  for the generator step, one backward per discriminator term, the whole extractor run again for every loss
  term and every layer (on the fakes and on the targets, with the extractor's weights left trainable, so
  gradients flow through the target passes too) and the style targets (Gram of the style image) recomputed
  every step.
Per variant: median step time after warm-up, images/s, data time (drawing the batch, inside the step), FLOPs
per step (torch.utils.flop_counter: convolutions and matrix products, forward and backward), achieved
FLOP/s as a fraction of this machine's own matmul peak measured in the same run (float32 and bfloat16
torch.mm of 2048x2048 matrices on CPU, 8192x8192 on CUDA, best of several, before and after each cell):
model FLOPs utilisation (MFU; model FLOPs as a direct convolution counts them: oneDNN runs some float32 3x3
convolutions with fewer multiplications, Winograd-style, so the float32 fraction can pass 1; on CUDA the
float32 peak is measured with TF32 on when cuDNN's convolutions use it, its default), and peak memory (CPU:
the process's high-water RSS during one step above its RSS before it, reset through /proc/self/clear_refs;
CUDA: torch.cuda.max_memory_allocated). On the CPU, the engine variants also show the time their step spends
inside convolutions and matrix products (each op's wall time, least of two steps) and the MFU those kernels
alone reach: the step's ceiling if norms, activations, casts, the optimizer and Python took no time. Then
inference latency per image at 512 (--inference-sizes) for every built-in generator (CPU: benchmarks/inference.py, eager
fp32 vs what stylize does; CUDA: eager fp32, bf16 autocast and the Stylizer, synchronised).

--ablation adds engine variants that switch one fast path each (precision x channels_last, stock Adam,
zero padding in gen/encdec): the measurements the engine's defaults were chosen from.
Results go to bench-results/speed.json (machine, load average, every sample) to compare across commits.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import functools
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from stylezoo.benchmarks.train_loops import NaiveLoop, PlainLoop
from stylezoo.core.components.registry import Registry
from stylezoo.core.runs.runconfig import RunConfig, resolve
from stylezoo.core.runtime.devices import bf16_supported, pick_device
from stylezoo.core.training.engine import Trainer

# name -> (registry recipe, CLI layer on top)
RECIPES: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("default", {}),  # encdec + PatchGAN + VGG16, LSGAN, content + Gram + TV
    "original": ("original", {}),  # DCGAN G and D + VGG16, BCE + entropy + WGAN-GP, content + Gram
    # image to image with VGG16 perceptual losses on a pix2pix U-Net (unpaired: content photos, style domain)
    "unet-perceptual": ("default", {"gen": "gen/unet"}),
}
StepFn = Callable[[int], Any]
MFU_MAX_SIZE = 128  # issue 7's MFU targets are at 64 and 128 px: the other precision's engine only up to here
PARTS = ("train", "inference", "peers", "eval", "stylize")


# -------------------------------------------------------------------------------------------- the machine
def matmul_peak(dtype: torch.dtype, device: torch.device, n: int | None = None, reps: int = 5) -> float:
    """Best FLOP/s of an n x n x n torch.mm in `dtype` (the machine's practical matmul peak).

    n defaults to 2048 on CPU and 8192 on CUDA (2048 leaves a large GPU's tensor cores half idle)."""
    n = n or (8192 if device.type == "cuda" else 2048)
    reps = reps if device.type == "cpu" else 2 * reps
    if device.type == "cuda" and dtype == torch.float32:
        # like for like: float32 convolutions run on TF32 tensor cores where cuDNN allows it (its default)
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
        try:
            return _mm_best(dtype, device, n, reps)
        finally:
            torch.backends.cuda.matmul.allow_tf32 = tf32
    return _mm_best(dtype, device, n, reps)


def _mm_best(dtype: torch.dtype, device: torch.device, n: int, reps: int) -> float:
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t = time.perf_counter()
        torch.mm(a, b)
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> float | None:
    """Memory a call takes at its peak above what was in use before it (MB), or None where unmeasurable."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand freed memory back, so the step's own peak shows
        before = _status_kb("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (peak RSS) to the current RSS
    except OSError:
        return None
    fn()
    return (_status_kb("VmHWM") - before) / 1024


# where a step's time goes besides convolutions and matrix products (the overhead the issue's target asks to
# see by category); an op that matches none of these is "other ops" (activations, elementwise arithmetic, ...)
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("norms", ("batch_norm", "instance_norm", "group_norm", "layer_norm")),
    ("casts and copies", ("_to_copy", "copy_", "clone", "contiguous")),
    ("optimizer", ("_fused_adam", "_foreach_", "adam")),
)


def op_category(name: str) -> str:
    for cat, keys in CATEGORIES:
        if any(k in name for k in keys):
            return cat
    return "other ops"


class _FlopCount(TorchDispatchMode):
    """FlopCounterMode's formulas (convolutions and matrix products, forward and backward) without its
    module tracking, whose hooks break torch.autograd.grad (the gradient penalties' double backward).

    It also sums the wall time of the ops that have a formula (`kernel_s`): the time the step spends in
    the work MFU counts, and of every other op by category (`category_s`, see CATEGORIES). Only meaningful
    on the CPU, where an op's time is spent inside its call."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0
        self.kernel_s = 0.0
        self.category_s: dict[str, float] = {}
        self.op_s: dict[str, float] = {}  # every op without a formula, by name

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        formula = flop_registry.get(func._overloadpacket)
        t = time.perf_counter()
        out = func(*args, **kwargs)
        dt = time.perf_counter() - t
        if formula is not None:
            self.kernel_s += dt
            self.total += int(formula(*args, **kwargs, out_val=out))
        else:
            op = func._overloadpacket.__name__
            cat = op_category(op)
            self.category_s[cat] = self.category_s.get(cat, 0.0) + dt
            self.op_s[op] = self.op_s.get(op, 0.0) + dt
        return out


def count_flops(fn: Callable[[], Any]) -> int:
    with _FlopCount() as fc:
        fn()
    return fc.total


def kernel_seconds(fn: Callable[[], Any]) -> float:
    """Seconds one call of `fn` spends inside convolutions and matrix products (CPU)."""
    return kernel_profile(fn)[0]


def kernel_profile(fn: Callable[[], Any]) -> tuple[float, dict[str, float], dict[str, float]]:
    """Seconds one call of `fn` spends inside convolutions and matrix products, and in the other ops by
    category and by name."""
    with _FlopCount() as fc:
        fn()
    return fc.kernel_s, fc.category_s, fc.op_s


# -------------------------------------------------------------------------------------------- the variants
def run_config(reg: Registry, recipe: str, size: int, batch: int | None, device: str = "auto",
               **train: Any) -> RunConfig:
    base, layer = RECIPES[recipe]
    layer = copy.deepcopy(layer)
    layer["train"] = {"size": size, "sample_every": 0, "ckpt_every": 0, "device": device,
                      **({"batch": batch} if batch else {}), **train}
    return resolve(reg, recipe=base, cli=layer)


def engine(reg: Registry, rc: RunConfig, tmp: str, **train: Any) -> Trainer:
    import dataclasses

    rc = dataclasses.replace(rc, train=dataclasses.replace(rc.train, **train))
    return Trainer(rc, tmp, registry=reg, rank=0, world=1)


def _describe(tr: Trainer) -> str:
    layout = ("channels_last" if tr.placement.channels_last
              else "contiguous, extractor cl" if tr.placement.feat_cl else "contiguous")
    return f"{'bf16' if tr.placement.amp else 'fp32'}, {layout}"


def variants(reg: Registry, rc: RunConfig, tmp: str,
             args: argparse.Namespace) -> dict[str, tuple[StepFn, Trainer, str]]:
    """name -> (step function, the trainer holding its modules and data, precision of its math)."""
    out: dict[str, tuple[StepFn, Trainer, str]] = {}
    tr = engine(reg, rc, tmp)
    out["engine"] = (tr.train_step, tr, "bf16" if tr.placement.amp else "fp32")
    dev = tr.device
    other_precision = rc.train.size <= MFU_MAX_SIZE or args.ablation  # no target reads it at larger sizes
    if tr.placement.amp and other_precision:
        t2 = engine(reg, rc, tmp, precision="fp32")
        out["engine fp32"] = (t2.train_step, t2, "fp32")
    elif bf16_supported(dev) and other_precision and not tr.placement.amp:
        t2 = engine(reg, rc, tmp, precision="bf16")
        out["engine bf16"] = (t2.train_step, t2, "bf16")
    if args.ablation:
        for prec in ("fp32", "bf16") if bf16_supported(dev) else ("fp32",):
            for cl in (False, True):
                t2 = engine(reg, rc, tmp, precision=prec, channels_last=cl)
                out[f"engine {prec} {'cl' if cl else 'contig'}"] = (t2.train_step, t2, prec)
        if tr.components.feat is not None:  # the extractor alone channels_last (faster on CPU bf16; not the default)
            t2 = engine(reg, rc, tmp, channels_last="extractor")
            out["engine extractor cl"] = (t2.train_step, t2, out["engine"][2])
        t2 = engine(reg, rc, tmp)
        for opt in (t2.opt_g, t2.opt_d):
            for g in opt.param_groups if opt is not None else ():
                g["fused"], g["foreach"] = None, None  # torch's default: the per-tensor loop on CPU
        out["engine stock adam"] = (t2.train_step, t2, out["engine"][2])
        if rc.gen == "gen/encdec":
            import dataclasses

            sets = {**rc.set, "gen": {**rc.set.get("gen", {}), "padding": "zeros"}}
            t2 = engine(reg, dataclasses.replace(rc, set=sets), tmp)
            out["engine zero-pad"] = (t2.train_step, t2, out["engine"][2])
    if args.compile:
        t2 = engine(reg, rc, tmp, compile=True)
        out["engine compiled"] = (t2.train_step, t2, out["engine"][2])
    plain_tr = engine(reg, rc, tmp, precision="fp32", channels_last=False)
    out["plain fp32"] = (PlainLoop(plain_tr).step, plain_tr, "fp32")
    if not args.no_naive and tr.components.feat is not None and rc.train.size <= args.naive_max_size:
        naive_tr = engine(reg, rc, tmp, precision="fp32", channels_last=False)
        out["naive fp32"] = (NaiveLoop(naive_tr).step, naive_tr, "fp32")
    return out


# -------------------------------------------------------------------------------------------- measuring
def measure_cell(reg: Registry, recipe: str, size: int, args: argparse.Namespace) -> dict[str, Any]:
    """Every variant of one (recipe, size): warm-up, FLOPs, memory, then interleaved timed steps."""
    rc = run_config(reg, recipe, size, args.batch, args.device)
    with tempfile.TemporaryDirectory() as tmp:
        vs = variants(reg, rc, tmp, args)
        dev = next(iter(vs.values()))[1].device
        peaks = {"fp32": [matmul_peak(torch.float32, dev)], "bf16": []}
        if bf16_supported(dev):
            peaks["bf16"].append(matmul_peak(torch.bfloat16, dev))
        rows: dict[str, dict[str, Any]] = {}
        step_no = 0
        for name, (fn, tr, prec) in vs.items():  # warm-up: the first call (compiles, allocates Adam state)
            t = time.perf_counter()
            fn(step_no)
            _sync(dev)
            rows[name] = {"precision": prec, "first_step_s": time.perf_counter() - t, "samples_s": [],
                          "data_s": [], "setup": _describe(tr) if name.startswith("engine") else prec}
        step_no += 1
        kernel_s: dict[str, list[float]] = {name: [] for name in vs}
        for name, (fn, _, _) in vs.items():  # FLOPs, the kernels' time and peak memory from one step
            fc = _FlopCount()

            def counted(fn: StepFn = fn, fc: _FlopCount = fc) -> None:
                with fc:
                    fn(step_no)

            rows[name]["peak_mb"] = peak_memory_mb(counted, dev)
            rows[name]["flops"] = fc.total
            kernel_s[name].append(fc.kernel_s)
        step_no += 1
        for _ in range(max(0, args.warmup - 2)):
            for fn, _, _ in vs.values():
                fn(step_no)
            step_no += 1
        steps = args.steps if size <= MFU_MAX_SIZE else min(args.steps, args.large_steps)
        for i in range(steps):  # interleaved: every variant sees the same machine load
            for name, (fn, tr, _) in vs.items():
                if name == "naive fp32" and i >= args.naive_steps:
                    continue  # 4-12 s a step here, and 6-8x the engine's against a goal of 3x: fewer samples do
                _sync(dev)
                t = time.perf_counter()
                fn(step_no)
                _sync(dev)
                rows[name]["samples_s"].append(time.perf_counter() - t)
                t = time.perf_counter()
                tr.stepper.batch(step_no)  # what drawing the batch costs inside that step
                rows[name]["data_s"].append(time.perf_counter() - t)
            step_no += 1
        if dev.type == "cpu":  # a second look at the kernels' time, after the timed steps (the least is kept)
            for name, (fn, _, _) in vs.items():
                if name.startswith("engine") and name != "engine compiled":
                    ks, cats, ops = kernel_profile(lambda fn=fn: fn(step_no))
                    kernel_s[name].append(ks)
                    rows[name]["other_ms"] = {k: v * 1e3 for k, v in cats.items()}
                    rows[name]["top_ops_ms"] = {k: v * 1e3 for k, v in sorted(ops.items(), key=lambda kv: -kv[1])[:6]}
            step_no += 1
        peaks["fp32"].append(matmul_peak(torch.float32, dev))
        if bf16_supported(dev):
            peaks["bf16"].append(matmul_peak(torch.bfloat16, dev))
        batch = next(iter(vs.values()))[1].train_cfg.batch
    peak = {k: max(v) for k, v in peaks.items() if v}
    naive = rows.get("naive fp32")
    plain = rows["plain fp32"]
    for name, r in rows.items():
        med = statistics.median(r["samples_s"])
        r.update(step_ms=med * 1e3, min_ms=min(r["samples_s"]) * 1e3, images_per_s=batch / med,
                 data_ms=statistics.median(r["data_s"]) * 1e3, gflop=r["flops"] / 1e9,
                 gflops_per_s=r["flops"] / med / 1e9)
        r["mfu_fp32"] = r["flops"] / med / peak["fp32"]
        r["mfu_bf16"] = r["flops"] / med / peak["bf16"] if "bf16" in peak else None
        r["mfu"] = r["mfu_bf16"] if r["precision"] == "bf16" and r["mfu_bf16"] is not None else r["mfu_fp32"]
        # the same FLOPs over the time spent in convolutions and matrix products alone: the MFU the step
        # would reach if everything else (norms, activations, casts, Adam, Python) took no time. For the
        # engine's variants only: they get the least of two looks (one look at a plain or naive step can come
        # out above its median), and compiled code runs fused kernels a dispatch mode does not see one by one
        ks = (min(kernel_s[name]) if dev.type == "cpu" and name.startswith("engine") and name != "engine compiled"
              else None)
        r["kernel_ms"] = ks * 1e3 if ks else None
        kpeak = peak["bf16"] if r["precision"] == "bf16" and "bf16" in peak else peak["fp32"]
        r["mfu_kernels"] = r["flops"] / ks / kpeak if ks else None
        # a first step far above the median is set-up work (compilation above all)
        r["compile_s"] = max(0.0, r["first_step_s"] - med) if name == "engine compiled" else None
    for r in rows.values():
        r["x_plain"] = statistics.median(plain["samples_s"]) / statistics.median(r["samples_s"])
        r["x_naive"] = statistics.median(naive["samples_s"]) / statistics.median(r["samples_s"]) if naive else None
    return {"recipe": recipe, "size": size, "batch": batch, "steps": steps,
            "composition": {k: v for k, v in rc.to_dict().items()
                            if k in ("gen", "disc", "feat", "adv", "gp", "losses")},
            "peak_gflops": {k: v / 1e9 for k, v in peak.items()},
            "peak_gflops_samples": {k: [x / 1e9 for x in v] for k, v in peaks.items()}, "variants": rows}


def inference_latency(reg: Registry, sizes: list[int], repeats: int,
                      device: torch.device | None = None) -> dict[str, Any]:
    """Per built-in generator: benchmarks/inference.py's paths (image generators on CPU), or the eager
    forwards beside the Stylizer (conditional and noise generators, and every generator on CUDA)."""
    from stylezoo.benchmarks import inference

    device = device or torch.device("cpu")
    out: dict[str, Any] = {}
    for name in reg.names(kind="gen"):
        entry = reg.get(name)
        if entry.dist != "stylezoo":
            continue  # built-ins only
        if (entry.card.get("family") or getattr(entry.factory, "family", "")) == "noise":
            out[name] = _noise_latency(reg, name, sizes, repeats, device)
            continue
        if device.type != "cpu":  # inference.py's paths (ONNX Runtime, oneDNN) are CPU ones
            out[name] = _conditional_latency(reg, name, sizes, repeats, device)
            continue
        ns = argparse.Namespace(gen=name, checkpoint=None, sizes=sizes, repeats=repeats, no_compile=True)
        try:
            res = inference.run(ns)
        except Exception as e:  # conditional generators (a style image, a label) have no single-input ONNX path
            out[name] = _conditional_latency(reg, name, sizes, repeats)
            out[name]["note"] = f"benchmarks/inference.py: {type(e).__name__}: {str(e).splitlines()[0][:80]}"
            continue
        per = {}
        for size, rows in res["sizes"].items():
            default = next(k for k in rows if k.startswith("stylezoo default"))
            best = min(rows, key=lambda k: rows[k]["median_ms"])
            per[size] = {"eager_fp32_ms": rows["eager fp32"]["median_ms"], "stylize_ms": rows[default]["median_ms"],
                         "stylize_path": default, "stylize_vs_eager": rows[default]["median_ms"]
                         / rows["eager fp32"]["median_ms"], "fastest": best, "fastest_ms": rows[best]["median_ms"],
                         "paths": rows}
        out[name] = {"sizes": per}
    return out


def _stylizer(gen: torch.nn.Module, name: str, family: str, device: torch.device) -> Any:
    """The Stylizer `stylezoo stylize` would build around `gen` (precision auto)."""
    from stylezoo.core.use.stylizer import LoadedGenerator, Stylizer

    return Stylizer(LoadedGenerator(module=gen, name=name, family=family, meta={}, path=Path(name)), device=device)


@torch.no_grad()
def _interleaved_ms(paths: dict[str, Callable[[], Any]], repeats: int,
                    device: torch.device | None = None) -> dict[str, float]:
    """Median ms per path, the paths called round-robin after one warm-up round (synchronised on CUDA)."""
    device = device or torch.device("cpu")
    times: dict[str, list[float]] = {k: [] for k in paths}
    for i in range(repeats + 1):
        for k, f in paths.items():
            _sync(device)
            t = time.perf_counter()
            f()
            _sync(device)
            if i:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) * 1e3 for k, v in times.items()}


def _row(med: dict[str, float], default: str) -> dict[str, Any]:
    return {"eager_fp32_ms": med["eager fp32"], "stylize_ms": med[default], "stylize_path": default,
            "stylize_vs_eager": med[default] / med["eager fp32"], "fastest": min(med, key=med.get),
            "fastest_ms": min(med.values()), "paths": med}


@torch.no_grad()
def _conditional_latency(reg: Registry, name: str, sizes: list[int], repeats: int,
                         device: torch.device | None = None) -> dict[str, Any]:
    """Eager fp32 and bf16 forwards of a generator on a photo (with a style image or a label where it takes
    one), beside the Stylizer with that condition set, as `stylize [--style | --style-label]` runs it."""
    from stylezoo.benchmarks.inference import _photo

    device = device or torch.device("cpu")
    gen = reg.build(name).eval().to(device)
    st = _stylizer(gen, name, "image", device)
    per: dict[str, Any] = {}
    for size in sizes:
        x = _photo(size).to(device)
        cond: dict[str, Any] = {}
        for trial in ({}, {"label": torch.zeros(1, dtype=torch.long, device=device)}, {"style": x}):
            try:
                gen(x, **trial)
                cond = trial
                break
            except (TypeError, ValueError, RuntimeError):
                continue
        if st.takes_style:
            st.set_style(x[0].cpu(), size=None)
        elif st.labels:
            st.set_labels(st.labels[0])
        default = f"stylezoo default ({st.precision})"
        med = _interleaved_ms({
            "eager fp32": functools.partial(gen, x, **cond),
            "bf16 autocast": functools.partial(_autocast_call, gen, x, cond),
            default: functools.partial(st.forward, x),
        }, repeats, device)
        per[str(size)] = _row(med, default) | {"condition": ", ".join(cond) or "none"}
    return {"sizes": per}


def _autocast_call(gen: torch.nn.Module, x: Tensor, cond: dict[str, Any]) -> Tensor:
    with torch.autocast(x.device.type, torch.bfloat16):
        return gen(x, **cond)


@torch.no_grad()
def _noise_latency(reg: Registry, name: str, sizes: list[int], repeats: int,
                   device: torch.device | None = None) -> dict[str, Any]:
    from stylezoo.plugins.dcgan import GEN_SIZES

    device = device or torch.device("cpu")
    per: dict[str, Any] = {}
    for size in sizes:
        if size not in GEN_SIZES:
            per[str(size)] = {"error": f"{name} makes only {', '.join(map(str, GEN_SIZES))} px images"}
            continue
        gen = reg.build(name, {"size": size}).eval().to(device)
        st = _stylizer(gen, name, "noise", device)
        z = torch.randn(1, gen.latent_dim, device=device)
        default = f"stylezoo default ({st.precision})"
        med = _interleaved_ms({"eager fp32": functools.partial(gen, z),
                               "bf16 autocast": functools.partial(_autocast_call, gen, z, {}),
                               default: functools.partial(st.sample_tensor, 1)}, repeats, device)
        per[str(size)] = _row(med, default)
    return {"sizes": per}


# -------------------------------------------------------------------------------------------- reporting
def _machine(device: torch.device) -> dict[str, Any]:
    from stylezoo.benchmarks.inference import _machine as base

    m = base()
    if device.type == "cuda":
        m["gpu"] = torch.cuda.get_device_name(device)
        m["cuda"] = torch.version.cuda
        # float32 convolutions (and the fp32 matmul peak, see matmul_peak) use TF32 tensor cores when True
        m["tf32_convolutions"] = torch.backends.cudnn.allow_tf32
    m["device"] = str(device)
    # base() turned it on: the Trainer does so on the CPU, process-wide, so every variant runs with it
    m["keeps_freed_memory"] = device.type == "cpu" and m["keeps_freed_memory"]
    return m


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def print_tables(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    m = result["machine"]
    for cell in result["cells"]:
        pk = cell["peak_gflops"]
        steps = cell.get("steps", result["steps"])
        t = Table(title=f"{cell['recipe']} at {cell['size']}px, batch {cell['batch']}: medians of {steps} "
                        f"interleaved steps; matmul peak fp32 {pk['fp32']:.0f} GFLOP/s"
                        + (f", bf16 {pk['bf16']:.0f}" if "bf16" in pk else ""))
        for col in ("variant", "math", "step ms", "img/s", "data ms", "GFLOP/step", "GFLOP/s", "MFU",
                    "conv+mm ms (MFU)", "x plain fp32", "x naive", "peak MB", "first step s"):
            t.add_column(col, justify="left" if col in ("variant", "math") else "right", no_wrap=True)
        for name, r in cell["variants"].items():
            t.add_row(name, r["setup"], f"{r['step_ms']:.0f}", f"{r['images_per_s']:.2f}", f"{r['data_ms']:.1f}",
                      f"{r['gflop']:.1f}", f"{r['gflops_per_s']:.1f}",
                      f"{r['mfu']:.2f} of {r['precision']}",
                      "-" if r.get("kernel_ms") is None else f"{r['kernel_ms']:.0f} ({r['mfu_kernels']:.2f})",
                      f"{r['x_plain']:.2f}", _f(r["x_naive"], ".2f"),
                      _f(r["peak_mb"], ".0f"), f"{r['first_step_s']:.1f}")
        con.print(t)
    if result.get("inference"):
        t = Table(title="inference latency per image (batch 1, a real photo; benchmarks/inference.py), ms")
        t.add_column("generator", no_wrap=True)
        sizes = result["inference_sizes"]
        for s in sizes:
            t.add_column(f"{s} eager fp32", justify="right")
            t.add_column(f"{s} stylize", justify="right")
            t.add_column("ratio", justify="right")
        t.add_column("fastest path, ms (largest size)", no_wrap=True)
        notes = []
        for name, r in result["inference"].items():
            cells = []
            for s in sizes:
                p = r["sizes"].get(str(s), {})
                cells += ([f"{p['eager_fp32_ms']:.0f}", f"{p['stylize_ms']:.0f}", f"{p['stylize_vs_eager']:.2f}"]
                          if "eager_fp32_ms" in p else ["-", "-", "-"])
                if "error" in p:
                    notes.append(f"{name} at {s}px: {p['error']}")
            done = [p for p in r["sizes"].values() if "fastest" in p]
            last = done[-1] if done else {}
            t.add_row(name, *cells, f"{last.get('fastest', '-')} {_f(last.get('fastest_ms'), '.0f')}")
            if r.get("note"):
                notes.append(f"{name}: {r['note']}; timed here eagerly instead")
        con.print(t)
        for line in notes:
            con.print(f"  {line}")
    if result.get("targets"):
        t = Table(title="targets (issue 7, set for its 2-core CPU) on this machine")
        for col in ("target", "measured", "goal", "met", "conv+mm alone"):
            t.add_column(col, justify="left" if col == "target" else "right", no_wrap=True)
        for r in result["targets"]:
            t.add_row(r["target"], f"{r['value']:.2f}",
                      ("<= " if "latency" in r["target"] else ">= ") + f"{r['goal']:g}",
                      "[green]yes[/]" if r["met"] else "[red]no[/]", _f(r.get("kernels_only"), ".2f"))
        con.print(t)
    gpu = ""
    if "gpu" in m:
        gpu = f"{m['gpu']} (CUDA {m['cuda']}, TF32 convolutions {'on' if m['tf32_convolutions'] else 'off'}), "
    con.print(f"{gpu}{m['cpu']} ({m['torch_threads']} threads), torch {m['torch']}, device {m['device']}; load average "
              f"{m['loadavg_start'][0]:.1f} at the start, {m['loadavg_end'][0]:.1f} at the end. Ratios come from "
              "interleaved steps in one process; absolute figures follow the machine's load. conv+mm: the time "
              "spent inside convolutions and matrix products alone (CPU), and the MFU of the step if nothing "
              "else took time."
              + (" malloc keeps freed memory for every variant (core/runtime/cpu_memory.py)."
                 if m.get("keeps_freed_memory") else ""))


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the value measured here and whether it is met."""
    out: list[dict[str, Any]] = []

    def add(what: str, value: float | None, goal: float, at_most: bool = False,
            kernels: float | None = None) -> None:
        if value is not None:
            out.append({"target": what, "value": value, "goal": goal,
                        "met": value <= goal if at_most else value >= goal, "kernels_only": kernels})

    for cell in result["cells"]:
        v, where = cell["variants"], f"{cell['recipe']} {cell['size']}px"
        if cell["composition"].get("feat"):
            add(f"engine / naive step, {where}", v["engine"]["x_naive"], 3.0)
        fp32 = v.get("engine fp32") or (v["engine"] if v["engine"]["precision"] == "fp32" else None)
        bf16 = v.get("engine bf16") or (v["engine"] if v["engine"]["precision"] == "bf16" else None)
        if cell["size"] in (64, 128):
            add(f"MFU fp32 of the fp32 matmul peak, {where}", fp32 and fp32["mfu_fp32"], 0.8,
                kernels=fp32 and fp32.get("mfu_kernels"))
            add(f"MFU bf16 of the bf16 matmul peak, {where}", bf16 and bf16["mfu_bf16"], 0.65,
                kernels=bf16 and bf16.get("mfu_kernels"))
        if cell["recipe"] != "default":
            add(f"default precision / plain fp32 loop (images/s), {where}", v["engine"]["x_plain"], 1.5)
    for name, r in (result.get("inference") or {}).items():
        p = r.get("sizes", {}).get("512", {})
        if "stylize_vs_eager" in p and p.get("stylize_path", "").startswith("stylezoo"):
            add(f"stylize latency / eager fp32 at 512px, {name}", p["stylize_vs_eager"], 0.6, at_most=True)
    return out


STEP_GOAL, PEER_GOAL, EVAL_GOAL, STYLIZE_GOAL = 1.15, 2.0, 1.5, 0.8


def targets29(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 29's targets, each with its measured ratio, its goal and whether it is met (None: not measured)."""
    out: list[dict[str, Any]] = []

    def add(what: str, value: float | None, goal: float, at_most: bool, note: str = "") -> None:
        met = None if value is None else (value <= goal if at_most else value >= goal)
        out.append({"target": what, "value": value, "goal": goal, "at_most": at_most, "met": met, "note": note})

    for cell in result.get("cells", []):
        if cell["size"] in (128, 256):
            e = cell["variants"]["engine"]
            ratio = e["step_ms"] / e["kernel_ms"] if e.get("kernel_ms") else None
            add(f"step / its conv+mm alone, {cell['recipe']} {cell['size']}px ({e['precision']})", ratio, STEP_GOAL,
                True, "" if ratio is not None else "no kernels-alone profile (CPU only)")
    for key, r in (result.get("peers") or {}).items():
        if "skipped" in r:
            add(f"stylezoo / reference images/s, {key}", None, PEER_GOAL, False, r["skipped"])
            continue
        default = next(v for k, v in r["rows"].items() if k.startswith("stylezoo default"))
        fp32 = r["rows"].get("stylezoo fp32")
        add(f"stylezoo / reference images/s, {r['what'].split(',')[0]}", default["x_reference"], PEER_GOAL, False,
            f"fp32 alone {fp32['x_reference']:.2f}x" if fp32 else "")
    ev = result.get("eval_speed")
    if ev:
        add(f"eval / its extractor passes, {ev['images']} pairs", ev["ratio"], EVAL_GOAL, True,
            f"{ev['eval_s']:.1f} s vs {ev['extractors_s']:.1f} s")
    st = result.get("stylize_folder")
    if st:
        add(f"stylize folder / bare forward images/s, {st['images']} x {st['side']}px", st["ratio"], STYLIZE_GOAL,
            False, f"{st['folder_images_per_s']:.2f} vs {st['forward_images_per_s']:.2f} img/s")
    return out


def print_targets29(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    rows = [c for c in result.get("cells", []) if c["size"] in (128, 256) and "other_ms" in c["variants"]["engine"]]
    if rows:
        t = Table(title="where the engine's step goes (ms; ops timed one by one in a profiled step, the rest is "
                        "Python and dispatch)")
        cols = ("cell", "step", "conv+mm", "norms", "casts and copies", "optimizer", "other ops",
                "Python, dispatch", "data draw", "largest ops besides conv+mm")
        for col in cols:
            t.add_column(col, justify="left" if col == "cell" else "right", no_wrap=True)
        for c in rows:
            e = c["variants"]["engine"]
            o = e["other_ms"]
            rest = e["step_ms"] - e["kernel_ms"] - sum(o.values())
            t.add_row(f"{c['recipe']} {c['size']}px", f"{e['step_ms']:.0f}", f"{e['kernel_ms']:.0f}",
                      *(f"{o.get(k, 0.0):.0f}" for k in ("norms", "casts and copies", "optimizer", "other ops")),
                      f"{rest:.0f}", f"{e['data_ms']:.1f}",
                      ", ".join(f"{k} {v:.0f}" for k, v in list(e.get("top_ops_ms", {}).items())[:4]))
        con.print(t)
    for r in (result.get("peers") or {}).values():
        if "rows" in r:
            t = Table(title=f"{r['what']}: medians of {r['steps']} interleaved steps")
            for col in ("variant", "step ms", "img/s", "x reference"):
                t.add_column(col, justify="left" if col == "variant" else "right", no_wrap=True)
            for name, v in r["rows"].items():
                t.add_row(name, f"{v['step_ms']:.0f}", f"{v['images_per_s']:.2f}", f"{v['x_reference']:.2f}")
            con.print(t)
    t = Table(title="targets (issue 29) on this machine")
    for col in ("target", "measured", "goal", "met", "note"):
        t.add_column(col, justify="left" if col in ("target", "note") else "right", no_wrap=True)
    for r in result.get("targets29", []):
        met = "-" if r["met"] is None else "[green]met[/]" if r["met"] else "[red]not met[/]"
        t.add_row(r["target"], _f(r["value"], ".2f"), ("<= " if r["at_most"] else ">= ") + f"{r['goal']:g}", met,
                  r["note"])
    con.print(t)
    if "device" in result.get("machine", {}) and not str(result["machine"]["device"]).startswith("cuda"):
        con.print("No GPU in this run: the targets above are this CPU's.")


@contextlib.contextmanager
def _cold_inductor_cache(on: bool) -> Iterator[str | None]:
    """With --compile: a fresh, empty inductor cache for the run, so "first step s" is what a first run pays,
    not what earlier benchmarks left on disk. A TORCHINDUCTOR_CACHE_DIR set by the caller is kept (and named)."""
    if not on or os.environ.get("TORCHINDUCTOR_CACHE_DIR"):
        yield os.environ.get("TORCHINDUCTOR_CACHE_DIR") if on else None
        return
    with tempfile.TemporaryDirectory(prefix="stylezoo-inductor-") as tmp:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tmp
        try:
            yield "fresh"
        finally:
            del os.environ["TORCHINDUCTOR_CACHE_DIR"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    ap.add_argument("--sizes", type=int, nargs="+", help="default 128 256 (issue 29's; --quick: 128)")
    ap.add_argument("--batch", type=int, help="override the recipes' batch sizes")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant (the median is reported)")
    ap.add_argument("--large-steps", type=int, default=3, help="timed steps above 128 px (at most --steps): "
                    "a 256 px step of the original recipe takes 7-12 s here, and its ratios move less than 128 px's")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least the first and the FLOP and "
                    "memory step)")
    ap.add_argument("--quick", action="store_true", help="128px only, 3 timed steps, inference at 256 only, "
                    "the reference comparisons at 3 steps without fast_neural_style at 256, eval on 48 pairs (150), "
                    "stylize on 20 photos (100), one timed round each (two)")
    ap.add_argument("--parts", nargs="+", default=list(PARTS), choices=list(PARTS),
                    help="what to measure (default: all): training cells, inference latency, the reference "
                    "implementations (benchmarks/peers.py), eval and stylize of a folder (benchmarks/pipelines.py)")
    ap.add_argument("--peers", help="pytorch/examples checkout (default ../shared/peers/pytorch-examples)")
    ap.add_argument("--ablation", action="store_true", help="also time the engine with each fast path switched")
    ap.add_argument("--compile", action="store_true", help="also time the engine under torch.compile")
    ap.add_argument("--no-naive", action="store_true", help="skip the naive step (slow at large sizes)")
    ap.add_argument("--naive-steps", type=int, default=3, help="timed steps of the naive step (the first ones "
                    "of the interleaved rounds)")
    ap.add_argument("--naive-max-size", type=int, default=128,
                    help="the naive step only up to this size (at 256 px it took 12-44 s a step here)")
    ap.add_argument("--no-inference", action="store_true", help="skip the inference latencies")
    ap.add_argument("--inference-sizes", type=int, nargs="+", default=[512],
                    help="default 512 (issue 7's stylize latency target; add 256 for the smaller column)")
    ap.add_argument("--threads", type=int, help="torch threads (default: torch's default)")
    ap.add_argument("--device", default="auto", help="auto (cuda when available, else cpu), cpu, cuda, cuda:1 ...")
    ap.add_argument("--out", type=Path, default=Path("bench-results/speed.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.steps, args.inference_sizes = min(args.steps, 3), [256]
    args.sizes = args.sizes or ([128] if args.quick else [128, 256])
    if args.threads:
        torch.set_num_threads(args.threads)
    reg = Registry()
    device = pick_device(args.device)
    machine = _machine(device)
    result: dict[str, Any] = {"machine": machine, "steps": args.steps, "warmup": args.warmup,
                              "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "cells": []}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    wall = result["wall_s"] = {}  # seconds each part of this run took (what makes `make bench` long)
    with _cold_inductor_cache(args.compile) as cache:
        machine["inductor_cache"] = cache
        for recipe in args.recipes if "train" in args.parts else ():
            for size in args.sizes:
                print(f"measuring {recipe} at {size}px ...", flush=True)
                if args.compile:  # each cell compiles afresh (and no module code nears dynamo's recompile limit)
                    torch._dynamo.reset()
                t = time.perf_counter()
                result["cells"].append(measure_cell(reg, recipe, size, args))
                wall[f"{recipe} {size}px"] = time.perf_counter() - t
                args.out.write_text(json.dumps(result, indent=2, default=str))  # what is measured so far
    if not args.no_inference and "inference" in args.parts:
        print("measuring inference ...", flush=True)
        t = time.perf_counter()
        result["inference_sizes"] = args.inference_sizes
        result["inference"] = inference_latency(reg, args.inference_sizes, 2 if args.quick else 5, device)
        wall["inference"] = time.perf_counter() - t
    measure_issue29(result, args, reg)
    machine["loadavg_end"] = os.getloadavg()
    result["targets"] = targets(result)
    result["targets29"] = targets29(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, default=str))
    print_tables(result)
    print_targets29(result)
    print("wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in wall.items()) + f"; {sum(wall.values()) / 60:.1f} min")
    print(f"wrote {args.out}")


def measure_issue29(result: dict[str, Any], args: argparse.Namespace, reg: Registry) -> None:
    """The reference comparisons, eval and stylize of a folder (CPU; each part only when asked for)."""
    from stylezoo.benchmarks import peers, pipelines

    wall = result.setdefault("wall_s", {})
    if "peers" in args.parts:
        result["peers"] = {}
        for which in ("dcgan", "fns128") if args.quick else ("dcgan", "fns128", "fns256"):
            print(f"measuring the reference {which} ...", flush=True)
            t = time.perf_counter()
            result["peers"][which] = peers.compare(which, args.steps, peers.peers_dir(args.peers), reg)
            wall[f"reference {which}"] = time.perf_counter() - t
    rounds = 1 if args.quick else 2
    if "eval" in args.parts:
        print("measuring eval ...", flush=True)
        t = time.perf_counter()
        result["eval_speed"] = pipelines.eval_speed(48 if args.quick else 150, rounds)
        wall["eval"] = time.perf_counter() - t
    if "stylize" in args.parts:
        print("measuring stylize of a folder ...", flush=True)
        t = time.perf_counter()
        result["stylize_folder"] = pipelines.stylize_speed(20 if args.quick else 100, rounds)
        wall["stylize"] = time.perf_counter() - t


if __name__ == "__main__":
    main()
