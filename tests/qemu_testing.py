"""Test helpers (not shipped): the memory configurations tested against real
QEMU binaries, a context manager that always ends QEMU and removes its
directory, and the transcript recorder for fixtures/qmp/.

    python tests/qemu_testing.py record fixtures/qmp    # needs both QEMUs
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager

from vmm_model.qemu.launcher import QemuProcess, find_qemu

MiB = 1 << 20

# name -> (QEMU args; files to create under the scratch dir: {name: size}).
# "{d}" is a private scratch directory on /dev/shm (tmpfs).
CONFIGS: dict[str, tuple[list[str], dict[str, int]]] = {
    "memfd-share-on-seal-on": (
        ["-m", "256M", "-object", "memory-backend-memfd,id=mem0,size=256M,share=on,seal=on",
         "-machine", "memory-backend=mem0"], {}),
    "memfd-share-off": (
        ["-m", "256M", "-object", "memory-backend-memfd,id=mem0,size=256M,share=off",
         "-machine", "memory-backend=mem0"], {}),
    "file-share-on": (
        ["-m", "256M", "-object",
         "memory-backend-file,id=mem0,size=256M,mem-path={d}/guest.ram,share=on",
         "-machine", "memory-backend=mem0"], {}),
    "file-share-off": (
        ["-m", "256M", "-object",
         "memory-backend-file,id=mem0,size=256M,mem-path={d}/guest.ram,share=off",
         "-machine", "memory-backend=mem0"], {}),
    "ram-share-on": (
        ["-m", "256M", "-object", "memory-backend-ram,id=mem0,size=256M,share=on",
         "-machine", "memory-backend=mem0"], {}),
    "default-m": (["-m", "128M"], {}),
    "pc-dimm": (
        ["-m", "128M,slots=2,maxmem=1G", "-object",
         "memory-backend-memfd,id=dimm0mem,size=64M", "-device",
         "pc-dimm,id=dimm0,memdev=dimm0mem"], {}),
    "readonly-file": (
        ["-m", "128M,slots=2,maxmem=1G", "-object",
         "memory-backend-file,id=romem,size=32M,mem-path={d}/ro.img,readonly=on",
         "-device", "pc-dimm,id=rodimm,memdev=romem"], {"ro.img": 32 * MiB}),
}

VERSIONS = ("7.2", "10.0")


@contextmanager
def scratch_dir():
    """A private directory on /dev/shm (tmpfs), removed afterwards (xdist-safe)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    d = tempfile.mkdtemp(prefix="vfio-emu-test-", dir=base)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def config_args(name: str, d: str) -> list[str]:
    args, files = CONFIGS[name]
    for fname, size in files.items():
        with open(os.path.join(d, fname), "wb") as f:
            f.truncate(size)
    return [a.replace("{d}", d) for a in args]


@contextmanager
def launched(version: str, config: str):
    """QEMU ``version`` running ``config`` (paused), with its QMP monitor."""
    binary, why = find_qemu(version)
    if binary is None:
        raise LookupError(why)
    with scratch_dir() as d, QemuProcess(binary, config_args(config, d)) as q, \
            q.monitor() as mon:
        yield q, mon, d


def record(outdir: str) -> list[str]:
    """Record the QMP exchanges of ``introspect`` for every config and version."""
    from vmm_model.qemu.introspect import introspect
    written = []
    os.makedirs(outdir, exist_ok=True)
    for version in VERSIONS:
        binary, why = find_qemu(version)
        if binary is None:
            print(f"skip {version}: {why}", file=sys.stderr)
            continue
        for config in CONFIGS:
            with launched(version, config) as (q, mon, d):
                vm = introspect(mon, use_proc=False)
                exchanges = json.loads(json.dumps(mon.transcript).replace(d, "{d}"))
                doc = {"qemu": vm.version, "package": vm.package, "config": config,
                       "argv": [a.replace(d, "{d}") for a in q.argv[1:]
                                if not a.startswith("unix:")],
                       "exchanges": exchanges}
            path = os.path.join(outdir, f"qemu-{version}-{config}.json")
            with open(path, "w") as f:
                json.dump(doc, f, indent=1)
                f.write("\n")
            written.append(path)
    return written


def children() -> list[int]:
    """Live (non-zombie) child pids of this process, from /proc: tests check that
    no QEMU is left behind."""
    me = str(os.getpid())
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me and fields[0] != "Z":
                out.append(int(pid))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "record":
        sys.exit("usage: python tests/qemu_testing.py record OUTDIR")
    for p in record(sys.argv[2]):
        print(p)
