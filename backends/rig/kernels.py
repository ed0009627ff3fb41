"""Kernels for the rig: fetch, configure, patch, build, cache (docs/kernel-model.md, "The kernel rig").

Two kinds, one table (``KERNELS``):

- built: Debian's ``linux-source-X.Y`` + ``FRAGMENT`` on top of ``make tinyconfig``,
  everything built in, plus the kernel's own iommufd selftests built from the
  same tree.  A kernel with ``base`` starts from a copy of the base kernel's
  tree and build directory, gets its patches, and rebuilds incrementally.
- stock: Debian's ``linux-image-*-amd64``; the modules the rig needs (VFIO,
  type1, vfio-pci, 9p, virtio-pci, ext4, loop) go into the initramfs in ``modules.dep`` order.

Cache: ``$VFIO_EMU_RIG_CACHE`` or ``${XDG_CACHE_HOME:-~/.cache}/vfio-emu/rig``;
one directory per kernel keyed by the Debian version, the config fragment's
hash and the patches' hash (built) or the module list's hash (stock); ``kernel.json`` in it marks a finished kernel, and
finishing one removes the other directories of the same kernel name.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Callable

from backends.errors import HostError, UsageError
from backends.rig import die_with_parent
from backends.rig.apt import Apt

PATCH_DIR = Path(__file__).parent / "patches"
LOG_TAIL = 40

# On top of ``make tinyconfig`` (x86_64); every line must stick (_configure() verifies).
# + CROSS_MEMORY_ATTACH: process_vm_readv/writev, behind LinuxHost.read_mem/write_mem.
FRAGMENT = """\
CONFIG_64BIT=y
CONFIG_SMP=y
CONFIG_PRINTK=y
CONFIG_BUG=y
CONFIG_TTY=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_KALLSYMS=y
CONFIG_MULTIUSER=y
CONFIG_POSIX_TIMERS=y
CONFIG_FUTEX=y
CONFIG_EPOLL=y
CONFIG_SIGNALFD=y
CONFIG_TIMERFD=y
CONFIG_EVENTFD=y
CONFIG_SHMEM=y
CONFIG_AIO=y
CONFIG_ADVISE_SYSCALLS=y
CONFIG_MEMBARRIER=y
CONFIG_RSEQ=y
CONFIG_FHANDLE=y
CONFIG_FILE_LOCKING=y
CONFIG_BINFMT_ELF=y
CONFIG_BINFMT_SCRIPT=y
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_DEVTMPFS=y
CONFIG_DEVTMPFS_MOUNT=y
CONFIG_PROC_FS=y
CONFIG_PROC_SYSCTL=y
CONFIG_SYSFS=y
CONFIG_TMPFS=y
CONFIG_TMPFS_POSIX_ACL=y
CONFIG_MEMFD_CREATE=y
CONFIG_CROSS_MEMORY_ATTACH=y
CONFIG_HUGETLBFS=y
CONFIG_TRANSPARENT_HUGEPAGE=y
CONFIG_UNIX98_PTYS=y
CONFIG_PCI=y
CONFIG_PCI_MSI=y
CONFIG_ACPI=y
CONFIG_X86_LOCAL_APIC=y
CONFIG_X86_IO_APIC=y
CONFIG_X86_X2APIC=y
CONFIG_NET=y
CONFIG_UNIX=y
CONFIG_INET=y
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO=y
CONFIG_VIRTIO_PCI=y
CONFIG_NET_9P=y
CONFIG_NET_9P_VIRTIO=y
CONFIG_NETWORK_FILESYSTEMS=y
CONFIG_9P_FS=y
CONFIG_9P_FS_POSIX_ACL=y
CONFIG_IOMMU_SUPPORT=y
CONFIG_INTEL_IOMMU=y
CONFIG_INTEL_IOMMU_DEFAULT_ON=y
CONFIG_IRQ_REMAP=y
CONFIG_IOMMU_PT_AMDV1=y
CONFIG_DEBUG_KERNEL=y
CONFIG_DEBUG_FS=y
CONFIG_RUNTIME_TESTING_MENU=y
CONFIG_FAULT_INJECTION=y
CONFIG_FAULT_INJECTION_DEBUG_FS=y
CONFIG_FAILSLAB=y
CONFIG_FAIL_PAGE_ALLOC=y
CONFIG_IOMMUFD=y
CONFIG_IOMMUFD_TEST=y
CONFIG_VFIO=y
CONFIG_VFIO_GROUP=y
CONFIG_VFIO_CONTAINER=y
CONFIG_VFIO_IOMMU_TYPE1=y
CONFIG_VFIO_PCI=y
CONFIG_VFIO_DEVICE_CDEV=y
# CONFIG_IOMMUFD_VFIO_CONTAINER is not set
CONFIG_DMA_SHARED_BUFFER=y
CONFIG_UDMABUF=y
"""

# Modules a stock Debian kernel needs in the initramfs (their dependencies come
# from modules.dep); a name that is built in (modules.builtin) is skipped.
# ext4 + loop: guest tests pin memory of a file on a disk file system
# (test_disk_fs.py); crc32c_generic is what ext4's metadata checksums load
# through the crypto API before 6.15 (a softdep, not in modules.dep).
STOCK_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "vfio_iommu_type1", "vfio_pci", "iommufd",
                 "crc32c_generic", "ext4", "loop")
STOCK_OPTIONAL = {"iommufd", "crc32c_generic"}   # modules only some configs have

SELFTESTS = ("iommufd", "iommufd_fail_nth")   # tools/testing/selftests/iommu/

# What a patch changes, as backends.kernel_profiles switch names; they join
# the kernel's features so guest tests can expect the patched behaviour.
PATCH_FEATURES = {"000-iommufd-map-file-write-access.mail": ("map_file_requires_fmode_write",)}


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One row of ``KERNELS``: where a kernel comes from and how it is made."""
    name: str
    suite: str                       # Debian suite the package comes from
    package: str                     # linux-source-X.Y (built) or linux-image-amd64 (stock)
    series: str                      # expected upstream X.Y
    patches: tuple[str, ...] = ()    # files in backends/rig/patches (mail text or diff)
    base: str | None = None          # built: start from this kernel's tree and build dir
    doc: str = ""

    @property
    def built(self) -> bool:
        return self.package.startswith("linux-source-")


