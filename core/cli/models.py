"""`stylezoo models`: the trained models shipped in the package (registry.toml's [models.*])."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

out = Console(highlight=False)


def _time(seconds: float) -> str:
    return "-" if not seconds else f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _score(scores: dict[str, float], key: str) -> str:
    return f"{scores[key]:.3f}" if key in scores else "-"


def models_cmd(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """List the trained models shipped with stylezoo: use one with `stylezoo stylize PHOTO --model NAME`.

    style ratio: the outputs' Gram distance to the painting over the unchanged inputs' (lower: more of the
    style); SSIM: the outputs' structure against the inputs' (1: unchanged). Both on held-out images."""
    from ..use.shipped import shipped_models

    models = shipped_models()
    if as_json:
        typer.echo(json.dumps([m.card() for m in models.values()], indent=2))
        return
    table = Table(title="stylezoo models", caption="stylezoo stylize PHOTO --model NAME [-o OUT]  "
                  "(style ratio: lower = more style; SSIM: 1 = structure kept; on held-out images)")
    for col in ("name", "what", "style", "training data", "steps", "time", "style ratio", "SSIM"):
        table.add_column(col, overflow="fold", justify="right" if col in ("steps", "style ratio", "SSIM") else "left",
                         no_wrap=col in ("name", "steps", "time"))
    for m in models.values():
        table.add_row(*(escape(v) for v in (m.name, f"{m.description}, {m.gen}", m.style, m.training_data,
                                             str(m.steps or "-"), _time(m.train_s),
                                             _score(m.scores, "style_ratio"), _score(m.scores, "content_ssim"))))
    out.print(table)


def register(app: typer.Typer) -> None:
    app.command("models")(models_cmd)
