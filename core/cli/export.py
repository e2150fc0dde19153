"""`stylezoo export`: a checkpoint's generator to ONNX or TorchScript, kept only if its outputs match."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def export_cmd(
    checkpoint: Annotated[Path, typer.Argument(help="A .safetensors checkpoint or a run directory.")],
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", help="onnx or torchscript (default: from -o's suffix, else onnx).")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="The exported file (default: beside the checkpoint).")] = None,
    tolerance: Annotated[float | None, typer.Option(
        "--tolerance", help="Largest accepted max abs difference vs PyTorch ([-1, 1] units); default 1e-4, or 4x the "
        "model's own fp32 error if larger.")] = None,
    ema: Annotated[bool, typer.Option(
        "--ema/--no-ema", help="Use the checkpoint's generator weight average (runs trained with train.ema) when it "
        "has one; --no-ema: the raw trained weights.")] = True,
) -> None:
    """Export the generator with dynamic batch (and height/width) and check it against PyTorch on real images.

    The file appears only if the exported model's outputs match the PyTorch generator's within --tolerance
    on two input sizes; the measured differences are printed and stored in FILE.parity.json.
    """
    from ..use.export import export, format_of, parity_path
    from ..use.stylizer import checkpoint_path

    if out is None:
        kind = fmt.lower() if fmt else "onnx"
        src = checkpoint_path(checkpoint)
        out = src.with_suffix(".onnx" if kind == "onnx" else ".torchscript")
    fmt = format_of(out, fmt)
    report = export(checkpoint, fmt, out, tolerance=tolerance, ema=ema)
    table = Table(title=f"{escape(report.generator)} -> {fmt}: parity with PyTorch")
    for col in ("input", "max abs diff", "mean abs diff"):
        table.add_column(col, justify="right")
    for c in report.cases:
        table.add_row("x".join(map(str, c.input_shape)), f"{c.max_abs_diff:.3g}", f"{c.mean_abs_diff:.3g}")
    con = Console(highlight=False)
    con.print(table)
    con.print(f"[green]parity ok[/]: {escape(report.summary())}")
    con.print(f"wrote {escape(str(out))} and {escape(str(parity_path(out)))}")
    if report.size_multiple > 1:
        con.print(f"[yellow]note:[/] {escape(report.generator)} is built for heights and widths that are multiples of "
                  f"{report.size_multiple}; pad other sizes (reflection) and crop the output back, as `stylezoo "
                  "stylize` does (gen/unet's export fails on other sizes). parity.json records it as size_multiple.")


def register(app: typer.Typer) -> None:
    app.command("export")(export_cmd)
