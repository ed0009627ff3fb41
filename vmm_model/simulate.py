"""Run a scenario end to end: QEMU's guest RAM allocated on a Host the way QEMU
allocates it, the backend's real client (backends/type1.py, backends/iommufd.py,
opened by its vmm_model/iommu_backends.py entry) attached to a vfio-pci device,
and QEMU's listener replaying the flat view through the version's policy.  On ``SimHost(profile)`` every ioctl is answered by the
simulated kernel; a simulated device can then DMA (backends/simulated/dma.py).

    with simulate(scenario, get_qemu("11.1"), "iommufd", "7.2") as sim:
        sim.host.write_mem(rb.host, b"guest")          # the guest writes RAM
        dma_read(sim.device, iova, 5)                  # the device reads it back

Allocation follows QEMU (system/physmem.c, util/memfd.c, backends/hostmem-*.c):
qemu_ram_alloc_internal() (anonymous mmap, or a memfd for RAM_SHARED from 10.0),
qemu_memfd_create() (MFD_ALLOW_SEALING only when seals are asked for, then
F_ADD_SEALS), file_ram_open() + file_ram_alloc() (O_RDONLY for readonly=on,
MAP_SHARED for share=on, PROT_READ only for rom=on), memory-backend-shm
(shm_open + ftruncate), and a VFIO BAR as a VM_PFNMAP mmap (plus its dma-buf fd
where the QEMU version exports one).
"""

from __future__ import annotations

import errno

from backends.errors import HostError, UsageError
from backends.host import (F_ADD_SEALS, MAP_ANONYMOUS, MAP_PRIVATE, MAP_SHARED, MFD_ALLOW_SEALING,
                           MFD_CLOEXEC, MFD_HUGETLB, O_CREAT, O_RDONLY, O_RDWR, PROT_READ,
                           PROT_WRITE, SimulatedHost)
from backends.host import F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, F_SEAL_WRITE
from vmm_model.container import IOMMUFD_CPR_BLOCKER_BUG, VFIOContainer, attach
from vmm_model.iommu_backends import get_backend
from vmm_model.machine import Machine, build_machine
from vmm_model.memory import RAMBlock, RamFlags
from vmm_model.qemu_versions import QemuVersion
from vmm_model.scenario import Scenario

_SEALS = {"F_SEAL_SEAL": F_SEAL_SEAL, "F_SEAL_SHRINK": F_SEAL_SHRINK,
          "F_SEAL_GROW": F_SEAL_GROW, "F_SEAL_WRITE": F_SEAL_WRITE}
_FS_KIND = {"tmpfs": "shmem", "hugetlbfs": "hugetlbfs"}


class HostAllocator:
    """Allocates each RAMBlock on ``host`` with the calls QEMU makes; a failing
    call raises HostError naming the call, the block and the errno.  The host is
    simulated: a file's directory is made on the file system the scenario names,
    and a BAR is a simulated device node."""

    def __init__(self, host: SimulatedHost):
        self.host = host
        self.serial = 0                 # numbers BAR nodes and mkstemp() names

    def _check(self, ret: int, call: str, rb: RAMBlock) -> int:
        if ret < 0:
            import os
            raise HostError(f"{call} for RAMBlock {rb.idstr} failed: {os.strerror(-ret)}",
                            where=rb.idstr)
        return ret

    def alloc(self, rb: RAMBlock, wants_fd: bool) -> None:
        h, b, size = self.host, rb.backing, rb.max_length
        shared = rb.is_shared()
        prot = PROT_READ | (0 if rb.flags & RamFlags.RAM_READONLY else PROT_WRITE)
        flags = MAP_SHARED if shared else MAP_PRIVATE
        fd = -1
        if b.kind == "memfd":
            sealing = set(b.seals) != {"F_SEAL_SEAL"}
            mfd = MFD_CLOEXEC | (MFD_ALLOW_SEALING if sealing else 0) | (MFD_HUGETLB if b.hugetlb else 0)
            fd = self._check(h.memfd_create(b.path or rb.idstr, mfd), "memfd_create", rb)
            self._check(h.ftruncate(fd, size), "ftruncate", rb)
            if sealing:
                seals = sum(_SEALS[s] for s in b.seals)
                self._check(h.fcntl(fd, F_ADD_SEALS, seals), "fcntl(F_ADD_SEALS)", rb)
        elif b.kind == "file" and b.fs == "chardev":
            # mem-path=/dev/zero: the node, then drivers/char/mem.c mmap_zero(): a
            # shared mapping is shmem_zero_setup()'s, a private one anonymous
            if b.path not in h.names:
                h.register_chardev(b.path, lambda host, file: None)
            fd = self._check(h.open(b.path, O_RDWR), f"open({b.path})", rb)
            rb.host = self._check(h.mmap(0, size, prot, flags | MAP_ANONYMOUS, -1, 0), "mmap", rb)
            if wants_fd:
                rb.fd = fd
            return
        elif b.kind in ("file", "shm"):
            path = b.path if b.kind == "file" else "/dev/shm" + b.path
            parent = path.rsplit("/", 1)[0] or "/"
            h.add_dir(parent, _FS_KIND.get(b.fs or "", "ext4") if b.kind == "file" else "shmem")
            # file_ram_open(): create the file if missing; a directory gets a fresh
            # mkstemp() file "qemu_back_mem.<idstr>.XXXXXX" (then unlinked).
            fd = h.open(path, O_RDWR | O_CREAT)
            if fd == -errno.EISDIR:
                path = f"{path.rstrip('/')}/qemu_back_mem.{rb.idstr}.{self.serial:06d}"
                self.serial += 1
                fd = h.open(path, O_RDWR | O_CREAT)
            self._check(fd, f"open({path})", rb)
            self._check(h.ftruncate(fd, max(size + rb.fd_offset, 0)), "ftruncate", rb)
            if b.open_flags == "O_RDONLY":
                h.close(fd)
                fd = self._check(h.open(path, O_RDONLY), f"open({path}, O_RDONLY)", rb)
        elif b.kind in ("pfnmap", "dmabuf"):
            from backends.simulated import PfnmapDevice
            node = f"/dev/vfio-emu-bar{self.serial}"
            self.serial += 1
            h.register_chardev(node, PfnmapDevice.factory(size))
            bar_fd = self._check(h.open(node, O_RDWR), f"open({node})", rb)
            rb.host = self._check(h.mmap(0, size, PROT_READ | PROT_WRITE, MAP_SHARED, bar_fd),
                                  "mmap(BAR)", rb)
            if wants_fd and not h.profile.map_file_dmabuf:
                # vfio_region_create_dma_buf() (hw/vfio/region.c, 11.0): -ENOTTY before
                # Linux 6.19 -> "VFIO dma-buf not supported in kernel" (warn once); the
                # RAMBlock keeps fd -1, so the BAR is mapped by VA
                b.kind, rb.fd_offset = "pfnmap", 0
            elif wants_fd:   # one dma-buf per BAR region; this block is at fd_offset in it
                rb.fd = self._check(h.dmabuf_export(rb.fd_offset + size),
                                    "VFIO_DEVICE_FEATURE_DMA_BUF", rb)
            return
        else:                                   # anon, epc
            flags |= MAP_ANONYMOUS
        rb.host = self._check(h.mmap(0, size, prot, flags, fd, rb.fd_offset if fd >= 0 else 0),
                              "mmap", rb)
        if wants_fd:
            rb.fd = fd