KERNELS: dict[str, KernelSpec] = {k.name: k for k in (
    KernelSpec("iommufd-7.2", "sid", "linux-source-7.2", "7.2",
               doc="sid linux-source-7.2, tinyconfig + fragment (IOMMUFD, IOMMUFD_TEST, "
                   "VFIO type1 + cdev, intel-iommu, 9p)"),
    KernelSpec("iommufd-7.2+fix", "sid", "linux-source-7.2", "7.2",
               patches=("000-iommufd-map-file-write-access.mail",), base="iommufd-7.2",
               doc="iommufd-7.2 + the unmerged 'Require write access for writable MAP_FILE "
                   "mappings' patch (FMODE_WRITE, mapping_map_writable)"),
    KernelSpec("debian-6.1", "bookworm", "linux-image-amd64", "6.1",
               doc="Debian bookworm stock kernel + modules"),
    KernelSpec("debian-6.12", "bookworm-backports", "linux-image-amd64", "6.12",
               doc="Debian bookworm-backports stock kernel + modules"),
    KernelSpec("debian-7.2", "sid", "linux-image-amd64", "7.2",
               doc="Debian sid stock kernel + modules"),
)}


@dataclasses.dataclass
class Kernel:
    """A kernel ready to boot: what ``kernel.json`` records."""
    name: str
    dir: Path
    package: str                     # the Debian package it came from
    version: str                     # its Debian version, e.g. 7.2.13-1
    release: str                     # uname -r
    config_hash: str                 # sha256[:12] of the final .config
    patches: list[dict]              # [{"file", "subject", "sha256"}]
    features: list[str]              # iommufd, type1, selftests + PATCH_FEATURES
    bzimage: str
    modules: list[str]               # .ko files to insmod, in order (stock kernels)
    selftests: str | None = None
    timings: dict = dataclasses.field(default_factory=dict)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["dir"] = str(self.dir)
        return d

    @classmethod
    def load(cls, path: Path) -> "Kernel":
        d = json.loads(path.read_text())
        d["dir"] = Path(d["dir"])
        return cls(**d)

    def summary(self) -> dict:
        """What results name: the kernel, its version, config and patches."""
        return {"name": self.name, "package": self.package, "version": self.version,
                "release": self.release, "config_hash": self.config_hash,
                "patches": self.patches, "features": self.features}


