"""The machine checks run with the suite: strict typing and lint (issue 12).

They run the real tools on the package, so a `None` that could crash a command
or a forgotten import fails the tests, not a user."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _tool(name: str) -> str:
    """The tool installed beside this Python (the test extra pins its version)."""
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def test_mypy_strict_passes() -> None:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_passes() -> None:
    proc = subprocess.run([_tool("ruff"), "check", "aggregator"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = subprocess.run(
        [_tool("ruff"), "format", "--check", "aggregator"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
