"""``vfio_listener_region_add`` and its three paths to ``vfio_container_dma_map``:
plain RAM, vIOMMU MAP events, and RamDiscardManager (virtio-mem); and
``vfio_listener_region_del`` for flat-view changes (machine reset).
hw/vfio/listener.c (10.1+; hw/vfio/common.c before).
"""

from __future__ import annotations

from vmm_model.container import Event, VFIOContainer
from vmm_model.machine import Machine
from vmm_model.memory import P, MemoryRegionSection, align_down, ctz64, round_up

IOMMU_RO, IOMMU_WO = 1, 2
PERMS = {"none": 0, "ro": IOMMU_RO, "wo": IOMMU_WO, "rw": IOMMU_RO | IOMMU_WO}


def _record(c: VFIOContainer, ev: Event) -> Event:
    c.events.append(ev)
    return ev


def vfio_listener_skipped_section(section: MemoryRegionSection, bypass_ro: bool) -> str | None:
    """Why the listener ignores ``section`` (trace vfio_listener_region_skip), or None."""
    mr = section.mr
    if bypass_ro and section.readonly:
        return "readonly section skipped: bypass_ro (ERRATA_772415_SPR17, 11.0+)"
    if not mr.ram and not mr.iommu:
        return f"not RAM ({mr.kind.value})"
    if mr.protected:
        return "RAM_PROTECTED"
    if section.offset_within_address_space & (1 << 63):
        return "offset_within_address_space has bit 63 set"
    return None


def vfio_listener_valid_section(c: VFIOContainer, machine: Machine,
                                section: MemoryRegionSection) -> bool:
    reason = vfio_listener_skipped_section(section, machine.bypass_ro)
    if reason:
        _record(c, Event("skip", section, message=f"vfio_listener_region_skip: {reason}"))
        return False
    oas, owr = section.offset_within_address_space, section.offset_within_region
    if (oas & (P - 1)) != (owr & (P - 1)):
        if section.mr.owner == "tpm-crb":
            _record(c, Event("skip", section, message="unaligned TPM CRB region (trace only)"))
        else:
            _record(c, Event("error", section, message=(
                f"vfio_listener_region_add received unaligned region {section.mr.name} "
                f"iova=0x{oas:x} offset_within_region=0x{owr:x} "
                f"qemu_real_host_page_size=0x{P:x}")))
        return False
    return True


def vfio_get_section_iova_range(section: MemoryRegionSection) -> tuple[int, int] | None:
    """(iova, llsize) after host-page rounding, or None when nothing is left."""
    iova = round_up(section.offset_within_address_space, P)
    llend = align_down(section.offset_within_address_space + section.size, P)
    if iova >= llend:
        return None
    return iova, llend - iova


def vfio_listener_region_add(c: VFIOContainer, machine: Machine,
                             section: MemoryRegionSection) -> None:
    """vfio_container_region_add(bcontainer, section, cpr_remap=false)."""
    if not vfio_listener_valid_section(c, machine, section):
        return
    rng = vfio_get_section_iova_range(section)
    mr = section.mr
    if rng is None:
        _record(c, Event("skip", section, message=(
            "vfio_listener_region_add_no_dma_map: section smaller than a host page after "
            "alignment")))
        return
    iova, llsize = rng
    if mr.iommu:
        memory_region_iommu_replay(c, machine, section)
        return
    if mr.has_ram_discard_manager:
        vfio_ram_discard_register_listener(c, machine, section)
        return
    vaddr = mr.ram_block.host + section.offset_within_region + (
        iova - section.offset_within_address_space)
    if mr.ram_device:
        pgmask = (1 << ctz64(c.backend.pgsizes)) - 1
        if (iova & pgmask) or (llsize & pgmask):
            _record(c, Event("skip", section, iova=iova, size=llsize, vaddr=vaddr, message=(
                f"vfio_listener_region_add_no_dma_map: ram_device not aligned to the IOMMU "
                f"minimum page 0x{pgmask + 1:x}")))
            return
    res = c.dma_map(iova, llsize, vaddr, section.readonly, mr)
    ev = _record(c, Event("map", section, iova=iova, size=llsize, vaddr=vaddr,
                          readonly=section.readonly, result=res))
    if res.ret:   # 0 or None (planned) is success
        _map_failed(c, ev, c.map_error(iova, llsize, vaddr, res.ret))
        _legacy_report(c, ev)


def _legacy_report(c: VFIOContainer, ev: Event) -> None:
    """Up to 9.2 vfio_legacy_dma_map() itself prints "VFIO_MAP_DMA failed: %s"
    before the listener's message (removed by 889695f8f3c1, 10.0)."""
    note = ev.result.note if ev.result else ""
    if c.qemu.legacy_reports_map_error and note.startswith("VFIO_MAP_DMA failed"):
        ev.message = f"{note}\n{ev.message}"


