"""mypy on vfio-emu's public surface (vmm_model/__init__.py and the modules it
re-exports from that are the library's own) and on examples/downstream, as a VMM
team type-checks its suite against vfio-emu."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PUBLIC = ["vmm_model/__init__.py", "vmm_model/api.py", "vmm_model/plan_view.py",
          "vmm_model/policy_check.py", "vmm_model/pytest_plugin.py", "vmm_model/_imports.py"]
FLAGS = ["--ignore-missing-imports", "--follow-imports=silent", "--no-error-summary",
         "--show-error-codes", "--hide-error-context"]


def _mypy(args: list[str], cwd: Path, cache: Path) -> list[str]:
    env = dict(os.environ, MYPYPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(cache), *FLAGS, *args],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 1), r.stderr
    return r.stdout.splitlines()


def test_public_surface_is_typed(tmp_path):
    # A user's file that misuses the API: mypy must see the real types to catch it.
    misuse = tmp_path / "misuse.py"
    misuse.write_text("import vmm_model\n"
                      "plan: int = vmm_model.plan_scenario('s02')\n")
    out = _mypy(["--disallow-untyped-defs", *PUBLIC, str(misuse)], REPO, tmp_path / "cache")
    assert out == [f"{misuse}:2: error: Incompatible types in assignment (expression has type "
                   '"Plan", variable has type "int")  [assignment]']


def test_downstream_project_type_checks(tmp_path):
    down = REPO / "examples" / "downstream"
    out = _mypy(["--explicit-package-bases", "acme_vmm", "conftest.py", "tests"], down,
                tmp_path / "cache")
    assert out == []
