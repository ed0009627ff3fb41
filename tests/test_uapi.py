"""backends/uapi.py on its own: round trips, golden bytes, registries, helpers.

The oracles here are independent of uapi.py's layout code: sizes, minimum
sizes and ioctl numbers written out from include/uapi/linux/iommufd.h and
include/uapi/linux/vfio.h, hand-written ``struct`` formats (the layouts the
rig's probes use on a real Debian 7.2.13 kernel: backends/rig/guest/
test_probe_iommufd.py, test_probe_type1.py), and Python's own fcntl/os
constants.  The layouts themselves are checked against the kernel headers in
tests/test_uapi_headers.py.
"""

from __future__ import annotations

import fcntl
import os
import struct

import construct as cs
import pytest
from hypothesis import given, settings, strategies as st

from backends import uapi
from backends.errors import VfioEmuError

ALL = list(uapi.STRUCTS)

# sizeof from the UAPI headers; min = the kernel's minimum size (iommufd: the last
# member of IOCTL_OP() in drivers/iommu/iommufd/main.c; type1: minsz =
# offsetofend(...) in drivers/vfio/vfio_iommu_type1.c)
KNOWN_SIZEOF = {
    "iommu_destroy": 8, "iommu_ioas_alloc": 12, "iommu_iova_range": 16,
    "iommu_ioas_iova_ranges": 32, "iommu_ioas_allow_iovas": 24, "iommu_ioas_map": 40,
    "iommu_ioas_map_file": 40, "iommu_ioas_copy": 40, "iommu_ioas_unmap": 24,
    "iommu_option": 24, "iommu_vfio_ioas": 12, "vfio_iommu_type1_info": 24,
    "vfio_iommu_type1_dma_map": 32, "vfio_iommu_type1_dma_unmap": 24, "vfio_bitmap": 24,
    "vfio_iova_range": 16, "vfio_iommu_type1_info_cap_iova_range": 16,
    "vfio_iommu_type1_info_dma_avail": 12, "vfio_device_bind_iommufd": 24,
    "vfio_device_attach_iommufd_pt": 16, "vfio_region_info": 32,
}
KNOWN_MIN = {
    "IOMMU_DESTROY": 8, "IOMMU_IOAS_ALLOC": 12, "IOMMU_IOAS_IOVA_RANGES": 32,
    "IOMMU_IOAS_ALLOW_IOVAS": 24, "IOMMU_IOAS_MAP": 40, "IOMMU_IOAS_MAP_FILE": 40,
    "IOMMU_IOAS_COPY": 40, "IOMMU_IOAS_UNMAP": 24, "IOMMU_OPTION": 24, "IOMMU_VFIO_IOAS": 12,
    "VFIO_IOMMU_GET_INFO": 16, "VFIO_IOMMU_MAP_DMA": 32, "VFIO_IOMMU_UNMAP_DMA": 24,
}
# _IO(IOMMUFD_TYPE, IOMMUFD_CMD_BASE + n) and _IO(VFIO_TYPE, VFIO_BASE + n): ';' = 0x3b,
# IOMMUFD_CMD_BASE 0x80, VFIO_BASE 100 (include/uapi/linux/iommufd.h, vfio.h)
KNOWN_NR = {
    "IOMMU_DESTROY": 0x3b80, "IOMMU_IOAS_ALLOC": 0x3b81, "IOMMU_IOAS_ALLOW_IOVAS": 0x3b82,
    "IOMMU_IOAS_COPY": 0x3b83, "IOMMU_IOAS_IOVA_RANGES": 0x3b84, "IOMMU_IOAS_MAP": 0x3b85,
    "IOMMU_IOAS_UNMAP": 0x3b86, "IOMMU_OPTION": 0x3b87, "IOMMU_VFIO_IOAS": 0x3b88,
    "IOMMU_IOAS_MAP_FILE": 0x3b8f, "IOMMU_IOAS_CHANGE_PROCESS": 0x3b92,
    "VFIO_GET_API_VERSION": 0x3b64, "VFIO_CHECK_EXTENSION": 0x3b65, "VFIO_SET_IOMMU": 0x3b66,
    "VFIO_GROUP_GET_STATUS": 0x3b67, "VFIO_GROUP_SET_CONTAINER": 0x3b68,
    "VFIO_GROUP_GET_DEVICE_FD": 0x3b6a, "VFIO_DEVICE_GET_REGION_INFO": 0x3b6c,
    "VFIO_IOMMU_GET_INFO": 0x3b70, "VFIO_IOMMU_MAP_DMA": 0x3b71, "VFIO_IOMMU_UNMAP_DMA": 0x3b72,
    "VFIO_IOMMU_DIRTY_PAGES": 0x3b75, "VFIO_DEVICE_BIND_IOMMUFD": 0x3b76,
    "VFIO_DEVICE_ATTACH_IOMMUFD_PT": 0x3b77,
}


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("name", ALL)
def test_default_round_trip(name):
    """construct's declarative style: build(parse(x)) == x and len == sizeof."""
    sd = uapi.STRUCTS[name]
    raw = uapi.build(name)
    assert len(raw) == sd.size == uapi.sizeof(name)
    parsed = uapi.parse(name, raw)
    assert uapi.build(name, parsed) == raw
    if sd.size_field:
        assert parsed[sd.size_field] == sd.size       # argsz/size filled in, never typed
    if sd.cap:
        assert (parsed.header.id, parsed.header.version) == sd.cap


