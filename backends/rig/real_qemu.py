"""Real QEMU binaries in the rig guest: the configurations, and the recording.

The ``real-qemu`` test set (backends/rig/guest/test_real_qemu.py) runs every
configuration of ``CONFIGS`` with every QEMU of ``QEMUS`` and both IOMMU
backends against the guest's edu, bound to vfio-pci, with the observer
(vfio_observe.c) preloaded; QEMU is paused (-S), QMP answers once realize
and the machine reset are done, then ``quit``.  The host decodes the
recordings (``requests``) and compares them with the model
(vmm_model/rig_qemu.py, docs/real-qemu-rig.md).  This module is the one list
of configurations both sides use.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from backends import uapi

OBSERVER_SOURCE = Path(__file__).with_name("vfio_observe.c")

#: label -> the binary as the guest sees it (the host root).  One line per release.
QEMUS: dict[str, str] = {
    "7.2": "/usr/bin/qemu-system-x86_64",                  # Debian 12 bookworm
    "10.0": "/opt/qemu-10.0/bin/qemu-system-x86_64",       # bookworm-backports (install-qemu.sh)
    "11.1": "/opt/qemu-11.1/bin/qemu-system-x86_64",       # trixie-backports (install-qemu.sh)
}
BACKENDS = ("type1", "iommufd")

#: File systems the runner mounts in the guest before the runs (type, mount point);
#: paths QEMU's command line names, chosen so the model's file-system guess from
#: the path (vmm_model/machine.py _fs_of) is what the guest really has.
MOUNTS = (("tmpfs", "/dev/shm"), ("hugetlbfs", "/dev/hugepages"), ("ramfs", "/dev/ramfs"))

def mount_all() -> None:
    """Mount ``MOUNTS`` (in the guest, as root)."""
    import subprocess
    for fstype, where in MOUNTS:
        os.makedirs(where, exist_ok=True)
        subprocess.run(["mount", "-t", fstype, "none", where], check=True)


def umount_all() -> None:
    import subprocess
    for _, where in reversed(MOUNTS):
        subprocess.run(["umount", where], check=False)


# QEMU paused before the guest runs; small RAM (type1 pins all of it).
BASE = ("-machine", "q35", "-accel", "tcg,tb-size=16", "-nodefaults", "-display", "none",
        "-S", "-m", "64M")


@dataclasses.dataclass(frozen=True)
class Config:
    name: str
    args: tuple[str, ...]            # after BASE; a later -machine/-m overrides BASE's
    doc: str
    files: tuple[tuple[str, int], ...] = ()    # (path, size) the runner creates first


def _mb(oid: str, typ: str, size: str = "64M", **props) -> tuple[str, ...]:
    opts = ",".join([typ, f"id={oid}", f"size={size}"] + [f"{k}={v}" for k, v in props.items()])
    return ("-object", opts)


def _main(typ: str, **props) -> tuple[str, ...]:
    return _mb("m0", typ, **props) + ("-machine", "q35,memory-backend=m0")


M64 = 64 << 20
CONFIGS: tuple[Config, ...] = (
    Config("default", (), "-m only: anonymous private pc.ram"),
    Config("pc-default", ("-machine", "pc"), "i440fx pc machine, anonymous RAM"),
    Config("ram-private", _main("memory-backend-ram", share="off"), "memory-backend-ram share=off"),
    Config("ram-shared", _main("memory-backend-ram", share="on"),
           "memory-backend-ram share=on (a memfd from 10.0)"),
    Config("memfd", _main("memory-backend-memfd"), "memory-backend-memfd (share=on default)"),
    Config("memfd-private", _main("memory-backend-memfd", share="off"), "memfd share=off"),
    Config("memfd-noseal", _main("memory-backend-memfd", seal="off"), "memfd seal=off"),
    Config("memfd-hugetlb", _main("memory-backend-memfd", hugetlb="on", hugetlbsize="2M"),
           "memfd on hugetlbfs (2 MiB pages)"),
    Config("memfd-prealloc", _main("memory-backend-memfd", prealloc="on"), "memfd prealloc=on"),
    Config("file-tmpfs-shared", _main("memory-backend-file", **{"mem-path": "/dev/shm/m0",
           "share": "on"}), "file on tmpfs, share=on", (("/dev/shm/m0", M64),)),
    Config("file-tmpfs-private", _main("memory-backend-file", **{"mem-path": "/dev/shm/m0",
           "share": "off"}), "file on tmpfs, share=off", (("/dev/shm/m0", M64),)),
    Config("file-tmpfs-offset", _mb("m0", "memory-backend-file", **{
           "mem-path": "/dev/shm/m0", "share": "on", "offset": "2M"}) +
           ("-machine", "q35,memory-backend=m0"), "file on tmpfs at offset 2M (8.1+)",
           (("/dev/shm/m0", M64 + (2 << 20)),)),
    Config("file-tmpfs-readonly", _main("memory-backend-file", **{
           "mem-path": "/dev/shm/m0", "readonly": "on"}),
           "readonly=on (rom=auto: a ROM from 8.2)", (("/dev/shm/m0", M64),)),
    Config("file-tmpfs-readonly-rom-off", _main("memory-backend-file", **{
           "mem-path": "/dev/shm/m0", "readonly": "on", "rom": "off"}),
           "readonly=on rom=off: writable private RAM from an O_RDONLY file (8.2+)",
           (("/dev/shm/m0", M64),)),
    Config("file-hugetlbfs-shared", _main("memory-backend-file", **{
           "mem-path": "/dev/hugepages/m0", "share": "on"}), "file on hugetlbfs, share=on"),
    Config("file-hugetlbfs-private", _main("memory-backend-file", **{
           "mem-path": "/dev/hugepages/m0", "share": "off"}), "file on hugetlbfs, share=off"),
    Config("file-ramfs-shared", _main("memory-backend-file", **{
           "mem-path": "/dev/ramfs/m0", "share": "on"}), "file on ramfs, share=on"),
    Config("file-devzero-shared", _main("memory-backend-file", **{
           "mem-path": "/dev/zero", "share": "on"}),
           "/dev/zero, share=on (the mapping is shmem: shmem_zero_setup())"),
    Config("file-devzero-private", _main("memory-backend-file", **{
           "mem-path": "/dev/zero", "share": "off"}), "/dev/zero, share=off"),
    Config("mem-path-tmpfs", ("-mem-path", "/dev/shm"), "-mem-path on tmpfs"),
    Config("mem-path-hugetlbfs", ("-mem-path", "/dev/hugepages"), "-mem-path on hugetlbfs"),
    Config("shm", _main("memory-backend-shm"), "memory-backend-shm (9.1+)"),
    Config("numa-memfd", _mb("m0", "memory-backend-memfd", "32M") +
           _mb("m1", "memory-backend-memfd", "32M") +
           ("-numa", "node,memdev=m0", "-numa", "node,memdev=m1"), "two NUMA nodes, memfds"),
    Config("pc-dimm", ("-m", "64M,slots=2,maxmem=256M") + _mb("d0", "memory-backend-memfd",
           "32M") + ("-device", "pc-dimm,id=dimm0,memdev=d0"), "a memfd pc-dimm"),
    Config("virtio-mem", ("-m", "64M,maxmem=256M") + _mb("vm0", "memory-backend-ram", "64M") +
           ("-device", "virtio-mem-pci,id=vmem0,memdev=vm0,requested-size=0"),
           "virtio-mem-pci, nothing plugged"),
    Config("aux-ram-share", ("-machine", "q35,aux-ram-share=on"),
           "-machine aux-ram-share=on (10.0+): ROMs become shared memfds"),
    Config("aux-ram-share-memfd", _mb("m0", "memory-backend-memfd") +
           ("-machine", "q35,memory-backend=m0,aux-ram-share=on"), "aux-ram-share + memfd RAM"),
    Config("q35-smm-off", ("-machine", "q35,smm=off"),
           "q35 without SMM: no smram-region over the VGA window (9.1+)"),
    Config("ovmf-bios", ("-bios", "/usr/share/ovmf/OVMF.fd"), "-bios OVMF.fd (a 2 MiB+ pc.bios)"),
    Config("ovmf-pflash", ("-drive", "if=pflash,format=raw,readonly=on,"
           "file=/usr/share/OVMF/OVMF_CODE_4M.fd"), "OVMF code in a read-only pflash"),
    Config("memfd-hugetlb-private", _main("memory-backend-memfd", hugetlb="on", share="off"),
           "hugetlb memfd, share=off"),
    Config("file-tmpfs-readonly-shared", _main("memory-backend-file", **{
           "mem-path": "/dev/shm/m0", "readonly": "on", "share": "on"}),
           "readonly=on share=on", (("/dev/shm/m0", M64),)),
    Config("pc-dimm-file-shared", ("-m", "64M,slots=2,maxmem=256M") + _mb(
           "d0", "memory-backend-file", "32M", **{"mem-path": "/dev/shm/d0", "share": "on"}) +
           ("-device", "pc-dimm,id=dimm0,memdev=d0"), "a shared tmpfs-file pc-dimm"),
    Config("virtio-mem-memfd", ("-m", "64M,maxmem=256M") + _mb("vm0", "memory-backend-memfd",
           "64M") + ("-device", "virtio-mem-pci,id=vmem0,memdev=vm0,requested-size=0"),
           "virtio-mem-pci on a shared memfd, nothing plugged"),
    Config("pc-memfd", _mb("m0", "memory-backend-memfd") + ("-machine", "pc,memory-backend=m0"),
           "pc machine, memfd RAM"),
)
assert len({c.name for c in CONFIGS}) == len(CONFIGS)


#: Kernel name suffix -> the (QEMU, backend) pairs run there.  The seed-000 fix
#: (iommufd-7.2+fix) changes only iommufd_ioas_map_file() (FMODE_WRITE for a
#: writable map), and of these releases only 11.1 issues IOMMU_IOAS_MAP_FILE for
#: guest RAM (10.0 maps by VA): that pair is enough there, and keeps the rig's
#: CI time bounded.
SUBSETS: dict[str, tuple[tuple[str, str], ...]] = {"+fix": (("11.1", "iommufd"),)}


def matrix(kernel: str) -> list[tuple[Config, str, str]]:
    """(configuration, QEMU label, backend) of the runs on ``kernel``."""
    pairs = next((p for suffix, p in SUBSETS.items() if kernel.endswith(suffix)),
                 tuple((v, b) for v in QEMUS for b in BACKENDS))
    return [(c, v, b) for c in CONFIGS for v, b in pairs]


def backend_args(backend: str, bdf: str) -> tuple[str, ...]:
    if backend == "iommufd":
        return ("-object", "iommufd,id=iommufd0",
                "-device", f"vfio-pci,host={bdf},id=hostdev0,iommufd=iommufd0")
    return ("-device", f"vfio-pci,host={bdf},id=hostdev0")


def qemu_args(config: Config, backend: str, bdf: str) -> list[str]:
    """The arguments after the binary (no QMP: the runner adds ``-qmp stdio``)."""
    return [*BASE, *config.args, *backend_args(backend, bdf)]


def get_config(name: str) -> Config:
    return next(c for c in CONFIGS if c.name == name)


# ---- decoding a recording (host side) ----------------------------------------------

KINDS = {1: "container", 2: "group", 3: "device", 4: "iommufd"}


def decode(log: str):
    """The observer's lines -> ([backends.shim.server.Request], ready_seq): the
    ioctls decoded with backends/uapi.py, ``ready_seq`` the index of the first
    request after the runner's ``M ready`` line (QMP answered)."""
    from backends.shim.pci import DEVICE_IOCTLS
    from backends.shim.server import Request, decode_fields
    reqs: list[Request] = []
    ready = None
    for line in log.splitlines():
        parts = line.split(" ")
        tag = parts[0]
        if tag == "M" and parts[1] == "ready":
            ready = len(reqs)
        elif tag == "O":
            _, _, fd, kind, ret, err, path = parts[:6] + [" ".join(parts[6:])]
            reqs.append(Request(len(reqs), "open", None, path, {"fd": int(fd)},
                                -int(err) if int(ret) < 0 else int(ret)))
        elif tag == "C":
            reqs.append(Request(len(reqs), "close", None, parts[2]))
        elif tag == "I":
            _, _, fd, kind, req, ret, err, value, inb, outb = parts
            k = KINDS.get(int(kind))
            nr = int(req, 16)
            name = (DEVICE_IOCTLS.get(nr) if k == "device" else None) or uapi.ioctl_name(nr, k)
            data_in = b"" if inb == "-" else bytes.fromhex(inb)
            data_out = b"" if outb == "-" else bytes.fromhex(outb)
            fields = decode_fields(name, data_in) if data_in else {"value": int(value, 16)}
            out = decode_fields(name, data_out) if data_out else {}
            out = {f: v for f, v in out.items() if fields.get(f) != v}
            reqs.append(Request(len(reqs), "ioctl", k, name, fields,
                                -int(err) if int(ret) < 0 else int(ret), out))
        elif tag in ("F", "V") and reqs:
            reqs[-1].backing = _backing(tag, parts)
    return reqs, ready


