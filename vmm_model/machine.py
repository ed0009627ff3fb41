"""Scenario -> the RAMBlocks QEMU would create and the flat views VFIO's listener
sees, for one QEMU version (docs/qemu-memory-map.md).

The x86 layout is QEMU's (hw/i386/pc_q35.c, pc_piix.c, pc.c, x86-common.c,
hw/pci-host/q35.c, i440fx.c, pam.c): RAM split at ``lowmem`` into
ram-below-4g / ram-above-4g; device memory (pc-dimm, virtio-mem) from
ROUND_UP(4 GiB + above_4g, 1 GiB); pc.bios (256 KiB) at 4 GiB - 256 KiB; below
1 MiB the PAM windows.  Two flat views: the one a vfio-pci device sees at
realize, and the one after the first machine reset (``Machine.reset_sections``):
q35's mch_realize() creates its PAM aliases disabled, so at realize pc.ram covers
0xc0000-0xfffff; mch_reset() -> mch_update_pam() enables "pam-pci", which shows
the PCI space there: pc.rom (0xc0000-0xdffff) and isa-bios, the last 128 KiB of
pc.bios (0xe0000-0xfffff), both read-only.  i440fx_pcihost_realize() already
calls i440fx_update_memory_mappings(), so on pc both views are the split one.
A scenario with explicit ``[[section]]`` rows (``inspect --save``) replaces the
generated layout.

Host addresses and fd numbers are assigned by an allocator: synthetic and
deterministic by default (planning), or real ones from a Host (simulation).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.errors import UsageError
from vmm_model.memory import (P, Backing, MemoryRegion, MemoryRegionSection, MRKind,
                              RAMBlock, RamFlags, round_up)
from vmm_model.qemu_versions import QemuVersion
from vmm_model.scenario import Scenario

GiB = 1 << 30
MiB = 1 << 20
BIOS_SIZE = 256 * 1024          # pc-bios/bios-256k.bin (SeaBIOS)
ISA_BIOS_SIZE = 128 * 1024      # x86_isa_bios_init(): MIN(bios_size, 128 KiB)
PC_ROM_BASE, PC_ROM_SIZE = 0xC0000, 0x20000   # hw/i386/pc.c: "pc.rom"
HUGETLB_DEFAULT = 2 * MiB
VIRTIO_MEM_DEFAULT_BLOCK = 2 * MiB
MAX_MEMSLOTS_KVM_X86 = 32764   # KVM_USER_MEM_SLOTS on x86 (kvm_get_max_memslots)


class CommandLineRejected(UsageError):
    """This QEMU version refuses the command line at start-up (an option it does
    not have).  The message is QEMU's own; the plan for that version is a failure."""

    def __init__(self, qemu: QemuVersion, message: str, where: str = ""):
        self.qemu_message = message
        super().__init__(f"QEMU {qemu.name} rejects this command line: {message}", where=where)


OBJECT_SWITCHES = {"iommufd": "iommufd_object", "memory-backend-shm": "memory_backend_shm"}
FILE_PROP_SWITCHES = {"offset": "memory_backend_file_offset", "rom": "memory_backend_file_rom"}


def _opt(obj) -> str:
    """The option as QEMU echoes it in its error prefix (type and id)."""
    return f"-object {obj.type},id={obj.id}" if obj.id else f"-object {obj.type}"


def _via_iommufd_object(backend: str) -> bool:
    """The backend reaches the kernel through ``-object iommufd`` (registry)."""
    from vmm_model.iommu_backends import get_backend
    return get_backend(backend).iommufd_object