@pytest.mark.parametrize("name", ALL)
def test_sizeof_is_the_kernel_size(name):
    sd = uapi.STRUCTS[name]
    if sd.flexible is None:
        assert sd.struct.sizeof() == sd.size          # construct agrees with the C layout code
    if name in KNOWN_SIZEOF:
        assert sd.size == KNOWN_SIZEOF[name]


def _scalar_strategy(f: uapi.Field):
    bits = f.size * 8
    if f.signed:
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


def _value_strategy(ctype: str, count: int = 1):
    if ctype == "u8" and count != 1:
        return st.binary(min_size=count, max_size=count)
    if ctype in uapi.STRUCTS:
        sd = uapi.STRUCTS[ctype]
        return st.fixed_dictionaries({f.name: _value_strategy(f.ctype, f.count)
                                      for f in sd.fields if not f.flexible})
    bits = uapi._SCALARS[ctype][1] * 8
    if uapi._SCALARS[ctype][2]:
        return st.integers(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
    return st.integers(0, (1 << bits) - 1)


@pytest.mark.parametrize("name", ALL)
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_random_round_trip(name, data):
    sd = uapi.STRUCTS[name]
    values = {f.name: data.draw(_value_strategy(f.ctype, f.count), label=f.name)
              for f in sd.fields if not f.flexible and f.name != "header"}
    flex = sd.flexible
    if flex is not None:
        if flex.ctype == "u8":
            values[flex.name] = data.draw(st.binary(max_size=64), label=flex.name)
        else:
            values[flex.name] = data.draw(st.lists(_value_strategy(flex.ctype), max_size=4))
            if flex.count_field:
                values[flex.count_field] = len(values[flex.name])
    raw = uapi.build(name, values)
    parsed = uapi.parse(name, raw)
    for k, v in values.items():
        got = parsed[k]
        if isinstance(v, list):
            assert [dict(x) for x in got] == v
        elif isinstance(v, dict):
            assert dict(got) == v
        else:
            assert got == v, k
    assert uapi.build(name, parsed) == raw


# ---------------------------------------------------------------- golden bytes
def test_type1_dma_map_golden():
    raw = uapi.build("vfio_iommu_type1_dma_map",
                     flags=uapi.VFIO_DMA_MAP_FLAG_READ | uapi.VFIO_DMA_MAP_FLAG_WRITE,
                     vaddr=0x7f0000000000, iova=0x100000, size=0x4000)
    assert raw == bytes.fromhex(
        "20000000" "03000000"              # argsz 32, flags READ|WRITE
        "00000000007f0000"                 # vaddr 0x7f0000000000
        "0000100000000000"                 # iova 0x100000
        "0040000000000000")                # size 0x4000
    assert len(raw) == 32


def test_ioas_map_golden():
    raw = uapi.build("iommu_ioas_map", ioas_id=1, user_va=0x7f0000000000, length=0x4000,
                     iova=0x100000, flags=uapi.IOMMU_IOAS_MAP_FIXED_IOVA | uapi.IOMMU_IOAS_MAP_READABLE
                     | uapi.IOMMU_IOAS_MAP_WRITEABLE)
    assert raw == bytes.fromhex("28000000" "07000000" "01000000" "00000000"
                                "00000000007f0000" "0040000000000000" "0000100000000000")


def test_ioas_map_file_fd_is_signed():
    raw = uapi.build("iommu_ioas_map_file", fd=-1, ioas_id=1, length=0x1000,
                     flags=uapi.IOMMU_IOAS_MAP_READABLE)
    assert raw[12:16] == b"\xff\xff\xff\xff"
    assert uapi.parse("iommu_ioas_map_file", raw).fd == -1


# hand-written struct formats of the layouts that work against a real Debian 7.2.13
# kernel (the rig's probes, backends/rig/guest/test_probe_*.py)
RIG_FORMATS = [
    ("iommu_ioas_alloc", "<III", ["size", "flags", "out_ioas_id"]),
    ("iommu_ioas_map", "<IIIIQQQ", ["size", "flags", "ioas_id", "__reserved", "user_va", "length", "iova"]),
    ("iommu_ioas_map_file", "<IIIiQQQ", ["size", "flags", "ioas_id", "fd", "start", "length", "iova"]),
    ("iommu_ioas_unmap", "<IIQQ", ["size", "ioas_id", "iova", "length"]),
    ("iommu_ioas_iova_ranges", "<IIIIQQ",
     ["size", "ioas_id", "num_iovas", "__reserved", "allowed_iovas", "out_iova_alignment"]),
    ("vfio_iommu_type1_dma_map", "<IIQQQ", ["argsz", "flags", "vaddr", "iova", "size"]),
    ("vfio_iommu_type1_dma_unmap", "<IIQQ", ["argsz", "flags", "iova", "size"]),
    ("vfio_device_bind_iommufd", "<IIiIQ", ["argsz", "flags", "iommufd", "out_devid", "token_uuid_ptr"]),
    ("vfio_device_attach_iommufd_pt", "<IIII", ["argsz", "flags", "pt_id", "pasid"]),
    ("vfio_region_info", "<IIIIQQ", ["argsz", "flags", "index", "cap_offset", "size", "offset"]),
]


@pytest.mark.parametrize("name,fmt,names", RIG_FORMATS, ids=[r[0] for r in RIG_FORMATS])
def test_matches_rig_struct_formats(name, fmt, names):
    values = [(i * 0x1111 + 3) % (1 << 31) for i in range(len(names))]
    values[0] = struct.calcsize(fmt)
    assert uapi.build(name, dict(zip(names, values))) == struct.pack(fmt, *values)
    assert uapi.sizeof(name) == struct.calcsize(fmt)


# ---------------------------------------------------------------- variable length
def test_dma_unmap_with_dirty_bitmap():
    bitmap = uapi.build("vfio_bitmap", pgsize=4096, size=8, data=0x7f0000001000)
    raw = uapi.build("vfio_iommu_type1_dma_unmap", iova=0x100000, size=0x4000,
                     flags=uapi.VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP, data=bitmap)
    assert len(raw) == 48
    p = uapi.parse("vfio_iommu_type1_dma_unmap", raw)
    assert p.argsz == 48 and uapi.parse("vfio_bitmap", p.data).pgsize == 4096


def test_explicit_argsz_is_kept():
    raw = uapi.build("vfio_iommu_type1_info", argsz=4096)
    assert uapi.parse("vfio_iommu_type1_info", raw).argsz == 4096 and len(raw) == 24


def test_type1_info_cap_chain():
    base = uapi.sizeof("vfio_iommu_type1_info")
    caps = uapi.build_cap_chain(base, [
        ("vfio_iommu_type1_info_cap_iova_range",
         {"iova_ranges": [{"start": 0, "end": 0xfedfffff}, {"start": 0xfef00000, "end": (1 << 39) - 1}]}),
        ("vfio_iommu_type1_info_dma_avail", {"avail": 65535}),
    ])
    info = uapi.build("vfio_iommu_type1_info", argsz=base + len(caps),
                      flags=uapi.VFIO_IOMMU_INFO_PGSIZES | uapi.VFIO_IOMMU_INFO_CAPS,
                      iova_pgsizes=0x40201000, cap_offset=base) + caps
    hdr = uapi.parse("vfio_iommu_type1_info", info)
    chain = uapi.parse_cap_chain(info, hdr.cap_offset)
    assert [c.header.id for c in chain] == [uapi.VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                                            uapi.VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL]
    assert chain[0].nr_iovas == 2 and chain[0].iova_ranges[1].end == (1 << 39) - 1
    assert chain[0].header.next == chain[1]["_offset"] == base + 16 + 2 * 16
    assert chain[1].avail == 65535 and chain[1].header.next == 0
    # parsed caps build back to the same bytes
    assert uapi.build("vfio_iommu_type1_info_cap_iova_range", chain[0]) == info[base:base + 48]


def test_cap_chain_loop_is_an_error():
    raw = bytearray(uapi.build("vfio_iommu_type1_info_dma_avail", avail=1, header={"next": 0}))
    raw = bytes(8) + raw
    raw = raw[:8 + 4] + (8).to_bytes(4, "little") + raw[16:]   # next points to itself
    with pytest.raises(uapi.UapiError):
        uapi.parse_cap_chain(raw, 8)


def test_iova_range_array_behind_user_pointer():
    ranges = [{"start": 0, "last": 0xfedfffff}, {"start": 0xfef00000, "last": 0x7fffffffff}]
    blob = uapi.build_array("iommu_iova_range", ranges)
    assert len(blob) == 32
    assert [dict(r) for r in uapi.parse_array("iommu_iova_range", blob, 2)] == ranges
    req = uapi.build("iommu_ioas_iova_ranges", ioas_id=1, num_iovas=2, allowed_iovas=0x7f0000002000)
    assert uapi.parse("iommu_ioas_iova_ranges", req).allowed_iovas == 0x7f0000002000


def test_device_feature_dma_buf():
    dma_buf = uapi.build("vfio_device_feature_dma_buf", region_index=0, open_flags=os.O_RDWR,
                         dma_ranges=[{"offset": 0, "length": 0x1000}])
    assert uapi.parse("vfio_device_feature_dma_buf", dma_buf).nr_ranges == 1
    feat = uapi.build("vfio_device_feature",
                      flags=uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_DMA_BUF, data=dma_buf)
    assert uapi.parse("vfio_device_feature", feat).argsz == 8 + 16 + 16


def test_hw_info_union_alias():
    raw = uapi.build("iommu_hw_info", in_data_type=uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD)
    p = uapi.parse("iommu_hw_info", raw)
    assert p.out_data_type == p.in_data_type == uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD
    assert uapi.offsetof("iommu_hw_info", "in_data_type") == uapi.offsetof("iommu_hw_info", "out_data_type")


# ---------------------------------------------------------------- misuse
def test_unknown_field_is_named():
    with pytest.raises(uapi.UapiError) as e:
        uapi.build("vfio_iommu_type1_dma_map", length=0x1000)
    assert isinstance(e.value, VfioEmuError)
    assert "length" in str(e.value) and "size" in str(e.value)


def test_unknown_struct_and_short_buffer():
    with pytest.raises(uapi.UapiError, match="unknown UAPI struct"):
        uapi.build("vfio_dma_map")
    with pytest.raises(uapi.UapiError, match="needs 40 bytes"):
        uapi.parse("iommu_ioas_map", bytes(8))
    p = uapi.parse("iommu_ioas_map", uapi.build("iommu_ioas_map")[:24], zero_extend=True)
    assert p.iova == 0 and p.size == 40


# ---------------------------------------------------------------- ioctl registry
@pytest.mark.parametrize("name", list(uapi.IOCTLS))
def test_ioctl_attribute_and_encoding(name):
    ioc = uapi.IOCTLS[name]
    assert getattr(uapi, name) == ioc.nr
    assert uapi._IOC_TYPE(ioc.nr) == ord(";") and uapi._IOC_DIR(ioc.nr) == uapi._IOC_NONE
    assert uapi._IOC_SIZE(ioc.nr) == 0               # every VFIO/iommufd ioctl is _IO()
    assert ioc in uapi.IOCTLS_BY_NR[ioc.nr]
    if name in KNOWN_NR:
        assert ioc.nr == KNOWN_NR[name]
    if ioc.min_size is not None:
        assert 0 < ioc.min_size <= ioc.size
    if name in KNOWN_MIN:
        assert ioc.min_size == KNOWN_MIN[name]
    assert uapi.ioctl_name(ioc.nr, ioc.fd) == name


def test_iommufd_min_sizes_cover_every_iommufd_ioctl():
    for ioc in uapi.IOCTLS.values():
        if ioc.fd == "iommufd":
            assert ioc.min_size is not None, ioc.name
    assert uapi.IOCTLS["IOMMU_HWPT_ALLOC"].min_size == 24       # offsetofend(__reserved)
    assert uapi.IOCTLS["IOMMU_GET_HW_INFO"].min_size == 32
    assert uapi.IOCTLS["VFIO_DEVICE_BIND_IOMMUFD"].min_size == 16  # offsetofend(out_devid)


def test_shared_number_needs_the_fd_kind():
    nr = uapi.VFIO_IOMMU_DIRTY_PAGES
    assert nr == uapi.VFIO_DEVICE_FEATURE
    assert uapi.lookup_ioctl(nr) is None
    assert uapi.ioctl_name(nr) == "VFIO_IOMMU_DIRTY_PAGES|VFIO_DEVICE_FEATURE"
    assert uapi.lookup_ioctl(nr, "device").name == "VFIO_DEVICE_FEATURE"
    assert uapi.lookup_ioctl(nr, "container").name == "VFIO_IOMMU_DIRTY_PAGES"


def test_iommufd_fd_reaches_the_vfio_compat_ioctls():
    assert uapi.lookup_ioctl(uapi.VFIO_IOMMU_MAP_DMA, "iommufd").name == "VFIO_IOMMU_MAP_DMA"
    assert uapi.lookup_ioctl(uapi.IOMMU_IOAS_MAP, "container") is None
    assert uapi.ioctl_name(uapi._IO(";", 0x99)) == "_IOC(0, ';', 0x99, 0)"
    with pytest.raises(uapi.UapiError):
        uapi.lookup_ioctl(1, "socket")


def test_decode_request():
    raw = uapi.build("iommu_ioas_unmap", ioas_id=3, iova=0, length=(1 << 64) - 1)
    ioc, p = uapi.decode(uapi.IOMMU_IOAS_UNMAP, raw, "iommufd")
    assert ioc.name == "IOMMU_IOAS_UNMAP" and ioc.struct is uapi.iommu_ioas_unmap
    assert p.ioas_id == 3 and p.length == (1 << 64) - 1
    with pytest.raises(uapi.UapiError, match="takes int"):
        uapi.decode(uapi.VFIO_SET_IOMMU, b"", "container")


def test_ioc_helpers():
    nr = uapi._IOWR("U", 0x12, 40)
    assert (uapi._IOC_DIR(nr), uapi._IOC_TYPE(nr), uapi._IOC_NR(nr), uapi._IOC_SIZE(nr)) == \
        (uapi._IOC_READ | uapi._IOC_WRITE, ord("U"), 0x12, 40)
    assert uapi._IOR(";", 1, 4) != uapi._IOW(";", 1, 4)


# ---------------------------------------------------------------- constants
def test_constants_agree_with_python():
    assert uapi.F_ADD_SEALS == fcntl.F_ADD_SEALS and uapi.F_GET_SEALS == fcntl.F_GET_SEALS
    for n in ("F_SEAL_SEAL", "F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_WRITE"):
        assert getattr(uapi, n) == getattr(fcntl, n)
    assert uapi.MFD_CLOEXEC == os.MFD_CLOEXEC and uapi.MFD_ALLOW_SEALING == os.MFD_ALLOW_SEALING
    assert uapi.MFD_HUGETLB == os.MFD_HUGETLB


def test_constant_registry_excludes_ioctls_and_helpers():
    assert "VFIO_IOMMU_MAP_DMA" not in uapi.CONSTANTS
    assert not any(n.startswith("_IOC") for n in uapi.CONSTANTS)
    assert uapi.CONSTANTS["VFIO_TYPE1v2_IOMMU"][0] == 3
    assert uapi.CONSTANTS["IOMMU_IOAS_MAP_FIXED_IOVA"][1] == "linux/iommufd.h"


def test_kernel_version():
    assert uapi.kernel_version("7.2.13-1") == (7, 2)
    assert uapi.kernel_version("6.13~rc4-1~exp1") == (6, 13)
