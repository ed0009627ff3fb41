"""mm/memfd.c: memfd_create(), F_ADD_SEALS / F_GET_SEALS, the mmap seal check.

Errnos and order follow mm/memfd.c memfd_add_seals() and memfd_wait_for_pins();
version differences come from the profile (backends/kernel_profiles.py).
"""

from __future__ import annotations

import errno

from backends.host import (F_ADD_SEALS, F_GET_SEALS, F_SEAL_EXEC, F_SEAL_FUTURE_WRITE,
                           F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE,
                           MFD_ALLOW_SEALING, MFD_CLOEXEC, MFD_EXEC, MFD_HUGE_MASK,
                           MFD_HUGE_SHIFT, MFD_HUGETLB, MFD_NOEXEC_SEAL)
from .fs import FMODE_WRITE, HUGETLBFS, SHMEM, File, Inode, new_inode
from .mmap import VM_MAYWRITE, VM_SHARED, VM_WRITE

MFD_NAME_MAX_LEN = 255 - len("memfd:")
MEMFD_NOEXEC_SCOPE_EXEC, MEMFD_NOEXEC_SCOPE_NOEXEC_SEAL, MEMFD_NOEXEC_SCOPE_NOEXEC_ENFORCED = 0, 1, 2


def f_all_seals(profile) -> int:
    """F_ALL_SEALS: F_SEAL_EXEC only from 6.3 (profile.f_seal_exec)."""
    seals = F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE
    if profile.f_seal_future_write:
        seals |= F_SEAL_FUTURE_WRITE
    if profile.f_seal_exec:
        seals |= F_SEAL_EXEC
    return seals


def memfd_create(profile, name: str, flags: int, noexec_scope: int = 0) -> Inode | int:
    """SYSCALL memfd_create(): returns the new inode, or -errno.

    sanitize_flags(): -EINVAL for unknown flags (MFD_EXEC/MFD_NOEXEC_SEAL are
    unknown before 6.3) and for MFD_EXEC|MFD_NOEXEC_SEAL; the vm.memfd_noexec
    sysctl adds the default; -EINVAL for a name longer than 249 bytes.
    A memfd without MFD_ALLOW_SEALING keeps the initial F_SEAL_SEAL; MFD_NOEXEC_SEAL
    clears the exec bits and replaces F_SEAL_SEAL with F_SEAL_EXEC.
    """
    allowed = MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_HUGETLB
    if profile.f_seal_exec:
        allowed |= MFD_NOEXEC_SEAL | MFD_EXEC
    if flags & MFD_HUGETLB:
        allowed |= MFD_HUGE_MASK << MFD_HUGE_SHIFT
    if flags & ~allowed:
        return -errno.EINVAL
    if profile.f_seal_exec:
        if flags & MFD_EXEC and flags & MFD_NOEXEC_SEAL:
            return -errno.EINVAL
        if not flags & (MFD_EXEC | MFD_NOEXEC_SEAL):
            flags |= MFD_NOEXEC_SEAL if noexec_scope >= MEMFD_NOEXEC_SCOPE_NOEXEC_SEAL else MFD_EXEC
        if not flags & MFD_NOEXEC_SEAL and noexec_scope >= MEMFD_NOEXEC_SCOPE_NOEXEC_ENFORCED:
            return -errno.EACCES   # check_sysctl_memfd_noexec() (newer kernels; older: EINVAL)
    if len(name.encode()) > MFD_NAME_MAX_LEN:
        return -errno.EINVAL
    huge = flags & MFD_HUGETLB
    inode = new_inode(HUGETLBFS if huge else SHMEM, i_mode=0o100777, name="memfd:" + name)
    if flags & MFD_NOEXEC_SEAL:
        inode.i_mode &= ~0o111
        inode.seals = (inode.seals & ~F_SEAL_SEAL) | F_SEAL_EXEC
    elif flags & MFD_ALLOW_SEALING:
        inode.seals &= ~F_SEAL_SEAL
    return inode


def memfd_wait_for_pins(inode: Inode) -> int:
    """memfd_wait_for_pins(): -EBUSY when a page-cache page still has extra
    references (FOLL_PIN) after the ~150 ms rescans (LAST_SCAN)."""
    if inode.mapping.pins:
        return -errno.EBUSY
    return 0


def memfd_add_seals(profile, file: File, seals: int) -> int:
    """memfd_add_seals(), checks in kernel order:

    -EPERM  fd without FMODE_WRITE (first, even for non-memfd files)
    -EINVAL seal bits outside F_ALL_SEALS
    -EINVAL file is not shmem/hugetlbfs (memfd_file_seals_ptr() == NULL)
    -EPERM  F_SEAL_SEAL already set
    -EBUSY  adding F_SEAL_WRITE: mapping_deny_writable() when i_mmap_writable > 0
    -EBUSY  adding F_SEAL_WRITE: memfd_wait_for_pins() (pinned pages)
    F_SEAL_EXEC on an inode with exec bits implies SHRINK|GROW|WRITE|FUTURE_WRITE;
    before 3b041514cb6e (profile.seal_exec_denies_writable=False) the implied
    WRITE is added after the deny step, so without mapping_deny_writable().
    """
    inode = file.inode
    if not file.f_mode & FMODE_WRITE:
        return -errno.EPERM
    if seals & ~f_all_seals(profile):
        return -errno.EINVAL
    if inode.seals is None:
        return -errno.EINVAL
    if inode.seals & F_SEAL_SEAL:
        return -errno.EPERM
    implied = F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE
    exec_implies = bool(seals & F_SEAL_EXEC and inode.i_mode & 0o111)
    if exec_implies and profile.seal_exec_denies_writable:
        seals |= implied
    if seals & F_SEAL_WRITE and not inode.seals & F_SEAL_WRITE:
        err = inode.mapping.mapping_deny_writable()
        if err:
            return err
        err = memfd_wait_for_pins(inode)
        if err:
            inode.mapping.mapping_allow_writable()
            return err
    if exec_implies and not profile.seal_exec_denies_writable:
        seals |= implied          # the quirk: WRITE without mapping_deny_writable()
    inode.seals |= seals
    return 0


def memfd_get_seals(file: File) -> int:
    """memfd_get_seals(): the seals, or -EINVAL for a file without seals."""
    return -errno.EINVAL if file.inode.seals is None else file.inode.seals


def memfd_fcntl(profile, file: File, cmd: int, arg: int) -> int:
    if cmd == F_ADD_SEALS:
        if arg > 0xFFFFFFFF or arg < 0:   # memfd_fcntl(): "disallow upper 32bit"
            return -errno.EINVAL
        return memfd_add_seals(profile, file, arg)
    if cmd == F_GET_SEALS:
        return memfd_get_seals(file)
    return -errno.EINVAL


def is_write_sealed(seals: int | None) -> bool:
    return bool((seals or 0) & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))


def memfd_check_seals_mmap(file: File, vm_flags: int) -> tuple[int, int]:
    """memfd_check_seals_mmap() -> check_write_seal() (6.13+ name; 6.7-6.12
    seal_check_write() in shmem_mmap()): a shared mapping of a WRITE or
    FUTURE_WRITE sealed file is -EPERM if VM_WRITE, else loses VM_MAYWRITE so
    mprotect() cannot make it writable.  Private mappings are not affected.
    Returns (err, vm_flags)."""
    if not is_write_sealed(file.inode.seals) or not vm_flags & VM_SHARED:
        return 0, vm_flags
    if vm_flags & VM_WRITE:
        return -errno.EPERM, vm_flags
    return 0, vm_flags & ~VM_MAYWRITE