def check_command_line(sc: Scenario, qemu: QemuVersion, backend: str | None = None) -> None:
    """Raise CommandLineRejected with QEMU's own start-up error when ``qemu``
    lacks an option ``sc`` uses (each switch is a Rule in vmm_model.qemu_versions;
    messages as QEMU 7.2 prints them: qapi input visitor, qemu_opts, qdev)."""
    prog = "qemu-system-x86_64"
    for o in sc.objects:
        switch = OBJECT_SWITCHES.get(o.type)
        if switch and not getattr(qemu, switch):
            raise CommandLineRejected(qemu, f"{prog}: {_opt(o)}: Parameter 'qom-type' does "
                                      f"not accept value '{o.type}'", o.where)
        for prop, switch in FILE_PROP_SWITCHES.items():
            if o.type == "memory-backend-file" and prop in o.props and not getattr(qemu, switch):
                raise CommandLineRejected(qemu, f"{prog}: {_opt(o)},{prop}=...: Invalid "
                                          f"parameter '{prop}'", o.where)
    if backend is not None and not qemu.iommufd_object and _via_iommufd_object(backend):
        raise CommandLineRejected(qemu, f"{prog}: -object iommufd,id=iommufd0: Parameter "
                                  "'qom-type' does not accept value 'iommufd'", sc.source)
    if sc.machine.get("aux-ram-share") and not qemu.aux_ram_share:
        kind = "q35" if sc.machine.get("type", "q35") == "q35" else "i440fx"
        major, minor = qemu.version[:2]
        raise CommandLineRejected(qemu, f"{prog}: Property 'pc-{kind}-{major}.{minor}-machine."
                                  "aux-ram-share' not found", sc.source)
    if sc.incoming and not qemu.cpr_transfer:
        raise CommandLineRejected(qemu, "migrate-set-parameters mode=cpr-transfer: Parameter "
                                  "'mode' does not accept value 'cpr-transfer'", sc.source)


class SyntheticAllocator:
    """Deterministic host addresses (from 0x7f0000000000, 2 MiB aligned, with a
    guard gap) and fd numbers (from 10), so plans are reproducible."""

    def __init__(self, base: int = 0x7F0000000000, first_fd: int = 10):
        self.next_host = base
        self.next_fd = first_fd

    def alloc(self, rb: RAMBlock, wants_fd: bool) -> None:
        align = max(rb.page_size, 2 * MiB)
        rb.host = round_up(self.next_host, align)
        self.next_host = rb.host + round_up(rb.max_length, align) + 2 * MiB
        if wants_fd:
            rb.fd = self.next_fd
            self.next_fd += 1


@dataclass
class Machine:
    qemu: QemuVersion
    ramblocks: list[RAMBlock] = field(default_factory=list)
    sections: list[MemoryRegionSection] = field(default_factory=list)
    """What the VFIO listener replays at realize: guest RAM, or one IOMMU section
    with a vIOMMU."""
    reset_sections: list[MemoryRegionSection] | None = None
    """The flat view after the first machine reset, when it differs (q35's PAM)."""
    bar_sections: list[MemoryRegionSection] = field(default_factory=list)
    """PCI BARs that are RAM (vga.vram, VFIO BAR mmaps): in the flat view once
    firmware (or the guest) has assigned and enabled them, after reset."""
    memory_sections: list[MemoryRegionSection] = field(default_factory=list)
    """address_space_memory's flat view (vIOMMU translations land here)."""
    hotplug_sections: list[MemoryRegionSection] = field(default_factory=list)
    regions: dict[str, MemoryRegion] = field(default_factory=dict)
    viommu_maps: list[dict] | None = None
    vfio_devices: list[str] = field(default_factory=list)
    cpr_incoming: bool = False
    bypass_ro: bool = False
    max_memslots: int = MAX_MEMSLOTS_KVM_X86
    iommu_pgsizes: int | None = None   # the host IOMMU's page sizes, if the scenario says
    allocator: object = field(default_factory=SyntheticAllocator, repr=False)

    def add_block(self, rb: RAMBlock, wants_fd: bool, kind: MRKind = MRKind.RAM,
                  name: str | None = None, owner: str | None = None) -> MemoryRegion:
        """Allocate ``rb`` (host address, fd) and create its MemoryRegion."""
        self.allocator.alloc(rb, wants_fd)
        self.ramblocks.append(rb)
        if rb.mr_readonly and kind is MRKind.RAM:
            kind = MRKind.ROM
        mr = MemoryRegion(name or rb.idstr, kind, rb.used_length, rb,
                          readonly=rb.mr_readonly, owner=owner)
        self.regions[mr.name] = mr
        return mr

    @property
    def after_reset(self) -> list[MemoryRegionSection]:
        """The flat view after the first machine reset (what a paused QEMU shows)."""
        return self.sections if self.reset_sections is None else self.reset_sections

    @property
    def final_sections(self) -> list[MemoryRegionSection]:
        """The flat view once firmware has also mapped the PCI BARs."""
        return sorted(self.after_reset + self.bar_sections,
                      key=lambda s: s.offset_within_address_space)

    def section_at(self, gpa: int) -> MemoryRegionSection | None:
        """The guest-RAM section covering ``gpa`` (address_space_memory translation)."""
        for s in self.memory_sections + self.hotplug_sections:
            if s.offset_within_address_space <= gpa < s.end:
                return s
        return None


