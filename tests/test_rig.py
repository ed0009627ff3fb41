"""The kernel rig from the host (backends/rig; docs/kernel-model.md, "The kernel rig").

``test_kernel_set`` (marker ``rig``: ``-m rig`` selects, ``-m "not rig"``
deselects) builds or reuses each kernel of backends/rig/kernels.py, boots it
under QEMU with the vIOMMU and edu, runs each test set that applies to it in
the guest and asserts that the guest's tests passed; the failure message
lists the failed tests and, when the guest died, its console tail.  It skips
only when this machine cannot run QEMU or build a kernel at all
(``VFIO_EMU_RIG_REQUIRED=1`` turns that skip into a failure).  Each run's
JSON document and whole console are kept in <cache>/results/.

The other tests are quick and unmarked: patch-mail repair, module order,
initramfs layout, argument errors, the timeout path.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backends.errors import HostError, UsageError
from backends.rig import kernels
from backends.rig import boot
from backends.rig.boot import check_sets, guest_python, run
from backends.rig.cli import describe
from backends.rig.guest import rigutil
from backends.rig.initramfs import make_initramfs
from backends.rig.sets import GUEST_DIR, SETS, TestSet

REPO = Path(__file__).resolve().parents[1]

COMBOS = [(k, s.name) for s in SETS.values() for k in s.kernels]
TOOLS = ("make", "gcc", "bison", "flex", "bc", "patch", "depmod", "dpkg-deb", "apt-get")


def missing_prerequisites() -> str | None:
    """Why the rig cannot run here at all, or None."""
    qemu = os.environ.get("VFIO_EMU_QEMU") or "qemu-system-x86_64"
    if shutil.which(qemu) is None:
        return f"no QEMU ({qemu}); run scripts/rig-deps.sh"
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing or not os.path.exists("/bin/busybox") or \
            not os.path.exists("/usr/include/sys/capability.h"):
        return f"kernel build tools missing ({' '.join(missing) or 'busybox/libcap-dev'}); " \
               "run scripts/rig-deps.sh"
    try:
        guest_python()
    except HostError as e:
        return str(e)
    return None


@pytest.mark.rig
@pytest.mark.parametrize("kernel,set_name", COMBOS, ids=[f"{k}:{s}" for k, s in COMBOS])
def test_kernel_set(kernel, set_name):
    s = SETS[set_name]
    if not s.files:
        pytest.skip(f"test set {set_name} has no test files yet (backends/rig/sets.py)")
    why = missing_prerequisites()
    if why:
        (pytest.fail if os.environ.get("VFIO_EMU_RIG_REQUIRED") == "1" else pytest.skip)(why)
    try:
        k = kernels.get(kernel)
    except kernels.BuildError as e:
        pytest.fail(f"building {kernel}: {e}\n{e.tail}")
    out = kernels.cache_root() / "results"
    out.mkdir(parents=True, exist_ok=True)
    r = run(k, [s], edu=2 if set_name == "edu-dma" else 1, timeout=s.timeout,
            console_log=out / f"{kernel}--{set_name}.console")
    (out / f"{kernel}--{set_name}.json").write_text(json.dumps(r.to_json(), indent=1) + "\n")
    print(describe(r))
    assert r.ok, describe(r)
    assert r.sets[0].counts["passed"] > 0, describe(r)
    if set_name == "real-qemu":
        # real QEMU's recordings against the model (docs/real-qemu-rig.md); the
        # artefact is what scripts/real_qemu_doc.py commits to fixtures/rig/
        # (disk-fs also records with the observer, but asserts in the guest)
        from vmm_model.rig_qemu import summarize, unexplained
        art = summarize(r.to_json())
        (out / f"{kernel}--{set_name}.artefact.json").write_text(
            json.dumps(art, indent=0, sort_keys=True) + "\n")
        bad = unexplained(art)
        assert not bad, "real QEMU and the model differ:\n" + "\n".join(bad)


# ------------------------------------------------------------------ quick tests

MAIL = """[PATCH] demo: Something

---
diff --git a/f.c b/f.c
index 1..2 100644
--- a/f.c
+++ b/f.c
@@ -1,8 +1,9 @@ int f(void)

