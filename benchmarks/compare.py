"""Compare two `make bench` results (bench-results/speed.json from two commits), cell by cell.

    python -m stylezoo.benchmarks.compare OLD.json NEW.json [--fail-slower 0.05]

For every (recipe, size, variant) present in both: images/s before and after (from the median steps), the
speed ratio (above 1 is faster), the MFU before and after, and whether the change is beyond the noise of
the two runs: per image, the new median outside the old run's fastest-to-slowest step range and the old
median outside the new one's. Machines, torch versions and thread counts are printed first: ratios between
different machines or loads say little, and one machine drifts between runs too (up to about 10% on the
2-core box): a change that moves the plain and naive loops as much as the engine is drift. The last
column, each variant's speed over the plain fp32 loop of its own run (interleaved in one process), is free
of that drift: it moves only when the engine's code does. With --fail-slower F, exits 1 when a cell is slower by
more than the fraction F beyond noise (a regression check between two runs on one machine). A file that is
missing or is not a speed result is refused in one line on stderr, with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

MACHINE_KEYS = ("cpu", "gpu", "device", "torch", "torch_threads", "commit")


class BadResult(ValueError):
    """A results file that cannot be compared: missing, not JSON, or not what benchmarks/speed.py writes."""


VARIANT_KEYS = ("samples_s", "step_ms", "images_per_s")


def load(path: Path) -> dict[str, Any]:
    """A speed.json, checked for every field `compare` and `main` read; BadResult (one line) otherwise."""
    def bad(why: str) -> BadResult:
        return BadResult(f"{path}: {why}; give two bench-results/speed.json files written by `make bench`.")

    try:
        result = json.loads(path.read_text())
    except OSError as e:
        raise bad(f"cannot be read ({e.strerror or type(e).__name__})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"is not JSON ({e})") from None
    if not isinstance(result, dict) or not isinstance(result.get("machine"), dict) \
            or not isinstance(result.get("cells"), list):
        raise bad("has no 'machine' and 'cells'")
    for c in result["cells"]:
        if not isinstance(c, dict) or not all(k in c for k in ("recipe", "size", "batch")) \
                or not isinstance(c.get("variants"), dict):
            raise bad("has a cell without recipe, size, batch and variants")
        for name, v in c["variants"].items():
            if not isinstance(v, dict) or not all(k in v for k in VARIANT_KEYS) or not v["samples_s"]:
                raise bad(f"variant {name!r} of {c['recipe']} {c['size']}px lacks one of {', '.join(VARIANT_KEYS)}")
    return result


def _cells(result: dict[str, Any]) -> dict[tuple[str, int, str], dict[str, Any]]:
    return {(c["recipe"], c["size"], name): v | {"batch": c["batch"]}
            for c in result["cells"] for name, v in c["variants"].items()}


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (recipe, size, variant) in both results."""
    a, b = _cells(old), _cells(new)
    rows = []
    for key in [k for k in a if k in b]:
        o, n = a[key], b[key]
        # seconds per image, so runs with different batch sizes compare too
        po, pn = ([s / r["batch"] for s in r["samples_s"]] for r in (o, n))
        mo, mn = o["step_ms"] / 1e3 / o["batch"], n["step_ms"] / 1e3 / n["batch"]
        beyond = not min(po) <= mn <= max(po) and not min(pn) <= mo <= max(pn)
        rows.append({"recipe": key[0], "size": key[1], "variant": key[2], "old_ips": o["images_per_s"],
                     "new_ips": n["images_per_s"], "speed": mo / mn, "old_mfu": o.get("mfu"),
                     "new_mfu": n.get("mfu"), "beyond_noise": beyond, "old_batch": o["batch"], "new_batch": n["batch"],
                     "old_x_plain": o.get("x_plain"), "new_x_plain": n.get("x_plain")})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m stylezoo.benchmarks.compare", description=__doc__.split("\n")[0])
    ap.add_argument("old", type=Path)
    ap.add_argument("new", type=Path)
    ap.add_argument("--fail-slower", type=float, metavar="F",
                    help="exit 1 when a cell is slower by more than this fraction, beyond noise")
    args = ap.parse_args(argv)
    try:
        old, new = load(args.old), load(args.new)
    except BadResult as e:
        print(f"{ap.prog}: error: {e}", file=sys.stderr)
        return 2
    con = Console(width=160)
    for label, r in (("old", old), ("new", new)):
        m = r["machine"]
        con.print(f"{label}: " + ", ".join(f"{k} {m[k]}" for k in MACHINE_KEYS if m.get(k) is not None)
                  + (f"; load average {m['loadavg_start'][0]:.1f} at the start" if m.get("loadavg_start") else ""))
    differs = [k for k in MACHINE_KEYS[:-1] if old["machine"].get(k) != new["machine"].get(k)]
    if differs:
        con.print(f"[yellow]The runs differ in {', '.join(differs)}: compare with care.[/]")
    rows = compare(old, new)
    if not rows:
        con.print("[red]No (recipe, size, variant) is in both results.[/]")
        return 1
    t = Table(title=f"{args.old} -> {args.new}: images/s from median step times")
    for col in ("recipe", "px", "variant", "old img/s", "new img/s", "speed new/old", "beyond noise", "MFU old -> new",
                "x plain fp32 old -> new"):
        t.add_column(col, justify="left" if col in ("recipe", "variant") else "right", no_wrap=True)
    slower = []
    for r in rows:
        mark = ""
        if r["beyond_noise"]:
            mark = "[green]faster[/]" if r["speed"] > 1 else "[red]slower[/]"
        if r["old_batch"] != r["new_batch"]:
            mark += f" (batch {r['old_batch']} -> {r['new_batch']})"
        mfu = "-" if r["old_mfu"] is None or r["new_mfu"] is None else f"{r['old_mfu']:.2f} -> {r['new_mfu']:.2f}"
        xp = ("-" if r["old_x_plain"] is None or r["new_x_plain"] is None
              else f"{r['old_x_plain']:.2f} -> {r['new_x_plain']:.2f}")
        t.add_row(r["recipe"], str(r["size"]), r["variant"], f"{r['old_ips']:.1f}", f"{r['new_ips']:.1f}",
                  f"{r['speed']:.2f}x", mark, mfu, xp)
        if args.fail_slower is not None and r["beyond_noise"] and r["speed"] < 1 - args.fail_slower:
            slower.append(f"{r['recipe']} {r['size']}px {r['variant']}: {r['speed']:.2f}x")
    con.print(t)
    if slower:
        con.print("[red]Slower beyond noise and the allowed fraction:[/] " + "; ".join(slower))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
