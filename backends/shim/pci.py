"""The simulated vfio-pci function a real QEMU realizes: config space with a
capability list, BARs, a ROM, INTx/MSI/MSI-X, reset.

``backends/simulated/vfio.py`` gives the VFIO core (groups, device fds, BAR
mmaps as VM_PFNMAP).  What vfio-pci realize needs on top of it lives here, as
drivers/vfio/pci/vfio_pci_core.c and vfio_pci_config.c answer it:

* ``VFIO_DEVICE_GET_INFO`` / ``GET_REGION_INFO`` (ROM read-only, config
  READ|WRITE, BARs READ|WRITE|MMAP with a sparse-mmap capability when asked),
  ``GET_IRQ_INFO``, ``SET_IRQS`` (eventfds accepted, nothing fires),
  ``RESET``, ``GET_PCI_HOT_RESET_INFO``;
* region pread/pwrite: config space (vfio_pci_config_rw(), with the BAR
  sizing that vfio_bar_fixup() virtualizes), BARs (the same pages the
  PFNMAP mmap shows to the simulated kernel), the ROM.

``PciShape`` is the device; ``PciShape()`` looks like QEMU's edu device
(hw/misc/edu.c: 1234:11e8, rev 0x10, class 0x00ff, BAR0 1 MiB MMIO, MSI).
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

from backends import uapi
from backends.host import PAGE_SIZE
from backends.simulated.iommu import SimVfioDevice
from backends.simulated.vfio import VFIO_PCI_OFFSET_SHIFT, VfioDeviceFile, bar_store

# include/uapi/linux/vfio.h (not in backends/uapi.py: only the device model needs them)
VFIO_DEVICE_GET_IRQ_INFO = uapi._IO(uapi.VFIO_TYPE, uapi.VFIO_BASE + 9)
VFIO_DEVICE_SET_IRQS = uapi._IO(uapi.VFIO_TYPE, uapi.VFIO_BASE + 10)
VFIO_DEVICE_RESET = uapi._IO(uapi.VFIO_TYPE, uapi.VFIO_BASE + 11)
VFIO_DEVICE_GET_PCI_HOT_RESET_INFO = uapi._IO(uapi.VFIO_TYPE, uapi.VFIO_BASE + 12)
DEVICE_IOCTLS = {VFIO_DEVICE_GET_IRQ_INFO: "VFIO_DEVICE_GET_IRQ_INFO",
                 VFIO_DEVICE_SET_IRQS: "VFIO_DEVICE_SET_IRQS",
                 VFIO_DEVICE_RESET: "VFIO_DEVICE_RESET",
                 VFIO_DEVICE_GET_PCI_HOT_RESET_INFO: "VFIO_DEVICE_GET_PCI_HOT_RESET_INFO"}
VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_INFO_MASKABLE = 1 << 0, 1 << 1
VFIO_IRQ_INFO_AUTOMASKED, VFIO_IRQ_INFO_NORESIZE = 1 << 2, 1 << 3
VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_BOOL, VFIO_IRQ_SET_DATA_EVENTFD = 1, 2, 4
VFIO_IRQ_SET_DATA_TYPE_MASK = 7
VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_ACTION_TRIGGER = 8, 16, 32
VFIO_IRQ_SET_ACTION_TYPE_MASK = 56
INTX, MSI, MSIX, ERR, REQ = range(5)
VFIO_PCI_NUM_IRQS = 5
VFIO_REGION_INFO_CAP_SPARSE_MMAP = 1
ROM, CONFIG = uapi.VFIO_PCI_ROM_REGION_INDEX, uapi.VFIO_PCI_CONFIG_REGION_INDEX

_IRQ_INFO = struct.Struct("<IIII")           # struct vfio_irq_info
_IRQ_SET = struct.Struct("<IIIII")           # struct vfio_irq_set (data[] follows)
_REGION_INFO = struct.Struct("<IIIIQQ")      # struct vfio_region_info
_CAP_HDR = struct.Struct("<HHI")             # struct vfio_info_cap_header
_SPARSE = struct.Struct("<II")               # nr_areas, reserved; then {u64 offset, u64 size}


@dataclass
class Bar:
    size: int
    mem64: bool = False
    prefetch: bool = False
    io: bool = False
    sparse: tuple[tuple[int, int], ...] | None = None   # mmap-able (offset, size) areas


@dataclass
class PciShape:
    """What the device looks like.  Defaults: QEMU's edu (hw/misc/edu.c)."""

    vendor: int = 0x1234
    device: int = 0x11E8
    subsystem_vendor: int = 0x1AF4
    subsystem: int = 0x1100
    revision: int = 0x10
    class_code: int = 0x00FF00               # class 0x00, subclass 0xff, prog-if 0
    bars: dict[int, Bar] = field(default_factory=lambda: {0: Bar(1 << 20)})
    rom: int = 0                              # ROM size (0: none)
    msi_vectors: int = 1                      # 0: no MSI capability
    msix_vectors: int = 0                     # 0: no MSI-X capability
    msix_bar: int = 0
    msix_table_offset: int = 0
    msix_pba_offset: int = 0x800
    intx_pin: int = 1                         # INTA
    pcie: bool = False
    reset_works: bool = True                  # vfio_pci_core: !pci_probe_reset_function()

    @property
    def config_size(self) -> int:
        """pdev->cfg_size: 4096 for PCI Express, 256 for conventional PCI."""
        return 4096 if self.pcie else 256


