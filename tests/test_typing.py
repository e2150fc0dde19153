"""core/ type-checks clean: mypy, with the settings in pyproject.toml ([tool.mypy]), reports no error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_core_type_checks_clean() -> None:
    pytest.importorskip("mypy.api")  # in the dev extra, pinned
    # A child process: mypy.api.run in this one kept ~1 GB of module trees alive for the rest of the suite
    # and took as long again to free them at exit. Absolute paths and the repository's own cache: the
    # same check from any working directory.
    done = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                           "--cache-dir", str(ROOT / ".mypy_cache"), str(ROOT / "core")],
                          capture_output=True, text=True, timeout=300)
    status = done.returncode
    assert status == 0, f"mypy reports type errors in core/ (exit status {status}):\n{done.stdout}{done.stderr}"
