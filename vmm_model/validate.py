"""What QEMU refuses before the VFIO listener ever runs, checked the way QEMU
checks it and reported with QEMU's own message (the function that prints it is
named next to each check).  ``check_scenario()`` is called once, by
``build_machine()``, so a configuration one QEMU version refuses is a rejected
plan for that version and bad input for all.

Checked, in QEMU's order (option parsing, board init, device realize):

* ``-m size,slots,maxmem``: machine_set_mem() (hw/core/machine.c); at most 256
  slots and the guest-physical address space: pc_memory_init() (hw/i386/pc.c).
  The CPU's phys-bits are not modelled: the largest x86-64 value (52) is assumed
  and the 64-bit PCI hole is not added, so only sizes no x86 CPU can address fail.
* memory devices (pc-dimm, virtio-mem): busy memdevs (pc_dimm_realize(),
  virtio_mem_device_realize()), DIMM slots (pc_dimm_get_free_slot()),
  maxmem space, alignment and address range (memory_device_pre_plug(),
  memory_device_get_free_addr(), hw/mem/memory-device.c), virtio-mem
  block-size (virtio_mem_set_block_size()).
* ``vfio-pci,iommufd=ID``: the link target exists and is an iommufd object
  (object_resolve_link(), qom/object.c).
* vfio-emu's own ``x-bars``: PCI BAR shape (pci_register_bar() asserts a power
  of two, hw/pci/pci.c; a BAR is naturally aligned), sparse mmaps inside the BAR.
* ``[[section]]`` rows: a RAM section names a memory backend or a region QEMU
  creates itself.
* device names on the command line: qdev_get_device_class() (system/qdev-monitor.c).
"""

from __future__ import annotations

from backends.errors import UsageError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
DEFAULT_RAM_SIZE = 128 * MiB          # MachineClass default_ram_size (hw/i386/pc.c)
ACPI_MAX_RAM_SLOTS = 256              # include/hw/acpi/pc-hotplug.h
PHYS_BITS = 52                        # the largest x86-64 MAXPHYADDR
QEMU_VMALLOC_ALIGN = 2 * MiB          # anonymous RAM alignment on x86-64 (osdep.h)
HOST_USER_VA = 0x7FFFFFFFF000         # x86-64 TASK_SIZE with 4-level paging (128 TiB)
VIRTIO_MEM_MIN_BLOCK_SIZE = 1 * MiB   # hw/virtio/virtio-mem.c


def ram_size(sc) -> int:
    """The initial RAM size: ``-m`` (0 means the default, as ``-m 0`` does in
    QEMU's parse_memory_options()), else the memory backends' total."""
    if sc.memory.get("size"):
        return sc.memory["size"]
    ids = [sc.machine["memory-backend"]] if sc.machine.get("memory-backend") else sc.numa
    sizes = [o.props.get("size", 0) for o in map(sc.object, ids) if o is not None]
    return sum(sizes) if sizes else DEFAULT_RAM_SIZE


def check_scenario(sc, qemu) -> None:
    """Raise UsageError with QEMU's message for what QEMU ``qemu`` refuses."""
    ram, maxmem, slots = _memory_options(sc)
    _host_memory(sc, ram)
    _memory_devices(sc, qemu, ram, maxmem, slots)
    for d in sc.devices:
        if d.type == "vfio-pci":
            _vfio_pci(sc, d)
    _sections(sc)


def _err(msg: str, where: str, field: str | None = None, valid: str | None = None):
    return UsageError(msg, where=where, field=field, valid=valid)


