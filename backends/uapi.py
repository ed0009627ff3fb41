"""VFIO and iommufd UAPI: struct layouts, ioctl numbers and constants.

The one source of truth for the binary interface both backends speak
(docs/architecture.md).  Everything here mirrors, name for name,

  * ``include/uapi/linux/vfio.h``     (type1 container, group, device, cdev)
  * ``include/uapi/linux/iommufd.h``  (/dev/iommu)
  * ``include/uapi/linux/fcntl.h``, ``include/uapi/linux/memfd.h`` (seals, memfd flags)

for x86-64 (little-endian, natural C alignment; ``__aligned_u64`` = 8).  The
layouts follow the newest headers checked (Debian sid ``linux-libc-dev``, see
``tests/test_uapi_headers.py``, which compiles a probe generated from the
registries below against those headers with gcc and compares every
``sizeof``, ``offsetof``, field size, ioctl number and constant).

Public API
----------
* Every struct is a module attribute holding a ``construct.Struct`` (e.g.
  ``vfio_iommu_type1_dma_map``); every ioctl number and constant an ``int``
  (e.g. ``VFIO_IOMMU_MAP_DMA``, ``IOMMU_IOAS_MAP_FIXED_IOVA``).
* ``build(name, **fields) -> bytes`` fills ``argsz``/``size`` (with the length
  of what is built), cap headers and array counts; unknown fields are errors.
  ``parse(name, data) -> Container``.
* ``sizeof(name)``, ``offsetof(name, field)``, ``offsetofend(name, field)``,
  ``fields(name)``; ``STRUCTS`` (name -> ``StructDef``).
* ``IOCTLS`` (name -> ``Ioctl``), ``IOCTLS_BY_NR`` (number -> tuple of
  ``Ioctl``), ``lookup_ioctl(nr, fd)``, ``ioctl_name(nr, fd)``,
  ``decode(nr, data, fd)``; ``Ioctl.min_size`` is the kernel's minimum
  (iommufd: ``offsetofend`` of the last original field, as in the
  ``IOCTL_OP()`` table of drivers/iommu/iommufd/main.c; VFIO: the handler's
  ``minsz``).
* Variable-length data: ``build_array``/``parse_array`` (e.g. the
  ``iommu_iova_range`` array behind ``allowed_iovas``), ``build_cap_chain`` /
  ``parse_cap_chain`` (``vfio_info_cap_header`` chains of
  ``VFIO_IOMMU_GET_INFO``), and trailing flexible arrays (``data[]``,
  ``iova_ranges[]``, ``dma_ranges[]``) as ordinary fields.
* ``_IO``/``_IOR``/``_IOW``/``_IOWR`` and ``_IOC_*`` decoders
  (include/uapi/asm-generic/ioctl.h).

Note that one number can mean two ioctls: 117 is ``VFIO_IOMMU_DIRTY_PAGES``
on a container and ``VFIO_DEVICE_FEATURE`` on a device fd, so lookups take
the kind of fd (``"container"``, ``"group"``, ``"device"``, ``"iommufd"``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import struct as _pystruct
from typing import Any, Iterable, Mapping

import construct as cs

from backends.errors import VfioEmuError

__all__ = [
    "UapiError", "Field", "StructDef", "Ioctl", "STRUCTS", "IOCTLS", "IOCTLS_BY_NR",
    "CONSTANTS", "FD_KINDS", "build", "parse", "sizeof", "offsetof", "offsetofend",
    "fields", "codec", "Codec", "build_array", "parse_array", "build_cap_chain", "parse_cap_chain",
    "lookup_ioctl", "ioctl_name", "decode", "kernel_version",
    "_IO", "_IOR", "_IOW", "_IOWR", "_IOC", "_IOC_DIR", "_IOC_TYPE", "_IOC_NR", "_IOC_SIZE",
]


class UapiError(VfioEmuError):
    """Misuse of the UAPI helpers: an unknown struct, field or ioctl, or a short buffer."""


VFIO_H = "linux/vfio.h"
IOMMUFD_H = "linux/iommufd.h"
FCNTL_H = "linux/fcntl.h"
MEMFD_H = "linux/memfd.h"
HEADERS = (VFIO_H, IOMMUFD_H, FCNTL_H, MEMFD_H)

# --------------------------------------------------------------------------
# ioctl encoding: include/uapi/asm-generic/ioctl.h (x86 uses the generic one)
# --------------------------------------------------------------------------
_IOC_NRBITS, _IOC_TYPEBITS, _IOC_SIZEBITS, _IOC_DIRBITS = 8, 8, 14, 2
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2


def _ord(t: int | str) -> int:
    return ord(t) if isinstance(t, str) else t


def _IOC(dir_: int, type_: int | str, nr: int, size: int) -> int:
    """``_IOC(dir, type, nr, size)`` of include/uapi/asm-generic/ioctl.h."""
    return ((dir_ << _IOC_DIRSHIFT) | (_ord(type_) << _IOC_TYPESHIFT)
            | (nr << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT))


def _IO(type_: int | str, nr: int) -> int:
    return _IOC(_IOC_NONE, type_, nr, 0)


def _IOR(type_: int | str, nr: int, size: int) -> int:
    return _IOC(_IOC_READ, type_, nr, size)


def _IOW(type_: int | str, nr: int, size: int) -> int:
    return _IOC(_IOC_WRITE, type_, nr, size)


def _IOWR(type_: int | str, nr: int, size: int) -> int:
    return _IOC(_IOC_READ | _IOC_WRITE, type_, nr, size)


def _IOC_DIR(nr: int) -> int:
    return (nr >> _IOC_DIRSHIFT) & ((1 << _IOC_DIRBITS) - 1)


def _IOC_TYPE(nr: int) -> int:
    return (nr >> _IOC_TYPESHIFT) & ((1 << _IOC_TYPEBITS) - 1)


def _IOC_NR(nr: int) -> int:
    return (nr >> _IOC_NRSHIFT) & ((1 << _IOC_NRBITS) - 1)


def _IOC_SIZE(nr: int) -> int:
    return (nr >> _IOC_SIZESHIFT) & ((1 << _IOC_SIZEBITS) - 1)


# --------------------------------------------------------------------------
# Struct definitions: a tiny C-layout DSL that yields construct Structs
# --------------------------------------------------------------------------
# scalar C types: (construct format, size, signed)
_SCALARS: dict[str, tuple[cs.Construct, int, bool]] = {
    "u8": (cs.Int8ul, 1, False),
    "u16": (cs.Int16ul, 2, False),
    "u32": (cs.Int32ul, 4, False),
    "s32": (cs.Int32sl, 4, True),
    "u64": (cs.Int64ul, 8, False),   # __u64, __aligned_u64 and user pointers
}


@dataclasses.dataclass(frozen=True)
class Field:
    """One member of a C struct as laid out on x86-64.

    ``ctype`` is a scalar (``u8 u16 u32 s32 u64``) or the name of a nested
    struct; ``count`` > 1 for a fixed array (``__u8 __reserved[3]``), 0 for
    the trailing flexible array member (``data[]``), whose ``size`` is 0 as
    in C.  ``since`` is the kernel version that added the member when it was
    added after the struct itself (None: as old as the struct).
    """
    name: str
    ctype: str
    offset: int
    size: int
    count: int = 1
    signed: bool = False
    since: tuple[int, int] | None = None
    count_field: str | None = None     # flexible array: field holding the element count

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def flexible(self) -> bool:
        return self.count == 0


@dataclasses.dataclass(frozen=True)
class StructDef:
    """A registered UAPI struct: layout, construct Struct, and kernel facts.

    ``size`` is ``sizeof(struct name)`` (flexible array excluded);
    ``size_field`` is ``"argsz"`` (VFIO) or ``"size"`` (iommufd) when the
    struct starts with the user-filled length; ``cap`` = (id, version) for a
    ``vfio_info_cap_header``-headed capability; ``aliases`` maps a union
    member's other name to the field that shares its storage.
    """
    name: str
    header: str
    fields: tuple[Field, ...]
    size: int
    align: int
    struct: cs.Struct
    size_field: str | None = None
    since: tuple[int, int] | None = None
    cap: tuple[int, int] | None = None
    aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
    doc: str = ""

    def field(self, name: str) -> Field:
        name = self.aliases.get(name, name)
        for f in self.fields:
            if f.name == name:
                return f
        raise UapiError(f"struct {self.name} has no member {name!r}",
                        field=name, valid=", ".join(self.field_names()))

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields] + list(self.aliases)

    @property
    def flexible(self) -> Field | None:
        return self.fields[-1] if self.fields and self.fields[-1].flexible else None

    @functools.cached_property
    def codec(self) -> "Codec":
        """A ``struct.Struct`` over the fixed part, derived from ``fields`` (see ``codec()``)."""
        return Codec(self)


_FMT = {("u8", False): "B", ("u16", False): "H", ("u32", False): "I", ("s32", True): "i",
        ("u64", False): "Q"}


class Codec(_pystruct.Struct):
    """The fixed part of a struct as a ``struct.Struct`` (``pack``/``unpack`` in
    ``names`` order, padding skipped): the hot path of the clients and the
    simulator.  Derived from the same ``Field`` list as the construct Struct, so
    layouts are never typed twice; ``u8`` arrays are ``bytes``."""

    def __init__(self, sd: "StructDef"):
        fmt, names, pos = "<", [], 0
        for f in sd.fields:
            if f.flexible:
                break
            if f.ctype not in _SCALARS:
                raise UapiError(f"struct {sd.name}: member {f.name} is a struct; no flat codec",
                                field=f.name)
            fmt += "x" * (f.offset - pos)
            fmt += f"{f.count}s" if f.count > 1 else _FMT[f.ctype, f.signed]
            names.append(f.name)
            pos = f.end
        fmt += "x" * (sd.size - pos)
        super().__init__(fmt)
        self.names = tuple(names)
        assert self.size == sd.size, (sd.name, self.size, sd.size)


STRUCTS: dict[str, StructDef] = {}


def _ctype_layout(ctype: str) -> tuple[int, int, bool]:
    """(size, alignment, signed) of one element of ``ctype``."""
    if ctype in _SCALARS:
        size = _SCALARS[ctype][1]
        return size, size, _SCALARS[ctype][2]
    try:
        sd = STRUCTS[ctype]
    except KeyError:
        raise UapiError(f"unknown C type {ctype!r}", valid=", ".join([*_SCALARS, *STRUCTS])) from None
    return sd.size, sd.align, False


def _element_con(ctype: str) -> cs.Construct:
    return _SCALARS[ctype][0] if ctype in _SCALARS else STRUCTS[ctype].struct


def _struct(name: str, header: str, members: Iterable[tuple], *, size_field: str | None = None,
            since: tuple[int, int] | None = None, cap: tuple[int, int] | None = None,
            aliases: Mapping[str, str] | None = None, doc: str = "") -> cs.Struct:
    """Register ``struct name`` and return its construct Struct.

    ``members`` are ``(name, ctype)`` tuples with optional keys after them:
    ``count=N`` (fixed array), ``flex=True`` / ``flex="count_field"``
    (trailing flexible array), ``since=(maj, min)``.  Offsets, padding and the
    struct's size and alignment follow the C rules for x86-64, so nothing is
    typed twice; gcc checks the result (tests/test_uapi_headers.py).
    """
    fields: list[Field] = []
    subcons: list[cs.Construct] = []
    offset, align = 0, 1
    for m in members:
        fname, ctype, opts = m[0], m[1], (m[2] if len(m) > 2 else {})
        esize, ealign, signed = _ctype_layout(ctype)
        flex = opts.get("flex")
        count = 0 if flex else opts.get("count", 1)
        if offset % ealign:
            pad = ealign - offset % ealign
            subcons.append(cs.Padding(pad))
            offset += pad
        align = max(align, ealign)
        elem = _element_con(ctype)
        if flex:
            count_field = flex if isinstance(flex, str) else None
            if ctype == "u8":
                con = cs.Default(cs.GreedyBytes, b"")
            elif count_field:
                con = cs.Default(cs.Array(cs.this[count_field], elem), [])
            else:
                con = cs.Default(cs.GreedyRange(elem), [])
        elif count > 1:
            con = cs.Default(cs.Bytes(count), bytes(count)) if ctype == "u8" \
                else cs.Default(cs.Array(count, elem), [0] * count)
            count_field = None
        else:
            con = cs.Default(elem, {} if ctype in STRUCTS else 0)
            count_field = None
        fields.append(Field(fname, ctype, offset, esize * count, count, signed,
                            opts.get("since"), count_field))
        subcons.append(fname / con)
        offset += esize * count
    if offset % align:
        tail = align - offset % align
        if fields and fields[-1].flexible:   # tail padding sits before data[] in C
            subcons.insert(len(subcons) - 1, cs.Padding(tail))
            last = fields[-1]
            fields[-1] = dataclasses.replace(last, offset=last.offset + tail)
        else:
            subcons.append(cs.Padding(tail))
        offset += tail
    if size_field is not None:
        i = [f.name for f in fields].index(size_field)
        subcons[i] = size_field / cs.Default(_element_con(fields[i].ctype), offset)
    if cap is not None:
        subcons[0] = "header" / cs.Default(
            STRUCTS["vfio_info_cap_header"].struct, {"id": cap[0], "version": cap[1], "next": 0})
    struct = cs.Struct(*subcons)
    STRUCTS[name] = StructDef(name, header, tuple(fields), offset, align, struct, size_field,
                              since, cap, dict(aliases or {}), doc)
    return struct


def _sd(name: str) -> StructDef:
    try:
        return STRUCTS[name] if name in STRUCTS else PROPOSED_STRUCTS[name]
    except KeyError:
        raise UapiError(f"unknown UAPI struct {name!r}", valid=", ".join(sorted(STRUCTS))) from None


def codec(name: str) -> Codec:
    """``struct name``'s fixed part as a ``struct.Struct``: ``codec(n).pack(*values)`` in
    ``codec(n).names`` order (padding skipped).  Same bytes as ``build`` for the same
    values; use it where speed matters (one MAP+UNMAP per few microseconds)."""
    return _sd(name).codec


def sizeof(name: str) -> int:
    """``sizeof(struct name)`` on x86-64 (a flexible array member counts 0)."""
    return _sd(name).size


def offsetof(name: str, field: str) -> int:
    """``offsetof(struct name, field)``."""
    return _sd(name).field(field).offset


def offsetofend(name: str, field: str) -> int:
    """``offsetofend(struct name, field)`` (include/linux/stddef.h)."""
    return _sd(name).field(field).end


def fields(name: str) -> tuple[Field, ...]:
    """The members of ``struct name`` with offsets and sizes."""
    return _sd(name).fields


# --------------------------------------------------------------------------
# include/uapi/linux/vfio.h
# --------------------------------------------------------------------------
VFIO_API_VERSION = 0

# Extensions (VFIO_CHECK_EXTENSION) and IOMMU types (VFIO_SET_IOMMU)
VFIO_TYPE1_IOMMU = 1
VFIO_SPAPR_TCE_IOMMU = 2
VFIO_TYPE1v2_IOMMU = 3
VFIO_DMA_CC_IOMMU = 4
VFIO_EEH = 5
__VFIO_RESERVED_TYPE1_NESTING_IOMMU = 6     # was VFIO_TYPE1_NESTING_IOMMU before 6.13
VFIO_SPAPR_TCE_v2_IOMMU = 7
VFIO_NOIOMMU_IOMMU = 8
VFIO_UNMAP_ALL = 9
VFIO_UPDATE_VADDR = 10

VFIO_TYPE = ord(";")
VFIO_BASE = 100

vfio_info_cap_header = _struct("vfio_info_cap_header", VFIO_H, [
    ("id", "u16"), ("version", "u16"), ("next", "u32")],
    doc="Capability chain link; ``next`` is the offset of the next cap from the start of the info struct, 0 = last.")

vfio_group_status = _struct("vfio_group_status", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32")], size_field="argsz")
VFIO_GROUP_FLAGS_VIABLE = 1 << 0
VFIO_GROUP_FLAGS_CONTAINER_SET = 1 << 1

vfio_device_info = _struct("vfio_device_info", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("num_regions", "u32"), ("num_irqs", "u32"),
    ("cap_offset", "u32"), ("pad", "u32", {"since": (6, 6)})], size_field="argsz")
VFIO_DEVICE_FLAGS_RESET = 1 << 0
VFIO_DEVICE_FLAGS_PCI = 1 << 1
VFIO_DEVICE_FLAGS_PLATFORM = 1 << 2
VFIO_DEVICE_FLAGS_AMBA = 1 << 3
VFIO_DEVICE_FLAGS_CCW = 1 << 4
VFIO_DEVICE_FLAGS_AP = 1 << 5
VFIO_DEVICE_FLAGS_FSL_MC = 1 << 6
VFIO_DEVICE_FLAGS_CAPS = 1 << 7
VFIO_DEVICE_FLAGS_CDX = 1 << 8

vfio_region_info = _struct("vfio_region_info", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("index", "u32"), ("cap_offset", "u32"),
    ("size", "u64"), ("offset", "u64")], size_field="argsz")
VFIO_REGION_INFO_FLAG_READ = 1 << 0
VFIO_REGION_INFO_FLAG_WRITE = 1 << 1
VFIO_REGION_INFO_FLAG_MMAP = 1 << 2
VFIO_REGION_INFO_FLAG_CAPS = 1 << 3

# enum { VFIO_PCI_BAR0_REGION_INDEX, ... } (vfio-pci region indexes)
VFIO_PCI_BAR0_REGION_INDEX = 0
VFIO_PCI_BAR1_REGION_INDEX = 1
VFIO_PCI_BAR2_REGION_INDEX = 2
VFIO_PCI_BAR3_REGION_INDEX = 3
VFIO_PCI_BAR4_REGION_INDEX = 4
VFIO_PCI_BAR5_REGION_INDEX = 5
VFIO_PCI_ROM_REGION_INDEX = 6
VFIO_PCI_CONFIG_REGION_INDEX = 7
VFIO_PCI_VGA_REGION_INDEX = 8
VFIO_PCI_NUM_REGIONS = 9

vfio_device_feature = _struct("vfio_device_feature", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("data", "u8", {"flex": True})],
    size_field="argsz", since=(5, 7))
VFIO_DEVICE_FEATURE_MASK = 0xffff
VFIO_DEVICE_FEATURE_GET = 1 << 16
VFIO_DEVICE_FEATURE_SET = 1 << 17
VFIO_DEVICE_FEATURE_PROBE = 1 << 18
VFIO_DEVICE_FEATURE_DMA_BUF = 11

vfio_region_dma_range = _struct("vfio_region_dma_range", VFIO_H, [
    ("offset", "u64"), ("length", "u64")], since=(7, 0))
vfio_device_feature_dma_buf = _struct("vfio_device_feature_dma_buf", VFIO_H, [
    ("region_index", "u32"), ("open_flags", "u32"), ("flags", "u32"), ("nr_ranges", "u32"),
    ("dma_ranges", "vfio_region_dma_range", {"flex": "nr_ranges"})], since=(7, 0),
    doc="data[] of VFIO_DEVICE_FEATURE with VFIO_DEVICE_FEATURE_DMA_BUF (GET returns a dma-buf fd).")

vfio_device_bind_iommufd = _struct("vfio_device_bind_iommufd", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("iommufd", "s32"), ("out_devid", "u32"),
    ("token_uuid_ptr", "u64", {"since": (6, 17)})], size_field="argsz", since=(6, 6))
VFIO_DEVICE_BIND_FLAG_TOKEN = 1 << 0

vfio_device_attach_iommufd_pt = _struct("vfio_device_attach_iommufd_pt", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("pt_id", "u32"),
    ("pasid", "u32", {"since": (6, 12)})], size_field="argsz", since=(6, 6))
VFIO_DEVICE_ATTACH_PASID = 1 << 0

vfio_device_detach_iommufd_pt = _struct("vfio_device_detach_iommufd_pt", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"),
    ("pasid", "u32", {"since": (6, 12)})], size_field="argsz", since=(6, 6))
VFIO_DEVICE_DETACH_PASID = 1 << 0

# -------- type1 --------
vfio_iommu_type1_info = _struct("vfio_iommu_type1_info", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("iova_pgsizes", "u64"),
    ("cap_offset", "u32"), ("pad", "u32", {"since": (6, 6)})], size_field="argsz",
    doc="VFIO_IOMMU_GET_INFO; with VFIO_IOMMU_INFO_CAPS a cap chain starts at cap_offset (argsz grows to hold it).")
VFIO_IOMMU_INFO_PGSIZES = 1 << 0
VFIO_IOMMU_INFO_CAPS = 1 << 1

VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE = 1
VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION = 2
VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL = 3

vfio_iova_range = _struct("vfio_iova_range", VFIO_H, [("start", "u64"), ("end", "u64")],
                          doc="Inclusive: ``end`` is the last valid IOVA.")
vfio_iommu_type1_info_cap_iova_range = _struct("vfio_iommu_type1_info_cap_iova_range", VFIO_H, [
    ("header", "vfio_info_cap_header"), ("nr_iovas", "u32"), ("reserved", "u32"),
    ("iova_ranges", "vfio_iova_range", {"flex": "nr_iovas"})],
    cap=(VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, 1))
vfio_iommu_type1_info_cap_migration = _struct("vfio_iommu_type1_info_cap_migration", VFIO_H, [
    ("header", "vfio_info_cap_header"), ("flags", "u32"), ("pgsize_bitmap", "u64"),
    ("max_dirty_bitmap_size", "u64")], cap=(VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION, 1))
vfio_iommu_type1_info_dma_avail = _struct("vfio_iommu_type1_info_dma_avail", VFIO_H, [
    ("header", "vfio_info_cap_header"), ("avail", "u32")],
    cap=(VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, 1))

vfio_iommu_type1_dma_map = _struct("vfio_iommu_type1_dma_map", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("vaddr", "u64"), ("iova", "u64"), ("size", "u64")],
    size_field="argsz")
VFIO_DMA_MAP_FLAG_READ = 1 << 0
VFIO_DMA_MAP_FLAG_WRITE = 1 << 1
VFIO_DMA_MAP_FLAG_VADDR = 1 << 2

vfio_bitmap = _struct("vfio_bitmap", VFIO_H, [
    ("pgsize", "u64"), ("size", "u64"), ("data", "u64")],
    doc="``data`` is a user pointer (``__u64 *``) to the zeroed bitmap of ``size`` bytes.")

vfio_iommu_type1_dma_unmap = _struct("vfio_iommu_type1_dma_unmap", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("iova", "u64"), ("size", "u64"),
    ("data", "u8", {"flex": True})], size_field="argsz",
    doc="With VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, data[] holds a struct vfio_bitmap.")
VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0
VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1
VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2

vfio_iommu_type1_dirty_bitmap = _struct("vfio_iommu_type1_dirty_bitmap", VFIO_H, [
    ("argsz", "u32"), ("flags", "u32"), ("data", "u8", {"flex": True})], size_field="argsz",
    doc="VFIO_IOMMU_DIRTY_PAGES; with FLAG_GET_BITMAP data[] holds vfio_iommu_type1_dirty_bitmap_get.")
VFIO_IOMMU_DIRTY_PAGES_FLAG_START = 1 << 0
VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP = 1 << 1
VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP = 1 << 2

vfio_iommu_type1_dirty_bitmap_get = _struct("vfio_iommu_type1_dirty_bitmap_get", VFIO_H, [
    ("iova", "u64"), ("size", "u64"), ("bitmap", "vfio_bitmap")])

# --------------------------------------------------------------------------
# include/uapi/linux/iommufd.h
# --------------------------------------------------------------------------
IOMMUFD_TYPE = ord(";")
IOMMUFD_CMD_BASE = 0x80
IOMMUFD_CMD_DESTROY = IOMMUFD_CMD_BASE
IOMMUFD_CMD_IOAS_ALLOC = IOMMUFD_CMD_BASE + 1
IOMMUFD_CMD_IOAS_ALLOW_IOVAS = IOMMUFD_CMD_BASE + 2
IOMMUFD_CMD_IOAS_COPY = IOMMUFD_CMD_BASE + 3
IOMMUFD_CMD_IOAS_IOVA_RANGES = IOMMUFD_CMD_BASE + 4
IOMMUFD_CMD_IOAS_MAP = IOMMUFD_CMD_BASE + 5
IOMMUFD_CMD_IOAS_UNMAP = IOMMUFD_CMD_BASE + 6
IOMMUFD_CMD_OPTION = IOMMUFD_CMD_BASE + 7
IOMMUFD_CMD_VFIO_IOAS = IOMMUFD_CMD_BASE + 8
IOMMUFD_CMD_HWPT_ALLOC = IOMMUFD_CMD_BASE + 9
IOMMUFD_CMD_GET_HW_INFO = IOMMUFD_CMD_BASE + 10
IOMMUFD_CMD_IOAS_MAP_FILE = IOMMUFD_CMD_BASE + 15
IOMMUFD_CMD_IOAS_CHANGE_PROCESS = IOMMUFD_CMD_BASE + 18

iommu_destroy = _struct("iommu_destroy", IOMMUFD_H, [
    ("size", "u32"), ("id", "u32")], size_field="size", since=(6, 2))
iommu_ioas_alloc = _struct("iommu_ioas_alloc", IOMMUFD_H, [
    ("size", "u32"), ("flags", "u32"), ("out_ioas_id", "u32")], size_field="size", since=(6, 2))
iommu_iova_range = _struct("iommu_iova_range", IOMMUFD_H, [
    ("start", "u64"), ("last", "u64")], since=(6, 2),
    doc="Inclusive: ``last`` is the last valid IOVA.  Arrays of it sit behind ``allowed_iovas``.")
iommu_ioas_iova_ranges = _struct("iommu_ioas_iova_ranges", IOMMUFD_H, [
    ("size", "u32"), ("ioas_id", "u32"), ("num_iovas", "u32"), ("__reserved", "u32"),
    ("allowed_iovas", "u64"), ("out_iova_alignment", "u64")], size_field="size", since=(6, 2),
    doc="``allowed_iovas`` points to ``num_iovas`` iommu_iova_range; -EMSGSIZE with num_iovas updated if too few.")
iommu_ioas_allow_iovas = _struct("iommu_ioas_allow_iovas", IOMMUFD_H, [
    ("size", "u32"), ("ioas_id", "u32"), ("num_iovas", "u32"), ("__reserved", "u32"),
    ("allowed_iovas", "u64")], size_field="size", since=(6, 2))

IOMMU_IOAS_MAP_FIXED_IOVA = 1 << 0
IOMMU_IOAS_MAP_WRITEABLE = 1 << 1
IOMMU_IOAS_MAP_READABLE = 1 << 2

iommu_ioas_map = _struct("iommu_ioas_map", IOMMUFD_H, [
    ("size", "u32"), ("flags", "u32"), ("ioas_id", "u32"), ("__reserved", "u32"),
    ("user_va", "u64"), ("length", "u64"), ("iova", "u64")], size_field="size", since=(6, 2))
iommu_ioas_map_file = _struct("iommu_ioas_map_file", IOMMUFD_H, [
    ("size", "u32"), ("flags", "u32"), ("ioas_id", "u32"), ("fd", "s32"),
    ("start", "u64"), ("length", "u64"), ("iova", "u64")], size_field="size", since=(6, 13))
iommu_ioas_copy = _struct("iommu_ioas_copy", IOMMUFD_H, [
    ("size", "u32"), ("flags", "u32"), ("dst_ioas_id", "u32"), ("src_ioas_id", "u32"),
    ("length", "u64"), ("dst_iova", "u64"), ("src_iova", "u64")], size_field="size", since=(6, 2))
iommu_ioas_unmap = _struct("iommu_ioas_unmap", IOMMUFD_H, [
    ("size", "u32"), ("ioas_id", "u32"), ("iova", "u64"), ("length", "u64")],
    size_field="size", since=(6, 2),
    doc="``length`` in: bytes to unmap; out: bytes unmapped.  iova=0, length=U64_MAX unmaps all.")

IOMMU_OPTION_RLIMIT_MODE = 0
IOMMU_OPTION_HUGE_PAGES = 1
IOMMU_OPTION_OP_SET = 0
IOMMU_OPTION_OP_GET = 1
iommu_option = _struct("iommu_option", IOMMUFD_H, [
    ("size", "u32"), ("option_id", "u32"), ("op", "u16"), ("__reserved", "u16"),
    ("object_id", "u32"), ("val64", "u64")], size_field="size", since=(6, 2))

IOMMU_VFIO_IOAS_GET = 0
IOMMU_VFIO_IOAS_SET = 1
IOMMU_VFIO_IOAS_CLEAR = 2
iommu_vfio_ioas = _struct("iommu_vfio_ioas", IOMMUFD_H, [
    ("size", "u32"), ("ioas_id", "u32"), ("op", "u16"), ("__reserved", "u16")],
    size_field="size", since=(6, 2))

IOMMU_HWPT_ALLOC_NEST_PARENT = 1 << 0
IOMMU_HWPT_ALLOC_DIRTY_TRACKING = 1 << 1
IOMMU_HWPT_FAULT_ID_VALID = 1 << 2
IOMMU_HWPT_ALLOC_PASID = 1 << 3
IOMMU_HWPT_DATA_NONE = 0
IOMMU_HWPT_DATA_VTD_S1 = 1
iommu_hwpt_alloc = _struct("iommu_hwpt_alloc", IOMMUFD_H, [
    ("size", "u32"), ("flags", "u32"), ("dev_id", "u32"), ("pt_id", "u32"),
    ("out_hwpt_id", "u32"), ("__reserved", "u32"),
    ("data_type", "u32", {"since": (6, 7)}), ("data_len", "u32", {"since": (6, 7)}),
    ("data_uptr", "u64", {"since": (6, 7)}),
    ("fault_id", "u32", {"since": (6, 11)}), ("__reserved2", "u32", {"since": (6, 11)})],
    size_field="size", since=(6, 6))

IOMMU_HW_INFO_TYPE_NONE = 0
IOMMU_HW_INFO_TYPE_INTEL_VTD = 1
IOMMU_HW_CAP_DIRTY_TRACKING = 1 << 0
iommu_hw_info = _struct("iommu_hw_info", IOMMUFD_H, [
    ("size", "u32"), ("flags", "u32"), ("dev_id", "u32"), ("data_len", "u32"),
    ("data_uptr", "u64"), ("out_data_type", "u32"),
    ("out_max_pasid_log2", "u8", {"since": (6, 14)}),
    ("__reserved", "u8", {"count": 3, "since": (6, 14)}),   # a __u32 before
    ("out_capabilities", "u64", {"since": (6, 7)})],
    size_field="size", since=(6, 6), aliases={"in_data_type": "out_data_type"},
    doc="``in_data_type`` and ``out_data_type`` are one union member (in_data_type with "
        "IOMMU_HW_INFO_FLAG_INPUT_TYPE).  Before 6.14 ``__reserved`` was a __u32.")

iommu_ioas_change_process = _struct("iommu_ioas_change_process", IOMMUFD_H, [
    ("size", "u32"), ("__reserved", "u32")], size_field="size", since=(6, 13))

# --------------------------------------------------------------------------
# include/uapi/linux/fcntl.h, include/uapi/linux/memfd.h (memfd sealing)
# --------------------------------------------------------------------------
F_LINUX_SPECIFIC_BASE = 1024          # include/uapi/asm-generic/fcntl.h
F_ADD_SEALS = F_LINUX_SPECIFIC_BASE + 9
F_GET_SEALS = F_LINUX_SPECIFIC_BASE + 10
F_SEAL_SEAL = 0x0001
F_SEAL_SHRINK = 0x0002
F_SEAL_GROW = 0x0004
F_SEAL_WRITE = 0x0008
F_SEAL_FUTURE_WRITE = 0x0010
F_SEAL_EXEC = 0x0020
MFD_CLOEXEC = 0x0001
MFD_ALLOW_SEALING = 0x0002
MFD_HUGETLB = 0x0004
MFD_NOEXEC_SEAL = 0x0008
MFD_EXEC = 0x0010

# Kernel version that added a constant, where later than 5.x (for the header check).
_CONST_SINCE: dict[str, tuple[int, int]] = {
    "__VFIO_RESERVED_TYPE1_NESTING_IOMMU": (6, 13),
    "VFIO_DEVICE_FLAGS_CDX": (6, 6), "VFIO_DEVICE_BIND_FLAG_TOKEN": (6, 17),
    "VFIO_DEVICE_ATTACH_PASID": (6, 12), "VFIO_DEVICE_DETACH_PASID": (6, 12),
    "VFIO_DEVICE_FEATURE_DMA_BUF": (7, 0),
    "IOMMUFD_CMD_HWPT_ALLOC": (6, 6), "IOMMUFD_CMD_GET_HW_INFO": (6, 6),
    "IOMMUFD_CMD_IOAS_MAP_FILE": (6, 13), "IOMMUFD_CMD_IOAS_CHANGE_PROCESS": (6, 13),
    "IOMMU_HWPT_ALLOC_NEST_PARENT": (6, 6), "IOMMU_HWPT_ALLOC_DIRTY_TRACKING": (6, 7),
    "IOMMU_HWPT_FAULT_ID_VALID": (6, 11), "IOMMU_HWPT_ALLOC_PASID": (6, 13),
    "IOMMU_HWPT_DATA_NONE": (6, 7), "IOMMU_HWPT_DATA_VTD_S1": (6, 7),
    "IOMMU_HW_INFO_TYPE_NONE": (6, 6), "IOMMU_HW_INFO_TYPE_INTEL_VTD": (6, 6),
    "IOMMU_HW_CAP_DIRTY_TRACKING": (6, 7),
    "F_SEAL_EXEC": (6, 3), "MFD_NOEXEC_SEAL": (6, 3), "MFD_EXEC": (6, 3),
}
_HEADER_SINCE = {IOMMUFD_H: (6, 2)}
_CONST_HEADER_BY_PREFIX = (("VFIO_", VFIO_H), ("__VFIO_", VFIO_H), ("IOMMUFD_", IOMMUFD_H),
                           ("IOMMU_", IOMMUFD_H), ("F_", FCNTL_H), ("MFD_", MEMFD_H))


# --------------------------------------------------------------------------
# ioctls
# --------------------------------------------------------------------------
FD_KINDS = ("container", "group", "device", "iommufd")


@dataclasses.dataclass(frozen=True)
class Ioctl:
    """One ioctl: its number, the fd it is issued on, its argument, its minimum size.

    ``arg`` is a struct name, or ``"int"`` (the argument is the value itself),
    ``"s32*"`` (pointer to an fd), ``"char*"`` (NUL-terminated string) or
    ``None`` (no argument).  ``min_field`` names the last field the kernel
    requires: ``min_size = offsetofend(struct, min_field)`` (iommufd:
    ``IOCTL_OP()`` in drivers/iommu/iommufd/main.c; VFIO: the handler's
    ``minsz``).
    """
    name: str
    nr: int
    fd: str
    arg: str | None
    min_field: str | None
    header: str
    since: tuple[int, int] | None = None

    @property
    def struct(self) -> cs.Struct | None:
        return STRUCTS[self.arg].struct if self.arg in STRUCTS else None

    @property
    def struct_def(self) -> StructDef | None:
        return STRUCTS.get(self.arg) if self.arg else None

    @property
    def size(self) -> int | None:
        """``sizeof`` of the argument struct as this module knows it (newest layout)."""
        return STRUCTS[self.arg].size if self.arg in STRUCTS else None

    @property
    def min_size(self) -> int | None:
        if self.arg in STRUCTS and self.min_field:
            return offsetofend(self.arg, self.min_field)
        return None


IOCTLS: dict[str, Ioctl] = {}
IOCTLS_BY_NR: dict[int, tuple[Ioctl, ...]] = {}


def _ioctl(name: str, nr: int, fd: str, arg: str | None = None, min_field: str | None = None,
           since: tuple[int, int] | None = None) -> int:
    assert fd in FD_KINDS and name not in IOCTLS
    assert arg in (None, "int", "s32*", "char*") or arg in STRUCTS, arg
    header = IOMMUFD_H if fd == "iommufd" else VFIO_H
    ioc = Ioctl(name, nr, fd, arg, min_field, header, since)
    IOCTLS[name] = ioc
    IOCTLS_BY_NR[nr] = IOCTLS_BY_NR.get(nr, ()) + (ioc,)
    return nr


# /dev/vfio/vfio (and /dev/iommu through the VFIO compat layer, vfio_compat.c)
VFIO_GET_API_VERSION = _ioctl("VFIO_GET_API_VERSION", _IO(VFIO_TYPE, VFIO_BASE + 0), "container")
VFIO_CHECK_EXTENSION = _ioctl("VFIO_CHECK_EXTENSION", _IO(VFIO_TYPE, VFIO_BASE + 1), "container", "int")
VFIO_SET_IOMMU = _ioctl("VFIO_SET_IOMMU", _IO(VFIO_TYPE, VFIO_BASE + 2), "container", "int")
# /dev/vfio/$GROUP
VFIO_GROUP_GET_STATUS = _ioctl("VFIO_GROUP_GET_STATUS", _IO(VFIO_TYPE, VFIO_BASE + 3), "group",
                               "vfio_group_status", "flags")
VFIO_GROUP_SET_CONTAINER = _ioctl("VFIO_GROUP_SET_CONTAINER", _IO(VFIO_TYPE, VFIO_BASE + 4), "group", "s32*")
VFIO_GROUP_UNSET_CONTAINER = _ioctl("VFIO_GROUP_UNSET_CONTAINER", _IO(VFIO_TYPE, VFIO_BASE + 5), "group")
VFIO_GROUP_GET_DEVICE_FD = _ioctl("VFIO_GROUP_GET_DEVICE_FD", _IO(VFIO_TYPE, VFIO_BASE + 6), "group", "char*")
# device fds (group-obtained or cdev /dev/vfio/devices/vfioN)
VFIO_DEVICE_GET_INFO = _ioctl("VFIO_DEVICE_GET_INFO", _IO(VFIO_TYPE, VFIO_BASE + 7), "device",
                              "vfio_device_info", "num_irqs")
VFIO_DEVICE_GET_REGION_INFO = _ioctl("VFIO_DEVICE_GET_REGION_INFO", _IO(VFIO_TYPE, VFIO_BASE + 8), "device",
                                     "vfio_region_info", "offset")
VFIO_IOMMU_GET_INFO = _ioctl("VFIO_IOMMU_GET_INFO", _IO(VFIO_TYPE, VFIO_BASE + 12), "container",
                             "vfio_iommu_type1_info", "iova_pgsizes")
VFIO_IOMMU_MAP_DMA = _ioctl("VFIO_IOMMU_MAP_DMA", _IO(VFIO_TYPE, VFIO_BASE + 13), "container",
                            "vfio_iommu_type1_dma_map", "size")
VFIO_IOMMU_UNMAP_DMA = _ioctl("VFIO_IOMMU_UNMAP_DMA", _IO(VFIO_TYPE, VFIO_BASE + 14), "container",
                              "vfio_iommu_type1_dma_unmap", "size")
VFIO_IOMMU_DIRTY_PAGES = _ioctl("VFIO_IOMMU_DIRTY_PAGES", _IO(VFIO_TYPE, VFIO_BASE + 17), "container",
                                "vfio_iommu_type1_dirty_bitmap", "flags")
VFIO_DEVICE_FEATURE = _ioctl("VFIO_DEVICE_FEATURE", _IO(VFIO_TYPE, VFIO_BASE + 17), "device",
                             "vfio_device_feature", "flags", since=(5, 7))
VFIO_DEVICE_BIND_IOMMUFD = _ioctl("VFIO_DEVICE_BIND_IOMMUFD", _IO(VFIO_TYPE, VFIO_BASE + 18), "device",
                                  "vfio_device_bind_iommufd", "out_devid", since=(6, 6))
VFIO_DEVICE_ATTACH_IOMMUFD_PT = _ioctl("VFIO_DEVICE_ATTACH_IOMMUFD_PT", _IO(VFIO_TYPE, VFIO_BASE + 19), "device",
                                       "vfio_device_attach_iommufd_pt", "pt_id", since=(6, 6))
VFIO_DEVICE_DETACH_IOMMUFD_PT = _ioctl("VFIO_DEVICE_DETACH_IOMMUFD_PT", _IO(VFIO_TYPE, VFIO_BASE + 20), "device",
                                       "vfio_device_detach_iommufd_pt", "flags", since=(6, 6))

# /dev/iommu; min_field as in iommufd_ioctl_ops[] (drivers/iommu/iommufd/main.c)
IOMMU_DESTROY = _ioctl("IOMMU_DESTROY", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_DESTROY), "iommufd",
                       "iommu_destroy", "id", since=(6, 2))
IOMMU_IOAS_ALLOC = _ioctl("IOMMU_IOAS_ALLOC", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOC), "iommufd",
                          "iommu_ioas_alloc", "out_ioas_id", since=(6, 2))
IOMMU_IOAS_ALLOW_IOVAS = _ioctl("IOMMU_IOAS_ALLOW_IOVAS", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_ALLOW_IOVAS),
                                "iommufd", "iommu_ioas_allow_iovas", "allowed_iovas", since=(6, 2))
IOMMU_IOAS_COPY = _ioctl("IOMMU_IOAS_COPY", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_COPY), "iommufd",
                         "iommu_ioas_copy", "src_iova", since=(6, 2))
IOMMU_IOAS_IOVA_RANGES = _ioctl("IOMMU_IOAS_IOVA_RANGES", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_IOVA_RANGES),
                                "iommufd", "iommu_ioas_iova_ranges", "out_iova_alignment", since=(6, 2))
IOMMU_IOAS_MAP = _ioctl("IOMMU_IOAS_MAP", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP), "iommufd",
                        "iommu_ioas_map", "iova", since=(6, 2))
IOMMU_IOAS_UNMAP = _ioctl("IOMMU_IOAS_UNMAP", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_UNMAP), "iommufd",
                          "iommu_ioas_unmap", "length", since=(6, 2))
IOMMU_OPTION = _ioctl("IOMMU_OPTION", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_OPTION), "iommufd",
                      "iommu_option", "val64", since=(6, 2))
IOMMU_VFIO_IOAS = _ioctl("IOMMU_VFIO_IOAS", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_VFIO_IOAS), "iommufd",
                         "iommu_vfio_ioas", "__reserved", since=(6, 2))
IOMMU_HWPT_ALLOC = _ioctl("IOMMU_HWPT_ALLOC", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_ALLOC), "iommufd",
                          "iommu_hwpt_alloc", "__reserved", since=(6, 6))
IOMMU_GET_HW_INFO = _ioctl("IOMMU_GET_HW_INFO", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_GET_HW_INFO), "iommufd",
                           "iommu_hw_info", "__reserved", since=(6, 6))
IOMMU_IOAS_MAP_FILE = _ioctl("IOMMU_IOAS_MAP_FILE", _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_MAP_FILE), "iommufd",
                             "iommu_ioas_map_file", "iova", since=(6, 13))
IOMMU_IOAS_CHANGE_PROCESS = _ioctl("IOMMU_IOAS_CHANGE_PROCESS",
                                   _IO(IOMMUFD_TYPE, IOMMUFD_CMD_IOAS_CHANGE_PROCESS), "iommufd",
                                   "iommu_ioas_change_process", "__reserved", since=(6, 13))


def _collect_constants() -> dict[str, tuple[int, str, tuple[int, int] | None]]:
    out = {}
    for name, value in globals().items():
        if name in IOCTLS or not isinstance(value, int) or isinstance(value, bool):
            continue
        if not re.fullmatch(r"_?_?[A-Z][A-Za-z0-9_]*", name) or name.startswith("_IOC"):
            continue
        for prefix, header in _CONST_HEADER_BY_PREFIX:
            if name.startswith(prefix):
                out[name] = (value, header, _CONST_SINCE.get(name, _HEADER_SINCE.get(header)))
                break
    return out


#: name -> (value, header, since) of every UAPI constant defined above (ioctl numbers excluded).
CONSTANTS: dict[str, tuple[int, str, tuple[int, int] | None]] = _collect_constants()

# --------------------------------------------------------------------------
# Unmerged proposals: in NO released kernel header.  Kept out of STRUCTS,
# IOCTLS and CONSTANTS (defined after CONSTANTS is collected) so the header
# probe (tests/test_uapi_headers.py) never looks for them; build()/parse()/
# codec() still know the struct.
# --------------------------------------------------------------------------
#: name -> StructDef of structs from unmerged patch series.
PROPOSED_STRUCTS: dict[str, StructDef] = {}

# iommufd live update v1, "[PATCH 00/14] iommu: Add live update state preservation"
# (Samiullah Khawaja, 2026-02-03, Msg-ID 20260203220948.2176157-1-skhawaja@google.com),
# patch 10/14 "iommufd-lu: Implement ioctl to let userspace mark an HWPT to be preserved";
# NOT MERGED; later revisions renamed it (docs/kernel-model.md, "Unmerged patches").
iommu_hwpt_lu_set_preserve = _struct("iommu_hwpt_lu_set_preserve", IOMMUFD_H, [
    ("size", "u32"), ("hwpt_id", "u32"), ("hwpt_token", "u64")], size_field="size",
    doc="PROPOSED (live update v1, not merged): mark HWPT hwpt_id preserved under hwpt_token.")
PROPOSED_STRUCTS["iommu_hwpt_lu_set_preserve"] = STRUCTS.pop("iommu_hwpt_lu_set_preserve")
IOMMUFD_CMD_HWPT_LU_SET_PRESERVE = IOMMUFD_CMD_BASE + 0x15          # 0x95, proposed
IOMMU_HWPT_LU_SET_PRESERVE = _IO(IOMMUFD_TYPE, IOMMUFD_CMD_HWPT_LU_SET_PRESERVE)


def lookup_ioctl(nr: int, fd: str | None = None) -> Ioctl | None:
    """The ioctl ``nr`` means on an fd of kind ``fd`` (None: any, if unambiguous).

    On ``"iommufd"``, numbers below IOMMUFD_CMD_BASE go to the VFIO compat layer
    (``iommufd_fops_ioctl()`` -> ``iommufd_vfio_ioctl()``), so container ioctls
    are found there too.  Returns None when unknown or ambiguous.
    """
    if fd is not None and fd not in FD_KINDS:
        raise UapiError(f"unknown fd kind {fd!r}", valid=", ".join(FD_KINDS))
    cands = IOCTLS_BY_NR.get(nr, ())
    if fd is not None:
        kinds = {fd}
        if fd == "iommufd" and _IOC_NR(nr) < IOMMUFD_CMD_BASE:
            kinds.add("container")
        cands = tuple(c for c in cands if c.fd in kinds)
    return cands[0] if len(cands) == 1 else None


def ioctl_name(nr: int, fd: str | None = None) -> str:
    """A printable name: ``VFIO_IOMMU_MAP_DMA``, ``VFIO_IOMMU_DIRTY_PAGES|VFIO_DEVICE_FEATURE``
    when ``fd`` is not given and the number is shared, or ``_IOC(dir, 't', nr, size)`` if unknown."""
    ioc = lookup_ioctl(nr, fd)
    if ioc is not None:
        return ioc.name
    cands = IOCTLS_BY_NR.get(nr, ())
    if fd is None and cands:
        return "|".join(c.name for c in cands)
    t = _IOC_TYPE(nr)
    tt = repr(chr(t)) if 0x20 < t < 0x7f else hex(t)
    return f"_IOC({_IOC_DIR(nr)}, {tt}, {_IOC_NR(nr):#x}, {_IOC_SIZE(nr)})"


def decode(nr: int, data: bytes, fd: str | None = None) -> tuple[Ioctl, cs.Container]:
    """Look up ioctl ``nr`` and parse its argument buffer (short buffers are zero-extended,
    as ``copy_struct_from_user()`` does; the caller checks ``min_size`` itself)."""
    ioc = lookup_ioctl(nr, fd)
    if ioc is None:
        raise UapiError(f"cannot decode ioctl {ioctl_name(nr, fd)} ({nr:#x}) on fd kind {fd}",
                        valid=", ".join(sorted(IOCTLS)))
    if ioc.arg not in STRUCTS:
        raise UapiError(f"{ioc.name} takes {ioc.arg or 'no argument'}, not a struct")
    return ioc, parse(ioc.arg, data, zero_extend=True)


# --------------------------------------------------------------------------
# build / parse helpers
# --------------------------------------------------------------------------
_META_KEYS = frozenset({"_io", "_offset"})   # bookkeeping keys of parse()/parse_cap_chain() results


def build(name: str, fields: Mapping[str, Any] | None = None, /, **kw: Any) -> bytes:
    """Bytes of ``struct name`` (include/uapi/linux/vfio.h, iommufd.h).

    Fields not given are 0; ``argsz``/``size`` default to the length built
    (fixed part plus any flexible array), a capability's ``header`` gets its
    id and version, and a flexible array's count field its length.  Nested
    structs may be given as dicts; flexible ``u8`` arrays as bytes.  Field
    names are checked (``length`` is not ``size``).
    """
    sd = _sd(name)
    obj = {k: v for k, v in dict(fields or {}, **kw).items() if k not in _META_KEYS}
    for alias, real in sd.aliases.items():
        if alias in obj:
            if real in obj and obj[real] != obj[alias]:
                raise UapiError(f"struct {name}: {alias} and {real} are one union member; give one")
            obj[real] = obj.pop(alias)
    valid = {f.name for f in sd.fields}
    unknown = sorted(set(obj) - valid)
    if unknown:
        raise UapiError(f"struct {name} has no member {', '.join(map(repr, unknown))}",
                        field=unknown[0], valid=", ".join(sd.field_names()))
    flex = sd.flexible
    if flex is not None and flex.count_field and flex.name in obj and flex.count_field not in obj:
        obj[flex.count_field] = len(obj[flex.name])
    if sd.cap is not None:
        obj["header"] = {"id": sd.cap[0], "version": sd.cap[1], "next": 0, **dict(obj.get("header") or {})}
    try:
        if sd.size_field and sd.size_field not in obj:
            obj[sd.size_field] = 0
            n = len(sd.struct.build(obj))
            obj[sd.size_field] = n
        return sd.struct.build(obj)
    except cs.ConstructError as e:
        raise UapiError(f"cannot build struct {name}: {e}", valid=", ".join(sd.field_names())) from e


def parse(name: str, data: bytes | bytearray | memoryview, *, zero_extend: bool = False) -> cs.Container:
    """Parse ``struct name`` from the start of ``data`` (trailing bytes are ignored unless the
    struct ends in a flexible array).  ``zero_extend`` pads a short buffer with zeros first, as
    ``copy_struct_from_user()`` does for iommufd; otherwise a short buffer is an error."""
    sd = _sd(name)
    data = bytes(data)
    if len(data) < sd.size:
        if not zero_extend:
            raise UapiError(f"struct {name} needs {sd.size} bytes, got {len(data)}",
                            valid=f">= {sd.size} bytes")
        data = data + bytes(sd.size - len(data))
    try:
        c = sd.struct.parse(data)
    except cs.ConstructError as e:
        raise UapiError(f"cannot parse struct {name}: {e}") from e
    for alias, real in sd.aliases.items():
        c[alias] = c[real]
    return _strip(c)


def _strip(c: Any) -> Any:
    """Drop construct's ``_io`` bookkeeping so Containers compare and print cleanly."""
    if isinstance(c, cs.Container):
        return cs.Container({k: _strip(v) for k, v in c.items() if not k.startswith("_io")})
    if isinstance(c, list):
        return cs.ListContainer(_strip(v) for v in c)
    return c


