"""tmpfs/memfd (mm/shmem.c) and hugetlbfs (fs/hugetlbfs/inode.c) size and write
paths, where the memfd seals are enforced."""

from __future__ import annotations

import errno

from backends.host import (F_SEAL_FUTURE_WRITE, F_SEAL_GROW, F_SEAL_SHRINK, F_SEAL_WRITE,
                           FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, HPAGE_SIZE)
from .fs import File, Inode, truncate_setsize


def shmem_write_begin(inode: Inode, pos: int, n: int) -> int:
    """shmem_write_begin(): -EPERM under F_SEAL_WRITE/F_SEAL_FUTURE_WRITE, or
    under F_SEAL_GROW when this chunk ends past i_size (all versions)."""
    seals = inode.seals or 0
    if seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
        return -errno.EPERM
    if seals & F_SEAL_GROW and pos + n > inode.i_size:
        return -errno.EPERM
    return 0


def shmem_setattr(inode: Inode, newsize: int, mm) -> int:
    """shmem_setattr(ATTR_SIZE): -EPERM shrinking under F_SEAL_SHRINK or growing
    under F_SEAL_GROW (F_SEAL_WRITE alone does not stop ftruncate)."""
    seals = inode.seals or 0
    if (newsize < inode.i_size and seals & F_SEAL_SHRINK) or \
            (newsize > inode.i_size and seals & F_SEAL_GROW):
        return -errno.EPERM
    truncate_setsize(inode, newsize, mm)
    return 0


def _fallocate_punch_or_check(inode: Inode, mode: int, offset: int, end: int) -> int | None:
    """The start both shmem_fallocate() and hugetlbfs_fallocate() share: -EOPNOTSUPP
    for modes other than KEEP_SIZE|PUNCH_HOLE; PUNCH_HOLE -EPERM under
    F_SEAL_WRITE/FUTURE_WRITE, else the range is zeroed (0).  None: allocate."""
    if mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE):
        return -errno.EOPNOTSUPP
    if mode & FALLOC_FL_PUNCH_HOLE:
        if (inode.seals or 0) & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE):
            return -errno.EPERM
        # unmap_mapping_range(..., even_cows=0) + shmem_truncate_range()
        inode.mapping.zero_range(offset, end)
        return 0
    return None


def shmem_fallocate(file: File, mode: int, offset: int, length: int, mm) -> int:
    """shmem_fallocate(): -EOPNOTSUPP for modes other than KEEP_SIZE|PUNCH_HOLE;
    PUNCH_HOLE -EPERM under F_SEAL_WRITE/FUTURE_WRITE; allocation past i_size
    -EPERM under F_SEAL_GROW (even with KEEP_SIZE).  Allocation materialises no
    page in the simulator (an allocated page reads as zeros either way)."""
    inode = file.inode
    seals = inode.seals or 0
    end = offset + length
    rc = _fallocate_punch_or_check(inode, mode, offset, end)
    if rc is not None:
        return rc
    if end > inode.s_maxbytes:                      # inode_newsize_ok()
        return -errno.EFBIG
    if seals & F_SEAL_GROW and end > inode.i_size:
        return -errno.EPERM
    if not mode & FALLOC_FL_KEEP_SIZE and end > inode.i_size:
        inode.i_size = end
    return 0


def hugetlbfs_setattr(inode: Inode, newsize: int, mm) -> int:
    """hugetlbfs_setattr(): -EINVAL unless newsize is huge-page aligned, then the
    same F_SEAL_SHRINK/F_SEAL_GROW -EPERM as shmem."""
    if newsize % HPAGE_SIZE:
        return -errno.EINVAL
    return shmem_setattr(inode, newsize, mm)


def hugetlbfs_fallocate(file: File, mode: int, offset: int, length: int, mm,
                        hugetlb_free: int | None) -> int:
    """hugetlbfs_fallocate(): EOPNOTSUPP for other modes; hugetlbfs_punch_hole()
    -EPERM under F_SEAL_WRITE/FUTURE_WRITE; F_SEAL_GROW -EPERM; -ENOSPC when the
    huge page pool cannot hold the range (approximation: the whole range)."""
    inode = file.inode
    seals = inode.seals or 0
    end = offset + length
    rc = _fallocate_punch_or_check(inode, mode, offset, end)
    if rc is not None:
        return rc
    if seals & F_SEAL_GROW and end > inode.i_size:
        return -errno.EPERM
    if hugetlb_free is not None and -(-end // HPAGE_SIZE) - offset // HPAGE_SIZE > hugetlb_free:
        return -errno.ENOSPC
    if not mode & FALLOC_FL_KEEP_SIZE and end > inode.i_size:
        inode.i_size = end
    return 0