def cache_root() -> Path:
    env = os.environ.get("VFIO_EMU_RIG_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vfio-emu" / "rig"


def spec(name: str) -> KernelSpec:
    try:
        return KERNELS[name]
    except KeyError:
        raise UsageError(f"unknown kernel {name!r}", where="--kernel",
                         valid=", ".join(KERNELS)) from None


def _sha(text: str | bytes, n: int = 12) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:n]


# --------------------------------------------------------------------------
# patches
# --------------------------------------------------------------------------

def mail_diff(text: str) -> str:
    """The unified diff in a patch mail, repaired into something ``patch -p1`` takes.

    Mail archives drop the leading space of context lines and turn tabs into
    spaces: lines inside a hunk that are not ``+``/``-``/``\\`` become context
    again, and each hunk header gets its line counts recomputed.
    ``fit_to_tree`` then restores the tree's exact lines and indentation.
    """
    lines = text.splitlines()
    try:
        start = next(i for i, ln in enumerate(lines) if ln.startswith("diff --git "))
    except StopIteration:
        raise UsageError("no 'diff --git' in the patch mail", where="patch") from None
    out: list[str] = []
    hunk: list[str] | None = None
    header = ""

    def flush():
        if hunk is None:
            return
        old = sum(1 for ln in hunk if ln[:1] in " -")
        new = sum(1 for ln in hunk if ln[:1] in " +")
        m = re.match(r"@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@(.*)", header)
        out.append(f"@@ -{m[1]},{old} +{m[2]},{new} @@{m[3]}")
        out.extend(hunk)

    for ln in lines[start:]:
        if ln.rstrip() == "--":
            break                                   # signature
        if ln.startswith(("diff --git ", "index ", "--- ", "+++ ", "new file", "deleted file")):
            flush()
            hunk = None
            out.append(ln)
        elif ln.startswith("@@ "):
            flush()
            hunk, header = [], ln
        elif hunk is not None:
            hunk.append(ln if ln[:1] and ln[:1] in "+-\\" else " " + ln)
    flush()
    while out and out[-1] == " ":
        out.pop()
    return "\n".join(out) + "\n"


def _indent_added(prev: list[str], line: str) -> str:
    """Kernel-style tab indentation for an added line whose mail lost it, from
    the lines before it in the new file: one more tab after ``{`` or a braceless
    ``if``/``for``/``while``/``else``, one less for ``}`` and after a braceless body."""
    text = line.strip()
    if not text:
        return ""
    lines = [p for p in prev if p.strip()]
    if not lines:
        return text
    def ind(s): return s[:len(s) - len(s.lstrip())]
    def braceless(s):
        s = s.strip()
        return s.startswith(("if ", "if(", "for ", "while ", "else")) and not s.endswith(("{", ";"))
    last = lines[-1]
    tabs = ind(last)
    if last.rstrip().endswith("{") or braceless(last):
        tabs += "\t"
    elif len(lines) > 1 and braceless(lines[-2]):
        tabs = tabs[:-1]
    if text.startswith("}"):
        tabs = tabs[:-1]
    return tabs + text