_FS_MAGIC = {0x01021994: "tmpfs", 0x958458f6: "hugetlbfs", 0x858458f6: "ramfs",
             0x01021997: "v9fs", 0xef53: "ext4", 0x62656572: "sysfs", 0x1373: "devtmpfs"}


def _backing(tag: str, parts: list[str]) -> dict:
    """What the mapped memory is: the MAP_FILE fd (F) or the VMA of a VA (V)."""
    if tag == "F":
        _, _, fd, flags, mode, ftype, *path = parts
        mode_i = int(mode, 8)
        kind = {0o100000: "file", 0o020000: "chardev"}.get(mode_i & 0o170000, "other")
        return {"what": "fd", "name": " ".join(path), "kind": kind,
                "fs": _FS_MAGIC.get(int(ftype, 16), ftype), "f_flags": int(flags, 8)}
    # V seq vaddr lo-hi perms offset dev inode [path]
    fields = " ".join(parts[3:]).split(None, 5)
    perms = fields[1]
    name = fields[5] if len(fields) > 5 else ""
    return {"what": "vma", "shared": perms[3] == "s", "name": name,
            "kind": "memfd" if name.startswith("/memfd:") else "file" if name.startswith("/")
            else "anonymous"}


def observer_env(log: str, observer: str) -> dict[str, str]:
    """The environment that preloads the observer for one QEMU run."""
    preload = " ".join(p for p in (observer, os.environ.get("LD_PRELOAD", "")) if p)
    return dict(os.environ, LD_PRELOAD=preload, VFIO_EMU_OBSERVE=log)
