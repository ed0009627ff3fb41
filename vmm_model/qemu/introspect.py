"""Read a live QEMU's memory and turn it into a Scenario plus the RAMBlocks
observed on the host.

From the monitor (QMP and HMP, as QEMU 7.2 and later answer): ``query-version``,
``query-memdev``, ``qom-list /objects`` and ``qom-get`` of each memory
backend's own properties, ``/machine`` ``type``/``memory``/``memory-backend``/
``aux-ram-share`` (where they exist), pc-dimm devices under
``/machine/peripheral[-anon]``, ``info mtree -f`` (address space "memory" ->
explicit ``[[section]]`` rows), ``info ramblock`` (``x-query-ramblock`` where it
exists) and, before 8.0 (no HVA column), ``gpa2hva`` for the blocks the guest
sees.  From /proc, when the process is on this host: the mapping at each
RAMBlock's host address (shared ``s`` / private ``p``, backing file, file
offset), the fd QEMU holds on that file, and F_GET_SEALS of memfds.

What is *not* observable is reconstructed by the model (``build_machine``) from
the backend properties and the QEMU version; ``compare_with_model`` checks the
two agree.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from backends.errors import UsageError
from vmm_model.qemu import procfs
from vmm_model.qemu.errors import QemuError, QmpCommandError, UnknownBackendError
from vmm_model.qemu.monitor import Monitor
from vmm_model.qemu.parse import (FlatRange, flatview_of, parse_gpa2hva, parse_mtree_flat,
                                  parse_ramblock)
from vmm_model.scenario import OBJECT_TYPES, Obj, Scenario, _parse_props, _validate

# Properties read per backend type: those vfio-emu models (QEMU names).
_WANTED = {
    "memory-backend-ram": ("size", "share"),
    "memory-backend-memfd": ("size", "share", "seal", "hugetlb", "hugetlbsize"),
    "memory-backend-file": ("size", "share", "mem-path", "offset", "readonly", "rom", "pmem"),
    "memory-backend-shm": ("size", "share"),
    "memory-backend-epc": ("size", "share"),
}
DEFAULT_RAM_ID = "pc.ram"       # mc->default_ram_id of pc/q35 (hw/i386/pc_q35.c, pc_piix.c)
RAM_TYPES = ("ram", "rom", "ramd")


@dataclass
class ObservedRAMBlock:
    """One RAMBlock as the live QEMU and /proc show it."""

    name: str                   # idstr (info ramblock)
    size: int                   # used_length
    max_size: int               # max_length
    page_size: int
    host: int | None = None     # rb->host (HVA column, or gpa2hva before 8.0)
    readonly: bool | None = None  # mr->readonly (RO column, 8.0+)
    fd: int | None = None       # QEMU's fd on the mapped file, from /proc/PID/fd
    fd_present: bool | None = None   # None: /proc not readable or host unknown
    shared: bool | None = None  # the mapping's s/p flag
    backing: str | None = None  # maps path: "" (anonymous), "/memfd:NAME (deleted)", a file
    fd_offset: int | None = None    # file offset of rb->host in the mapping
    writable: bool | None = None    # the mapping is PROT_WRITE
    seals: int | None = None    # F_GET_SEALS of the fd (memfd / shmem)

    @property
    def seal_names(self) -> tuple[str, ...]:
        return procfs.seal_names(self.seals)

    def to_json(self) -> dict:
        d = asdict(self)
        d["seal_names"] = list(self.seal_names)
        return d


@dataclass
class LiveVM:
    scenario: Scenario
    ramblocks: list[ObservedRAMBlock]
    version: str
    package: str
    pid: int | None
    proc: bool                          # /proc facts were read
    memdev: list[dict] | None = None    # query-memdev as returned (None over HMP)
    notes: list[str] = field(default_factory=list)

    def block(self, name: str) -> ObservedRAMBlock:
        for b in self.ramblocks:
            if b.name == name or b.name.endswith("/" + name):
                return b
        raise KeyError(name)


def _version(mon: Monitor) -> tuple[str, str]:
    v = mon.execute("query-version")
    q = v["qemu"]
    return f"{q['major']}.{q['minor']}.{q['micro']}", v.get("package", "").strip()


def _names(entries) -> dict[str, str]:
    return {e["name"]: e["type"] for e in entries}


def _link_id(path) -> str | None:
    if not path:
        return None
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def _backend(mon: Monitor, oid: str, qom_type: str, proc_ok: bool) -> Obj:
    where = f"{mon.source}: /objects/{oid}"
    if qom_type not in _WANTED:
        raise UnknownBackendError(f"memory backend {oid!r} has type {qom_type}, which "
                                  "vfio-emu does not model", where=where, field="qom-type",
                                  valid=", ".join(_WANTED))
    have = _names(mon.execute("qom-list", path=f"/objects/{oid}"))
    raw = {"id": oid}
    for prop in _WANTED[qom_type]:
        if prop in have:
            raw[prop] = mon.execute("qom-get", path=f"/objects/{oid}", property=prop)
    if not raw.get("hugetlb"):
        raw.pop("hugetlbsize", None)
    if proc_ok and "mem-path" in raw:
        fs = procfs.fs_type(raw["mem-path"])
        if fs:
            raw["x-fs"] = fs
    return Obj(qom_type, _parse_props(OBJECT_TYPES[qom_type], raw, where, qom_type), where)


def _machine_type(qom_type: str) -> str:
    if "q35" in qom_type:
        return "q35"
    if "i440fx" in qom_type or re.fullmatch(r"pc(-[\d.]+)?-machine", qom_type):
        return "pc"
    raise UsageError(f"machine type {qom_type!r} is not modelled", where="/machine",
                     field="type", valid="q35 and pc (i440fx) machines")


def _section_rows(ranges: list[FlatRange]) -> list[dict]:
    rows = []
    for r in ranges:
        row = {"gpa": r.start, "size": r.size, "mr": r.name, "type": r.type}
        if r.offset:
            row["offset"] = r.offset
        if r.readonly:
            row["readonly"] = True
        rows.append(row)
    return rows


def introspect(mon: Monitor, *, pid: int | None = None, use_proc: bool = True,
               name: str = "live") -> LiveVM:
    """Read everything from ``mon`` (and /proc of ``pid`` or ``mon.pid``)."""
    version, package = _version(mon)
    pid = pid if pid is not None else mon.pid
    proc_ok = use_proc and procfs.readable(pid)
    notes = []
    try:
        memdev = mon.execute("query-memdev")
    except QmpCommandError as e:
        if e.error_class != "CommandNotFound":
            raise
        memdev = None

    objects = []
    for oid, typ in _names(mon.execute("qom-list", path="/objects")).items():
        m = re.fullmatch(r"child<(memory-backend[-\w]*)>", typ)
        if m:
            objects.append(_backend(mon, oid, m.group(1), proc_ok))

    mprops = _names(mon.execute("qom-list", path="/machine"))
    machine = {"type": _machine_type(mon.execute("qom-get", path="/machine",
                                                     property="type"))}
    if "aux-ram-share" in mprops:
        machine["aux-ram-share"] = bool(mon.execute("qom-get", path="/machine",
                                                    property="aux-ram-share"))
    main_id = None
    if "memory-backend" in mprops:
        main_id = _link_id(mon.execute("qom-get", path="/machine", property="memory-backend"))
    memcfg = {}
    if "memory" in mprops:
        memcfg = mon.execute("qom-get", path="/machine", property="memory") or {}

    sc = Scenario(name=name, source=mon.source)
    sc.qemu = version
    sc.title = f"live QEMU {version}" + (f" ({package})" if package else "") + \
        f" read from {mon.source}"
    sc.machine = machine
    by_id = {o.id: o for o in objects}
    main = by_id.get(main_id)
    if main is not None and main.id == DEFAULT_RAM_ID and not main.props.get("share") and \
            main.type in ("memory-backend-ram", "memory-backend-file"):
        # create_default_memdev() (hw/core/machine.c): plain -m [-mem-path]
        sc.memory["size"] = main.props["size"]
        if main.type == "memory-backend-file":
            sc.memory["mem-path"] = main.props["mem-path"]
        objects.remove(main)
    elif main is not None:
        sc.machine["memory-backend"] = main.id
        sc.memory["size"] = main.props["size"]
    if memcfg.get("slots"):
        sc.memory["slots"] = memcfg["slots"]
        sc.memory["maxmem"] = memcfg.get("max-size", sc.memory.get("size", 0))
    sc.objects = objects

    # devices: pc-dimm (peripheral = with id, peripheral-anon = without)
    dimm_memdevs = set()
    for container in ("/machine/peripheral", "/machine/peripheral-anon"):
        try:
            children = _names(mon.execute("qom-list", path=container))
        except QmpCommandError:
            continue
        for child, typ in children.items():
            m = re.fullmatch(r"child<(.*)>", typ)
            if not m:
                continue
            driver = m.group(1)
            path = f"{container}/{child}"
            if driver != "pc-dimm":
                if driver in ("virtio-mem-pci", "virtio-mem", "vfio-pci", "nvdimm"):
                    notes.append(f"{path}: {driver} is not read from a live QEMU yet; its "
                                 "memory appears only as [[section]] rows")
                continue
            props = {}
            if container.endswith("peripheral"):
                props["id"] = child
            props["memdev"] = _link_id(mon.execute("qom-get", path=path, property="memdev"))
            props["addr"] = mon.execute("qom-get", path=path, property="addr")
            dimm_memdevs.add(props["memdev"])
            sc.devices.append(Obj("pc-dimm", props, f"{mon.source}: {path}"))

    # the flat view of address space "memory" (what the VFIO listener replays)
    mtree = mon.hmp("info mtree -f")
    view = flatview_of(parse_mtree_flat(mtree), "memory")
    sc.sections = _section_rows(view.ranges)
    in_view = {r.name for r in view.ranges if r.type in RAM_TYPES}
    if main is None:
        # -numa node,memdev=: the backends the guest sees that no pc-dimm uses
        sc.numa = [o.id for o in objects if o.id in in_view and o.id not in dimm_memdevs]
        if sc.numa:
            notes.append("main RAM is not a machine memory-backend: numa memdevs inferred "
                         "from the flat view: " + ", ".join(sc.numa))
    for s in sc.sections:
        s["where"] = f"{mon.source}: info mtree -f"
    _validate(sc)
    for s in sc.sections:
        s.pop("where")

    # RAMBlocks
    try:
        text = mon.execute("x-query-ramblock")["human-readable-text"]
    except QmpCommandError as e:
        if e.error_class != "CommandNotFound":
            raise
        text = mon.hmp("info ramblock")
    rows = parse_ramblock(text)
    hosts: dict[str, int] = {}
    if any(r.hva is None for r in rows):
        # before 8.0: ask gpa2hva for one address of each RAM region the guest sees
        for r in view.ranges:
            if r.type in RAM_TYPES and r.name not in hosts:
                got = parse_gpa2hva(mon.hmp(f"gpa2hva 0x{r.start:x}"))
                if got:
                    hosts[got[0]] = got[1] - r.offset
    pv = procfs.read_proc(pid) if proc_ok else None
    observed = []
    for r in rows:
        host = r.hva
        if host is None:
            host = next((h for n, h in hosts.items()
                         if r.name == n or r.name.endswith("/" + n)), None)
        ob = ObservedRAMBlock(r.name, r.used, r.total, r.page_size, host, r.readonly)
        if pv is not None and host is not None:
            vma = pv.vma_at(host)
            if vma is None:
                raise QemuError(f"/proc/{pid}/maps has no mapping at 0x{host:x} "
                                f"(RAMBlock {r.name}): is {pid} the QEMU behind "
                                f"{mon.source}?")
            ob.shared = vma.shared
            ob.writable = vma.writable
            ob.backing = vma.path
            fdi = pv.fd_for(vma)
            ob.fd_present = fdi is not None
            if vma.inode and vma.path not in ("", "/dev/zero (deleted)") and \
                    not vma.path.startswith("/SYSV"):
                ob.fd_offset = vma.pgoff + (host - vma.start)
            if fdi is not None:
                ob.fd = fdi.fd
                ob.seals = pv.seals(fdi.fd)
        observed.append(ob)
    if not proc_ok:
        notes.append("/proc facts not read: " + ("QEMU's pid is unknown" if pid is None else
                                                   f"/proc/{pid} is not readable here"))
    return LiveVM(sc, observed, version, package, pid, proc_ok, memdev, notes)


def compare_with_model(vm: LiveVM) -> list[str]:
    """Differences between what /proc shows and the RAMBlocks ``build_machine``
    reconstructs from the live scenario for the live QEMU version (fd present,
    shared, size of backend blocks, fd_offset).  Empty when they agree."""
    from vmm_model.machine import build_machine
    from vmm_model.qemu_versions import get_qemu

    m = build_machine(vm.scenario, get_qemu(vm.scenario.qemu, where="live QEMU version"))
    model = {rb.idstr: rb for rb in m.ramblocks}
    backend_ids = {o.id for o in vm.scenario.objects} | {DEFAULT_RAM_ID}
    diffs = []
    for ob in vm.ramblocks:
        if ob.fd_present is None:
            continue
        rb = model.get(ob.name) or next((v for k, v in model.items()
                                         if ob.name.endswith("/" + k)), None)
        if rb is None:
            continue    # not in the guest's flat view and not a backend (e.g. ACPI blobs)
        if (rb.fd >= 0) != ob.fd_present:
            diffs.append(f"{ob.name}: model fd {'present' if rb.fd >= 0 else 'absent'}, "
                         f"/proc fd {'present' if ob.fd_present else 'absent'}")
        if rb.is_shared() != ob.shared:
            diffs.append(f"{ob.name}: model shared={rb.is_shared()}, /proc "
                         f"{'MAP_SHARED' if ob.shared else 'MAP_PRIVATE'}")
        if ob.name in backend_ids and rb.used_length != ob.size:
            diffs.append(f"{ob.name}: model size 0x{rb.used_length:x}, live 0x{ob.size:x}")
        if ob.fd_present and rb.fd_offset != ob.fd_offset:
            diffs.append(f"{ob.name}: model fd_offset 0x{rb.fd_offset:x}, /proc "
                         f"0x{ob.fd_offset:x}")
    return diffs