def _map_failed(c: VFIOContainer, ev: Event, err: str) -> None:
    """Failure handling of vfio_container_region_add() (hw/vfio/listener.c): a
    ram_device failure only warns (P2P); otherwise before the listener is
    initialized the first error is stored and fails realize
    ("memory listener initialization failed"), after it hw_error() aborts."""
    section = ev.section
    if section.mr.ram_device:
        if c.qemu.ram_device_warn_once:   # aaec00422ba6 (10.0)
            if "ram_device" in c.warned_once:
                ev.message = f"(warned once already) {err}"
                return
            c.warned_once.add("ram_device")
            hint = (f"\n{section.mr.owner}: PCI peer-to-peer transactions on BARs are not "
                    "supported." if section.mr.owner else "")
            ev.message = f"warning: {err}{hint}"
        else:
            ev.message = f"{err}\nfailed to vfio_dma_map. pci p2p may not work"
        return
    ev.fatal = True
    if not c.initialized:
        if c.error is None:
            c.error = f"Region {section.mr.name}: {err}"
        ev.message = err
    else:
        ev.message = f"{err}\nvfio: DMA mapping failed, unable to continue"
        c.aborted = "hw_error: vfio: DMA mapping failed, unable to continue"


def vfio_listener_region_del(c: VFIOContainer, machine: Machine,
                             section: MemoryRegionSection) -> None:
    """The same section checks as region_add, then ``vfio_container_dma_unmap()``
    of its host-page-aligned range (a RamDiscardManager section: the whole
    section, vfio_ram_discard_unregister_listener())."""
    if vfio_listener_skipped_section(section, machine.bypass_ro) or section.mr.iommu:
        return
    oas, owr = section.offset_within_address_space, section.offset_within_region
    if (oas & (P - 1)) != (owr & (P - 1)):
        return
    rng = vfio_get_section_iova_range(section)
    if rng is None:
        return
    iova, llsize = rng
    if section.mr.ram_device:
        pgmask = (1 << ctz64(c.backend.pgsizes)) - 1
        if (iova & pgmask) or (llsize & pgmask):
            return
    res = c.dma_unmap(iova, llsize)
    ev = _record(c, Event("unmap", section, path="region_del", iova=iova, size=llsize,
                          result=res))
    if res.ret:
        from backends.base import strerror
        ev.message = (f"vfio_container_dma_unmap(0x{c.ptr:x}, 0x{iova:x}, 0x{llsize:x}) = "
                      f"{res.ret} ({strerror(res.ret)})")


def _same_range(a: MemoryRegionSection, b: MemoryRegionSection) -> bool:
    """flatrange_equal() (system/memory.c)."""
    return (a.mr is b.mr and a.offset_within_address_space == b.offset_within_address_space
            and a.size == b.size and a.offset_within_region == b.offset_within_region
            and a.readonly == b.readonly)


def vfio_listener_update(c: VFIOContainer, machine: Machine, old: list[MemoryRegionSection],
                         new: list[MemoryRegionSection]) -> None:
    """address_space_update_topology_pass(): region_del for every old FlatRange
    that is not in the new view, then region_add for every new one not in the old."""
    for s in old:
        if not any(_same_range(s, t) for t in new):
            vfio_listener_region_del(c, machine, s)
    for t in new:
        if not any(_same_range(s, t) for s in old):
            vfio_listener_region_add(c, machine, t)


# --- vIOMMU (vfio_iommu_map_notify) ------------------------------------------------

def memory_region_iommu_replay(c: VFIOContainer, machine: Machine,
                               section: MemoryRegionSection) -> None:
    """What vfio_container_region_add() does for an IOMMU region: register the
    notifier and memory_region_iommu_replay() it (system/memory.c), here over
    the scenario's vIOMMU MAP/UNMAP events."""
    iommu_offset = section.offset_within_address_space - section.offset_within_region
    for ev in machine.viommu_maps or []:
        vfio_iommu_map_notify(c, machine, section, iommu_offset, ev)


