"""libvirt domain XML -> the QEMU arguments libvirt would generate -> Scenario.

The translation follows libvirt's own code (src/qemu/qemu_command.c) for the
memory and VFIO parts of a domain, per libvirt release:

* qemuBuildMemoryBackendProps(): which ``memory-backend-*`` and its ``share``,
  ``mem-path``, ``prealloc``, ``discard-data``, ``hugetlb``/``hugetlbsize``,
  ``x-use-canonical-path-for-ramblock-id``, ``reserve``; with
  qemuBuildMemoryGetPagesize() (which ``<page>`` applies to which node) and
  qemuBuildMemoryBackendPropsShare() (``<access mode>``);
* qemuBuildMemCommandLine() / qemuBuildMemCommandLineMemoryDefaultBackend():
  ``-m`` and, without NUMA, ``-machine memory-backend=pc.ram`` plus its object;
* qemuBuildNumaCommandLine(): ``-numa node,nodeid=N,cpus=...,memdev=ram-nodeN``;
* qemuBuildMemoryDeviceProps(): ``pc-dimm``, ``nvdimm``, ``virtio-mem-pci``,
  ``virtio-pmem-pci`` with backends ``mem<alias>``;
* qemuBuildPCIHostdevDevProps(): ``vfio-pci`` (``host=``, and ``iommufd=`` from
  the releases that have it);
* qemuAppendDomainMemoryMachineParams(): ``mem-merge=off`` (``<nosharepages/>``),
  ``-overcommit mem-lock=`` (``<locked/>``).

Release differences are fields of ``LibvirtVersion`` (read from the v9.0.0 and
v11.3.0 sources and libvirt's NEWS.rst).  What libvirt emits that vfio-emu does
not model (disks, NICs, pflash, ...) is listed, not dropped.  The XML is parsed
with expat, refusing any DOCTYPE (so no entities, internal or external) and
bounding size, depth and element count.
"""

from __future__ import annotations

import difflib
import json
import re
import xml.parsers.expat
from dataclasses import dataclass, field

from backends.errors import UsageError

MAX_BYTES = 4 << 20
MAX_DEPTH = 64
MAX_ELEMENTS = 100_000
# vfio-emu's own <metadata> element: <vfio-emu:scenario xmlns:vfio-emu=METADATA_NS
# qemu="10.1" backend="iommufd"/> (libvirt keeps foreign metadata as is)
METADATA_NS = "https://github.com/vfio-emu/vfio-emu/scenario"


@dataclass(frozen=True)
class LibvirtVersion:
    """What changed between libvirt releases in the parts vfio-emu translates."""

    name: str
    # qemuBuildMemCommandLine(): without memory hotplug v9.0.0 writes "-m <MiB>";
    # v11.3.0 writes "-m size=<KiB>k", rounded down to 512 KiB ("the code will now
    # use kibibytes"), and slots=/maxmem= only when set
    m_in_kib: bool
    # qemuBuildMemoryDeviceProps(): virtio-mem <address base> -> memaddr (NEWS.rst
    # v9.4.0) and <dynamicMemslots> -> dynamic-memslots (NEWS.rst v10.1.0)
    virtio_mem_memaddr: bool
    # qemuBuildPCIHostdevDevProps(): <driver iommufd='yes'/> -> -object iommufd
    # and vfio-pci iommufd= (NEWS.rst v12.1.0, "IOMMUFD backend support for host
    # devices").  The 12.x source was not available to vfio-emu: libvirt also passes
    # /dev/iommu and the VFIO cdev as fds (qemuFDPassDirect) and drops host=; vfio-emu
    # names the object "iommufd0" and keeps host= (the fds are simulated anyway).
    hostdev_iommufd: bool
    # <iommufd enabled='yes'/> for the whole domain (v12.2.0)
    domain_iommufd: bool
    # qemuBuildPCIHostdevDevProps() in `virsh domxml-to-native` of 9.0 refuses
    # a hostdev without <driver name='vfio'/> ("invalid PCI passthrough type
    # 'default'"): the default is only assigned when a domain starts
    # (qemuDomainPrepareHostdevPCI()).  vfio-emu models the start: vfio.
    title: str = ""


