"""The `stylezoo` command line: a thin typer layer over the Python API.

Each command lives in its own module here and is listed in COMMANDS. Errors a user can fix
(`StylezooError`) print one line to stderr and exit non-zero (2 for usage errors); a traceback appears
only with STYLEZOO_DEBUG=1.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from ..errors import StylezooError

COMMANDS: tuple[str, ...] = ("catalog", "models", "run", "weights", "transfer", "eval", "report", "stylize", "export",
                             "serve")


def report_error(err: BaseException | str) -> None:
    """Print a user-facing error to stderr (one line, no traceback)."""
    from rich.console import Console
    from rich.markup import escape

    # escaped: messages quote user text and TOML such as [losses], which rich would take for markup
    # emoji=False: a path such as my:fire:pic.jpg must not print as an emoji
    from .messages import printable

    text = escape(printable(str(err)))
    Console(stderr=True, highlight=False, soft_wrap=True, emoji=False).print(f"[bold red]error:[/] {text}", markup=True)


class _Group(TyperGroup):
    def invoke(self, ctx: Any) -> Any:  # a click Context: click's own, or the copy that newer typer versions vendor
        try:
            return super().invoke(ctx)
        except StylezooError as e:
            if os.environ.get("STYLEZOO_DEBUG") == "1":
                raise
            report_error(e)
            _note_for_launcher(str(e))
            raise typer.Exit(e.exit_code) from None
        except OSError as e:  # the disk or the file system said no (permissions, a file where a folder goes, ...)
            if os.environ.get("STYLEZOO_DEBUG") == "1":
                raise
            report_error(os_error_message(e))
            _note_for_launcher(os_error_message(e))
            raise typer.Exit(1) from None


def _note_for_launcher(message: str) -> None:
    """A worker of `stylezoo run --nproc N` leaves its error for the launcher, which reports it once."""
    if os.environ.get("STYLEZOO_LAUNCH_DIR"):
        from ..runtime.distributed import note_worker_error

        note_worker_error(message)


def os_error_message(e: OSError) -> str:
    """One line for an operating-system error: what failed on which file, and what to do."""
    import errno

    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None) or "a file"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"No space left on the device while writing {where}. Free some disk space or write elsewhere (--out)."
    what = e.strerror or str(e) or type(e).__name__
    return (f"{what}: {where}. Check that the path exists, is the right kind (file or folder) and is writable "
            "(STYLEZOO_DEBUG=1 shows where it happened).")


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
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        app(prog_name="stylezoo")
        return
    # A torchrun worker. Its process group is left inside the command; at interpreter shutdown a thread
    # of the distributed runtime could still be torn down while joinable (std::terminate, "terminate called
    # without an active exception": seen in 1 of 4 two-process runs here, after all files were written),
    # which torchrun reports as a failed worker. Flush everything, then leave without the C++ teardown.
    code = 0
    try:
        app(prog_name="stylezoo")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    import logging

    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