def _memory_options(sc) -> tuple[int, int, int]:
    """machine_set_mem() and pc_memory_init(): (ram size, maxmem, slots)."""
    mem = sc.memory
    ram = ram_size(sc)
    slots = mem.get("slots", 0)
    if "maxmem" in mem:
        maxmem = mem["maxmem"]
        if maxmem < ram:
            raise _err(f"invalid value of maxmem: maximum memory size (0x{maxmem:x}) must be "
                       f"at least the initial memory size (0x{ram:x})", sc.source, "maxmem")
        if slots and maxmem == ram:
            raise _err("invalid value of maxmem: memory slots were specified but maximum "
                       f"memory size (0x{maxmem:x}) is equal to the initial memory size "
                       f"(0x{ram:x})", sc.source, "maxmem")
    else:
        if "slots" in mem:
            raise _err("slots specified but no max-size", sc.source, "slots",
                       valid="slots with maxmem, e.g. -m 4G,slots=4,maxmem=16G")
        maxmem = ram
    if slots < 0 or slots > ACPI_MAX_RAM_SLOTS:
        raise _err(f"unsupported amount of memory slots: {slots}", sc.source, "slots",
                   valid=f"0 to {ACPI_MAX_RAM_SLOTS}")
    base = _device_memory_base(sc, ram)
    end = base + _device_memory_size(ram, maxmem, slots) if maxmem > ram else \
        (1 << 32) + max(0, ram - _lowmem(sc, ram))
    if end - 1 > (1 << PHYS_BITS) - 1:
        raise _err(f"Address space limit 0x{(1 << PHYS_BITS) - 1:x} < 0x{end - 1:x} phys-bits "
                   f"too low ({PHYS_BITS})", sc.source, "memory.size" if maxmem == ram
                   else "maxmem", valid="sizes an x86-64 guest can address (< 4 PiB)")
    return ram, maxmem, slots


def _host_memory(sc, ram: int) -> None:
    """Guest RAM QEMU must mmap: more than the host's user address space fails in
    qemu_ram_alloc() with "cannot set up guest memory '...': Cannot allocate
    memory", which hides what is wrong: a size (often a typo) no host can map."""
    blocks = [(o.props.get("size", 0), o.where, "size", o.id)
              for o in sc.objects if o.type.startswith("memory-backend")]
    if not (sc.machine.get("memory-backend") or sc.numa):
        blocks.append((ram, sc.source, "memory.size", "pc.ram"))
    total = 0
    for size, where, field, name in blocks:
        total += size
        if total > HOST_USER_VA:
            raise _err(f"guest memory '{name}' of 0x{size:x} bytes does not fit in the "
                       f"host's 128 TiB user address space (0x{total:x} bytes of guest RAM in "
                       "all; QEMU says: Cannot allocate memory)", where, field,
                       valid="a smaller size: is it a typo?")


def _lowmem(sc, ram: int) -> int:
    """pc_q35_init() / pc_init1(): the RAM below 4 GiB."""
    if sc.machine.get("type", "q35") == "q35":
        return 0x80000000 if ram >= 0xB0000000 else 0xB0000000
    return 0xC0000000 if ram >= 0xE0000000 else 0xE0000000