def _hugetlb_fs(path: str) -> bool:
    return path.startswith("/dev/hugepages") or "hugetlbfs" in path or "/hugepages" in path


def _fs_of(path: str, declared: str | None) -> str:
    if declared:
        return declared
    if path == "/dev/zero":
        # a character device: QEMU's ftruncate() of it fails (file_ram_alloc() only
        # perror()s), its MAP_SHARED mapping is shmem (drivers/char/mem.c mmap_zero()
        # -> shmem_zero_setup()), and MAP_FILE of the fd is refused (mm/gup.c
        # memfd_pin_folios(): neither shmem nor hugetlbfs); seen in the rig
        return "chardev"
    if _hugetlb_fs(path):
        return "hugetlbfs"
    if path.startswith(("/dev/shm", "/run/")):
        return "tmpfs"
    return "ext4"


def _backend_ramblock(obj, qemu: QemuVersion, idstr: str) -> tuple[RAMBlock, bool]:
    """The RAMBlock of one memory backend object (backends/hostmem-*.c), and
    whether it has an fd.  Raises UsageError for what QEMU itself rejects."""
    p = obj.props
    size = p["size"]
    if size == 0:
        raise UsageError("can't create backend with size 0", where=obj.where, field="size")
    t = obj.type
    if t == "memory-backend-ram":
        share = p.get("share", False)
        if share and qemu.ram_share_memfd:
            # 9fb40bb9621d (10.0): RAM_SHARED anonymous RAM comes from
            # qemu_ram_get_shared_fd() = qemu_memfd_create(name, 0, 0, 0, 0): no seals asked
            # for, no MFD_ALLOW_SEALING, so the memfd starts with F_SEAL_SEAL.
            return RAMBlock(idstr, size, size, RamFlags.RAM_SHARED,
                            Backing("memfd", path=idstr, seals=("F_SEAL_SEAL",))), True
        flags = RamFlags.RAM_SHARED if share else RamFlags.RAM_PRIVATE
        return RAMBlock(idstr, size, size, flags, Backing("anon")), False
    if t == "memory-backend-memfd":
        share = p.get("share", True)
        hugetlb = p.get("hugetlb", False)
        psize = p.get("hugetlbsize", HUGETLB_DEFAULT) if hugetlb else P
        # seal=off: qemu_memfd_create(..., seals=0) omits MFD_ALLOW_SEALING, so the
        # memfd starts with F_SEAL_SEAL (util/memfd.c; seen on real 7.2 and 10.0.2)
        seals = (("F_SEAL_SEAL", "F_SEAL_GROW", "F_SEAL_SHRINK") if p.get("seal", True)
                 else ("F_SEAL_SEAL",))
        flags = RamFlags.RAM_SHARED if share else RamFlags.RAM_PRIVATE
        return RAMBlock(idstr, size, size, flags,
                        Backing("memfd", path="memory-backend-memfd", seals=seals,
                                hugetlb=hugetlb, fs="hugetlbfs" if hugetlb else "tmpfs"),
                        page_size=psize), True
    if t == "memory-backend-file":
        share = p.get("share", False)
        readonly = p.get("readonly", False)
        rom = p.get("rom", "auto")
        if rom == "auto":
            rom = "on" if readonly else "off"
        if rom == "on" and not readonly:
            raise UsageError("property 'rom' = 'on' is not supported with 'readonly' = 'off'",
                             where=obj.where, field="rom")
        if readonly and share and rom == "off":
            raise UsageError("property 'rom' = 'off' is incompatible with 'readonly' = 'on' "
                             "and 'share' = 'on'", where=obj.where, field="rom")
        path = p["mem-path"]
        fs = _fs_of(path, p.get("x-fs"))
        flags = RamFlags.RAM_NAMED_FILE | (RamFlags.RAM_SHARED if share else RamFlags.RAM_PRIVATE)
        if readonly:
            flags |= RamFlags.RAM_READONLY_FD
        if rom == "on":
            flags |= RamFlags.RAM_READONLY
        if p.get("pmem"):
            flags |= RamFlags.RAM_PMEM
        offset = p.get("offset", 0)
        psize = HUGETLB_DEFAULT if fs == "hugetlbfs" else P
        if offset % psize:
            raise UsageError(f"offset must be a multiple of the page size 0x{psize:x}",
                             where=obj.where, field="offset")
        rb = RAMBlock(idstr, size, size, flags,
                      Backing("file", path=path, fs=fs, hugetlb=fs == "hugetlbfs",
                              open_flags="O_RDONLY" if readonly else "O_RDWR"),
                      fd_offset=offset, page_size=psize, mr_readonly=rom == "on")
        return rb, True
    if t == "memory-backend-shm":
        if not p.get("share", True):
            raise UsageError("memory-backend-shm: share=off is not supported",
                             where=obj.where, field="share")
        return RAMBlock(idstr, size, size, RamFlags.RAM_SHARED,
                        Backing("shm", path=f"/qemu-{idstr}", fs="tmpfs")), True
    if t == "memory-backend-epc":
        return RAMBlock(idstr, size, size, RamFlags.RAM_SHARED | RamFlags.RAM_PROTECTED,
                        Backing("epc")), False
    raise UsageError(f"{t} is not a memory backend", where=obj.where, field="qom-type")


