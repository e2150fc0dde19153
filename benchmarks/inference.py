"""Inference speed of one generator on this machine, every execution path side by side in one run.

    python -m stylezoo.benchmarks.inference [--sizes 256 512] [--repeats 5] [--gen gen/encdec]
                                           [--checkpoint CKPT] [--no-compile] [--threads N]
                                           [--out bench-results/inference.json]

Batch 1, a real photo (data/samples/content/astronaut.jpg) centre-cropped to each size. Paths: eager fp32
(no_grad), torch.inference_mode, channels_last, bfloat16 autocast (with and without channels_last), bfloat16
weights (the module cast to bfloat16, bfloat16 input),
torch.compile (its compile time reported separately), ONNX Runtime (export time reported), and what
`stylezoo stylize` does by default (Stylizer: PyTorch at precision auto, bf16 where fast, for a few images;
ONNX Runtime fp32 for 16+ files, whose one-off export and parity check is reported as "stylezoo onnxruntime
load s"). Calls are interleaved round-robin so the ratios are measured under the same machine load; the table
shows medians. Each path's output is compared
with eager fp32: max and mean absolute difference in [-1, 1] units and in 8-bit levels of the saved image.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stylezoo.core.components.registry import Registry
from stylezoo.core.files.images import center_crop, open_image, pil_to_tensor, resize_short
from stylezoo.core.runtime.cpu_memory import keep_freed_memory
from stylezoo.core.use.export import SAMPLES, ort_session, write_onnx
from stylezoo.core.use.stylizer import Stylizer, load_generator

Fn = Callable[[Tensor], Tensor]


def _photo(size: int) -> Tensor:
    return pil_to_tensor(center_crop(resize_short(open_image(SAMPLES / "astronaut.jpg"), size), size))[None]


def _paths(model: nn.Module, compile_: bool, onnx_file: Path) -> tuple[dict[str, Fn], dict[str, float]]:
    """name -> x -> y (float32, CPU), plus one-off set-up times (export, ...)."""
    setup: dict[str, float] = {}
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)

    def eager(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model(x)

    def inference(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return model(x)

    def channels_last(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return cl(x.contiguous(memory_format=torch.channels_last)).contiguous()

    def bf16(x: Tensor) -> Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
            return model(x).float()

    def bf16_cl(x: Tensor) -> Tensor:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16):
            return cl(x.contiguous(memory_format=torch.channels_last)).float().contiguous()

    low = copy.deepcopy(model).to(torch.bfloat16)

    def bf16_weights(x: Tensor) -> Tensor:
        with torch.inference_mode():
            return low(x.to(torch.bfloat16)).float()

    paths: dict[str, Fn] = {"eager fp32": eager, "inference_mode": inference, "channels_last": channels_last,
                            "bf16 autocast": bf16, "bf16 + channels_last": bf16_cl, "bf16 weights": bf16_weights}
    if compile_:
        compiled = torch.compile(copy.deepcopy(model), dynamic=False)

        def comp(x: Tensor) -> Tensor:
            with torch.inference_mode():
                return compiled(x)

        paths["torch.compile"] = comp
    t = time.perf_counter()
    write_onnx(model, onnx_file)
    setup["onnx export s"] = time.perf_counter() - t
    sess = ort_session(onnx_file, threads=torch.get_num_threads())  # torch's thread budget; no spinning
    name = sess.get_inputs()[0].name
    paths["onnxruntime"] = lambda x: torch.from_numpy(sess.run(None, {name: x.numpy()})[0])
    return paths, setup


def _levels(a: Tensor, b: Tensor) -> tuple[float, float]:
    qa, qb = [((t.clamp(-1, 1) + 1) * 127.5).round() for t in (a, b)]
    d = (qa - qb).abs()
    return float(d.max()), float(d.mean())


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    reg = Registry()
    if args.checkpoint:
        model = load_generator(args.checkpoint, registry=reg).module.eval()
        default = Stylizer.load(args.checkpoint, device="cpu", registry=reg)
    else:
        model = reg.build(args.gen).eval()
        from stylezoo.core.use.stylizer import LoadedGenerator

        default = Stylizer(LoadedGenerator(model, args.gen, getattr(model, "family", "image"), {}, Path("-")),
                           device="cpu")
    paths: dict[str, Fn]
    with tempfile.TemporaryDirectory() as tmp:
        paths, setup = _paths(model, not args.no_compile, Path(tmp) / "model.onnx")
        paths[f"stylezoo default ({default.precision})"] = default.forward
        t = time.perf_counter()
        folder = Stylizer(default.loaded, device="cpu", backend="onnxruntime")  # what folders of 16+ files use
        setup["stylezoo onnxruntime load s"] = time.perf_counter() - t
        paths["stylezoo --backend onnxruntime"] = folder.forward
        result: dict[str, Any] = {"sizes": {}, "setup": setup}
        for size in args.sizes:
            x = _photo(size)
            first: dict[str, float] = {}
            for name, fn in paths.items():  # warm-up; the first compiled call is the compile
                t = time.perf_counter()
                fn(x)
                first[name] = time.perf_counter() - t
            times: dict[str, list[float]] = {n: [] for n in paths}
            for _ in range(args.repeats):
                for name, fn in paths.items():
                    t = time.perf_counter()
                    fn(x)
                    times[name].append(time.perf_counter() - t)
            ref = paths["eager fp32"](x)
            rows = {}
            base = statistics.median(times["eager fp32"])
            for name, fn in paths.items():
                y = fn(x).float()
                d = (y - ref).abs()
                lmax, lmean = _levels(y, ref)
                med = statistics.median(times[name])
                rows[name] = {"median_ms": med * 1e3, "min_ms": min(times[name]) * 1e3, "speedup_vs_eager": base / med,
                              "first_call_s": first[name], "max_abs_diff": float(d.max()),
                              "mean_abs_diff": float(d.mean()), "max_diff_8bit": lmax, "mean_diff_8bit": lmean}
            result["sizes"][str(size)] = rows
    return result


def _machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        flags = open("/proc/cpuinfo").read()
        bf16 = "avx512_bf16" in flags or "amx_bf16" in flags
    except (OSError, StopIteration):
        bf16 = False
    import onnxruntime

    # Stylizer and Trainer do this on the CPU, process-wide: every path measured here runs with it
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu_bf16": bf16,
            "torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "python": platform.python_version(),
            "commit": _commit(), "loadavg_start": os.getloadavg(), "keeps_freed_memory": keep_freed_memory()}


def _commit() -> str | None:
    """The stylezoo checkout's commit (short hash, '+' when it has uncommitted changes), or None."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(Path(__file__).resolve().parent), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        return (git("rev-parse", "--short", "HEAD")
                + ("+" if git("status", "--porcelain", "--untracked-files=no") else ""))
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gen", default="gen/encdec", help="generator with its default config (ignored with --checkpoint)")
    ap.add_argument("--checkpoint", help="benchmark a trained checkpoint instead")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to compile on few cores)")
    ap.add_argument("--threads", type=int, help="torch and onnxruntime threads (default: torch's default)")
    ap.add_argument("--out", type=Path, default=Path("bench-results/inference.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    machine = _machine()
    result = run(args)
    machine["loadavg_end"] = os.getloadavg()
    result = {"machine": machine, "gen": args.checkpoint or args.gen, "batch": 1, "repeats": args.repeats} | result
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    _print(result)
    print(f"wrote {args.out}")


def _print(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    m = result["machine"]
    table = Table(title=f"{result['gen']}, batch 1, {m['cpu']} ({m['torch_threads']} threads), medians of "
                        f"{result['repeats']}; load avg {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}")
    table.add_column("path", no_wrap=True)
    for size in result["sizes"]:
        table.add_column(f"{size}px ms", justify="right")
        table.add_column("x eager", justify="right")
    table.add_column("max|d| / mean|d| (at largest)", justify="right")
    table.add_column("8-bit max / mean", justify="right")
    table.add_column("first call s", justify="right")
    names = list(next(iter(result["sizes"].values())))
    last = list(result["sizes"].values())[-1]
    for n in names:
        cells = []
        for rows in result["sizes"].values():
            cells += [f"{rows[n]['median_ms']:.0f}", f"{rows[n]['speedup_vs_eager']:.2f}"]
        r = last[n]
        firsts = "/".join(f"{rows[n]['first_call_s']:.1f}" for rows in result["sizes"].values())
        cells += [f"{r['max_abs_diff']:.2g} / {r['mean_abs_diff']:.2g}",
                  f"{r['max_diff_8bit']:.0f} / {r['mean_diff_8bit']:.2f}", firsts]
        table.add_row(n, *cells)
    Console(width=170).print(table)
    print("set-up: " + ", ".join(f"{k} {v:.1f}" for k, v in result["setup"].items()))


if __name__ == "__main__":
    main()
