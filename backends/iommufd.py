"""iommufd client: QEMU's iommufd backend on any ``Host``, plus the VFIO compat mode.

QEMU: backends/iommufd.c (iommufd_backend_connect, _alloc_ioas, _map_dma,
_map_file_dma, _unmap_dma, _free_id) and hw/vfio/iommufd.c (iommufd_cdev_*).
Kernel: drivers/iommu/iommufd/ (ioas.c, main.c) and drivers/vfio/device_cdev.c;
the simulated counterparts are backends/simulated/ioas.py and device.py.

    with IommufdContainer(host) as c:                 # /dev/iommu + a fresh IOAS
        devid, hwpt_id = c.attach_device("/dev/vfio/devices/vfio0")
        r = c.dma_map_file(0x100000, 0x200000, memfd, 0, readonly=False)

Setup failures raise ``SetupError`` (backends/type1.py) after undoing what was
done; map/unmap refusals are ``DmaResult``s.  ``close()`` closes the device
cdevs (which unbinds them), unmaps everything, destroys the IOAS and closes
/dev/iommu, on every path.

The VFIO compat mode ("compat") is the type1 client on /dev/iommu:
``compat_container(host, group)``.  Which client a backend name opens is
vmm_model/iommu_backends.py's registry.
"""

from __future__ import annotations

import errno

from backends import uapi
from backends.base import (DmaRequest, DmaResult, VFIOIOMMUClass, errno_name, ioas_map_file_request,
                           ioas_map_request, ioas_unmap_request, strerror)
from backends.host import MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, page_align
from backends.type1 import (IOMMUFD_PATH, OPEN_FLAGS, OkResult, SetupError, Type1Container,
                            builder_field, describe, node_hint)

_IOAS_MAP = uapi.IOMMU_IOAS_MAP
_IOAS_MAP_FILE = uapi.IOMMU_IOAS_MAP_FILE
_IOAS_UNMAP = uapi.IOMMU_IOAS_UNMAP
# Hot path: codecs + the flags base.py's builders decide (see backends/type1.py).
_MAP = uapi.codec("iommu_ioas_map")
_MAP_FILE = uapi.codec("iommu_ioas_map_file")
_UNMAP = uapi.codec("iommu_ioas_unmap")
_MAP_FLAGS_RW, _MAP_FLAGS_RO = (builder_field(ioas_map_request(0, 0, 0, 0, ro), "flags")
                                for ro in (False, True))
_FILE_FLAGS_RW, _FILE_FLAGS_RO = (builder_field(ioas_map_file_request(0, 0, 0, 0, 0, ro), "flags")
                                  for ro in (False, True))
_RANGES = uapi.codec("iommu_ioas_iova_ranges")
_RANGE_SIZE = uapi.sizeof("iommu_iova_range")
_EFAULT, _ENOENT = -errno.EFAULT, -errno.ENOENT


def _map_failed(req: DmaRequest, ret: int, out: bytes) -> DmaResult:
    """iommufd_backend_map_dma() / _map_file_dma(): -errno; EFAULT also gives
    warn_report("<ioctl> failed: %m, PCI BAR?")."""
    text = f"{req.ioctl} failed: {strerror(ret)}"
    return DmaResult(ret, req, note=text, out=out,
                     warnings=[text + ", PCI BAR?"] if ret == _EFAULT else None)