def build_machine(sc: Scenario, qemu: QemuVersion, allocator=None,
                  backend: str | None = None) -> Machine:
    """Create the RAMBlocks and flat views for ``sc`` as QEMU ``qemu`` would;
    CommandLineRejected when that version does not start with it, UsageError
    (with QEMU's message) for what it refuses later (vmm_model/validate.py)."""
    check_command_line(sc, qemu, backend)
    from vmm_model.validate import check_scenario
    check_scenario(sc, qemu)
    m = Machine(qemu=qemu, viommu_maps=sc.viommu_maps, cpr_incoming=sc.incoming is not None,
                allocator=allocator or SyntheticAllocator())
    aux = sc.machine.get("aux-ram-share", False)
    backends: dict[str, RAMBlock] = {}

    def backend_mr(oid: str) -> MemoryRegion:
        if oid not in m.regions:
            obj = sc.object(oid)
            rb, has_fd = _backend_ramblock(obj, qemu, oid)
            backends[oid] = rb
            m.add_block(rb, has_fd, name=oid)
        return m.regions[oid]

    # main RAM: -machine memory-backend=, -numa node,memdev=, or the default memdev
    # -m 0 is QEMU's default size, not an empty VM (parse_memory_options(), system/vl.c)
    ram_size = sc.memory.get("size") or (128 * MiB if not (sc.numa or sc.machine.get("memory-backend")) else 0)
    parts: list[MemoryRegion] = []
    if sc.machine.get("memory-backend"):
        parts = [backend_mr(sc.machine["memory-backend"])]
    elif sc.numa:
        parts = [backend_mr(mid) for mid in sc.numa]
    else:
        # create_default_memdev() (hw/core/machine.c): memory-backend-file with
        # mem-path and share=off if -mem-path was given, else memory-backend-ram share=off;
        # id = mc->default_ram_id ("pc.ram"); aux-ram-share does not apply.
        path = sc.memory.get("mem-path")
        if path:
            fs = _fs_of(path, None)
            rb = RAMBlock("pc.ram", ram_size, ram_size,
                          RamFlags.RAM_NAMED_FILE | RamFlags.RAM_PRIVATE,
                          Backing("file", path=path, fs=fs, hugetlb=fs == "hugetlbfs"),
                          page_size=HUGETLB_DEFAULT if fs == "hugetlbfs" else P)
            parts = [m.add_block(rb, True)]
        else:
            rb = RAMBlock("pc.ram", ram_size, ram_size, RamFlags.RAM_PRIVATE, Backing("anon"))
            parts = [m.add_block(rb, False)]
    total = sum(p.size for p in parts)
    if sc.memory.get("size") and sc.memory["size"] != total:
        raise UsageError(f"-m {sc.memory['size']:#x} does not match the memory backends' "
                         f"total size {total:#x}", where=sc.source, field="memory.size")

    # implicit RAM: pc.bios (and vga.vram); memfd + RAM_SHARED with aux-ram-share (10.0+)
    def implicit(idstr, size, rom):
        if aux:
            rb = RAMBlock(idstr, size, size, RamFlags.RAM_SHARED,
                          Backing("memfd", path=idstr, seals=("F_SEAL_SEAL",)),
                          mr_readonly=rom)
            return m.add_block(rb, True)
        return m.add_block(RAMBlock(idstr, size, size, RamFlags(0), Backing("anon"),
                                  mr_readonly=rom), False)

    if not sc.sections:
        _x86_layout(m, sc, parts, total, implicit, backend_mr)
    else:
        _explicit_layout(m, sc, backend_mr, implicit)
    for name in [o.id for o in sc.objects if o.type.startswith("memory-backend")]:
        if name not in m.regions:   # unused backends still allocate (QEMU creates them)
            backend_mr(name)
    m.vfio_devices = [d.props.get("host") or d.props.get("sysfsdev") or d.props.get("id")
                      or "vfio-pci" for d in sc.devices if d.type == "vfio-pci"]
    m.iommu_pgsizes = next((d.props["x-iommu-pgsizes"] for d in sc.devices
                            if d.type == "vfio-pci" and "x-iommu-pgsizes" in d.props), None)
    m.bypass_ro = qemu.bypass_ro and any(d.props.get("x-bypass-ro") for d in sc.devices
                                         if d.type == "vfio-pci")
    for view in (m.sections, m.reset_sections):
        if view is not None:
            _check_overlaps(view + m.bar_sections + m.hotplug_sections)
            view.sort(key=lambda s: s.offset_within_address_space)
    m.bar_sections.sort(key=lambda s: s.offset_within_address_space)
    m.memory_sections = m.final_sections
    if sc.viommu_maps is not None:
        # intel-iommu with DMAR enabled: the device's address space is the IOMMU
        # region (vtd_host_dma_iommu(), hw/i386/intel_iommu.c); guest RAM is reached
        # only through MAP events (vfio_iommu_map_notify()).
        iommu = MemoryRegion("intel_iommu_dmar", MRKind.IOMMU, 1 << 64)
        m.memory_sections = m.final_sections + m.hotplug_sections
        m.sections, m.hotplug_sections = [_sec(iommu, 0, 1 << 64)], []
        m.reset_sections, m.bar_sections = None, []
    return m


