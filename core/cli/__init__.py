"""The `stylezoo` command line: a thin typer layer over the Python API.

Each command lives in its own module here and is listed in COMMANDS. Errors a user can fix
(`StylezooError`) print one line to stderr and exit non-zero (2 for usage errors); a traceback appears
only with STYLEZOO_DEBUG=1.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import click
import typer
from typer.core import TyperGroup

from ..errors import StylezooError

COMMANDS: tuple[str, ...] = ("catalog", "run", "stylize", "export", "eval", "report")


def report_error(err: BaseException) -> None:
    """Print a user-facing error to stderr (one line, no traceback)."""
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(f"[bold red]error:[/] {err}", markup=True)


class _Group(TyperGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except StylezooError as e:
            if os.environ.get("STYLEZOO_DEBUG") == "1":
                raise
            report_error(e)
            raise typer.Exit(e.exit_code) from None


app = typer.Typer(
    cls=_Group,
    name="stylezoo",
    help="A plugin-based model zoo for GAN-based image style transfer.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

for _mod in COMMANDS:
    importlib.import_module(f"{__name__}.{_mod}").register(app)


def main() -> None:
    """Console-script entry point."""
    app(prog_name="stylezoo")