class IommufdContainer(VFIOIOMMUClass):
    """One IOAS on an iommufd, driven like QEMU's VFIOIOMMUFDContainer.

    Attributes: ``fd``, ``ioas_id`` (0 once closed), ``iova_ranges`` [(start, last inclusive)],
    ``out_iova_alignment``, ``pgsizes`` (= out_iova_alignment, as
    iommufd_cdev_get_info_iova_range() sets it), ``devices`` [(cdev path, fd,
    devid, hwpt_id)], ``warnings`` (QEMU's warn_report lines) and ``teardown``.
    """

    name = "iommufd"

    def __init__(self, host, *, path: str = IOMMUFD_PATH):
        self.host = host
        self._ioctl = host.ioctl
        self.path = path
        self.fd = -1
        self.ioas_id = 0                       # object ids start at 1 (XA_FLAGS_ALLOC1)
        self.iova_ranges: list[tuple[int, int]] = []
        self.out_iova_alignment: int | None = None
        self.pgsizes = host.page_size
        self.devices: list[tuple[str, int, int, int]] = []
        self.warnings: list[str] = []
        self.teardown: list[str] = []
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        """iommufd_backend_connect() + iommufd_backend_alloc_ioas()."""
        fd = self.host.open(self.path, OPEN_FLAGS)
        if fd < 0:
            raise SetupError("open", self.path, fd, node_hint(self.path, fd))
        self.fd = fd
        req = DmaRequest("IOMMU_IOAS_ALLOC", uapi.build("iommu_ioas_alloc"))
        ret, out = self._ioctl(fd, uapi.IOMMU_IOAS_ALLOC, req.data)
        if ret:
            raise SetupError("IOMMU_IOAS_ALLOC", self.path, ret, result=DmaResult(ret, req, out=out),
                             detail=f"Failed to allocate ioas: {strerror(ret)} [{errno_name(ret)}]")
        self.ioas_id = uapi.parse("iommu_ioas_alloc", out).out_ioas_id
        self.query_iova_ranges()

    def query_iova_ranges(self) -> DmaResult:
        """iommufd_cdev_get_info_iova_range(): IOMMU_IOAS_IOVA_RANGES into a scratch
        buffer (``allowed_iovas`` is a user pointer: an anonymous mapping, read back
        with read_mem), growing it on EMSGSIZE (the kernel sets num_iovas to the
        count it needs).  On failure QEMU warns and falls back to the host page size."""
        host = self.host
        num = host.page_size // _RANGE_SIZE
        for _ in range(4):
            length = page_align(num * _RANGE_SIZE, host.page_size)
            buf = host.mmap(0, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS)
            if buf < 0:
                return self._ranges_failed(DmaResult(buf, None, note=(
                    f"mmap of the allowed_iovas buffer failed: {strerror(buf)}")))
            try:
                req = DmaRequest("IOMMU_IOAS_IOVA_RANGES",
                                 _RANGES.pack(_RANGES.size, self.ioas_id, num, 0, buf, 0))
                ret, out = self._ioctl(self.fd, uapi.IOMMU_IOAS_IOVA_RANGES, req.data)
                info = dict(zip(_RANGES.names, _RANGES.unpack_from(out)))
                if ret == -errno.EMSGSIZE and info["num_iovas"] > num:
                    num = info["num_iovas"]
                    continue
                if ret:
                    return self._ranges_failed(_failed_result(req, ret, out))
                n = info["num_iovas"]
                got, raw = host.read_mem(buf, n * _RANGE_SIZE) if n else (0, b"")
                if got < n * _RANGE_SIZE:
                    return self._ranges_failed(DmaResult(
                        got if got < 0 else -errno.EFAULT, req, out=out,
                        note="cannot read back allowed_iovas"))
            finally:
                host.munmap(buf, length)
            self.iova_ranges = [(r.start, r.last)
                                for r in uapi.parse_array("iommu_iova_range", raw, n)]
            self.out_iova_alignment = info["out_iova_alignment"]
            self.pgsizes = self.out_iova_alignment or host.page_size
            return DmaResult(0, req, out=out)
        return self._ranges_failed(DmaResult(-errno.EMSGSIZE, req, out=out,
                                             note="IOMMU_IOAS_IOVA_RANGES: num_iovas keeps growing"))

    def _ranges_failed(self, r: DmaResult) -> DmaResult:
        self.warnings.append(f"Cannot get IOVA ranges: {describe(r)}; "
                             "Fallback to default 64bit IOVA range and 4K page size")
        self.pgsizes = self.host.page_size
        return r

    def attach_device(self, cdev_path: str) -> tuple[int, int]:
        """Open a VFIO cdev, VFIO_DEVICE_BIND_IOMMUFD (-> devid), then
        VFIO_DEVICE_ATTACH_IOMMUFD_PT with pt_id = the IOAS (-> the hwpt id the kernel
        made), and re-read the IOVA ranges (they now hold the domain's aperture and
        reserved regions).  The fd stays open until ``close()``; on failure it is closed."""
        host = self.host
        dfd = host.open(cdev_path, OPEN_FLAGS)
        if dfd < 0:
            raise SetupError("open", cdev_path, dfd, node_hint(cdev_path, dfd))
        try:
            bind = DmaRequest("VFIO_DEVICE_BIND_IOMMUFD",
                              uapi.build("vfio_device_bind_iommufd", iommufd=self.fd))
            ret, out = self._ioctl(dfd, uapi.VFIO_DEVICE_BIND_IOMMUFD, bind.data)
            if ret:
                raise SetupError("VFIO_DEVICE_BIND_IOMMUFD", cdev_path, ret,
                                 result=DmaResult(ret, bind, out=out),
                                 detail=f"error bind device fd={dfd} to iommufd={self.fd}: "
                                        f"{strerror(ret)} [{errno_name(ret)}]")
            devid = uapi.parse("vfio_device_bind_iommufd", out).out_devid
            att = DmaRequest("VFIO_DEVICE_ATTACH_IOMMUFD_PT",
                             uapi.build("vfio_device_attach_iommufd_pt", pt_id=self.ioas_id))
            ret, out = self._ioctl(dfd, uapi.VFIO_DEVICE_ATTACH_IOMMUFD_PT, att.data)
            if ret:
                raise SetupError("VFIO_DEVICE_ATTACH_IOMMUFD_PT", cdev_path, ret,
                                 result=DmaResult(ret, att, out=out),
                                 detail=f"[iommufd={self.fd}] error attach {cdev_path} ({dfd}) "
                                        f"to id={self.ioas_id}: {strerror(ret)} "
                                        f"[{errno_name(ret)}]")
            hwpt_id = uapi.parse("vfio_device_attach_iommufd_pt", out).pt_id
        except BaseException:
            host.close(dfd)
            raise
        self.devices.append((cdev_path, dfd, devid, hwpt_id))
        self.query_iova_ranges()
        return devid, hwpt_id

    # -- QEMU's hooks ------------------------------------------------------------------
    def dma_map(self, iova: int, size: int, vaddr: int, readonly: bool, mr=None) -> DmaResult:
        """iommufd_cdev_map() -> iommufd_backend_map_dma(): FIXED_IOVA|READABLE,
        plus WRITEABLE unless readonly (no cpr short-circuit)."""
        data = _MAP.pack(_MAP.size, _MAP_FLAGS_RO if readonly else _MAP_FLAGS_RW, self.ioas_id, 0,
                         vaddr, size, iova)
        ret, out = self._ioctl(self.fd, _IOAS_MAP, data)
        if not ret:
            return OkResult("IOMMU_IOAS_MAP", data, out)
        return _map_failed(DmaRequest("IOMMU_IOAS_MAP", data), ret, out)

    def dma_map_file(self, iova: int, size: int, fd: int, start: int,
                     readonly: bool) -> DmaResult:
        """iommufd_cdev_map_file() -> iommufd_backend_map_file_dma() (QEMU 10.1+):
        CPR incoming returns 0 without an ioctl (the mapping is inherited)."""
        if self.cpr_incoming:
            return DmaResult(0, None, note="cpr incoming: mapping inherited, no ioctl")
        data = _MAP_FILE.pack(_MAP_FILE.size, _FILE_FLAGS_RO if readonly else _FILE_FLAGS_RW,
                              self.ioas_id, fd, start, size, iova)
        ret, out = self._ioctl(self.fd, _IOAS_MAP_FILE, data)
        if not ret:
            return OkResult("IOMMU_IOAS_MAP_FILE", data, out)
        return _map_failed(DmaRequest("IOMMU_IOAS_MAP_FILE", data), ret, out)

    def dma_unmap(self, iova: int, size: int, unmap_all: bool = False) -> DmaResult:
        """iommufd_backend_unmap_dma(): ENOENT (nothing mapped there) is success,
        as for type1 ("vIOMMU may trigger a lot of redundant unmapping"); CPR
        incoming returns 0 without an ioctl.  ``out`` carries the unmapped length."""
        if self.cpr_incoming:
            return DmaResult(0, None, note="cpr incoming: no ioctl")
        if unmap_all:
            data = ioas_unmap_request(self.ioas_id, 0, 0, unmap_all=True).data
        else:
            data = _UNMAP.pack(_UNMAP.size, self.ioas_id, iova, size)
        ret, out = self._ioctl(self.fd, _IOAS_UNMAP, data)
        if not ret:
            return OkResult("IOMMU_IOAS_UNMAP", data, out)
        req = DmaRequest("IOMMU_IOAS_UNMAP", data)
        if ret == _ENOENT:
            return DmaResult(0, req, out=out,
                             note="ENOENT treated as success (iommufd_backend_unmap_dma)")
        return _failed_result(req, ret, out)

    # -- cleanup -----------------------------------------------------------------------
    def close(self) -> None:
        """iommufd_cdev_detach() + iommufd_backend_free_id() + disconnect: close the
        cdevs (the kernel unbinds on close), unmap all, IOMMU_DESTROY the IOAS,
        close /dev/iommu.  Idempotent; failures go to ``teardown``, never raised."""
        host = self.host
        while self.devices:
            host.close(self.devices.pop()[1])
        if self.ioas_id:
            ioas_id, self.ioas_id = self.ioas_id, 0
            req = ioas_unmap_request(ioas_id, 0, 0, unmap_all=True)
            ret, out = self._ioctl(self.fd, _IOAS_UNMAP, req.data)
            if ret:
                self.teardown.append(describe(_failed_result(req, ret, out)))
            req = DmaRequest("IOMMU_DESTROY", uapi.build("iommu_destroy", id=ioas_id))
            ret, out = self._ioctl(self.fd, uapi.IOMMU_DESTROY, req.data)
            if ret:   # QEMU: error_report("Failed to free id: %u %m")
                self.teardown.append(f"Failed to free id: {ioas_id} {strerror(ret)} "
                                     f"[{errno_name(ret)}]")
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            host.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _failed_result(req: DmaRequest, ret: int, out: bytes) -> DmaResult:
    return DmaResult(ret, req, note=f"{req.ioctl} failed: {strerror(ret)}", out=out)


def compat_container(host, group: int | str, **options) -> Type1Container:
    """The VFIO compat mode: the type1 client's calls on /dev/iommu (vfio_compat.c)."""
    return Type1Container(host, group, container_path=IOMMUFD_PATH, **options)