def _caps(shape: PciShape) -> list[tuple[int, bytes, bytes]]:
    """(cap id, initial body after id/next, writable mask of the body)."""
    out = []
    if shape.msi_vectors:
        mmc = (shape.msi_vectors - 1).bit_length()
        ctrl = (mmc << 1) | 0x80                            # 64-bit address capable
        out.append((0x05, struct.pack("<HIIH", ctrl, 0, 0, 0),
                    struct.pack("<HIIH", 0x0071, 0xFFFFFFFC, 0xFFFFFFFF, 0xFFFF)))
    if shape.msix_vectors:
        ctrl = shape.msix_vectors - 1
        out.append((0x11, struct.pack("<HII", ctrl, shape.msix_table_offset | shape.msix_bar,
                                      shape.msix_pba_offset | shape.msix_bar),
                    struct.pack("<HII", 0xC000, 0, 0)))
    if shape.pcie:
        body = bytearray(0x3A)
        body[0:2] = struct.pack("<H", 0x0002)              # version 2, endpoint
        out.append((0x10, bytes(body), bytes(len(body))))
    return out


class PciFunction:
    """One simulated function's config space, BAR and ROM contents and IRQ state."""

    def __init__(self, dev: SimVfioDevice, shape: PciShape):
        self.dev, self.shape = dev, shape
        size = shape.config_size
        cfg, wm = bytearray(size), bytearray(size)
        struct.pack_into("<HH", cfg, 0, shape.vendor, shape.device)
        struct.pack_into("<H", wm, 4, 0x0547)               # command: io|mem|master|parity|serr|intx-disable
        cfg[8] = shape.revision
        cfg[9:12] = shape.class_code.to_bytes(3, "little")
        struct.pack_into("<HH", cfg, 0x2C, shape.subsystem_vendor, shape.subsystem)
        wm[0x0C] = wm[0x0D] = 0xFF                          # cache line, latency timer
        cfg[0x3D] = shape.intx_pin
        wm[0x3C] = 0xFF                                     # interrupt line
        skip = False
        for i in range(6):
            if skip:
                skip = False
                continue
            bar = shape.bars.get(i)
            if bar is None:
                continue
            low = 0x1 if bar.io else (0x4 if bar.mem64 else 0) | (0x8 if bar.prefetch else 0)
            struct.pack_into("<I", cfg, 0x10 + 4 * i, low)
            mask = ~(bar.size - 1) & ((1 << 64) - 1)
            struct.pack_into("<I", wm, 0x10 + 4 * i, mask & 0xFFFFFFF0 & 0xFFFFFFFF)
            if bar.mem64 and i < 5:
                struct.pack_into("<I", wm, 0x14 + 4 * i, mask >> 32)
                skip = True
        if shape.rom:
            struct.pack_into("<I", wm, 0x30, ~(shape.rom - 1) & 0xFFFFF801)
        caps = _caps(shape)
        if caps:
            cfg[6] |= 0x10                                   # status: capabilities list
            pos = 0x40
            cfg[0x34] = pos
            for n, (cid, body, wbody) in enumerate(caps):
                nxt = pos + 2 + len(body)
                nxt = (nxt + 3) & ~3 if n + 1 < len(caps) else 0
                cfg[pos], cfg[pos + 1] = cid, nxt
                cfg[pos + 2:pos + 2 + len(body)] = body
                wm[pos + 2:pos + 2 + len(body)] = wbody
                pos = nxt
        self.config, self.wmask, self.reset_config = cfg, wm, bytes(cfg)
        self.irqs: dict[int, dict[int, int]] = {}          # index -> {vector: eventfd}
        self.rom = (b"\x55\xaa" + bytes(max(0, shape.rom - 2))) if shape.rom else b""
        self.resets = 0

    # ---- ioctls ---------------------------------------------------------------
    def irq_count(self, index: int) -> int:
        """vfio_pci_get_irq_count()."""
        s = self.shape
        return {INTX: 1 if s.intx_pin else 0, MSI: s.msi_vectors, MSIX: s.msix_vectors,
                ERR: 1 if s.pcie else 0, REQ: 1}[index]

    def ioctl(self, request: int, buf: bytes):
        if request == uapi.VFIO_DEVICE_GET_INFO:
            return self.get_info(buf)
        if request == uapi.VFIO_DEVICE_GET_REGION_INFO:
            return self.get_region_info(buf)
        if request == VFIO_DEVICE_GET_IRQ_INFO:
            return self.get_irq_info(buf)
        if request == VFIO_DEVICE_SET_IRQS:
            return self.set_irqs(buf)
        if request == VFIO_DEVICE_RESET:
            return self.reset(), buf
        if request == VFIO_DEVICE_GET_PCI_HOT_RESET_INFO:
            # vfio_pci_ioctl_get_pci_hot_reset_info(): -ENODEV when no slot or bus
            # reset is possible (pci_probe_reset_slot()/bus() fail); the simulated
            # function sits on a root bus, with no slot or bus reset.
            return -errno.ENODEV, buf
        return None

    def get_info(self, buf: bytes):
        """vfio_pci_ioctl_get_info(): -EINVAL argsz < minsz; PCI, RESET when
        reset_works; VFIO_PCI_NUM_REGIONS regions, VFIO_PCI_NUM_IRQS irqs."""
        minsz = uapi.offsetofend("vfio_device_info", "num_irqs")
        if len(buf) < minsz or int.from_bytes(buf[:4], "little") < minsz:
            return -errno.EINVAL, buf
        flags = uapi.VFIO_DEVICE_FLAGS_PCI
        if self.shape.reset_works:
            flags |= uapi.VFIO_DEVICE_FLAGS_RESET
        out = struct.pack("<IIII", int.from_bytes(buf[:4], "little"), flags,
                          uapi.VFIO_PCI_NUM_REGIONS, VFIO_PCI_NUM_IRQS)
        return 0, out + buf[minsz:]

    def region_size(self, index: int) -> int:
        if index == CONFIG:
            return self.shape.config_size
        if index == ROM:
            return self.shape.rom
        bar = self.shape.bars.get(index)
        return bar.size if bar is not None else 0

    def get_region_info(self, buf: bytes):
        """vfio_pci_ioctl_get_region_info(): config READ|WRITE (pdev->cfg_size);
        BARs READ|WRITE, plus MMAP when page-aligned memory BARs, plus a
        SPARSE_MMAP capability chained with vfio_info_add_capability() (an
        argsz too small for it: FLAG_CAPS, cap_offset 0 and the argsz needed,
        so the caller asks again); the ROM READ only; VGA absent (size 0);
        index >= num_regions -EINVAL."""
        minsz = uapi.offsetofend("vfio_region_info", "offset")
        if len(buf) < minsz:
            return -errno.EINVAL, buf
        argsz, _, index, _, _, _ = _REGION_INFO.unpack_from(buf)
        if argsz < minsz or index >= uapi.VFIO_PCI_NUM_REGIONS:
            return -errno.EINVAL, buf
        size = self.region_size(index)
        flags, cap = 0, b""
        if index == CONFIG:
            flags = uapi.VFIO_REGION_INFO_FLAG_READ | uapi.VFIO_REGION_INFO_FLAG_WRITE
        elif index == ROM:
            flags = uapi.VFIO_REGION_INFO_FLAG_READ if size else 0
        elif size:
            bar = self.shape.bars[index]
            flags = uapi.VFIO_REGION_INFO_FLAG_READ | uapi.VFIO_REGION_INFO_FLAG_WRITE
            if not bar.io and size % PAGE_SIZE == 0:
                flags |= uapi.VFIO_REGION_INFO_FLAG_MMAP
                if bar.sparse is not None:
                    areas = b"".join(struct.pack("<QQ", o, s) for o, s in bar.sparse)
                    cap = _CAP_HDR.pack(VFIO_REGION_INFO_CAP_SPARSE_MMAP, 1, 0) + \
                        _SPARSE.pack(len(bar.sparse), 0) + areas
        cap_offset = 0
        need = minsz
        if cap:
            flags |= uapi.VFIO_REGION_INFO_FLAG_CAPS
            need = minsz + len(cap)
            if argsz >= need:
                cap_offset = minsz
        out = bytearray(buf)
        _REGION_INFO.pack_into(out, 0, max(argsz, need) if cap else argsz, flags, index,
                               cap_offset, size, index << VFIO_PCI_OFFSET_SHIFT)
        if cap_offset:
            out[minsz:minsz + len(cap)] = cap
        return 0, bytes(out)

    def get_irq_info(self, buf: bytes):
        """vfio_pci_ioctl_get_irq_info(): -EINVAL argsz/index; ERR only on PCI
        Express; EVENTFD, INTx MASKABLE|AUTOMASKED, the others NORESIZE."""
        if len(buf) < _IRQ_INFO.size:
            return -errno.EINVAL, buf
        argsz, _, index, _ = _IRQ_INFO.unpack_from(buf)
        if argsz < _IRQ_INFO.size or index >= VFIO_PCI_NUM_IRQS:
            return -errno.EINVAL, buf
        if index == ERR and not self.shape.pcie:
            return -errno.EINVAL, buf
        flags = VFIO_IRQ_INFO_EVENTFD
        flags |= (VFIO_IRQ_INFO_MASKABLE | VFIO_IRQ_INFO_AUTOMASKED) if index == INTX \
            else VFIO_IRQ_INFO_NORESIZE
        return 0, _IRQ_INFO.pack(argsz, flags, index, self.irq_count(index)) + buf[16:]

    def set_irqs(self, buf: bytes):
        """vfio_pci_ioctl_set_irqs() -> vfio_set_irqs_validate_and_prepare():
        -EINVAL argsz, index, unknown flags, not exactly one data and one action
        type, start or start+count beyond the irq count, a data part shorter
        than count elements.  Eventfds are kept, never
        signalled (the simulated function raises no interrupts)."""
        if len(buf) < _IRQ_SET.size:
            return -errno.EINVAL, buf
        argsz, flags, index, start, count = _IRQ_SET.unpack_from(buf)
        if argsz < _IRQ_SET.size or index >= VFIO_PCI_NUM_IRQS:
            return -errno.EINVAL, buf
        dtype, action = flags & VFIO_IRQ_SET_DATA_TYPE_MASK, flags & VFIO_IRQ_SET_ACTION_TYPE_MASK
        if flags & ~(VFIO_IRQ_SET_DATA_TYPE_MASK | VFIO_IRQ_SET_ACTION_TYPE_MASK) or \
                bin(dtype).count("1") != 1 or bin(action).count("1") != 1:
            return -errno.EINVAL, buf
        max_irq = self.irq_count(index)
        if start >= max_irq or start + count > max_irq:
            return -errno.EINVAL, buf
        size = {VFIO_IRQ_SET_DATA_NONE: 0, VFIO_IRQ_SET_DATA_BOOL: 1,
                VFIO_IRQ_SET_DATA_EVENTFD: 4}[dtype]
        if size and argsz - _IRQ_SET.size < size * count:
            return -errno.EINVAL, buf
        if dtype == VFIO_IRQ_SET_DATA_EVENTFD and action == VFIO_IRQ_SET_ACTION_TRIGGER:
            vecs = self.irqs.setdefault(index, {})
            for i in range(count):
                fd = struct.unpack_from("<i", buf, _IRQ_SET.size + 4 * i)[0]
                if fd < 0:
                    vecs.pop(start + i, None)
                else:
                    vecs[start + i] = fd
            if not vecs:
                self.irqs.pop(index, None)
        elif dtype == VFIO_IRQ_SET_DATA_NONE and action == VFIO_IRQ_SET_ACTION_TRIGGER and not count:
            self.irqs.pop(index, None)                       # disable
        return 0, buf

    def reset(self) -> int:
        """vfio_pci_ioctl_reset(): -EINVAL unless reset_works; config space
        back to power-on values, IRQs off."""
        if not self.shape.reset_works:
            return -errno.EINVAL
        self.config[:] = self.reset_config
        self.irqs.clear()
        self.resets += 1
        return 0

    # ---- region I/O -------------------------------------------------------------
    def rw(self, offset: int, length: int, data: bytes | None):
        """vfio_pci_rw(): (n, data) for a read, n for a write, or -errno.
        Config: vfio_pci_config_rw() (-EINVAL past cfg_size); BARs and ROM:
        vfio_pci_bar_rw() (-EINVAL past the region; the ROM is read-only)."""
        index, pos = offset >> VFIO_PCI_OFFSET_SHIFT, offset & ((1 << VFIO_PCI_OFFSET_SHIFT) - 1)
        size = self.region_size(index) if index < uapi.VFIO_PCI_NUM_REGIONS else 0
        if not size or pos >= size:
            return (-errno.EINVAL, b"") if data is None else -errno.EINVAL
        length = min(length, size - pos)
        if index == CONFIG:
            if data is None:
                return length, bytes(self.config[pos:pos + length])
            for i, b in enumerate(data[:length]):
                m = self.wmask[pos + i]
                self.config[pos + i] = (self.config[pos + i] & ~m) | (b & m)
            return length
        if index == ROM:
            if data is None:
                return length, self.rom[pos:pos + length]
            return -errno.EINVAL
        store = bar_store(self.dev, index)
        out, done = bytearray(), 0
        while done < length:
            page = store.pages[(pos + done) // PAGE_SIZE]
            off = (pos + done) % PAGE_SIZE
            n = min(length - done, PAGE_SIZE - off)
            if data is None:
                out += page.data[off:off + n]
            else:
                page.data[off:off + n] = data[done:done + n]
            done += n
        return (length, bytes(out)) if data is None else length


IRQ_IOCTLS = (VFIO_DEVICE_GET_IRQ_INFO, VFIO_DEVICE_SET_IRQS)


def irq_fields(request: int, buf: bytes) -> dict:
    """The request fields of GET_IRQ_INFO / SET_IRQS, for the log."""
    if request == VFIO_DEVICE_GET_IRQ_INFO and len(buf) >= _IRQ_INFO.size:
        return dict(zip(("argsz", "flags", "index", "count"), _IRQ_INFO.unpack_from(buf)))
    if request == VFIO_DEVICE_SET_IRQS and len(buf) >= _IRQ_SET.size:
        d = dict(zip(("argsz", "flags", "index", "start", "count"), _IRQ_SET.unpack_from(buf)))
        if d["flags"] & VFIO_IRQ_SET_DATA_EVENTFD:
            n = min(d["count"], (len(buf) - _IRQ_SET.size) // 4)
            d["eventfds"] = list(struct.unpack_from(f"<{n}i", buf, _IRQ_SET.size))
        return d
    return {}


_FEATURE = struct.Struct("<II")              # struct vfio_device_feature: argsz, flags
_DMA_BUF = struct.Struct("<IIII")            # region_index, open_flags, flags, nr_ranges
_DMA_RANGE = struct.Struct("<QQ")            # struct vfio_region_dma_range


def is_dma_buf_get(request: int, buf) -> bool:
    """VFIO_DEVICE_FEATURE asking for feature VFIO_DEVICE_FEATURE_DMA_BUF."""
    return request == uapi.VFIO_DEVICE_FEATURE and len(buf) >= _FEATURE.size and \
        _FEATURE.unpack_from(buf)[1] & uapi.VFIO_DEVICE_FEATURE_MASK == uapi.VFIO_DEVICE_FEATURE_DMA_BUF


def vfio_pci_core_feature_dma_buf(host, fn: "PciFunction", buf: bytes):
    """drivers/vfio/pci/vfio_pci_dmabuf.c vfio_pci_core_feature_dma_buf() (6.19+,
    profile.map_file_dmabuf; QEMU 11.0+ asks it for every mmap-able BAR,
    hw/vfio/region.c vfio_region_create_dma_buf()).  vfio_ioctl_device_feature():
    -EINVAL argsz < 8, unknown flag bits, GET and SET together; vfio_check_feature():
    -EINVAL an op other than GET, argsz < 16 (PROBE: 0); -EINVAL nr_ranges 0;
    validate_dmabuf_input(): -ENODEV region_index past the BARs, -EINVAL no such
    BAR, a range not page-aligned or past the BAR (-EFAULT: the ranges past argsz).
    Then a dma-buf fd over the ranges (the simulated kernel's DMABUF file,
    which IOMMU_IOAS_MAP_FILE maps, iommufd/pages.py iopt_alloc_dmabuf_pages())."""
    argsz, flags = _FEATURE.unpack_from(buf)
    ops = flags & ~uapi.VFIO_DEVICE_FEATURE_MASK
    known = uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_SET | uapi.VFIO_DEVICE_FEATURE_PROBE
    both = uapi.VFIO_DEVICE_FEATURE_GET | uapi.VFIO_DEVICE_FEATURE_SET
    if argsz < _FEATURE.size or ops & ~known or ops & both == both:
        return -errno.EINVAL, buf
    if ops & uapi.VFIO_DEVICE_FEATURE_SET:
        return -errno.EINVAL, buf
    if ops & uapi.VFIO_DEVICE_FEATURE_PROBE:
        return 0, buf
    if argsz < _FEATURE.size + _DMA_BUF.size or len(buf) < _FEATURE.size + _DMA_BUF.size:
        return -errno.EINVAL, buf
    index, _open_flags, _flags, nr = _DMA_BUF.unpack_from(buf, _FEATURE.size)
    if not nr:
        return -errno.EINVAL, buf
    first = _FEATURE.size + _DMA_BUF.size
    if len(buf) < first + nr * _DMA_RANGE.size:
        return -errno.EFAULT, buf
    if index >= ROM:
        return -errno.ENODEV, buf
    bar = fn.region_size(index)
    if not bar:
        return -errno.EINVAL, buf
    total = 0
    for i in range(nr):
        off, length = _DMA_RANGE.unpack_from(buf, first + i * _DMA_RANGE.size)
        if off % PAGE_SIZE or length % PAGE_SIZE or off + length > bar:
            return -errno.EINVAL, buf
        total += length
    return host.dmabuf_export(total), buf


def device_ioctl(host, df: VfioDeviceFile, request: int, arg):
    """The device fd's ioctl: this module's answers, else the VFIO core's
    (vfio.py: BIND/ATTACH/DETACH and -ENOTTY).  Access first, as
    vfio_device_fops_unl_ioctl() checks it."""
    fn = host.pci_functions.get(id(df.dev))
    if fn is not None and df.access_granted and host.profile.map_file_dmabuf and \
            not isinstance(arg, int) and is_dma_buf_get(request, arg):
        return vfio_pci_core_feature_dma_buf(host, fn, bytes(arg))
    if fn is not None and df.access_granted:
        r = fn.ioctl(request, bytes(arg) if not isinstance(arg, int) else b"")
        if r is not None:
            return r
    return df.ioctl(request, arg)
