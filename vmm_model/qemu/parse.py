"""Parsers for what QEMU's monitor prints and what /proc shows.

* ``info mtree -f`` (``mtree_print_flatview``, system/memory.c): ``FlatView #N`` blocks, each with its
  ``AS "name", root: X`` lines and ranges
  ``START-END (prio P, [nv-]TYPE): NAME[ @OFFSET][ ACCEL]``.  Aliases are
  already resolved in the flat view: NAME is the target region and @OFFSET the
  offset within it (``section.offset_within_region``); no ``@`` means 0.
* ``info ramblock`` (``ram_block_format``, system/physmem.c): Block Name, PSize, Offset,
  Used, Total, and since 8.0 HVA and RO.
* ``gpa2hva ADDR`` (HMP, hmp_gpa2hva): "Host virtual address for 0x.. (NAME) is 0x..".
* /proc/PID/maps (proc(5)).

All parsers raise ``QemuError`` naming the line they could not read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vmm_model.qemu.errors import QemuError

# --- info mtree -f --------------------------------------------------------------

_ACCELS = ("kvm", "KVM", "hvf", "HVF", "whpx", "WHPX", "nvmm", "NVMM")
_RANGE = re.compile(r"^\s+([0-9a-fA-F]+)-([0-9a-fA-F]+) \(prio (-?\d+), (nv-)?([a-z/]+)\): (.*)$")
_AS = re.compile(r'^\s+AS "(.*)", root: (.*)$')


@dataclass
class FlatRange:
    start: int
    end: int            # inclusive, as printed
    prio: int
    type: str           # ram, ramd, rom, romd, i/o (flat view: rom = readonly range)
    name: str           # the target MemoryRegion's name (aliases resolved)
    offset: int = 0     # offset_within_region (@OFFSET)
    accel: str | None = None
    nonvolatile: bool = False

    @property
    def size(self) -> int:
        return self.end - self.start + 1

    @property
    def readonly(self) -> bool:
        return self.type == "rom"


@dataclass
class FlatView:
    number: int
    address_spaces: list[str] = field(default_factory=list)
    root: str | None = None
    ranges: list[FlatRange] = field(default_factory=list)


def parse_mtree_flat(text: str) -> list[FlatView]:
    """``info mtree -f`` -> FlatViews (QEMU 7.2 .. 10.x formats)."""
    views: list[FlatView] = []
    cur: FlatView | None = None
    for n, raw in enumerate(text.replace("\r\n", "\n").split("\n"), 1):
        line = raw.rstrip()
        if not line.strip():
            continue
        m = re.match(r"^FlatView #(\d+)$", line)
        if m:
            cur = FlatView(int(m.group(1)))
            views.append(cur)
            continue
        if cur is None:
            raise QemuError(f"info mtree -f line {n}: expected 'FlatView #N', got {line!r}")
        m = _AS.match(line)
        if m:
            cur.address_spaces.append(m.group(1))
            continue
        m = re.match(r"^\s+Root memory region: (.*)$", line)
        if m:
            cur.root = None if m.group(1) == "(none)" else m.group(1)
            continue
        if line.strip() == "No rendered FlatView":
            continue
        m = _RANGE.match(line)
        if not m:
            raise QemuError(f"info mtree -f line {n}: unrecognised line {line!r}",
                            valid="START-END (prio P, TYPE): NAME[ @OFFSET]")
        start, end, prio, nv, typ, rest = m.groups()
        accel = None
        for a in _ACCELS:
            if rest.endswith(" " + a):
                accel, rest = a, rest[: -len(a) - 1]
                break
        offset = 0
        mo = re.match(r"^(.*) @([0-9a-fA-F]+)$", rest)
        if mo:
            rest, offset = mo.group(1), int(mo.group(2), 16)
        cur.ranges.append(FlatRange(int(start, 16), int(end, 16), int(prio), typ, rest,
                                    offset, accel, bool(nv)))
    return views


def flatview_of(views: list[FlatView], address_space: str = "memory") -> FlatView:
    """The FlatView that address space ``address_space`` renders."""
    for v in views:
        if address_space in v.address_spaces:
            return v
    raise QemuError(f"info mtree -f shows no address space {address_space!r}",
                    valid=", ".join(a for v in views for a in v.address_spaces))


# --- info ramblock ----------------------------------------------------------------

_SIZE_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


@dataclass
class RamblockRow:
    name: str
    page_size: int
    offset: int         # ram_addr_t offset (not a file offset)
    used: int
    total: int
    hva: int | None = None      # 8.0+
    readonly: bool | None = None  # 8.0+: mr->readonly


def _psize(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?) ?(B|KiB|MiB|GiB|TiB)", text.strip())
    if not m:
        raise ValueError(text)
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_ramblock(text: str) -> list[RamblockRow]:
    """``info ramblock`` / ``x-query-ramblock`` text -> rows.  Block names are
    right-aligned in 24 columns and may contain spaces, so the fixed-format
    columns are taken from the right."""
    rows = []
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    if not lines or "Block Name" not in lines[0]:
        raise QemuError("info ramblock: no 'Block Name' header",
                        valid="the output of info ramblock")
    has_hva = "HVA" in lines[0]
    pat = re.compile(
        r"^\s*(?P<name>.+?)\s+(?P<ps>\d+(?:\.\d+)? ?(?:B|KiB|MiB|GiB|TiB))\s+"
        r"0x(?P<off>[0-9a-f]+) 0x(?P<used>[0-9a-f]+) 0x(?P<total>[0-9a-f]+)"
        + (r" 0x(?P<hva>[0-9a-f]+)\s+(?P<ro>ro|rw)" if has_hva else "") + r"\s*$")
    for n, line in enumerate(lines[1:], 2):
        m = pat.match(line)
        if not m:
            raise QemuError(f"info ramblock line {n}: unrecognised row {line!r}")
        rows.append(RamblockRow(m["name"].strip(), _psize(m["ps"]), int(m["off"], 16),
                                int(m["used"], 16), int(m["total"], 16),
                                int(m["hva"], 16) if has_hva else None,
                                (m["ro"] == "ro") if has_hva else None))
    return rows


# --- gpa2hva ------------------------------------------------------------------------

def parse_gpa2hva(text: str) -> tuple[str, int] | None:
    """``gpa2hva`` -> (region name, host address), or None when not RAM."""
    m = re.search(r"Host virtual address for 0x[0-9a-f]+ \((.*)\) is 0x([0-9a-f]+)", text)
    return (m.group(1), int(m.group(2), 16)) if m else None


# --- /proc/PID/maps ---------------------------------------------------------------------

@dataclass
class Vma:
    start: int
    end: int
    perms: str          # e.g. "rw-s"
    pgoff: int          # file offset of start
    dev: tuple[int, int]
    inode: int
    path: str

    @property
    def shared(self) -> bool:
        return self.perms[3] == "s"

    @property
    def writable(self) -> bool:
        return self.perms[1] == "w"


def parse_maps(text: str) -> list[Vma]:
    out = []
    for line in text.splitlines():
        parts = line.split(None, 5)
        if len(parts) < 5:
            continue
        addr, perms, off, dev, inode = parts[:5]
        lo, hi = addr.split("-")
        major, minor = dev.split(":")
        out.append(Vma(int(lo, 16), int(hi, 16), perms, int(off, 16),
                       (int(major, 16), int(minor, 16)), int(inode),
                       parts[5] if len(parts) > 5 else ""))
    return out


# --- HMP-only outputs --------------------------------------------------------------------

def parse_hmp_qom_list(text: str) -> list[dict]:
    """HMP ``qom-list PATH``: one ``name (type)`` line per property."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        m = re.match(r"^(\S.*) \((.*)\)$", line.strip())
        if m:
            out.append({"name": m.group(1), "type": m.group(2)})
    return out


def parse_hmp_version(text: str) -> dict:
    """HMP ``info version``: ``10.0.2Debian 1:10.0.2+ds-...`` (version, then package)."""
    from backends.version import match_version
    got = match_version(text.strip().splitlines()[0]) if text.strip() else None
    if got is None:
        raise QemuError(f"info version: unrecognised output {text.strip()!r}")
    (major, minor, micro), rest = got
    return {"qemu": {"major": major, "minor": minor, "micro": micro}, "package": rest.strip()}
