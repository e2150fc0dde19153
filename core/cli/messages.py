"""How the CLI prints what users read besides tables: warnings and notes on stderr, one line each."""

from __future__ import annotations

import logging


def log_to_stderr(level: int) -> None:
    """Warnings and notes as `LEVEL: message` lines on stderr, control characters escaped as in errors."""
    class Printable(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return printable(super().format(record))

    handler = logging.StreamHandler()
    handler.setFormatter(Printable("%(levelname)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])


def printable(text: str) -> str:
    """`text` with control characters (from file names or a checkpoint's metadata: escape sequences, carriage
    returns, new lines) shown escaped, so a message is one line and cannot rewrite the terminal."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