def build_array(name: str, items: Iterable[Mapping[str, Any]]) -> bytes:
    """Bytes of ``struct name items[]``, e.g. the iommu_iova_range array behind
    ``iommu_ioas_iova_ranges.allowed_iovas``."""
    return b"".join(build(name, it) for it in items)


def parse_array(name: str, data: bytes, count: int | None = None) -> list[cs.Container]:
    """Parse ``count`` (default: as many as fit) consecutive ``struct name`` from ``data``."""
    size = sizeof(name)
    if count is None:
        count = len(data) // size
    if len(data) < count * size:
        raise UapiError(f"{count} x struct {name} need {count * size} bytes, got {len(data)}")
    return [parse(name, data[i * size:(i + 1) * size]) for i in range(count)]


#: capability id -> struct, for the VFIO_IOMMU_GET_INFO chain of type1.
TYPE1_INFO_CAPS: dict[int, str] = {sd.cap[0]: sd.name for sd in STRUCTS.values()
                                   if sd.cap is not None and sd.name.startswith("vfio_iommu_type1_info")}


def build_cap_chain(base: int, caps: Iterable[tuple[str, Mapping[str, Any]]], *, align: int = 8) -> bytes:
    """Bytes of a ``vfio_info_cap_header`` chain placed at offset ``base`` of an info buffer.

    Each cap starts 8-byte aligned (``vfio_info_cap_add()`` in drivers/vfio/vfio_main.c
    uses ALIGN(size, sizeof(u64))); ``header.next`` is the offset of the next cap from the
    start of the info struct, 0 for the last one.
    """
    chunks: list[bytes] = []
    items = list(caps)
    off = base
    for i, (name, fields_) in enumerate(items):
        raw = build(name, fields_)
        raw += bytes(-len(raw) % align)
        nxt = off + len(raw) if i + 1 < len(items) else 0
        hdr = dict(fields_.get("header") or {}, next=nxt)
        raw = build(name, dict(fields_, header=hdr))
        raw += bytes(-len(raw) % align)
        chunks.append(raw)
        off += len(raw)
    return b"".join(chunks)