{
int x;
+ int y;

if (x)
- return 1;
+ return 2;
return 0;
}
-- 
2.43.0
"""
TREE_FILE = "int f(void)\n\n{\n\tint x;\n\n\tif (x)\n\t\treturn 1;\n\treturn 0;\n}\n"


def test_mail_diff_is_repaired_against_the_tree_and_applies(tmp_path):
    (tmp_path / "f.c").write_text(TREE_FILE)
    diff = kernels.fit_to_tree(kernels.mail_diff(MAIL), tmp_path)
    assert "+\tint y;\n" in diff and "+\t\treturn 2;\n" in diff and "2.43.0" not in diff
    (tmp_path / "p.diff").write_text(diff)
    subprocess.run(["patch", "-p1", "-s", "-i", "p.diff"], cwd=tmp_path, check=True)
    assert (tmp_path / "f.c").read_text() == \
        "int f(void)\n\n{\n\tint x;\n\tint y;\n\n\tif (x)\n\t\treturn 2;\n\treturn 0;\n}\n"


def test_seed_000_patch_fits_its_hunks():
    diff, meta = kernels.load_patch("000-iommufd-map-file-write-access.mail")
    assert meta["subject"] == "iommu/iommufd: Require write access for writable MAP_FILE mappings"
    assert diff.count("\n@@ ") == 3 and "+ if (!(file->f_mode & FMODE_WRITE))" in diff


def test_mail_hunk_that_matches_nothing_is_a_usage_error(tmp_path):
    (tmp_path / "f.c").write_text("something else\n")
    with pytest.raises(UsageError, match="does not match"):
        kernels.fit_to_tree(kernels.mail_diff(MAIL), tmp_path)


def test_modules_closure_orders_dependencies_first(tmp_path):
    (tmp_path / "modules.dep").write_text(
        "kernel/a/vfio-pci.ko.xz: kernel/a/vfio-pci-core.ko.xz kernel/a/vfio.ko.xz\n"
        "kernel/a/vfio-pci-core.ko.xz: kernel/a/vfio.ko.xz\n"
        "kernel/a/vfio.ko.xz:\nkernel/b/9p.ko: kernel/b/9pnet.ko\nkernel/b/9pnet.ko:\n")
    (tmp_path / "modules.builtin").write_text("kernel/c/virtio_pci.ko\n")
    assert kernels.modules_closure(tmp_path, ("virtio_pci", "vfio_pci", "9p", "vfio"), {"x"}) == [
        "kernel/a/vfio.ko.xz", "kernel/a/vfio-pci-core.ko.xz", "kernel/a/vfio-pci.ko.xz",
        "kernel/b/9pnet.ko", "kernel/b/9p.ko"]
    assert kernels.modules_closure(tmp_path, ("iommufd",), {"iommufd"}) == []
    with pytest.raises(Exception, match="neither built in"):
        kernels.modules_closure(tmp_path, ("iommufd",))


@pytest.mark.skipif(not os.path.exists("/bin/busybox"), reason="no busybox (scripts/rig-deps.sh)")
def test_initramfs_holds_init_busybox_console_and_module_order(tmp_path):
    ko = tmp_path / "vfio.ko"
    ko.write_bytes(b"\x7fELF-module")
    data = gzip.decompress(make_initramfs(tmp_path / "initrd.gz", [ko]).read_bytes())
    names, pos = [], 0
    while True:
        head = data[pos:pos + 110]
        assert head[:6] == b"070701"
        f = [int(head[6 + 8 * i:14 + 8 * i], 16) for i in range(13)]
        nsize, fsize = f[11], f[6]
        name = data[pos + 110:pos + 110 + nsize - 1].decode()
        pos = (pos + 110 + nsize + 3) & ~3
        body = data[pos:pos + fsize]
        pos = (pos + fsize + 3) & ~3
        if name == "TRAILER!!!":
            break
        names.append((name, oct(f[1]), body[:20]))
    by = {n: (m, b) for n, m, b in names}
    assert by["init"][0] == "0o100755" and by["init"][1].startswith(b"#!/bin/busybox sh")
    assert by["dev/console"][0] == "0o20600"
    assert by["modules.order"][1] == b"vfio.ko\n" and "lib/modules/vfio.ko" in by


def test_bad_arguments_are_one_line_usage_errors():
    cli = [sys.executable, "-m", "vmm_model.cli", "rig"]
    for args, text in ((["run", "--kernel", "nope", "--set", "probe"], "unknown kernel 'nope'"),
                       (["run", "--kernel", "debian-6.1", "--set", "selftests"],
                        "does not apply to kernel"),
                       (["run", "--kernel", "iommufd-7.2", "--set", "nope"], "unknown test set"),
                       (["build"], "name a kernel or give --all")):
        r = subprocess.run(cli + args, capture_output=True, text=True, cwd=REPO)
        assert r.returncode == 2 and r.stdout == "", (args, r)
        assert r.stderr.count("\n") == 1 and text in r.stderr, (args, r.stderr)
    with pytest.raises(UsageError, match="no test files yet"):
        check_sets("iommufd-7.2", [TestSet("empty", (), ("iommufd-7.2",))])


def test_every_set_has_its_files():
    """clients and differential (issue 7) are filled; every file exists."""
    assert SETS["clients"].files == ("test_clients_real.py",)
    assert SETS["differential"].files == ("test_differential.py",)
    assert all((GUEST_DIR / f).is_file() for s in SETS.values() for f in s.files)


@pytest.mark.parametrize("kernel,release,features,profile,iommufd", [
    ("iommufd-7.2", "7.2.13", {"type1", "iommufd", "selftests"}, "7.2", True),
    ("iommufd-7.2+fix", "7.2.13", {"type1", "iommufd", "selftests", "map_file_requires_fmode_write"},
     "7.2+fix", True),
    ("debian-6.1", "6.1.0-50-amd64", {"type1"}, "6.1", False),
    ("debian-6.12", "6.12.95+deb12-amd64", {"type1"}, "6.12", False),
    ("debian-7.2", "7.2.13+deb14-amd64", {"type1"}, "7.2", False)])
def test_differential_simulates_each_rig_kernel(kernel, release, features, profile, iommufd):
    """The differential set's SimHost profile per guest kernel (rigutil.sim_profile):
    the release's profile, +fix for the unmerged write-access patch
    (docs/kernel-model.md, "Unmerged patches"), no /dev/iommu or cdev without
    CONFIG_IOMMUFD (Debian's stock configs)."""
    assert kernel in kernels.KERNELS and kernel in SETS["differential"].kernels
    p = rigutil.sim_profile(kernel, release, features)
    assert (p.name, p.iommufd, p.vfio_cdev) == (profile, iommufd, iommufd)
    assert p.map_file_requires_fmode_write == kernel.endswith("+fix")


@pytest.mark.rig
def test_a_hung_guest_is_killed_and_its_console_shown():
    """A guest whose test never ends (backends/rig/guest/hang.py) is killed at the timeout:
    an error naming it, the console tail up to the hung set, no QEMU left."""
    why = missing_prerequisites()
    if why:
        pytest.skip(why)
    k = kernels.get("iommufd-7.2")
    hang = TestSet("hang", ("hang.py",), ("iommufd-7.2",))
    before = set(os.listdir("/proc"))
    r = run(k, [hang], timeout=60)
    assert not r.ok and "timed out after 60 s" in r.error and r.exit_status is None
    assert "RIG: set hang start" in r.console_tail
    assert "RIG: exit status" not in r.console_tail
    leftovers = []
    for pid in set(os.listdir("/proc")) - before:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"vfio-emu-rig-" in f.read():
                    leftovers.append(pid)
        except OSError:
            pass
    assert not leftovers


def test_the_guest_runs_the_sets_from_the_package_with_this_python(tmp_path, monkeypatch):
    """run.sh: cd to backends/rig/guest (its pytest.ini makes it the rootdir),
    this Python with the guest plugin on the set's files; the kernel command line
    binds the package root and the venv (once: nested paths are dropped) and the
    kernel directory back into the guest's view of the host."""
    k = kernels.Kernel("iommufd-7.2", tmp_path / "k", "linux-source-7.2", "7.2.13-1", "7.2.13",
                       "0" * 12, [], ["iommufd"], "bzImage", [])
    script = boot._run_script(k, [SETS["probe"]], tmp_path, [])
    assert f"cd {GUEST_DIR} || exit 125" in script
    assert f"{sys.executable} -m pytest" in script
    assert "-p backends.rig.guest_plugin" in script
    assert "test_probe_iommufd.py test_probe_type1.py" in script
    assert (GUEST_DIR / "pytest.ini").is_file()
    monkeypatch.setattr(boot, "PACKAGE_ROOT", Path(sys.prefix) / "lib" / "site-packages")
    assert boot.guest_binds(k) == [str(Path(sys.prefix).resolve()), str(tmp_path / "k")]