LIBVIRT_VERSIONS = {v.name: v for v in (
    LibvirtVersion("9.0", m_in_kib=False, virtio_mem_memaddr=False, hostdev_iommufd=False,
                   domain_iommufd=False, title="Debian 12 (bookworm)"),
    LibvirtVersion("11.3", m_in_kib=True, virtio_mem_memaddr=True, hostdev_iommufd=False,
                   domain_iommufd=False, title="Debian bookworm-backports, trixie"),
    LibvirtVersion("12.1", m_in_kib=True, virtio_mem_memaddr=True, hostdev_iommufd=True,
                   domain_iommufd=False, title="per-hostdev <driver iommufd='yes'/>"),
    LibvirtVersion("12.2", m_in_kib=True, virtio_mem_memaddr=True, hostdev_iommufd=True,
                   domain_iommufd=True, title="domain <iommufd enabled='yes'/>"),
)}
DEFAULT_LIBVIRT = "12.2"


def get_libvirt(name: str | None, where: str = "--libvirt") -> LibvirtVersion:
    v = LIBVIRT_VERSIONS.get(DEFAULT_LIBVIRT if name is None else name)
    if v is None:
        raise UsageError(f"unknown libvirt version {name!r}", where=where,
                         valid=", ".join(LIBVIRT_VERSIONS))
    return v


# --- safe XML ----------------------------------------------------------------

@dataclass
class Element:
    tag: str
    attrs: dict
    line: int
    children: list["Element"] = field(default_factory=list)
    text: str = ""

    def find(self, tag: str) -> "Element | None":
        return next((c for c in self.children if c.tag == tag), None)

    def findall(self, tag: str) -> list["Element"]:
        return [c for c in self.children if c.tag == tag]

    def path(self, *tags: str) -> "Element | None":
        e = self
        for t in tags:
            e = e.find(t) if e is not None else None
        return e


def parse_xml(text: str, source: str) -> Element:
    """Parse with expat; a DOCTYPE (and so any entity declaration), too many
    bytes, elements or levels is refused with one line."""
    if len(text.encode()) > MAX_BYTES:
        raise UsageError(f"domain XML larger than {MAX_BYTES >> 20} MiB", where=source)
    p = xml.parsers.expat.ParserCreate()
    stack: list[Element] = []
    root: list[Element] = []
    count = 0

    def refuse(*_a):
        raise UsageError("DOCTYPE and entity declarations are not accepted in domain XML",
                         where=f"{source}:{p.CurrentLineNumber}")

    def start(tag, attrs):
        nonlocal count
        count += 1
        if count > MAX_ELEMENTS or len(stack) >= MAX_DEPTH:
            raise UsageError(f"domain XML deeper than {MAX_DEPTH} levels or more than "
                             f"{MAX_ELEMENTS} elements", where=f"{source}:{p.CurrentLineNumber}")
        e = Element(tag, attrs, p.CurrentLineNumber)
        (stack[-1].children if stack else root).append(e)
        stack.append(e)

    def end(_tag):
        stack.pop()

    def chars(data):
        if stack:
            stack[-1].text += data

    p.StartDoctypeDeclHandler = refuse
    p.EntityDeclHandler = refuse
    p.UnparsedEntityDeclHandler = refuse
    p.ExternalEntityRefHandler = refuse
    p.SetParamEntityParsing(xml.parsers.expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = chars
    try:
        p.Parse(text, True)
    except xml.parsers.expat.ExpatError as e:
        raise UsageError(f"malformed XML: {xml.parsers.expat.ErrorString(e.code)}",
                         where=f"{source}:{e.lineno}") from None
    if not root or root[0].tag != "domain":
        raise UsageError("not a libvirt domain (the root element is not <domain>)",
                         where=source)
    return root[0]


# --- values -------------------------------------------------------------------------

_UNITS = {"b": 1, "bytes": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20,
          "mib": 1 << 20, "mb": 1000 ** 2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000 ** 3,
          "t": 1 << 40, "tib": 1 << 40, "tb": 1000 ** 4}


def _kib(e: Element | None, source: str, default_unit: str = "KiB") -> int | None:
    """virDomainParseScaledValue(): a size element in ``unit`` (default KiB) -> KiB."""
    if e is None:
        return None
    unit = e.attrs.get("unit", default_unit).lower()
    text = e.text.strip()
    if unit not in _UNITS or not text.isdigit():
        raise UsageError(f"bad size {text!r} {e.attrs.get('unit', '')}".rstrip(),
                         where=f"{source}:{e.line}", field=e.tag,
                         valid="a whole number and unit='KiB|MiB|GiB|...'")
    return int(text) * _UNITS[unit] // 1024


def _nodeset(text: str | None, where: str) -> list[int] | None:
    """virBitmapParse(): "0-2,^1,4" -> [0, 2, 4]."""
    if text is None:
        return None
    out: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        neg = part.startswith("^")
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part.lstrip("^"))
        if not m:
            raise UsageError(f"bad nodeset {text!r}", where=where, valid="e.g. 0-2,^1,4")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        (out.difference_update if neg else out.update)(range(lo, hi + 1))
    return sorted(out)