def _sec(mr, gpa, size, owr=0, readonly=None, **extra) -> MemoryRegionSection:
    return MemoryRegionSection(mr, gpa, size, owr,
                               mr.readonly if readonly is None else readonly, extra)


FIRMWARE_DIRS = ("/usr/share/qemu", "/usr/share/seabios")     # qemu_find_file()'s data dirs (Debian)


def _bios_size(qemu: QemuVersion, firmware: str | None) -> int:
    """x86_bios_rom_init() (hw/i386/x86-common.c; x86.c before 9.1): pc.bios is the
    -bios / -machine firmware= image, its size a multiple of 64 KiB, else QEMU
    exits with "qemu: could not load PC BIOS '<name>'".  The default is SeaBIOS's
    bios-256k.bin.  The image is looked up on this machine (a path, or a name in
    the data directories), as QEMU would where it runs."""
    import os
    if not firmware or firmware == "bios-256k.bin":
        return BIOS_SIZE
    paths = [firmware] if "/" in firmware else [f"{d}/{firmware}" for d in FIRMWARE_DIRS]
    size = next((os.path.getsize(p) for p in paths if os.path.isfile(p)), 0)
    if size <= 0 or size % 65536:
        raise CommandLineRejected(qemu, f"qemu: could not load PC BIOS '{firmware}'")
    return size