class Simulation:
    """A scenario realized on ``host`` with a backend client attached: the
    machine (RAMBlocks with real addresses and fds), the VFIOContainer (events
    with the kernel's answers) and the vfio-pci devices (for DMA).
    ``error`` is set when the backend could not even be set up (e.g. no
    /dev/iommu on that kernel); ``close()`` releases everything."""

    def __init__(self, host: SimulatedHost, machine: Machine | None,
                 container: VFIOContainer | None, client=None, error: str | None = None):
        self.host, self.machine, self.container, self.client = host, machine, container, client
        self.error = error

    @property
    def device(self):
        return self.host.vfio_devices[0]

    def block(self, idstr: str) -> RAMBlock:
        for rb in self.machine.ramblocks:
            if rb.idstr == idstr:
                return rb
        raise UsageError(f"no RAMBlock {idstr!r}",
                         valid=", ".join(rb.idstr for rb in self.machine.ramblocks))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.host.close_all()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _cpr_source(host, machine: Machine, backend, client, qemu, pname, pfn) -> None:
    """What an incoming CPR QEMU inherits: the outgoing QEMU's mappings, after
    what the backend does to them before the transfer (``cpr_unmap_vaddr_all``)."""
    machine.cpr_incoming = False
    attach(machine, VFIOContainer(client, qemu, policy_name=pname, policy=pfn))
    machine.cpr_incoming = True
    backend.cpr_unmap_vaddr_all(host, client)


def _explain_refusals(events, hw) -> None:
    """A map the kernel refused with EINVAL because of the host IOMMU (IOVA past
    its aperture, or over a reserved region) says so in its message."""
    einval = -errno.EINVAL
    for ev in events:
        r = ev.result
        if r is not None and r.ret == einval and ev.kind == "map":
            why = hw.explain(ev.iova, ev.size)
            if why:
                ev.message = f"{ev.message}\n{why}" if ev.message else why


def simulate(sc: Scenario, qemu: QemuVersion, backend: str, kernel, policy=None,
             devices=None, host_iommu: str | None = None, **host_options) -> Simulation:
    """Realize ``sc`` on ``SimHost(kernel, **host_options)`` with ``backend`` (a
    registered name: vmm_model/iommu_backends.py); the device sits behind
    ``host_iommu`` (else the scenario's [host] iommu, else
    backends.simulated.iommu.DEFAULT_HOST_IOMMU)."""
    import dataclasses
    b = get_backend(backend)
    from backends.simulated import SimHost
    from backends.simulated.iommu import SimVfioDevice, get_host_iommu
    from backends.simulated.vfio import install
    from vmm_model.policy import get_policy

    host = SimHost(kernel, **host_options)
    try:
        machine = build_machine(sc, qemu, HostAllocator(host))
        if devices is None:
            hw = get_host_iommu(host_iommu or sc.host.get("iommu"))
            if machine.iommu_pgsizes:
                hw = dataclasses.replace(hw, pgsize_bitmap=machine.iommu_pgsizes)
            devices = [SimVfioDevice(hw=hw)]
        install(host, devices)
        try:
            client = b.open_client(host, host.vfio_devices[0])
        except HostError as e:
            return Simulation(host, machine, None, error=str(e))
        pname, pfn = get_policy(policy) if policy else (qemu.policy, None)
        if machine.cpr_incoming and b.cpr_unmap_vaddr_all is not None:
            _cpr_source(host, machine, b, client, qemu, pname, pfn)
        container = VFIOContainer(client, qemu, policy_name=pname, policy=pfn)
        if (b.iommufd_object and qemu.iommufd_cpr_blocker_bug
                and not host.profile.change_process):
            container.connect_error = IOMMUFD_CPR_BLOCKER_BUG
            return Simulation(host, machine, container, client)
        container = attach(machine, container)
        _explain_refusals(container.events, devices[0].hw)
        return Simulation(host, machine, container, client)
    except BaseException:
        host.close_all()
        raise
