"""SimHost: a model of the Linux kernel behind the ``Host`` seam.

Modules carry the kernel's file names: ``fs`` (include/linux/fs.h, VFS, page
cache), ``shmem`` (mm/shmem.c, hugetlbfs), ``memfd`` (mm/memfd.c), ``mmap``
(mm/mmap.c, mm/vma.c, mm/mprotect.c), ``gup`` (mm/gup.c), ``profiles``.
"""

from .profiles import (KernelProfile, format_profiles, get_profile, host_profile,
                       list_profiles, profiles_dict)
from .syscalls import PfnmapDevice, SimHost

__all__ = ["SimHost", "PfnmapDevice", "KernelProfile", "get_profile", "list_profiles",
           "host_profile", "format_profiles", "profiles_dict"]