def _int(value, e: Element, source: str, what: str) -> int:
    """An integer attribute or text of ``e`` (decimal or 0x...), else one line."""
    try:
        return int(str(value).strip(), 0)
    except ValueError:
        raise UsageError(f"bad {what} {value!r}", where=f"{source}:{e.line}", field=what,
                         valid="an integer") from None


def _yesno(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


# --- the domain, as libvirt's virDomainDef holds it (memory and VFIO parts) -------

@dataclass
class MemDev:
    model: str          # dimm | nvdimm | virtio-mem | virtio-pmem
    alias: str
    size: int           # KiB
    node: int = -1
    access: str | None = None
    discard: bool | None = None
    pagesize: int = 0   # KiB, <source><pagesize>
    nodemask: list[int] | None = None
    path: str | None = None
    pmem: bool = False
    alignsize: int = 0
    labelsize: int = 0
    readonly: bool = False
    block: int = 0
    requested: int = 0
    address: int = 0
    dynamic_memslots: bool | None = None
    slot: int | None = None     # <address type='dimm' slot=>
    base: int = 0               # <address type='dimm' base=> (pc-dimm addr=)
    line: int = 0


@dataclass
class Domain:
    name: str
    machine: str
    memory: int                         # <memory>, KiB
    current: int | None = None          # <currentMemory>, KiB
    max_memory: int = 0                 # <maxMemory>, KiB
    slots: int = 0
    hugepages: list[tuple[int, list[int] | None]] = field(default_factory=list)
    hugepages_enabled: bool = False
    source: str | None = None           # file | anonymous | memfd
    access: str | None = None           # shared | private
    allocation: str | None = None       # immediate | ondemand
    threads: int | None = None
    discard: bool | None = None
    nosharepages: bool = False
    locked: bool = False
    cells: list[dict] = field(default_factory=list)
    numatune: dict = field(default_factory=dict)    # -1 (whole domain) / cell -> (mode, nodes)
    memdevs: list[MemDev] = field(default_factory=list)
    hostdevs: list[dict] = field(default_factory=list)
    iommufd: bool = False               # <iommufd enabled='yes'/>
    title: str = ""
    scenario: dict = field(default_factory=dict)    # <metadata><vfio-emu:scenario .../>
    firmware: str | None = None
    smm: str | None = None              # <features><smm state=>: on | off
    not_modelled: list[str] = field(default_factory=list)


_MODELLED_TOP = {"name", "uuid", "memory", "currentMemory", "maxMemory", "memoryBacking",
                 "vcpu", "os", "cpu", "numatune", "devices", "iommufd", "title",
                 "description", "metadata"}
_MODELLED_DEVICES = {"memory", "hostdev", "emulator"}
_MEMORY_BACKING = {"hugepages", "nosharepages", "locked", "source", "access", "allocation",
                   "discard"}


def _unknown(path: str, tag: str, known) -> str:
    """A "not modelled" entry for an element vfio-emu does not read; libvirt too
    ignores unknown elements (without --validate), so a near miss of one it reads
    is pointed out."""
    near = difflib.get_close_matches(tag, sorted(known), n=1, cutoff=0.8)
    return f"{path}<{tag}>" + (f" (libvirt ignores unknown elements: did you mean <{near[0]}>?)"
                              if near else "")


def parse_domain(text: str, source: str) -> Domain:
    root = parse_xml(text, source)

    def at(e: Element) -> str:
        return f"{source}:{e.line}"

    os_type = root.path("os", "type")
    # no machine: QEMU's default machine type, which is i440fx ("pc") on x86
    machine = (os_type.attrs.get("machine") if os_type is not None else None) or "pc"
    mem = root.find("memory")
    if mem is None:
        raise UsageError("domain has no <memory>", where=at(root), field="memory")
    d = Domain(name=(root.find("name").text.strip() if root.find("name") is not None
                     else "domain"), machine=machine, memory=_kib(mem, source))
    d.current = _kib(root.find("currentMemory"), source)
    md = root.find("metadata")
    for e in (md.children if md is not None else []):
        if e.tag.endswith(":scenario") and e.attrs.get(f"xmlns:{e.tag.split(':')[0]}") == \
                METADATA_NS:
            d.scenario = {k: v for k, v in e.attrs.items()
                          if k in ("qemu", "backend", "upstream")}
    if root.find("title") is not None:
        d.title = root.find("title").text.strip()
    mx = root.find("maxMemory")
    if mx is not None:
        d.max_memory = _kib(mx, source)
        d.slots = _int(mx.attrs.get("slots", "0"), mx, source, "slots")
    osel = root.find("os")
    if osel is not None:
        d.firmware = osel.attrs.get("firmware")
        if osel.find("loader") is not None and not d.firmware:
            d.firmware = osel.find("loader").attrs.get("type", "rom")
    smm = root.path("features", "smm")
    if smm is not None:
        d.smm = smm.attrs.get("state", "on")
    if d.firmware == "efi" and d.smm is None:
        # qemuFirmwareEnableFeatures(): the firmware libvirt picks for <os
        # firmware='efi'> from Debian's ovmf descriptors (OVMF_CODE_4M.ms.fd) has
        # "requires-smm", which turns SMM on when the domain does not say
        d.smm = "on"
    mb = root.find("memoryBacking")
    if mb is not None:
        hp = mb.find("hugepages")
        if hp is not None:
            d.hugepages_enabled = True
            for page in hp.findall("page"):
                size = _kib(Element("size", {"unit": page.attrs.get("unit", "KiB")},
                                    page.line, text=page.attrs.get("size", "")), source)
                d.hugepages.append((size, _nodeset(page.attrs.get("nodeset"), at(page))))
            if not d.hugepages:
                d.hugepages.append((0, None))
        d.nosharepages = mb.find("nosharepages") is not None
        d.locked = mb.find("locked") is not None
        if mb.find("source") is not None:
            d.source = mb.find("source").attrs.get("type")
            if d.source not in ("file", "anonymous", "memfd"):
                raise UsageError(f"unknown memoryBacking source type {d.source!r}",
                                 where=at(mb.find("source")), field="source",
                                 valid="file, anonymous, memfd")
        if mb.find("access") is not None:
            d.access = mb.find("access").attrs.get("mode")
            if d.access not in ("shared", "private"):
                raise UsageError(f"unknown memoryBacking access mode {d.access!r}",
                                 where=at(mb.find("access")), field="access",
                                 valid="shared, private")
        al = mb.find("allocation")
        if al is not None:
            d.allocation = al.attrs.get("mode")
            d.threads = _int(al.attrs["threads"], al, source, "threads") \
                if "threads" in al.attrs else None
        if mb.find("discard") is not None:
            d.discard = True
    for cell in (root.path("cpu", "numa").findall("cell")
                 if root.path("cpu", "numa") is not None else []):
        d.cells.append({"id": _int(cell.attrs.get("id", len(d.cells)), cell, source, "id"),
                        "cpus": cell.attrs.get("cpus"),
                        "memory": _kib(Element("memory", {"unit": cell.attrs.get("unit",
                                                                                 "KiB")},
                                               cell.line, text=cell.attrs.get("memory", "")),
                                       source),
                        "memAccess": cell.attrs.get("memAccess"),
                        "discard": _yesno(cell.attrs.get("discard"))})
    nt = root.find("numatune")
    if nt is not None:
        if nt.find("memory") is not None:
            m = nt.find("memory")
            d.numatune[-1] = (m.attrs.get("mode", "strict"),
                              _nodeset(m.attrs.get("nodeset"), at(m)))
        for mn in nt.findall("memnode"):
            d.numatune[_int(mn.attrs.get("cellid"), mn, source, "cellid")] = (mn.attrs.get("mode", "strict"),
                                                   _nodeset(mn.attrs.get("nodeset"), at(mn)))
    iommufd = root.find("iommufd")
    if iommufd is not None:
        d.iommufd = iommufd.attrs.get("enabled") == "yes"
    for e in root.children:
        if e.tag not in _MODELLED_TOP:
            d.not_modelled.append(_unknown("", e.tag, _MODELLED_TOP))
    for e in (mb.children if mb is not None else []):
        if e.tag not in _MEMORY_BACKING:
            d.not_modelled.append(_unknown("<memoryBacking>", e.tag, _MEMORY_BACKING))
    devices = root.find("devices")
    for e in (devices.children if devices is not None else []):
        if e.tag == "memory":
            d.memdevs.append(_memdev(e, source))
        elif e.tag == "hostdev":
            h = _hostdev(e, source, len(d.hostdevs))
            if h is None:
                d.not_modelled.append(f"<hostdev mode='{e.attrs.get('mode')}' "
                                      f"type='{e.attrs.get('type')}'>")
            else:
                d.hostdevs.append(h)
        elif e.tag not in _MODELLED_DEVICES:
            d.not_modelled.append(_unknown("<devices>", e.tag, _MODELLED_DEVICES))
    _post_parse(d)
    return d


def _post_parse(d: Domain) -> None:
    """What libvirt does to a domain before building the command line:
    qemuDomainAlignMemorySizes() (NUMA cells and initial memory up to 1 MiB,
    memory modules up to 2 MiB, x86), qemuDomainAssignMemoryDeviceSlot() (the
    first free slot for a DIMM/NVDIMM without <address type='dimm'>) and
    qemuAssignDeviceMemoryAlias() (dimm/nvdimm: prefix + slot; virtio-mem/-pmem:
    prefix + the next free index)."""
    for c in d.cells:
        c["memory"] = -(-c["memory"] // 1024) * 1024
    for m in d.memdevs:
        m.size = -(-m.size // 2048) * 2048
    d.max_memory = -(-d.max_memory // 1024) * 1024
    used = {m.slot for m in d.memdevs if m.slot is not None}
    for m in d.memdevs:
        if m.model in ("dimm", "nvdimm") and m.slot is None:
            m.slot = next(i for i in range(len(used) + 1) if i not in used)
            used.add(m.slot)
    counters: dict[str, int] = {}
    for m in d.memdevs:
        if m.alias:
            continue
        prefix = _MODEL_ALIAS[m.model]
        if m.model in ("dimm", "nvdimm"):
            m.alias = f"{prefix}{m.slot}"
        else:
            m.alias = f"{prefix}{counters.get(prefix, 0)}"
            counters[prefix] = counters.get(prefix, 0) + 1


_MODEL_ALIAS = {"dimm": "dimm", "nvdimm": "nvdimm", "virtio-mem": "virtiomem",
                "virtio-pmem": "virtiopmem"}


def _memdev(e: Element, source: str) -> MemDev:
    model = e.attrs.get("model")
    if model not in _MODEL_ALIAS:
        raise UsageError(f"memory device model {model!r} is not modelled", where=f"{source}:"
                         f"{e.line}", field="model", valid=", ".join(_MODEL_ALIAS))
    alias = e.path("alias").attrs["name"] if e.find("alias") is not None else ""
    tgt = e.find("target")
    src = e.find("source")
    if tgt is None or tgt.find("size") is None:
        raise UsageError(f"memory model={model} needs <target><size>", where=f"{source}:{e.line}",
                         field="target")
    m = MemDev(model, alias, _kib(tgt.find("size"), source), line=e.line,
               access=e.attrs.get("access"), discard=_yesno(e.attrs.get("discard")))
    if tgt.find("node") is not None:
        m.node = _int(tgt.find("node").text, tgt.find("node"), source, "node")
    if src is not None:
        m.pagesize = _kib(src.find("pagesize"), source) or 0
        if src.find("nodemask") is not None:
            m.nodemask = _nodeset(src.find("nodemask").text.strip(), f"{source}:{src.line}")
        if src.find("path") is not None:
            m.path = src.find("path").text.strip()
        m.alignsize = _kib(src.find("alignsize"), source) or 0
        m.pmem = src.find("pmem") is not None
    if model in ("nvdimm", "virtio-pmem") and not m.path:
        raise UsageError(f"memory model={model} needs <source><path>",
                         where=f"{source}:{e.line}", field="source")
    if tgt.find("label") is not None:
        m.labelsize = _kib(tgt.path("label", "size"), source) or 0
    m.readonly = tgt.find("readonly") is not None
    m.block = _kib(tgt.find("block"), source) or 0
    m.requested = _kib(tgt.find("requested"), source) or 0
    if tgt.find("address") is not None and "base" in tgt.find("address").attrs:
        m.address = _int(tgt.find("address").attrs["base"], tgt, source, "base")
    addr = e.find("address")
    if addr is not None and addr.attrs.get("type") == "dimm":
        if "slot" in addr.attrs:
            m.slot = _int(addr.attrs["slot"], addr, source, "slot")
        if "base" in addr.attrs:
            m.base = _int(addr.attrs["base"], addr, source, "base")
    if tgt.find("dynamicMemslots") is not None:
        m.dynamic_memslots = _yesno(tgt.find("dynamicMemslots").attrs.get("enabled"))
    return m


def _hostdev(e: Element, source: str, index: int) -> dict | None:
    if e.attrs.get("mode", "subsystem") != "subsystem" or e.attrs.get("type") != "pci":
        return None
    addr = e.path("source", "address")
    if addr is None:
        raise UsageError("PCI hostdev needs <source><address domain bus slot function>",
                         where=f"{source}:{e.line}", field="source")
    try:
        host = "{:04x}:{:02x}:{:02x}.{:x}".format(
            *(int(addr.attrs.get(k, "0"), 0) for k in ("domain", "bus", "slot", "function")))
    except ValueError:
        raise UsageError("bad PCI address", where=f"{source}:{addr.line}",
                         field="address") from None
    drv = e.find("driver")
    name = drv.attrs.get("name") if drv is not None else None
    if name not in (None, "vfio"):
        raise UsageError(f"PCI passthrough driver {name!r} is not supported by QEMU",
                         where=f"{source}:{drv.line}", field="driver", valid="vfio")
    alias = e.path("alias").attrs.get("name") if e.find("alias") is not None else \
        f"hostdev{index}"
    return {"host": host, "alias": alias,
            "iommufd": _yesno(drv.attrs.get("iommufd")) if drv is not None else None,
            "line": e.line}


# --- translation (qemu_command.c) --------------------------------------------------

@dataclass
class Config:
    """The qemu.conf settings the translation depends on."""

    # hugetlbfs_mount: (path, page size KiB); the first is the default size's
    # (virFileGetDefaultHugepage(): x86's 2 MiB)
    hugetlbfs: tuple[tuple[str, int], ...] = (("/dev/hugepages", 2048),
                                              ("/dev/hugepages1G", 1 << 20))
    memory_backing_dir: str = "/var/lib/libvirt/qemu/ram"
    domain_id: int = -1                         # -1: not running (domxml-to-native)


def _shortname(d: Domain, cfg: Config) -> str:
    """virDomainDefGetShortName(): "<id>-<name>" (name cut to 20 characters)."""
    return f"{cfg.domain_id}-{d.name[:20]}"


def _initial_kib(d: Domain) -> int:
    """virDomainDefGetMemoryInitial(): the NUMA cells' sum, or <memory> minus the
    memory devices."""
    if d.cells:
        return sum(c["memory"] for c in d.cells)
    return -(-(d.memory - sum(m.size for m in d.memdevs)) // 1024) * 1024


def _pagesize(d: Domain, mem: MemDev | None, node: int, cfg: Config):
    """qemuBuildMemoryGetPagesize() -> (pagesize KiB, needHugepage, useHugepage, prealloc)."""
    pagesize = mem.pagesize if mem is not None else 0
    need = use = bool(pagesize)
    if not pagesize:
        master = None
        found = None
        for size, nodes in d.hugepages:
            if nodes is None:
                master = size
                continue
            if node >= 0 and node in nodes:
                found = size
                need = True
                break
        chosen = found if found is not None else master
        if chosen is not None:
            pagesize, use = chosen, True
    if use and pagesize == 4:          # the system page size is "no huge pages"
        pagesize, need, use = 0, False, False
    elif use and pagesize == 0:
        pagesize = cfg.hugetlbfs[0][1]          # qemuBuildMemoryGetDefaultPagesize()
    prealloc = d.allocation == "immediate"
    nvdimm_path = mem is not None and mem.model in ("nvdimm", "virtio-pmem")
    if nvdimm_path:
        if mem.model == "nvdimm" and not mem.pmem:
            prealloc = True
    elif use:
        prealloc = True
    return pagesize, need, use, prealloc


def backend_props(d: Domain, v: LibvirtVersion, cfg: Config, alias: str, size_kib: int,
                  mem: MemDev | None = None, node: int = -1, system: bool = False) -> dict:
    """qemuBuildMemoryBackendProps() for one guest NUMA node, memory device or the
    default RAM (``system``), as the JSON object libvirt puts after -object."""
    access = mem.access if mem is not None else None
    discard = mem.discard if mem is not None else None
    if node >= 0:
        cell = next((c for c in d.cells if c["id"] == node), None)
        if cell is not None:
            access = access or cell["memAccess"]
            discard = discard if discard is not None else cell["discard"]
    access = access or d.access
    discard = discard if discard is not None else d.discard
    pagesize, _need, use, prealloc = _pagesize(d, mem, node, cfg)
    nvdimm_path = mem.path if mem is not None and mem.model in ("nvdimm", "virtio-pmem") \
        else None
    props: dict = {}
    canonical_off = False
    if not nvdimm_path and d.source == "memfd":
        btype = "memory-backend-memfd"
        if use:
            props["hugetlb"] = True
            props["hugetlbsize"] = pagesize << 10
        if access:
            props["share"] = access == "shared"
        canonical_off = system
    elif use or nvdimm_path or access or d.source == "file":
        btype = "memory-backend-file"
        if nvdimm_path:
            path = nvdimm_path
        elif use:   # qemuGetDomainHupageMemPath()
            mount = next((m for m, size in cfg.hugetlbfs if size == pagesize), None)
            if mount is None:
                raise UsageError(f"Unable to find any usable hugetlbfs mount for {pagesize} KiB",
                                 where=f"libvirt {v.name} (qemuGetDomainHupageMemPath)",
                                 valid=", ".join(f"{m} ({size} KiB)" for m, size in cfg.hugetlbfs))
            path = f"{mount}/libvirt/qemu/{_shortname(d, cfg)}"
        else:       # qemuGetMemoryBackingPath()
            path = (f"{cfg.memory_backing_dir}/libvirt/qemu/{_shortname(d, cfg)}/"
                    f"{mem.alias if mem is not None else alias}")
        props["mem-path"] = path
        if not nvdimm_path and discard is not None:
            props["discard-data"] = discard
        if access:
            props["share"] = access == "shared"
        canonical_off = system
    else:
        btype = "memory-backend-ram"
    if canonical_off:
        props["x-use-canonical-path-for-ramblock-id"] = False
    if mem is not None and mem.model == "virtio-mem":
        props["reserve"] = False        # QEMU_CAPS_MEMORY_BACKEND_RESERVE (QEMU 6.1+)
    else:
        if prealloc:
            props["prealloc"] = True
            if d.threads:
                props["prealloc-threads"] = d.threads
    props["size"] = size_kib * 1024
    if mem is not None and mem.model == "nvdimm" and mem.alignsize:
        props["align"] = mem.alignsize * 1024
    if mem is not None and mem.model == "nvdimm" and mem.pmem:
        props["pmem"] = True
    nodes = mem.nodemask if mem is not None else None
    mode = d.numatune.get(node, d.numatune.get(-1, ("strict", None)))[0]
    if nodes is None:
        nodes = (d.numatune.get(node) or d.numatune.get(-1) or (None, None))[1]
    if nodes is not None and mode != "restrictive":
        props["host-nodes"] = nodes
        props["policy"] = {"strict": "bind", "interleave": "interleave",
                           "preferred": "preferred"}.get(mode, mode)
    return {"qom-type": btype, "id": alias, **props}


def _obj(props: dict) -> list[str]:
    """-object for a backend, preceded by the thread-context libvirt creates for a
    preallocated backend bound to host nodes (qemuBuildThreadContextProps(),
    QEMU_CAPS_THREAD_CONTEXT: QEMU 7.2+)."""
    out = []
    if props.get("prealloc") and "host-nodes" in props:
        tc = f"tc-{props['id']}"
        out += ["-object", json.dumps({"qom-type": "thread-context", "id": tc,
                                       "node-affinity": props["host-nodes"]},
                                      separators=(",", ":"))]
        props["prealloc-context"] = tc
    return out + ["-object", json.dumps(props, separators=(",", ":"))]


def domain_argv(d: Domain, v: LibvirtVersion, cfg: Config | None = None) -> list[str]:
    """The memory and VFIO arguments libvirt ``v`` generates for ``d``."""
    cfg = cfg or Config()
    argv: list[str] = []
    machine = d.machine
    if d.smm is not None:
        machine += f",smm={d.smm}"      # qemuBuildMachineCommandLine()
    if d.nosharepages:
        machine += ",mem-merge=off"     # qemuAppendDomainMemoryMachineParams()
    if d.firmware in ("efi", "pflash"):
        # qemuBuildMachineCommandLine(): the loader is a pflash blockdev; QEMU's
        # memory map has no pc.bios then (docs/real-qemu-rig.md)
        machine += ",pflash0=libvirt-pflash0-format"
    if not d.cells:
        machine += ",memory-backend=pc.ram"
    argv += ["-machine", machine]
    initial = _initial_kib(d)
    hotplug = bool(d.slots or d.max_memory)
    if v.m_in_kib:
        size = initial if hotplug else initial & ~0x1FF
        m = f"size={size}k"
        if hotplug and d.slots:
            m += f",slots={d.slots}"
        if hotplug and d.max_memory:
            m += f",maxmem={d.max_memory}k"
    else:
        m = (f"size={initial}k,slots={d.slots},maxmem={d.max_memory}k" if hotplug
             else str(initial // 1024))
    argv += ["-m", m]
    if not d.cells:
        argv += _obj(backend_props(d, v, cfg, "pc.ram", initial, system=True))
    argv += ["-overcommit", f"mem-lock={'on' if d.locked else 'off'}"]
    for i, c in enumerate(d.cells):
        argv += _obj(backend_props(d, v, cfg, f"ram-node{i}", c["memory"], node=c["id"]))
        numa = f"node,nodeid={i}"
        if c["cpus"]:
            numa += "," + ",".join(f"cpus={p}" for p in c["cpus"].split(","))
        argv += ["-numa", numa + f",memdev=ram-node{i}"]
    for mem in d.memdevs:
        argv += _obj(backend_props(d, v, cfg, f"mem{mem.alias}", mem.size, mem, mem.node))
        dev: dict = {"driver": {"dimm": "pc-dimm", "nvdimm": "nvdimm",
                                "virtio-mem": "virtio-mem-pci",
                                "virtio-pmem": "virtio-pmem-pci"}[mem.model]}
        if mem.node >= 0:
            dev["node"] = mem.node
        if mem.labelsize:
            dev["label-size"] = mem.labelsize * 1024
        if mem.block:
            dev["block-size"] = mem.block * 1024
        if mem.requested:
            dev["requested-size"] = mem.requested * 1024
        if mem.readonly:
            dev["unarmed"] = True
        dev["memdev"] = f"mem{mem.alias}"
        if mem.model == "virtio-mem":
            # QEMU_CAPS_DEVICE_VIRTIO_MEM_PCI_PREALLOC: the backend's prealloc moves
            # to the device
            if _pagesize(d, mem, mem.node, cfg)[3]:
                dev["prealloc"] = True
        if mem.address and (mem.model == "virtio-pmem" or v.virtio_mem_memaddr):
            dev["memaddr"] = mem.address
        if mem.model == "virtio-mem" and v.virtio_mem_memaddr and \
                mem.dynamic_memslots is not None:
            dev["dynamic-memslots"] = mem.dynamic_memslots
        dev["id"] = mem.alias
        if mem.model in ("dimm", "nvdimm"):
            dev["slot"] = mem.slot
            if mem.base:
                dev["addr"] = mem.base
        argv += ["-device", json.dumps(dev, separators=(",", ":"))]
    iommufd_made = False
    for h in d.hostdevs:
        dev = {"driver": "vfio-pci", "host": h["host"], "id": h["alias"]}
        use_iommufd = v.hostdev_iommufd and (
            h["iommufd"] if h["iommufd"] is not None else (v.domain_iommufd and d.iommufd))
        if use_iommufd:
            if not iommufd_made:
                argv += _obj({"qom-type": "iommufd", "id": "iommufd0"})
                iommufd_made = True
            dev["iommufd"] = "iommufd0"
        argv += ["-device", json.dumps(dev, separators=(",", ":"))]
    return argv


def notes(d: Domain, v: LibvirtVersion) -> list[str]:
    """What the domain holds that the translation does not model (or that this
    libvirt release ignores), one entry each."""
    out = list(d.not_modelled)
    if d.current is not None and d.current != d.memory:
        out.append("<currentMemory> (the balloon target; guest RAM is <memory>)")
    if d.firmware:
        out.append(f"<os firmware='{d.firmware}'> (pflash blockdevs)")
    if any(h["iommufd"] for h in d.hostdevs) and not v.hostdev_iommufd:
        out.append(f"<driver iommufd='yes'/>: libvirt {v.name} ignores it (added in 12.1.0); "
                   "the device uses the VFIO group (type1)")
    if d.iommufd and not v.domain_iommufd:
        out.append(f"<iommufd enabled='yes'/>: libvirt {v.name} ignores it (added in 12.2.0)")
    return out


def from_domain_xml(text: str, source: str, name: str, libvirt: str | None = None,
                    cfg: Config | None = None):
    """A Scenario from a libvirt domain: the arguments libvirt ``libvirt`` would
    generate, through the QEMU command-line importer."""
    from vmm_model.qemu.cmdline import from_qemu_args
    v = get_libvirt(libvirt, where=f"{source}: --libvirt")
    d = parse_domain(text, source)
    argv = domain_argv(d, v, cfg)
    sc = from_qemu_args(argv, name, f"{source} (libvirt {v.name} translation)")
    sc.origin = f"libvirt {v.name} domain XML"
    sc.title = d.title or f"libvirt domain {d.name}"
    sc.upstream = d.scenario.get("upstream") or \
        f"libvirt v{v.name}.0 src/qemu/qemu_command.c: qemuBuildMemoryBackendProps()"
    sc.qemu = d.scenario.get("qemu", sc.qemu)
    sc.backend = d.scenario.get("backend", sc.backend)
    from vmm_model.iommu_backends import backend_names
    if sc.backend not in (None, *backend_names()):
        raise UsageError(f"bad backend {sc.backend!r} in <vfio-emu:scenario>", where=source,
                         field="backend", valid=", ".join(backend_names()))
    from vmm_model.scenario import _validate
    _validate(sc)
    sc.not_modelled = notes(d, v) + sc.not_modelled
    return sc
