"""QEMU's ``edu`` PCI device as a DMA engine behind a VFIO device fd.

The device (QEMU hw/misc/edu.c, docs/specs/edu.rst) copies between an IOVA
and its 4 KiB internal buffer at device address 0x40000: BAR0 registers
src 0x80, dst 0x88, count 0x90, cmd 0x98; cmd bits 1 start, 2 direction
(edu -> RAM), 4 raise an interrupt.  The copy runs from a timer 100 ms (virtual
time) after the start and clears the start bit when done, so callers poll.
One transfer moves at most 0xfff bytes (see ``_check``).  The buffer has no
MMIO window: ``read_buffer``/``write_buffer`` go through a bounce page the
caller has mapped both in its address space and at an IOVA.
edu's DMA mask is 28 bits, so IOVAs must be below 256 MiB.

Everything goes through a ``backends.host.Host``: region offsets from
VFIO_DEVICE_GET_REGION_INFO, then ``pread``/``pwrite`` on the device fd
(QEMU hw/misc/edu.c: BAR0 registers).  The device fd comes from
VFIO_GROUP_GET_DEVICE_FD (type1) or a cdev ``/dev/vfio/devices/vfioN`` after
VFIO_DEVICE_BIND_IOMMUFD + VFIO_DEVICE_ATTACH_IOMMUFD_PT.
"""

from __future__ import annotations

import os
import struct
import time

from backends import uapi
from backends.errors import HostError, UsageError
from backends.host import Host

EDU_VENDOR, EDU_DEVICE = 0x1234, 0x11E8
EDU_IDENT = 0x00                           # reads 0x010000ed
EDU_DMA_SRC, EDU_DMA_DST, EDU_DMA_CNT, EDU_DMA_CMD = 0x80, 0x88, 0x90, 0x98
EDU_DMA_RUN, EDU_DMA_TO_PCI, EDU_DMA_IRQ = 0x1, 0x2, 0x4   # TO_PCI: edu buffer -> RAM
EDU_BUFFER, EDU_BUFFER_SIZE = 0x40000, 0x1000
EDU_DMA_MASK = (1 << 28) - 1
PCI_COMMAND = 0x04
PCI_COMMAND_MEMORY, PCI_COMMAND_MASTER = 0x2, 0x4


def edu_devices() -> list[str]:
    """PCI addresses of the edu devices in sysfs (e.g. ``0000:00:01.0``)."""
    out = []
    base = "/sys/bus/pci/devices"
    for d in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        with open(f"{base}/{d}/vendor") as v, open(f"{base}/{d}/device") as p:
            if int(v.read(), 16) == EDU_VENDOR and int(p.read(), 16) == EDU_DEVICE:
                out.append(d)
    return out


def iommu_group(bdf: str) -> int:
    """The IOMMU group number of PCI device ``bdf`` (/dev/vfio/N)."""
    return int(os.path.basename(os.readlink(f"/sys/bus/pci/devices/{bdf}/iommu_group")))


def vfio_cdev(bdf: str) -> str:
    """The device's cdev, ``/dev/vfio/devices/vfioN`` (VFIO_DEVICE_CDEV, 6.6+)."""
    d = f"/sys/bus/pci/devices/{bdf}/vfio-dev"
    names = os.listdir(d) if os.path.isdir(d) else []
    if not names:
        raise HostError("no vfio-dev for the device (not bound to vfio-pci, or no "
                        "VFIO_DEVICE_CDEV)", where=d)
    return f"/dev/vfio/devices/{names[0]}"


