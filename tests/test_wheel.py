"""What ships in the wheel works from the wheel (issue 13 item 8).

One wheel, built with ``pip wheel --no-deps`` from a copy of the
source tree (a build in the checkout would reuse a stale build/ directory), is
listed and then installed into a fresh venv; its commands run from a directory
outside the checkout.  Its runtime dependencies (construct, qemu.qmp, pexpect)
come from this test run's environment through a .pth file, so the venv holds a
plain install: no pytest, no hypothesis.  Building needs the build backend
(setuptools, wheel) from the package index, as any ``pip install .`` does.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from backends.rig.sets import SETS

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                ".hypothesis", ".pytest_cache", ".benchmarks")
RUNTIME = ("construct", "qemu", "pexpect", "ptyprocess")   # pyproject dependencies + pexpect's


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """Built once per run: xdist workers share it through their common base temp
    directory, the first one building under a lock (pytest-xdist's recipe)."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent                  # this run's directory, above popen-gwN
    with open(shared / "vfio-emu-wheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        dist = shared / "vfio-emu-wheel"
        if not list(dist.glob("vfio_emu-*.whl")):
            src = tmp_path_factory.mktemp("src") / "src"
            shutil.copytree(REPO, src, ignore=IGNORE)
            r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w",
                                str(dist), str(src)], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr
    (whl,) = dist.glob("vfio_emu-*.whl")
    return whl


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """A fresh venv with the wheel and, through deps.pth, the runtime deps only."""
    env = tmp_path_factory.mktemp("venv") / "v"
    venv.create(env, with_pip=False)
    r = subprocess.run([sys.executable, "-m", "pip", "--python", str(env / "bin" / "python"),
                        "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    deps = env / "deps"
    deps.mkdir()
    for name in RUNTIME:
        spec = importlib.util.find_spec(name)
        where = Path(spec.origin).parent if spec.origin else Path(list(spec.submodule_search_locations)[0])
        (deps / name).symlink_to(where, target_is_directory=True)
    (site,) = env.glob("lib/python*/site-packages")
    (site / "deps.pth").write_text(f"{deps}\n")
    return env


def _run(env: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run([str(env / "bin" / "vfio-emu"), *args], capture_output=True, text=True,
                          cwd=cwd, env=clean, stdin=subprocess.DEVNULL, timeout=60)


def test_wheel_holds_the_rig_data_the_shim_source_and_the_gallery(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    want = {"backends/rig/init.sh", "backends/rig/guest/pytest.ini", "backends/shim/vfio_shim.c",
            "backends/rig/vfio_observe.c",
            "backends/rig/guest/conftest.py", "backends/rig/guest/hosts.py",
            "backends/rig/guest/rigutil.py", "backends/rig/guest/steps.py"}
    want |= {f"backends/rig/guest/{f}" for s in SETS.values() for f in s.files}
    want |= {f"backends/rig/patches/{p.name}" for p in (REPO / "backends/rig/patches").iterdir()}
    want |= {f"vmm_model/gallery/{p.name}" for p in (REPO / "vmm_model/gallery").glob("*.toml")}
    assert want <= names, sorted(want - names)
    assert not [n for n in names if n.startswith(("tests/", "build/"))]


def test_installed_rig_list_finds_its_data_outside_the_checkout(installed, tmp_path):
    r = _run(installed, "rig", "list", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    guest = Path(doc["guest_dir"])
    assert guest.is_relative_to(installed) and (guest / "pytest.ini").is_file()
    assert {s["set"] for s in doc["sets"]} == set(SETS)
    assert all((guest / f).is_file() for s in doc["sets"] for f in s["files"])
    r = _run(installed, "rig", "run", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "--kernel" in r.stdout and "--set" in r.stdout, r.stderr


def test_installed_rig_run_says_what_it_needs(installed, tmp_path):
    """A plain install has no pytest: ``rig run`` names it and the pip command,
    in one line, before fetching or building any kernel."""
    r = _run(installed, "rig", "run", "--kernel", "iommufd-7.2", "--set", "probe",
             "--offline", cwd=tmp_path)
    python = installed / "bin" / "python"
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert r.stderr == (
        "vfio-emu: error: the rig runs its test sets with this Python's pytest and "
        f"hypothesis; pytest and hypothesis are not installed ({python}); valid: pip install "
        "'vfio-emu[test]' (a checkout: pip install -e '.[test]')\n")


def test_installed_plan_reads_the_gallery(installed, tmp_path):
    r = _run(installed, "plan", "s02", "--qemu", "10.1", "--kernel", "none", "--json",
             "--no-compare", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    (plan,) = json.loads(r.stdout)["plans"]
    assert plan["source"] == "gallery/s02-default-ram.toml" and plan["backend"] == "iommufd"


def test_installed_shim_source_is_where_the_builder_looks(installed, tmp_path):
    """``vfio-emu run`` compiles backends/shim/vfio_shim.c from the install."""
    r = subprocess.run([str(installed / "bin" / "python"), "-c",
                        "from backends.shim.build import SOURCE; print(SOURCE, SOURCE.is_file())"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=60)
    path, ok = r.stdout.split()
    assert r.returncode == 0 and ok == "True" and Path(path).is_relative_to(installed), r.stderr
