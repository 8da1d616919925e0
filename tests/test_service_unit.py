"""The systemd unit in contrib/ (issue 10 item 11): systemd itself reads it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

UNIT = REPO / "contrib" / "aggregator.service"


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    """systemd-analyze is part of systemd, on every Debian machine (CI's too); the
    unit's ExecStart points at this test's own aggregator so the check can find it."""
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze not found (Debian: systemd)"
    here = shutil.which("aggregator", path=str(Path(sys.executable).parent))
    assert here
    unit = tmp_path / "aggregator.service"
    unit.write_text(UNIT.read_text().replace("/opt/aggregator/bin/aggregator", here))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Unknown" not in proc.stderr and "ignoring" not in proc.stderr, proc.stderr


def test_the_install_steps_use_a_python_every_user_can_run() -> None:
    text = UNIT.read_text()
    assert "sudo /usr/bin/python3 -m venv /opt/aggregator" in text
    assert "ExecStart=/opt/aggregator/bin/aggregator run --config /etc/aggregator/config.yaml" in text
    assert "ProtectHome=true" in text  # and so the install steps must not put Python under a home directory