class Edu:
    """One edu device behind ``device_fd`` on ``host``."""

    def __init__(self, host: Host, device_fd: int, *, timeout: float = 10.0):
        self.host, self.fd, self.timeout = host, device_fd, timeout
        self.bar0 = self.region_offset(uapi.VFIO_PCI_BAR0_REGION_INDEX)
        self.config = self.region_offset(uapi.VFIO_PCI_CONFIG_REGION_INDEX)

    def region_offset(self, index: int) -> int:
        """VFIO_DEVICE_GET_REGION_INFO(index).offset: where the region sits in the fd."""
        c = uapi.codec("vfio_region_info")
        ret, out = self.host.ioctl(self.fd, uapi.VFIO_DEVICE_GET_REGION_INFO,
                                   c.pack(c.size, 0, index, 0, 0, 0))
        if ret < 0:
            raise HostError(f"VFIO_DEVICE_GET_REGION_INFO({index}) = {ret} "
                            f"({os.strerror(-ret)})", where=f"device fd {self.fd}")
        return dict(zip(c.names, c.unpack(out)))["offset"]

    # -- registers ------------------------------------------------------
    def _pread(self, off: int, n: int) -> bytes:
        ret, data = self.host.pread(self.fd, n, off)
        if ret != n:
            raise HostError(f"pread({n} bytes at {off:#x}) = {ret}", where=f"device fd {self.fd}")
        return data

    def _pwrite(self, off: int, data: bytes) -> None:
        ret = self.host.pwrite(self.fd, data, off)
        if ret != len(data):
            raise HostError(f"pwrite({len(data)} bytes at {off:#x}) = {ret}",
                            where=f"device fd {self.fd}")

    def read32(self, reg: int) -> int:
        return struct.unpack("<I", self._pread(self.bar0 + reg, 4))[0]

    def read64(self, reg: int) -> int:
        return struct.unpack("<Q", self._pread(self.bar0 + reg, 8))[0]

    def write64(self, reg: int, value: int) -> None:
        self._pwrite(self.bar0 + reg, struct.pack("<Q", value))

    def enable_bus_master(self) -> None:
        """PCI_COMMAND |= MEMORY | MASTER through the config region (index 7)."""
        cmd = struct.unpack("<H", self._pread(self.config + PCI_COMMAND, 2))[0]
        self._pwrite(self.config + PCI_COMMAND,
                     struct.pack("<H", cmd | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER))

    def ident(self) -> int:
        """0x010000ed on a live edu (major 1, minor 0, 0xed)."""
        return self.read32(EDU_IDENT)

    # -- DMA ------------------------------------------------------------
    def _dma(self, src: int, dst: int, n: int, cmd: int) -> None:
        self.write64(EDU_DMA_SRC, src)
        self.write64(EDU_DMA_DST, dst)
        self.write64(EDU_DMA_CNT, n)
        self.write64(EDU_DMA_CMD, cmd | EDU_DMA_RUN)
        deadline = time.monotonic() + self.timeout
        while self.read64(EDU_DMA_CMD) & EDU_DMA_RUN:
            if time.monotonic() > deadline:
                raise HostError(f"edu DMA did not finish in {self.timeout} s",
                                where=f"device fd {self.fd}")
            time.sleep(0.01)

    @staticmethod
    def _check(iova: int, n: int, offset: int) -> None:
        # QEMU 7.2's edu_check_range() wants the transfer's end strictly inside
        # the buffer and calls hw_error() (QEMU aborts) otherwise: 0xfff bytes max.
        if not 0 < n or offset < 0 or offset + n >= EDU_BUFFER_SIZE:
            raise UsageError(f"edu transfer of {n:#x} bytes at buffer offset {offset:#x}",
                             valid=f"offset + length < {EDU_BUFFER_SIZE:#x} (QEMU 7.2 aborts on "
                                   f"a transfer that ends at the buffer's end)")
        if iova + n - 1 > EDU_DMA_MASK or iova < 0:
            raise UsageError(f"IOVA {iova:#x}+{n:#x} beyond edu's 28-bit DMA mask",
                             valid=f"IOVAs below {EDU_DMA_MASK + 1:#x}")

    def dma_to_device(self, iova: int, n: int, offset: int = 0) -> None:
        """RAM (through the IOMMU at ``iova``) -> edu buffer[offset:offset+n]."""
        self._check(iova, n, offset)
        self._dma(iova, EDU_BUFFER + offset, n, 0)

    def dma_from_device(self, iova: int, n: int, offset: int = 0) -> None:
        """edu buffer[offset:offset+n] -> RAM at ``iova`` (a DMA write: faults if
        the IOVA is unmapped or mapped read-only, and then changes nothing)."""
        self._check(iova, n, offset)
        self._dma(EDU_BUFFER + offset, iova, n, EDU_DMA_TO_PCI)

    def write_buffer(self, data: bytes, *, iova: int, vaddr: int, offset: int = 0) -> None:
        """Put ``data`` into the edu buffer via a bounce page: ``vaddr`` in this
        process, mapped for DMA at ``iova``."""
        if self.host.write_mem(vaddr, data) != len(data):
            raise HostError("cannot write the bounce buffer", where=f"{vaddr:#x}")
        self.dma_to_device(iova, len(data), offset)

    def read_buffer(self, n: int, *, iova: int, vaddr: int, offset: int = 0) -> bytes:
        """``n`` bytes of the edu buffer via a bounce page (see ``write_buffer``)."""
        self.dma_from_device(iova, n, offset)
        ret, data = self.host.read_mem(vaddr, n)
        if ret != n:
            raise HostError(f"cannot read the bounce buffer: {ret}", where=f"{vaddr:#x}")
        return data


def group_device_fd(host: Host, group_fd: int, bdf: str) -> int:
    """VFIO_GROUP_GET_DEVICE_FD(bdf): the device fd, or -errno.  The fd comes back
    as the ioctl's return value (drivers/vfio/group.c vfio_group_ioctl_get_device_fd());
    the caller closes it."""
    return host.ioctl(group_fd, uapi.VFIO_GROUP_GET_DEVICE_FD, bdf.encode() + b"\0")[0]
