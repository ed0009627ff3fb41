"""The rig's initramfs: static busybox + init.sh (+ modules), as a gzipped newc cpio.

docs/kernel-model.md, "The kernel rig".  Written here rather than with cpio(1)
so /dev/console can be a device node without mknod (the kernel opens it for
init's stdio before devtmpfs is mounted).
"""

from __future__ import annotations

import gzip
from pathlib import Path

from backends.errors import HostError

INIT = Path(__file__).parent / "init.sh"
BUSYBOX = Path("/bin/busybox")          # Debian's busybox-static (scripts/rig-deps.sh)
DIRS = ("bin", "dev", "proc", "sys", "host", "hostro", "tmp", "lib", "lib/modules")


def _entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0),
           ino: int = 0) -> bytes:
    """One newc record (include/linux/initrd... see usr/gen_init_cpio.c)."""
    fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
    head = b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
    head += b"\0" * (-len(head) % 4)
    return head + data + b"\0" * (-len(data) % 4)


def _static(path: Path) -> bool:
    """No PT_INTERP program header: a static ELF."""
    elf = path.read_bytes()
    phoff = int.from_bytes(elf[0x20:0x28], "little")
    phentsize = int.from_bytes(elf[0x36:0x38], "little")
    phnum = int.from_bytes(elf[0x38:0x3a], "little")
    return elf[:4] == b"\x7fELF" and all(
        int.from_bytes(elf[phoff + i * phentsize:phoff + i * phentsize + 4], "little") != 3
        for i in range(phnum))


def make_initramfs(dest: Path, modules: list[Path]) -> Path:
    """Write ``dest`` (initrd.gz): busybox, /init, and ``modules`` in /lib/modules
    with their insmod order in /modules.order."""
    if not BUSYBOX.exists() or not _static(BUSYBOX):
        raise HostError("no static busybox", where=str(BUSYBOX),
                        valid="install busybox-static (sh scripts/rig-deps.sh)")
    out = [_entry(d, 0o40755, ino=i + 1) for i, d in enumerate(DIRS)]
    ino = len(out) + 1
    out.append(_entry("dev/console", 0o20600, rdev=(5, 1), ino=ino))
    files = [("bin/busybox", BUSYBOX.read_bytes()), ("init", INIT.read_bytes())]
    files += [(f"lib/modules/{m.name}", m.read_bytes()) for m in modules]
    if modules:
        files.append(("modules.order", "".join(f"{m.name}\n" for m in modules).encode()))
    for name, data in files:
        ino += 1
        mode = 0o100755 if name in ("init", "bin/busybox") else 0o100644
        out.append(_entry(name, mode, data, ino=ino))
    out.append(_entry("TRAILER!!!", 0))
    tmp = dest.with_suffix(".tmp")
    with gzip.GzipFile(tmp, "wb", compresslevel=6, mtime=0) as f:
        f.write(b"".join(out))
    tmp.rename(dest)
    return dest