def vfio_iommu_map_notify(c: VFIOContainer, machine: Machine, section: MemoryRegionSection,
                          iommu_offset: int, tlb: dict) -> None:
    iova = tlb["iova"] + iommu_offset
    size = tlb["size"]          # iotlb->addr_mask + 1
    perm = PERMS[tlb["perm"]]
    if perm == 0:
        res = c.dma_unmap(iova, size)
        _record(c, Event("unmap", section, path="iommu", iova=iova, size=size, result=res))
        return
    gpa = tlb["gpa"]
    target = machine.section_at(gpa)
    if target is None or not target.mr.ram:
        _record(c, Event("error", section, path="iommu", iova=iova, size=size,
                         message=f"iommu map to non memory area {gpa:x}"))
        return
    mr = target.mr
    xlat = target.offset_within_region + (gpa - target.offset_within_address_space)
    if mr.has_ram_discard_manager:
        if "viommu+rdm" not in c.warned_once:
            c.warned_once.add("viommu+rdm")
            _record(c, Event("warn", section, path="iommu", message=(
                "warning: Using vfio with vIOMMUs and coordinated discarding of RAM (e.g., "
                "virtio-mem) works, however, malicious guests can trigger pinning of more "
                "memory than intended via an IOMMU. It's possible to mitigate  by "
                "setting/adjusting RLIMIT_MEMLOCK.")))
        if not any(a <= xlat and xlat + size <= b for a, b in mr.rdm_populated):
            _record(c, Event("error", section, path="iommu", iova=iova, size=size, message=(
                f"iommu map to discarded memory (e.g., unplugged via virtio-mem): {gpa:x}")))
            return
    if gpa + size > target.end:
        _record(c, Event("error", section, path="iommu", iova=iova, size=size,
                         message="iommu has granularity incompatible with target AS"))
        return
    vaddr = mr.ram_block.host + xlat
    read_only = not (perm & IOMMU_WO) or mr.readonly
    res = c.dma_map(iova, size, vaddr, read_only, mr)
    ev = _record(c, Event("map", target, path="iommu", iova=iova, size=size, vaddr=vaddr,
                          readonly=read_only, result=res))
    if res.ret:
        ev.message = c.map_error(iova, size, vaddr, res.ret)   # error_report only
        _legacy_report(c, ev)


# --- RamDiscardManager (virtio-mem) --------------------------------------------------

def vfio_ram_discard_register_listener(c: VFIOContainer, machine: Machine,
                                       section: MemoryRegionSection) -> None:
    mr = section.mr
    gran = mr.rdm_granularity
    if gran & (gran - 1) or gran < (1 << ctz64(c.backend.pgsizes)):
        _record(c, Event("error", section, path="rdm", fatal=True, message=(
            f"assertion failed: granularity 0x{gran:x} must be a power of two >= the IOMMU "
            f"minimum page 0x{1 << ctz64(c.backend.pgsizes):x} (QEMU aborts)")))
        c.aborted = c.aborted or "g_assert in vfio_ram_discard_register_listener"
        return
    err = vfio_ram_discard_notify_populate(c, section)
    if err:
        ev = Event("error", section, path="rdm")
        c.events.append(ev)
        _map_failed(c, ev, err)
        return
    if c.dma_max_mappings:
        rdm_sections = [s for s in machine.final_sections + machine.hotplug_sections
                        if s.mr.has_ram_discard_manager]
        vrdl_mappings = sum(-(-s.size // s.mr.rdm_granularity) for s in rdm_sections)
        vrdl_count = len(rdm_sections)
        if vrdl_mappings + machine.max_memslots - vrdl_count > c.dma_max_mappings:
            msg = ("vfio_ram_discard_register_listener: possibly running out of DMA mappings. "
                   "E.g., try increasing the 'block-size' of virtio-mem devies. Maximum "
                   f"possible DMA mappings: {c.dma_max_mappings}, Maximum possible memslots: "
                   f"{machine.max_memslots}")
            if c.qemu.rdm_budget_fatal:     # ceb59c1cc61d (10.2): an error, goto fail
                ev = Event("error", section, path="rdm")
                c.events.append(ev)
                _map_failed(c, ev, msg)
            else:
                _record(c, Event("warn", section, path="rdm", message=f"warning: {msg}"))


def vfio_ram_discard_notify_populate(c: VFIOContainer, section: MemoryRegionSection) -> str | None:
    """Map each populated block separately; on the first failure unmap the whole
    section once and return the error."""
    mr = section.mr
    gran = mr.rdm_granularity          # a power of two (checked at registration)
    lo = section.offset_within_region
    hi = lo + section.size
    to_iova = section.offset_within_address_space - lo
    host = mr.ram_block.host
    readonly = section.readonly
    dma_map, record = c.region_mapper(mr, readonly), c.events.append   # once per section
    for a, b in mr.rdm_populated:
        start, end = max(a, lo), min(b, hi)
        while start < end:
            nxt = (start + gran) & -gran                  # round_up(start + 1, gran)
            if nxt > end:
                nxt = end
            iova = start + to_iova
            vaddr = host + start
            res = dma_map(iova, nxt - start, vaddr)
            record(Event("map", section, "rdm", iova, nxt - start, vaddr, readonly, res))
            if res.ret:
                unmap = c.dma_unmap(section.offset_within_address_space, section.size)
                _record(c, Event("unmap", section, path="rdm",
                                 iova=section.offset_within_address_space,
                                 size=section.size, result=unmap))
                return c.map_error(iova, nxt - start, vaddr, res.ret)
            start = nxt
    return None