def parse_cap_chain(buf: bytes, cap_offset: int, known: Mapping[int, str] | None = None,
                    ) -> list[cs.Container]:
    """Walk the cap chain of an info buffer from ``cap_offset`` (0 = none).

    Known ids (default: ``TYPE1_INFO_CAPS``) are parsed as their struct, others as a
    bare ``vfio_info_cap_header``; each result has ``_offset`` set.  A loop or a
    link outside ``buf`` is an error.
    """
    known = TYPE1_INFO_CAPS if known is None else known
    out, seen, off = [], set(), cap_offset
    hdr_size = sizeof("vfio_info_cap_header")
    while off:
        if off in seen or off + hdr_size > len(buf):
            raise UapiError(f"bad cap chain link at offset {off} (buffer {len(buf)} bytes)")
        seen.add(off)
        hdr = parse("vfio_info_cap_header", buf[off:])
        name = known.get(hdr.id, "vfio_info_cap_header")
        c = parse(name, buf[off:])
        c["_offset"] = off
        out.append(c)
        off = hdr.next
    return out


def kernel_version(v: str) -> tuple[int, int]:
    """``"7.2.13-1"`` -> (7, 2) (backends.version.match_version)."""
    from backends.version import match_version
    got = match_version(v)
    if got is None:
        raise UapiError(f"not a kernel version: {v!r}", valid="e.g. 7.2.13-1")
    return got[0][:2]
