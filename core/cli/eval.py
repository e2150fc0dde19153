"""`stylezoo eval CHECKPOINT_OR_RUN_DIR`: score a trained generator (a thin layer over core/evaluation/evaluate.py)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..errors import UsageError
from .messages import printable

err = Console(stderr=True, highlight=False)


def eval_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A checkpoint (.safetensors) or a run directory (its newest).")],
    content: Annotated[str | None, typer.Option(
        "--content", help="Images to restyle (default: the run's). Image generators only.")] = None,
    style: Annotated[str | None, typer.Option(
        "--style", help="Style image(s): FILE or DIR (default: the run's).")] = None,
    reference: Annotated[str | None, typer.Option(
        "--reference", help="Paired references, matched to --content by file name.")] = None,
    data: Annotated[str | None, typer.Option(
        "--data", help="The real side of FID/KID (default: --style; noise generators and paired runs: the run's "
        "real/target images).")] = None,
    size: Annotated[int | None, typer.Option(
        "--size", help="Side of the restyled images (shorter side resized, centre crop; style images at twice it, at "
        "most 512). Default 256. Noise generators are scored at their own size, as in training: leave it out.",
        show_default=False)] = None,
    num: Annotated[int, typer.Option("--num", help="Samples to draw from a noise generator.")] = 64,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:1 ...")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    no_log: Annotated[bool, typer.Option(
        "--no-log", help="Do not append the results to the run's eval.jsonl.")] = False,
    ema: Annotated[bool, typer.Option(
        "--ema/--no-ema", help="Use the checkpoint's generator weight average (runs trained with train.ema) when it "
        "has one; --no-ema: the raw trained weights.")] = True,
    style_label: Annotated[list[str] | None, typer.Option(
        "--style-label", help="Label-conditioned generators (cin): NAME, or NAME:WEIGHT repeated, as in stylize; "
        "style_gram is then against those labels' style images. Reference-guided ones (adain) are conditioned on "
        "--style.")] = None,
    precision: Annotated[str, typer.Option(
        "--precision", help="The metric extractors' precision: auto (bf16 autocast where the device has fast bfloat16, "
        "as training), fp32 or bf16. Features are float32 before every metric; scores across precisions differ "
        "slightly.")] = "auto",
) -> None:
    """Score a generator: style (Gram) and content distances, SSIM, FID/KID on EfficientNet-Lite0 features,
    and paired distances with --reference. Results are appended to the run's eval.jsonl.

    A noise generator (dcgan) draws --num samples at its own size (another --size is refused) and takes no
    --content; its style images are taken as its in-run evaluation takes them, so the scores compare."""
    from ..evaluation.checkpoint_eval import evaluate_checkpoint, run_dir_of
    from ..files.checkpoint import atomic_write
    from ..runtime.devices import pick_device

    if num < 1:
        raise UsageError(f"--num must be >= 1, got {num}.")
    from .messages import log_to_stderr

    log_to_stderr(logging.WARNING)
    dev = str(pick_device(device))
    if dev == "cpu":  # as the Trainer and the Stylizer: extractor passes reuse freed memory, not fresh pages
        from ..runtime.cpu_memory import keep_freed_memory

        keep_freed_memory()
    res = evaluate_checkpoint(checkpoint, content=content, style=style, reference=reference, data=data,
                              size=size, num=num, device=dev, ema=ema, style_label=style_label,
                              precision=precision)
    record = res.record()
    run = run_dir_of(res.checkpoint)
    if run is not None and not no_log:
        log = run / "eval.jsonl"
        line = json.dumps(record) + "\n"
        old = log.read_text() if log.exists() else ""
        atomic_write(log, lambda tmp: tmp.write_text(old + line))
    if as_json:
        typer.echo(json.dumps(record, indent=2))
    else:
        print_table(record)
    for note in res.notes:
        err.print(f"[yellow]note:[/] {escape(printable(note))}")
    if run is not None and not no_log:
        err.print(f"appended to {run / 'eval.jsonl'}")
    elif run is None and not no_log:
        err.print(f"not logged: {res.checkpoint} is not inside a run folder (no eval.jsonl to append to); "
                  "--json prints the results to keep")


def print_table(record: dict[str, Any]) -> None:
    from ..ops.metrics import METRICS

    table = Table(title=f"eval: {escape(printable(record['checkpoint']))} "
                        f"(step {record['step']}, {record['n']} images)")
    for col in ("metric", "value", "better", "what it measures"):
        table.add_column(col, overflow="fold")
    for name, value in record["metrics"].items():
        m = METRICS.get(name)
        arrow = {"min": "lower", "max": "higher", None: ""}[m.direction if m else None]
        table.add_row(name, f"{value:.4g}", arrow, escape(m.description if m else ""))
    Console(highlight=False).print(table)


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_cmd)
