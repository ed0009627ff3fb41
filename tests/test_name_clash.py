"""A downstream project with its own top-level ``backends`` package next to
vfio-emu's (vmm_model/_imports.py).  Each case runs a fresh interpreter in a
directory holding the user's package, as a user's script or test run would."""

from __future__ import annotations

import subprocess
import sys
import textwrap

PLAN = ("import vmm_model\n"
        "plan = vmm_model.plan_scenario('s02', backend='type1')\n"
        "print('plan', plan.ok, sys.modules['backends.base'].__file__.endswith("
        "'/backends/base.py'))\n")


def _project(tmp_path, *modules: str):
    pkg = tmp_path / "backends"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("KIND = 'storage'\n")
    for m in modules:
        (pkg / f"{m}.py").write_text(f"NAME = {m!r}\n")
    return tmp_path


def _run(cwd, code: str) -> subprocess.CompletedProcess:
    (cwd / "main.py").write_text("import sys\n" + textwrap.dedent(code))
    return subprocess.run([sys.executable, "main.py"], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_user_package_first_then_vfio_emu(tmp_path):
    _project(tmp_path, "qcow2")
    r = _run(tmp_path, "import backends.qcow2\n" + PLAN +
             "import backends\nprint('user', backends.KIND, backends.qcow2.NAME)\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["plan True True", "user storage qcow2"]


def test_vfio_emu_first_then_user_package(tmp_path):
    _project(tmp_path, "qcow2")
    r = _run(tmp_path, PLAN + "import backends.qcow2\nimport backends\n"
                              "print('user', backends.KIND, backends.qcow2.NAME)\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["plan True True", "user storage qcow2"]


def test_same_submodule_name_fails_naming_the_clash(tmp_path):
    _project(tmp_path, "errors")
    r = _run(tmp_path, "import backends.errors\n" + PLAN)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: vfio-emu: your top-level package 'backends' (")
    assert "both have a module 'backends.errors'" in last
    assert "rename yours (e.g. backends/errors.py) or your package" in last


def test_user_package_appearing_later_fails_naming_the_fix(tmp_path):
    (tmp_path / "proj").mkdir()
    _project(tmp_path / "proj", "qcow2")
    r = _run(tmp_path, PLAN + "sys.path.insert(0, 'proj')\nimport backends.qcow2\n")
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert "vfio-emu's was imported first, so 'backends.qcow2' cannot be found" in last
    assert "import your own 'backends' before vmm_model" in last
