"""Progress of long commands on stderr: a rich bar in a terminal, plain lines in a log file or CI."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.markup import escape

from .messages import printable

err = Console(stderr=True, highlight=False)


class StepProgress:
    """`with StepProgress("train") as update: ... update(step, total, text)`.

    The bar starts at the first update, so an error raised while setting up prints alone. Where stderr is
    not a terminal (or with `plain=True`, the commands' --quiet) it prints one line every `every` steps
    instead of a bar that a log would cut at 80 columns.
    """

    def __init__(self, label: str, *, plain: bool = False, every: int = 10) -> None:
        self.label, self.every = label, every
        self.plain = plain or not err.is_terminal
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> Callable[[int, int, str], None]:
        return self.update

    def update(self, step: int, total: int, text: str = "") -> None:
        """Report `step` of `total` with a short text (losses, speed)."""
        if self.plain:
            if step == 1 or step % self.every == 0 or step == total:
                # whole lines in logs
                err.print(f"{self.label} {step}/{total} {escape(printable(text))}".rstrip(), soft_wrap=True)
            return
        if self.bar is None:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(TextColumn(f"[bold]{escape(printable(self.label))}"), BarColumn(bar_width=24),
                                MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                TextColumn("{task.fields[text]}"),
                                console=err, transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=total, completed=step - 1, text="")  # resumed runs
        # the loss text gets what the bar and its counts leave: cut, rather than squeezing the bar away
        room = max(12, err.width - len(self.label) - 2 * len(str(total)) - 52)
        text = text if len(text) <= room else text[:room - 1] + "…"
        self.bar.update(self.task, completed=step, total=total, text=escape(text))

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.bar is not None:
            self.bar.__exit__(kind, exc, tb)