def fit_to_tree(diff: str, tree: Path) -> str:
    """``diff`` (from ``mail_diff``) with each hunk's context and removed lines
    replaced by the tree's own lines, found whitespace-insensitively, and added
    lines re-indented, so a plain ``patch -p1`` applies it exactly."""
    squash = lambda s: "".join(s.split())
    out: list[str] = []
    lines = diff.splitlines()
    target: list[str] = []
    i = 0
    while i < len(lines):
        ln = lines[i]
        if ln.startswith("+++ "):
            path = tree / ln[4:].split("/", 1)[1]
            if not path.is_file():
                raise UsageError(f"patch touches {path}, not in the tree", where=str(tree))
            target = path.read_text().splitlines()
            delta = 0
        if not ln.startswith("@@ "):
            out.append(ln)
            i += 1
            continue
        m = re.match(r"@@ -(\d+),\d+ \+\d+,\d+ @@(.*)", ln)
        j = i + 1
        while j < len(lines) and lines[j][:1] in (" ", "+", "-", "\\"):
            j += 1
        body, starts = lines[i + 1:j], []
        lead = next(n for n, b in enumerate(body + ["+"]) if b[:1] != " ")
        trail = next(n for n, b in enumerate(body[::-1] + ["+"]) if b[:1] != " ")
        for fuzz in range(4):        # like patch's fuzz: drop outer context lines
            cut = body[min(fuzz, lead):len(body) - min(fuzz, trail)]
            old = [squash(b[1:]) for b in cut if b[:1] in " -"]
            starts = [k for k in range(len(target) - len(old) + 1)
                      if [squash(t) for t in target[k:k + len(old)]] == old]
            if starts:
                body = cut
                break
        if not starts:
            raise UsageError(f"hunk {ln!r} does not match the tree", where=str(path))
        at = min(starts, key=lambda k: abs(k + 1 - int(m[1])))
        fitted, new_file, k = [], target[:at], at
        for b in body:
            if b[:1] in " -":
                fitted.append(b[0] + target[k])
                if b[0] == " ":
                    new_file.append(target[k])
                k += 1
            elif b[:1] == "+":
                fitted.append("+" + _indent_added(new_file, b[1:]))
                new_file.append(fitted[-1][1:])
            else:
                fitted.append(b)
        n_old = sum(1 for f in fitted if f[:1] in " -")
        n_new = sum(1 for f in fitted if f[:1] in " +")
        out.append(f"@@ -{at + 1},{n_old} +{at + 1 + delta},{n_new} @@{m[2]}")
        delta += n_new - n_old
        out.extend(fitted)
        i = j
    return "\n".join(out) + "\n"


def load_patch(fname: str) -> tuple[str, dict]:
    """(diff text, {"file", "subject", "sha256"}) of a file in backends/rig/patches."""
    path = PATCH_DIR / fname
    if not path.is_file():
        raise UsageError(f"no patch file {fname}", where=str(PATCH_DIR))
    text = path.read_text()
    subject = next((ln.split("]", 1)[-1].strip() for ln in text.splitlines()
                    if ln.startswith(("[PATCH", "Subject:"))), fname)
    diff = mail_diff(text)
    return diff, {"file": fname, "subject": subject, "sha256": _sha(diff, 64)}


# --------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------

class BuildError(HostError):
    """A step of making a kernel failed; ``tail`` holds the end of its log."""

    def __init__(self, message: str, *, log: Path, tail: str):
        super().__init__(message, where=str(log))
        self.tail = tail


class _Builder:
    """One kernel's directory, log and timings; runs steps with ``nice``."""

    def __init__(self, kdir: Path, progress: Callable[[str], None]):
        self.dir = kdir
        self.log = kdir / "build.log"
        self.progress = progress
        self.timings: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, what: str):
        self.progress(f"rig: {self.dir.parent.name}: {what} ...")
        t = time.monotonic()
        yield
        self.timings[what] = round(time.monotonic() - t, 1)
        self.progress(f"rig: {self.dir.parent.name}: {what}: {self.timings[what]} s")

    def run(self, *cmd, cwd: Path | None = None, nice: bool = True) -> None:
        with open(self.log, "a") as log:
            log.write(f"\n$ {' '.join(map(str, cmd))}\n")
            log.flush()
            argv = (["nice", "-n", "10"] if nice else []) + [str(c) for c in cmd]
            r = subprocess.run(argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        if r.returncode:
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-LOG_TAIL:])
            raise BuildError(f"{cmd[0]} {' '.join(map(str, cmd[1:3]))} ... failed "
                             f"(exit {r.returncode})", log=self.log, tail=tail)