def _x86_layout(m: Machine, sc: Scenario, parts, total, implicit, backend_mr) -> None:
    mtype = sc.machine.get("type", "q35")
    if mtype == "q35":      # pc_q35_init()
        lowmem = 0x80000000 if total >= 0xB0000000 else 0xB0000000
    else:                   # pc_init1(), gigabyte_align
        lowmem = 0xC0000000 if total >= 0xE0000000 else 0xE0000000
    below = min(total, lowmem)
    above = total - below
    secs = m.sections

    def ram_ranges(gpa, start, length):
        """Guest [gpa, gpa+length) over the concatenated RAM parts from offset start."""
        off = 0
        for mr in parts:
            lo, hi = max(start, off), min(start + length, off + mr.size)
            if lo < hi:
                yield mr, gpa + (lo - start), hi - lo, lo - off
            off += mr.size

    # pc_memory_init(): pc.bios at 4 GiB - bios_size, pc.rom at 0xc0000 and
    # isa-bios (the last 128 KiB of pc.bios) at 0xe0000 in the PCI space, all RAM
    # regions set read-only (x86_bios_rom_init(), memory_region_set_readonly()).
    pflash = sc.machine.get("pflash0")
    if pflash:
        # pc_system_flash_map(): the firmware is a pflash, a ROM device (ROMD:
        # mr->ram false, VFIO skips it) at 4 GiB - its size, and no pc.bios RAM;
        # isa-bios is a read-only RAM copy of its last 128 KiB (pc_isa_bios_init())
        # or, from 9.1, an alias of the flash (isa_bios_aliases_pflash).
        bios_size = isa_size = ISA_BIOS_SIZE
        if m.qemu.isa_bios_aliases_pflash:
            isa_fill = MemoryRegion("isa-bios", MRKind.ROMD, isa_size)
        else:
            isa_fill = (implicit("isa-bios", isa_size, True), 0)
    else:
        bios_size = _bios_size(m.qemu, sc.machine.get("firmware"))
        isa_size = min(bios_size, ISA_BIOS_SIZE)
        bios = implicit("pc.bios", bios_size, True)
        isa_fill = (bios, bios_size - isa_size)
    pc_rom = implicit("pc.rom", PC_ROM_SIZE, True)
    # The 0xa0000-0xbffff window ("smram-region", an alias of the PCI space) shows
    # the VGA's vga-lowmem when there is a VGA; with none it is transparent.
    # Without "smram-region" (q35 with SMM off, 9.1+) RAM shows through instead.
    vga = sc.machine.get("vga", "none") != "none"
    if (mtype == "q35" and m.qemu.q35_smram_region_needs_smm
            and sc.machine.get("smm", "auto") == "off"):
        vga = False
    holes = [(0xA0000, 0xC0000, MemoryRegion("vga-lowmem", MRKind.IO, 0x20000))] if vga else []
    pam = [(PC_ROM_BASE, PC_ROM_BASE + PC_ROM_SIZE, (pc_rom, 0)),
           (0x100000 - isa_size, 0x100000, isa_fill)]

    def low_view(windows) -> list[MemoryRegionSection]:
        """ram-below-4g with the given windows cut out of it (filled by what shows there)."""
        out, cuts = [], sorted(windows, key=lambda w: w[0])
        for mr, gpa, size, owr in ram_ranges(0, 0, below):
            pos, end = gpa, gpa + size
            for lo, hi, _ in cuts:
                if pos < min(hi, end) and lo < end:
                    if pos < lo:
                        out.append(_sec(mr, pos, lo - pos, owr + (pos - gpa)))
                    pos = max(pos, hi)
            if pos < end:
                out.append(_sec(mr, pos, end - pos, owr + (pos - gpa)))
        for lo, hi, fill in cuts:
            if isinstance(fill, MemoryRegion):
                out.append(_sec(fill, lo, hi - lo))
            elif lo < below:
                out.append(_sec(fill[0], lo, hi - lo, fill[1]))
        return sorted(out, key=lambda x: x.offset_within_address_space)

    high = [_sec(mr, gpa, size, owr) for mr, gpa, size, owr in ram_ranges(1 << 32, below, above)]
    if not pflash:
        high.append(_sec(bios, (1 << 32) - bios_size, bios_size))
    if sc.machine.get("vga") == "std":     # VGA BAR 0 where SeaBIOS places it
        vram = implicit("vga.vram", 16 * MiB, False)
        m.bar_sections.append(_sec(vram, 0xFD000000, 16 * MiB))
    split = low_view(holes + pam)
    if mtype == "q35":      # PAM aliases disabled until mch_reset()
        secs += low_view(holes) + high
        m.reset_sections = split + list(high)
    else:                   # i440fx_update_memory_mappings() at realize
        secs += split + high
    reset = m.reset_sections
    # device memory: pc_get_device_memory_range()
    dev_base = round_up((1 << 32) + above, GiB)
    next_addr = dev_base
    for d in sc.devices:
        if d.type == "vfio-pci":
            _vfio_bars(m, d)
            continue
        mr = backend_mr(d.props["memdev"])
        rb = mr.ram_block
        if d.type in ("pc-dimm", "nvdimm", "virtio-pmem-pci"):  # mapped whole, like a DIMM
            align = rb.page_size
            gpa = d.props.get("addr", round_up(next_addr, align))
            sec = _sec(mr, gpa, mr.size)
        else:   # virtio-mem
            block = d.props.get("block-size", max(VIRTIO_MEM_DEFAULT_BLOCK, rb.page_size))
            if mr.size % block:
                raise UsageError(f"memdev size 0x{mr.size:x} is not a multiple of block-size "
                                 f"0x{block:x}", where=d.where, field="block-size")
            nblocks = mr.size // block
            populated = d.props.get("x-populated", ())
            for a, b in populated:
                if b > nblocks:
                    raise UsageError(f"populated block {b - 1} beyond the device's "
                                     f"{nblocks} blocks", where=d.where, field="x-populated")
            mr.rdm_granularity = block
            mr.rdm_populated = tuple((a * block, b * block) for a, b in populated)
            gpa = d.props.get("memaddr", round_up(next_addr, block))
            sec = _sec(mr, gpa, mr.size)
        next_addr = max(next_addr, sec.end)
        if d.props.get("x-hotplug"):
            m.hotplug_sections.append(sec)
        else:
            secs.append(sec)
            if reset is not None:
                reset.append(sec)


