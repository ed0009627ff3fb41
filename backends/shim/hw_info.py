"""IOMMU_GET_HW_INFO for the simulated iommufd (QEMU 9.0+ asks it at every
iommufd attach: iommufd_backend_get_device_info(); a failure is fatal,
"Failed to get hardware info").  backends/simulated/iommufd/ does not model
it (ENOTTY); the shim answers it as an Intel VT-d IOMMU does, the hardware the
simulated devices sit behind (backends/simulated/iommu.py IommuHw default).

drivers/iommu/iommufd/device.c iommufd_get_hw_info() (first in 6.6):
-EOPNOTSUPP flags or __reserved set -> -ENOENT dev_id not a device ->
ops->hw_info() (intel_iommu_hw_info(): struct iommu_hw_info_vtd, 24 bytes,
IOMMU_HW_INFO_TYPE_INTEL_VTD) -> copy min(data_len, 24) to data_uptr and
zero-fill the rest of the user's data_len -> data_len = 24; out_capabilities
(6.7+): no simulated IOMMU reports IOMMU_CAP_DIRTY_TRACKING -> 0.
"""

from __future__ import annotations

import errno
import struct

from backends import uapi

IOMMU_GET_HW_INFO = uapi.IOMMU_GET_HW_INFO
_HW_INFO = uapi.codec("iommu_hw_info")
# struct iommu_hw_info_vtd {u32 flags; u32 __reserved; u64 cap_reg; u64 ecap_reg}:
# MGAW (cap_reg bits 21:16) = 38 for the 39-bit aperture of IommuHw(); SAGAW 39-bit.
VTD_CAP_REG = (38 << 16) | (0x2 << 8)
VTD_ECAP_REG = 0


def iommufd_get_hw_info(ictx, buf: bytes):
    """(ret, out buffer) for IOMMU_GET_HW_INFO on ``ictx`` (an IommufdCtx)."""
    min_size = uapi.IOCTLS["IOMMU_GET_HW_INFO"].min_size
    if len(buf) < min_size or int.from_bytes(buf[:4], "little") < min_size:
        return -errno.EINVAL, buf
    cmd = bytearray(buf[:_HW_INFO.size].ljust(_HW_INFO.size, b"\0"))
    f = dict(zip(_HW_INFO.names, _HW_INFO.unpack_from(cmd)))
    reserved = f["__reserved"]
    if f["flags"] or (any(reserved) if isinstance(reserved, (list, tuple, bytes)) else reserved):
        return -errno.EOPNOTSUPP, buf
    idev = ictx.objects.get(f["dev_id"])
    if type(idev).__name__ != "IommufdDevice":
        return -errno.ENOENT, buf
    data = struct.pack("<IIQQ", 0, 0, VTD_CAP_REG, VTD_ECAP_REG)
    want = f["data_len"]
    if want:
        blob = data[:want] + bytes(max(0, want - len(data)))
        if ictx.host.write_mem(f["data_uptr"], blob) != len(blob):
            return -errno.EFAULT, buf
    out = bytearray(buf)
    struct.pack_into("<I", out, 12, len(data))                        # data_len
    struct.pack_into("<I", out, 24, uapi.IOMMU_HW_INFO_TYPE_INTEL_VTD)  # out_data_type
    return 0, bytes(out)