def _lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w")
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def _newest_cached(kroot: Path, suffix: str) -> Path | None:
    done = [p for p in kroot.glob(f"*{suffix}") if (p / "kernel.json").exists()]
    return max(done, key=lambda p: (p / "kernel.json").stat().st_mtime, default=None)


def get(name: str, *, progress: Callable[[str], None] = lambda s: None,
        offline: bool = False) -> Kernel:
    """The kernel ``name``, built or fetched now unless the cache has it.

    ``offline`` (or an unreachable mirror) uses the newest cached one.
    Builds of the same kernel from several processes are serialized (flock).
    """
    sp = spec(name)
    root = cache_root()
    kroot = root / "kernels" / name
    suffix = ""
    if sp.built:
        suffix = "-c" + _sha(FRAGMENT)
        if sp.patches:
            suffix += "-p" + _sha("".join(load_patch(p)[1]["sha256"] for p in sp.patches))
    else:                            # a changed module list re-extracts
        suffix = "-m" + _sha(",".join(STOCK_MODULES))
    with _lock(root / f".lock-{name}"):
        version, why = None, "offline"
        if not offline:
            apt = Apt(root, sp.suite)
            if not apt.update():
                why = "Debian mirror unreachable"
            else:
                version = apt.candidate(sp.package)
                if version is None:
                    why = f"no {sp.package} in Debian {sp.suite}"
                elif not version.startswith(sp.series + "."):
                    why = f"Debian {sp.suite} now has {sp.package} {version}, not {sp.series}.x"
                    version = None
        if version is None:
            cached = _newest_cached(kroot, suffix)
            if cached is None:
                raise HostError(f"{why}, and no {name} cached", where=str(kroot),
                                valid="update KERNELS in backends/rig/kernels.py")
            progress(f"rig: {name}: {why}; using cached {cached.name}")
            return Kernel.load(cached / "kernel.json")
        kdir = kroot / (version + suffix)
        if (kdir / "kernel.json").exists():
            return Kernel.load(kdir / "kernel.json")
        kdir.mkdir(parents=True, exist_ok=True)
        b = _Builder(kdir, progress)
        if sp.built:
            k = _make_built(sp, version, b, progress)
        else:
            k = _make_stock(sp, version, b, Apt(root, sp.suite))
        k.timings = b.timings
        (kdir / "kernel.json").write_text(json.dumps(k.to_json(), indent=1) + "\n")
        for old in kroot.iterdir():      # older versions and configs of this kernel
            if old != kdir:
                shutil.rmtree(old, ignore_errors=True)
        return k


def _extract_source(sp: KernelSpec, version: str, b: _Builder, dest: Path) -> None:
    """linux-source-X.Y .deb -> .tar.xz -> tree at ``dest``."""
    debs = b.dir / "debs"
    with b.step("download"):
        deb = Apt(cache_root(), sp.suite).download(sp.package, version, debs)
    with b.step("extract"):
        dest.mkdir()
        b.run("sh", "-c", f"dpkg-deb --fsys-tarfile {deb} | tar -xO "
              f"./usr/src/{sp.package}.tar.xz | tar -xJ -C {dest} --strip-components=1")
    shutil.rmtree(debs)


def _copy_base(base: Kernel, b: _Builder, dest: Path) -> None:
    """The base kernel's tree at ``dest`` (hard links: ``patch`` replaces files,
    never writes through a link) and a real copy of its build directory with
    timestamps kept.  The build directory sits inside the tree, so kbuild's
    paths are relative (srctree ``..``) and stay right in the copy."""
    with b.step("copy base tree"):
        src = Path(base.dir) / "linux"
        b.run("sh", "-c", f"mkdir {dest} && cd {src} && "
              f"find . -mindepth 1 -maxdepth 1 ! -name build -exec cp -al {{}} {dest}/ \\; && "
              f"cp -a build {dest}/build", nice=False)


