"""examples/downstream, a VMM team's suite, against vfio-emu's built wheel in a
fresh virtual environment outside the checkout (scripts/test-downstream.sh)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_downstream_suite_against_the_wheel():
    env = dict(os.environ, PYTHON=sys.executable)
    r = subprocess.run([str(REPO / "scripts" / "test-downstream.sh"), "-q", "-p", "no:randomly"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    assert any(line.startswith("test-downstream: built vfio_emu-") and line.endswith(".whl")
               for line in lines)
    assert any("/venv/lib/" in line and "vmm_model/__init__.py" in line for line in lines)
    assert lines[-1].startswith("36 passed, 1 skipped")
