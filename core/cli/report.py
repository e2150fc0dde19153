"""`stylezoo report RUN_DIR`: rebuild a run's self-contained report.html (core/evaluation/report.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console


def report_cmd(
    run: Annotated[Path, typer.Argument(help="A run directory (the folder `stylezoo run` wrote).")],
) -> None:
    """Rebuild RUN_DIR/report.html: config, loss and metric curves, samples and the eval table in one file."""
    from ..evaluation.report import write_report

    out = write_report(run)
    Console(highlight=False).print(f"[green]wrote[/] {out} ({out.stat().st_size / 1e6:.1f} MB; open it in a browser)")


def register(app: typer.Typer) -> None:
    app.command("report")(report_cmd)
