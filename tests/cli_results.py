"""Shared by the CLI tests: run a command in-process and read its one-line error."""

from __future__ import annotations

from typing import Any

from typer.testing import CliRunner, Result

from stylezoo.core.cli import app


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(app, [str(a) for a in args])


def clean_error(result: Result, *fragments: str) -> str:
    """The one `error:` line of a command that failed as a user error should (no traceback), checked to hold
    each of `fragments`."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.output
    for f in fragments:
        assert f in lines[0], (f, lines[0])
    return lines[0]