def _vfio_bars(m: Machine, d) -> None:
    """VFIO BAR mmaps: ``"<dev> BAR n mmaps[i]"`` ram_device regions
    (memory_region_init_ram_device_ptr), RAM_PREALLOC, never RAM_SHARED; with a
    VFIO dma-buf fd and fd_offset = mmaps[i].offset from 11.0 (8cfaf22668c7).
    BARs are where the scenario says: placed by firmware or the guest after
    reset (Machine.bar_sections)."""
    dev = d.props.get("host") or d.props.get("id") or "vfio-pci"
    next_gpa = 0xE0000000
    for bar in d.props.get("x-bars", ()):
        gpa = bar["gpa"]
        if gpa is None:
            gpa = round_up(next_gpa, max(bar["size"], P))
            next_gpa = gpa + bar["size"]
        for i, (off, size) in enumerate(bar["mmaps"]):
            name = f"{dev} BAR {bar['index']} mmaps[{i}]"
            has_fd = m.qemu.bar_dmabuf
            rb = RAMBlock(name, size, size, RamFlags.RAM_PREALLOC,
                          Backing("dmabuf" if has_fd else "pfnmap", path=dev),
                          fd_offset=off if has_fd else 0)
            mr = m.add_block(rb, has_fd, MRKind.RAM_DEVICE, name, owner=dev)
            m.bar_sections.append(_sec(mr, gpa + off, size, 0))


def _explicit_layout(m: Machine, sc: Scenario, backend_mr, implicit) -> None:
    """[[section]] rows: guest ranges given explicitly (e.g. saved from a live QEMU)."""
    kinds = {k.value: k for k in MRKind}
    for s in sc.sections:
        kind = kinds.get(s.get("type", "ram"))
        if kind is None:
            raise UsageError(f"unknown section type {s.get('type')!r}", where=s["where"],
                             field="type", valid=", ".join(kinds))
        name = s["mr"]
        if kind in (MRKind.IO, MRKind.ROMD, MRKind.IOMMU):
            mr = m.regions.setdefault(name, MemoryRegion(name, kind, s["size"]))
        elif sc.object(name):
            mr = backend_mr(name)
        elif name in m.regions:
            mr = m.regions[name]
        elif name in ("pc.ram",):
            raise UsageError("section names pc.ram but the scenario has no default RAM",
                             where=s["where"], field="mr")
        else:
            mr = implicit(name, round_up(s.get("offset", 0) + s["size"], P), kind is MRKind.ROM)
        m.sections.append(_sec(mr, s["gpa"], s["size"], s.get("offset", 0),
                               readonly=s.get("readonly", kind is MRKind.ROM)))


def _check_overlaps(view: list[MemoryRegionSection]) -> None:
    secs = sorted(view, key=lambda s: s.offset_within_address_space)
    for a, b in zip(secs, secs[1:]):
        if b.offset_within_address_space < a.end:
            raise UsageError(
                f"overlapping guest ranges: {a.mr.name} [0x{a.offset_within_address_space:x}, "
                f"0x{a.end:x}) and {b.mr.name} [0x{b.offset_within_address_space:x}, "
                f"0x{b.end:x})", where="guest physical address space",
                valid="give pc-dimm addr / virtio-mem memaddr / BAR gpa that do not overlap")