def _device_memory_base(sc, ram: int) -> int:
    """pc_memory_init(): ROUND_UP(4 GiB + RAM above 4 GiB, 1 GiB)."""
    above = max(0, ram - _lowmem(sc, ram))
    return -(-((1 << 32) + above) // GiB) * GiB


def _device_memory_size(ram: int, maxmem: int, slots: int) -> int:
    """pc_memory_init(): maxmem - ram, plus 1 GiB per slot for DIMM alignment."""
    return maxmem - ram + slots * GiB


def _align(obj, d) -> int:
    """memory_region_get_alignment() of the memdev's region (virtio-mem: its block)."""
    p = obj.props
    if d.type != "pc-dimm":
        return d.props.get("block-size", max(2 * MiB, _page_size(obj)))
    if obj.type == "memory-backend-ram":
        return QEMU_VMALLOC_ALIGN
    return _page_size(obj) if p.get("hugetlb") or _page_size(obj) > 4 * KiB else 4 * KiB


def _page_size(obj) -> int:
    p = obj.props
    if obj.type == "memory-backend-memfd" and p.get("hugetlb"):
        return p.get("hugetlbsize", 2 * MiB)
    if obj.type == "memory-backend-file":
        path = p.get("mem-path", "")
        if p.get("x-fs") == "hugetlbfs" or "hugepages" in path or "hugetlbfs" in path:
            return 2 * MiB
    return 4 * KiB


# Messages that differ between QEMU versions (to move into QemuVersion records):
# memory_device_get_free_addr() before "memory-device: Unify enabled vs. supported
# error messages" (David Hildenbrand, QEMU 8.1); memory_device_pre_plug() after it.
NO_DEVICE_MEMORY = {
    "7.2": "memory devices (e.g. for memory hotplug) are not enabled, please specify the "
           "maxmem option",
}
NO_DEVICE_MEMORY_8_1 = ("the configuration is not prepared for memory devices (e.g., for memory "
                        "hotplug), consider specifying the maxmem option")


def _memory_devices(sc, qemu, ram: int, maxmem: int, slots: int) -> None:
    busy = set(sc.numa)
    if sc.machine.get("memory-backend"):
        busy.add(sc.machine["memory-backend"])
    base = _device_memory_base(sc, ram)
    size = _device_memory_size(ram, maxmem, slots) if maxmem > ram else 0
    used, dimm_slots, placed = 0, set(), []
    for d in sc.devices:
        if d.type == "vfio-pci":
            continue
        mid = d.props.get("memdev")
        obj = sc.object(mid)
        if obj is None:
            continue                                  # scenario.py reports the reference
        if mid in busy:
            raise _err(f"can't use already busy memdev: {mid}" if d.type == "pc-dimm" else
                       f"'memdev' property specifies a busy memdev: {mid}", d.where, "memdev")
        busy.add(mid)
        if d.type == "pc-dimm":                       # pc_dimm_get_free_slot()
            if slots <= 0:
                raise _err("no slots where allocated, please specify the 'slots' option",
                           d.where, "slots", valid="-m SIZE,slots=N,maxmem=MAX")
            slot = d.props.get("slot")
            if slot is not None:
                if not 0 <= slot < slots:
                    raise _err(f"invalid slot number {slot}, valid range is [0-{slots - 1}]",
                               d.where, "slot")
                if slot in dimm_slots:
                    raise _err(f"slot {slot} is busy", d.where, "slot")
            elif len(dimm_slots) >= slots:
                raise _err("no free slots available", d.where, "slots")
            dimm_slots.add(slot if slot is not None else
                           min(set(range(slots)) - dimm_slots))
        else:                                         # virtio_mem_set_block_size()
            bs = d.props.get("block-size")
            if bs is not None and (bs <= 0 or bs & (bs - 1)):
                raise _err("'block-size' property has to be a power of two", d.where,
                           "block-size")
            if bs is not None and bs < VIRTIO_MEM_MIN_BLOCK_SIZE:
                raise _err(f"'block-size' property has to be at least 0x"
                           f"{VIRTIO_MEM_MIN_BLOCK_SIZE:x}", d.where, "block-size")
        # memory_device_pre_plug() / memory_device_get_free_addr()
        if size == 0:
            raise _err(NO_DEVICE_MEMORY.get(qemu.name, NO_DEVICE_MEMORY_8_1), d.where,
                       "maxmem", valid="-m SIZE,maxmem=MAX (and slots=N for pc-dimm)")
        msize = obj.props["size"]
        if used + msize > maxmem - ram:
            raise _err(f"not enough space, currently 0x{used:x} in use of total space for "
                       f"memory devices 0x{maxmem - ram:x}", d.where, "maxmem")
        align = _align(obj, d)
        hint_key = "addr" if d.type == "pc-dimm" else "memaddr"
        hint = d.props.get(hint_key)
        if hint is not None and hint % align:
            raise _err(f"address must be aligned to 0x{align:x} bytes", d.where, hint_key)
        if msize % align:
            raise _err(f"backend memory size must be multiple of 0x{align:x}", d.where,
                       "memdev")
        if hint is not None:
            if hint < base or hint + msize > base + size:
                raise _err(f"can't add memory device [0x{hint:x}:0x{msize:x}], usable range "
                           f"for memory devices [0x{base:x}:0x{size:x}]", d.where, hint_key)
            for other, lo, hi in placed:
                if lo < hint + msize and hint < hi:
                    raise _err("address range conflicts with memory device "
                               f"id='{other.id or '(unnamed)'}'", d.where, hint_key)
            placed.append((d, hint, hint + msize))
        used += msize
        node, nodes = d.props.get("node", 0), max(1, len(sc.numa))
        if node >= nodes:                 # pc_dimm_realize(), virtio_mem_device_realize()
            raise _err(f"'DIMM property node has value {node}' which exceeds the number of "
                       f"numa nodes: {nodes}" if d.type == "pc-dimm" else
                       f"'node' property has value '{node}', which exceedsthe number of numa "
                       f"nodes: {nodes}", d.where, "node")


def _vfio_pci(sc, d) -> None:
    ref = d.props.get("iommufd")
    if ref is not None:                               # object_resolve_link()
        obj = sc.object(ref)
        if obj is None:
            raise _err(f"Device '{ref}' not found", d.where, "iommufd",
                       valid="the id of an -object iommufd")
        if obj.type != "iommufd":
            raise _err("Invalid parameter type for 'iommufd', expected: iommufd", d.where,
                       "iommufd")
    seen = set()
    for bar in d.props.get("x-bars", ()):
        n, size, gpa = bar["index"], bar["size"], bar["gpa"]
        if not 0 <= n <= 5:
            raise _err(f"BAR index {n} out of range", d.where, "x-bars", valid="0 to 5")
        if n in seen:
            raise _err(f"BAR {n} is given twice", d.where, "x-bars")
        seen.add(n)
        if size <= 0 or size & (size - 1):
            raise _err(f"BAR {n} size 0x{size:x} is not a power of two (pci_register_bar() "
                       "asserts is_power_of_2(size))", d.where, "x-bars")
        if gpa is not None and gpa % size:
            raise _err(f"BAR {n} at 0x{gpa:x} is not aligned to its size 0x{size:x} (PCI BARs "
                       "are naturally aligned)", d.where, "x-bars")
        spans = sorted((off, off + sz, i) for i, (off, sz) in enumerate(bar["mmaps"]))
        for off, end, i in spans:
            if end > size or end <= off:
                raise _err(f"BAR {n} mmaps[{i}] [0x{off:x}, 0x{end:x}) is not inside the BAR "
                           f"(size 0x{size:x})", d.where, "x-bars")
        for (a, a_end, i), (b, _, j) in zip(spans, spans[1:]):
            if b < a_end:
                raise _err(f"BAR {n} mmaps[{i}] and mmaps[{j}] overlap", d.where, "x-bars")


def _qemu_named(name: str) -> bool:
    """Names QEMU gives the RAM it creates itself (pc.bios, vga.vram,
    /rom@etc/acpi/tables, 0000:00:02.0/e1000.rom): never a bare identifier."""
    return any(c in name for c in "./@: ")


def _sections(sc) -> None:
    backends = [o.id for o in sc.objects if o.type.startswith("memory-backend")]
    for s in sc.sections:
        name = s["mr"]
        if s.get("type", "ram") in ("ram", "rom", "ramd") and name not in backends \
                and not _qemu_named(name):
            raise _err(f"section names memory region {name!r}, which is neither a memory "
                       "backend nor a region QEMU creates itself", s["where"], "mr",
                       valid=", ".join(backends + ["pc.ram", "pc.bios", "vga.vram", "..."]))