def _configure(linux: Path, b: _Builder) -> None:
    """tinyconfig, the fragment via scripts/config, olddefconfig, verify."""
    build = linux / "build"
    b.run("make", "-C", linux, "O=build", "tinyconfig")
    enable = [ln[len("CONFIG_"):-2] for ln in FRAGMENT.splitlines() if ln.endswith("=y")]
    disable = [ln.split()[1][len("CONFIG_"):] for ln in FRAGMENT.splitlines()
               if ln.endswith("is not set")]
    b.run(linux / "scripts" / "config", "--file", build / ".config",
          *[a for n in enable for a in ("--enable", n)],
          *[a for n in disable for a in ("--disable", n)])
    b.run("make", "-C", linux, "O=build", "olddefconfig")
    have = set((build / ".config").read_text().splitlines())
    missing = [ln for ln in FRAGMENT.splitlines() if ln.endswith("=y") and ln not in have]
    if missing:
        raise BuildError(f"config lines did not stick: {', '.join(missing)}",
                         log=build / ".config", tail="")


def _make_built(sp: KernelSpec, version: str, b: _Builder,
                progress: Callable[[str], None]) -> Kernel:
    linux = b.dir / "linux"
    base = get(sp.base, progress=progress) if sp.base else None
    if not linux.exists():
        tmp = b.dir / "linux.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if base:
            _copy_base(base, b, tmp)
        else:
            _extract_source(sp, version, b, tmp)
        patches = []
        for p in sp.patches:
            diff, meta = load_patch(p)
            with b.step(f"patch {p}"):
                fixed = (b.dir / p).with_suffix(".diff")
                fixed.write_text(fit_to_tree(diff, tmp))
                b.run("patch", "-p1", "--no-backup-if-mismatch", "-i", fixed, cwd=tmp,
                      nice=False)
            patches.append(meta)
        (b.dir / "patches.json").write_text(json.dumps(patches))
        tmp.rename(linux)
    patches = json.loads((b.dir / "patches.json").read_text())
    build = linux / "build"
    if not base:                         # a copied build dir has the base's checked .config
        with b.step("configure"):        # again on a resumed build: a no-op for make
            _configure(linux, b)
    jobs = str(os.cpu_count() or 1)
    with b.step("make bzImage"):
        b.run("make", "-C", linux, "O=build", f"-j{jobs}", "bzImage")
    with b.step("headers + selftests"):
        b.run("make", "-C", linux, "O=build", "headers")
        st = b.dir / "selftests"
        st.mkdir(exist_ok=True)
        for t in SELFTESTS:
            b.run("gcc", "-Wall", "-O2", "-Wno-unused-function", "-D_GNU_SOURCE=", "-isystem",
                  build / "usr" / "include", "-I", linux / "tools/testing/selftests",
                  "-o", st / t, linux / f"tools/testing/selftests/iommu/{t}.c",
                  "-lcap", "-lpthread")
    release = (build / "include/config/kernel.release").read_text().strip()
    config = (build / ".config").read_text()
    bz = b.dir / "bzImage"
    shutil.copy2(build / "arch/x86/boot/bzImage", bz)
    return Kernel(sp.name, b.dir, sp.package, version, release, _sha(config), patches,
                  _features(config) + ["selftests"] +
                  [f for p in sp.patches for f in PATCH_FEATURES.get(p, ())],
                  str(bz), [], str(b.dir / "selftests"))


def _features(config: str) -> list[str]:
    """What the rig's tests can use on a kernel with this .config."""
    on = {ln.split("=")[0] for ln in config.splitlines() if ln.endswith(("=y", "=m"))}
    feats = []
    if "CONFIG_VFIO_IOMMU_TYPE1" in on:
        feats.append("type1")
    if {"CONFIG_IOMMUFD", "CONFIG_VFIO_DEVICE_CDEV"} <= on:
        feats.append("iommufd")
    return feats


# --------------------------------------------------------------------------
# stock Debian kernels
# --------------------------------------------------------------------------

def modules_closure(moddir: Path, names: tuple[str, ...],
                    optional: set[str] = frozenset()) -> list[str]:
    """Module paths (relative to ``moddir``) to insmod, dependencies first, from
    ``modules.dep``; names in ``modules.builtin`` are skipped."""
    norm = lambda p: re.sub(r"\.ko(\.xz|\.zst|\.gz)?$", "", os.path.basename(p)).replace("-", "_")
    deps: dict[str, tuple[str, list[str]]] = {}
    for ln in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = ln.partition(":")
        deps[norm(mod)] = (mod, rest.split())
    builtin = {norm(ln) for ln in (moddir / "modules.builtin").read_text().split()}
    order: list[str] = []

    def visit(path: str):
        for d in reversed(deps[norm(path)][1]):
            visit(d)
        if path not in order:
            order.append(path)

    for n in names:
        if n in builtin:
            continue
        if n not in deps:
            if n in optional:
                continue
            raise HostError(f"module {n} neither built in nor in modules.dep", where=str(moddir))
        visit(deps[n][0])
    return order


def _make_stock(sp: KernelSpec, version: str, b: _Builder, apt: Apt) -> Kernel:
    """linux-image-amd64 -> its linux-image-<release> package -> vmlinuz + the modules."""
    image = next((d for d in apt.depends(sp.package) if d.startswith("linux-image-")), None)
    if image is None:
        raise HostError(f"{sp.package} {version} depends on no linux-image-*",
                        where=f"Debian {sp.suite}")
    # 7.x splits the image into linux-{binary,modules,base}-<release> packages
    suffix = image.removeprefix("linux-image-")
    pkgs = [image] + [d for d in apt.depends(image) if d.startswith("linux-") and
                      d.endswith("-" + suffix)]
    tmp = b.dir / "deb.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    with b.step("download"):
        debs = [apt.download(p, apt.candidate(p) or version, tmp) for p in pkgs]
    with b.step("extract + depmod"):
        root = tmp / "root"
        for deb in debs:
            b.run("dpkg-deb", "-x", deb, root, nice=False)
        mods = root / "lib" / "modules"
        if not mods.exists():                         # merged-/usr packages
            mods = root / "usr" / "lib" / "modules"
            (root / "lib").mkdir(exist_ok=True)
            (root / "lib" / "modules").symlink_to(mods)
        release = next(mods.iterdir()).name
        b.run("depmod", "-b", root, release, nice=False)
        moddir = mods / release
        order = modules_closure(moddir, STOCK_MODULES, STOCK_OPTIONAL)
        out = b.dir / "modules"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        names = []
        for rel in order:
            src = moddir / rel
            name = re.sub(r"\.(xz|zst|gz)$", "", src.name)
            if src.suffix == ".xz":
                b.run("sh", "-c", f"xz -dc {src} > {out / name}", nice=False)
            elif src.suffix == ".zst":
                b.run("zstd", "-q", "-d", src, "-o", out / name, nice=False)
            elif src.suffix == ".gz":
                b.run("sh", "-c", f"gzip -dc {src} > {out / name}", nice=False)
            else:
                shutil.copy2(src, out / name)
            names.append(name)
        # /boot/{config,vmlinuz}-<release> before 7.x, then in the modules directory
        boot = root / "boot" if (root / "boot").is_dir() else None
        config = (boot / f"config-{release}" if boot else moddir / "config").read_text()
        shutil.copy2(boot / f"vmlinuz-{release}" if boot else moddir / "vmlinuz",
                     b.dir / "bzImage")
    shutil.rmtree(tmp)
    return Kernel(sp.name, b.dir, image, apt.candidate(image) or version, release,
                  _sha(config), [], _features(config), str(b.dir / "bzImage"),
                  [str(out / n) for n in names], None)
