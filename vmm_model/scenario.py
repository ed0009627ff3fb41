"""A VM description: a TOML scenario file or a QEMU command-line fragment, both
turned into the same ``Scenario`` (QEMU's own property names throughout).

TOML layout (see vmm_model/gallery/*.toml)::

    title = "..."            upstream = "fb32965b6dd8 ..."   qemu = "10.1"
    backend = "iommufd"      # optional: a backend name (vfio-emu plan --help)
    [machine]  type = "q35", aux-ram-share = false, memory-backend = "m0", vga = "none"
    [memory]   size = "4G", mem-path = "/dev/hugepages", slots = 2, maxmem = "8G"   # -m, -mem-path
    [[object]] qom-type = "memory-backend-file", id = "m0", size = "4G", mem-path = "...", share = true
    [[numa]]   memdev = "m0"
    [[device]] driver = "pc-dimm" | "virtio-mem-pci" | "vfio-pci", ...
    [viommu]   map = [{iova = "0x1000", size = "0x1000", gpa = "0x100000", perm = "rw"}]
    [migration] incoming = "cpr-transfer"
    [[section]] explicit flat view rows (written by ``inspect --save``)

Properties named ``x-…`` are vfio-emu's own (a filesystem type, BAR layout,
populated virtio-mem blocks, hotplug after start-up); everything else is QEMU's.
Bad input raises UsageError naming the file (and line), the field and what is valid.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from backends.errors import UsageError
from vmm_model.iommu_backends import backend_names

# --- value parsers (QEMU semantics) -----------------------------------------

_SUFFIX = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
           "p": 1 << 50, "e": 1 << 60}


def parse_size(value, default_suffix: str = "b") -> int:
    """qemu_strtosz(): "4G", "512M", "1.5G", "0x1000", 4096.  ``-m`` uses a
    default suffix of M.  Raises ValueError with what would be valid."""
    if isinstance(value, bool):
        raise ValueError("a size, e.g. 4G, 512M, 0x1000")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size ≥ 0")
        return value * _SUFFIX[default_suffix]
    text = str(value).strip()
    if re.fullmatch(r"0[xX][0-9a-fA-F]+", text):
        return int(text, 16)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([bBkKmMgGtTpPeE]?)", text)
    if not m:
        raise ValueError("a size, e.g. 4G, 512M, 0x1000")
    num, suf = m.groups()
    mult = _SUFFIX[(suf or default_suffix).lower()]
    if "." in num:
        whole = int(float(num) * mult)
        if whole != float(num) * mult:
            raise ValueError("a whole number of bytes")
        return whole
    return int(num) * mult


def parse_bool(value) -> bool:
    """QAPI bool: on/off, yes/no, true/false (and TOML booleans)."""
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("on", "yes", "true", "y"):
        return True
    if text in ("off", "no", "false", "n"):
        return False
    raise ValueError("on or off")


def parse_onoffauto(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value).lower()
    if text in ("on", "off", "auto"):
        return text
    raise ValueError("on, off or auto")


def parse_str(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a non-empty string")
    return value


def parse_int(value) -> int:
    if isinstance(value, (bool, float)):
        raise ValueError("an integer")
    try:
        return int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        raise ValueError("an integer") from None


def parse_populated(value) -> tuple[tuple[int, int], ...]:
    """virtio-mem populated blocks: ["0-2", 5] -> ((0, 3), (5, 6)) as block index ranges."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)):
        raise ValueError('a list of block indexes or ranges, e.g. ["0-2", 5]')
    out = []
    for it in items:
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", str(it))
        if not m:
            raise ValueError('a list of block indexes or ranges, e.g. ["0-2", 5]')
        a = int(m.group(1))
        b = int(m.group(2)) if m.group(2) else a
        if b < a:
            raise ValueError("ranges written low-high")
        out.append((a, b + 1))
    return tuple(sorted(out))


def parse_bars(value) -> tuple[dict, ...]:
    """vfio-pci BARs: [{index = 0, size = "16M", gpa = "0xfe000000", mmaps = [["0", "16M"]]}]."""
    if not isinstance(value, list):
        raise ValueError('a list of tables {index, size, gpa, mmaps}')
    bars = []
    for b in value:
        if not isinstance(b, dict) or "size" not in b:
            raise ValueError('each BAR needs at least size, e.g. {index = 0, size = "16M"}')
        unknown = set(b) - {"index", "size", "gpa", "mmaps"}
        if unknown:
            raise ValueError(f"BAR keys are index, size, gpa, mmaps (not {sorted(unknown)})")
        size = parse_size(b["size"])
        mmaps = tuple((parse_size(o), parse_size(s)) for o, s in b.get("mmaps", [(0, size)]))
        bars.append({"index": parse_int(b.get("index", len(bars))), "size": size,
                     "gpa": parse_size(b["gpa"]) if "gpa" in b else None, "mmaps": mmaps})
    return tuple(bars)


# --- property schemas: QEMU names --------------------------------------------

def _choice(*choices):
    def parse(value):
        if value not in choices:
            raise ValueError(", ".join(choices))
        return value
    return parse


def parse_host_nodes(value) -> str:
    """host-nodes: NUMA node numbers or ranges, e.g. "0" or "0-1"."""
    if not isinstance(value, (str, int)) or isinstance(value, bool) or \
            not re.fullmatch(r"\d+(-\d+)?(,\d+(-\d+)?)*", str(value)):
        raise ValueError('host NUMA nodes, e.g. "0" or "0-1"')
    return str(value)


_COMMON = {"id": parse_str, "size": parse_size, "share": parse_bool, "prealloc": parse_bool,
           "merge": parse_bool, "dump": parse_bool, "reserve": parse_bool,
           "host-nodes": parse_host_nodes,
           "policy": _choice("default", "preferred", "bind", "interleave"),
           "prealloc-threads": parse_int,
           "x-use-canonical-path-for-ramblock-id": parse_bool}

OBJECT_TYPES = {
    "memory-backend-ram": dict(_COMMON),
    "memory-backend-file": dict(_COMMON, **{
        "mem-path": parse_str, "offset": parse_size, "align": parse_size,
        "discard-data": parse_bool, "pmem": parse_bool, "readonly": parse_bool,
        "rom": parse_onoffauto, "x-fs": parse_str}),
    "memory-backend-memfd": dict(_COMMON, **{
        "hugetlb": parse_bool, "hugetlbsize": parse_size, "seal": parse_bool}),
    "memory-backend-shm": dict(_COMMON),
    "memory-backend-epc": dict(_COMMON),
    "iommufd": {"id": parse_str, "fd": parse_str},
}

DEVICE_TYPES = {
    "pc-dimm": {"id": parse_str, "memdev": parse_str, "addr": parse_size, "slot": parse_int,
                "node": parse_int, "x-hotplug": parse_bool},
    "virtio-mem-pci": {"id": parse_str, "memdev": parse_str, "block-size": parse_size,
                       "requested-size": parse_size, "memaddr": parse_size, "node": parse_int,
                       "x-populated": parse_populated, "x-hotplug": parse_bool},
    "vfio-pci": {"id": parse_str, "host": parse_str, "sysfsdev": parse_str,
                 "iommufd": parse_str, "x-bars": parse_bars, "x-bypass-ro": parse_bool,
                 "x-iommu-pgsizes": parse_size},
}
DEVICE_TYPES["virtio-mem"] = DEVICE_TYPES["virtio-mem-pci"]
# hw/mem/nvdimm.c (TYPE_NVDIMM is a TYPE_PC_DIMM) and hw/virtio/virtio-pmem.c: their
# memdev is mapped into device memory like a DIMM's
DEVICE_TYPES["nvdimm"] = dict(DEVICE_TYPES["pc-dimm"], **{"label-size": parse_size,
                                                          "unarmed": parse_bool})
DEVICE_TYPES["virtio-pmem-pci"] = {"id": parse_str, "memdev": parse_str, "memaddr": parse_size,
                                   "x-hotplug": parse_bool}

MACHINE_TYPES = ("q35", "pc")
MACHINE_PROPS = {"type": _choice(*MACHINE_TYPES), "aux-ram-share": parse_bool,
                 "smm": parse_onoffauto,
                 "memory-backend": parse_str, "vga": parse_str, "firmware": parse_str,
                 "pflash0": parse_str}
MEMORY_PROPS = {"size": lambda v: parse_size(v, "m"), "mem-path": parse_str,
                "slots": parse_int, "maxmem": lambda v: parse_size(v, "m")}
SECTION_PROPS = {"gpa": parse_size, "size": parse_size, "mr": parse_str,
                 "offset": parse_size, "type": parse_str, "readonly": parse_bool}
VIOMMU_MAP_PROPS = {"iova": parse_size, "size": parse_size, "gpa": parse_size,
                    "perm": parse_str}
TOP_KEYS = {"title", "upstream", "qemu", "backend", "description", "machine", "memory",
            "object", "numa", "device", "viommu", "migration", "section", "host"}
HOST_PROPS = {"iommu": parse_str}     # the simulated host (backends/simulated/iommu.py HOST_IOMMUS)


@dataclass
class Obj:
    """One ``-object`` / ``-device`` / table entry: its type and parsed properties."""

    type: str
    props: dict
    where: str = ""

    @property
    def id(self) -> str | None:
        return self.props.get("id")


@dataclass
class Scenario:
    name: str
    source: str
    title: str = ""
    upstream: str = ""
    """The upstream source the scenario reproduces (commit, file: function)."""
    qemu: str | None = None
    backend: str | None = None
    machine: dict = field(default_factory=lambda: {"type": "q35"})
    memory: dict = field(default_factory=dict)
    objects: list[Obj] = field(default_factory=list)
    numa: list[str] = field(default_factory=list)
    devices: list[Obj] = field(default_factory=list)
    viommu_maps: list[dict] | None = None
    incoming: str | None = None
    sections: list[dict] = field(default_factory=list)
    host: dict = field(default_factory=dict)      # [host] iommu = "vtd-48"
    # where it came from (not part of model()): the QEMU arguments it was built
    # from (a command line, or libvirt's translation of a domain), what they
    # hold that vfio-emu does not model, and the versioned machine type
    argv: list[str] | None = None
    not_modelled: list[str] = field(default_factory=list)
    machine_version: str | None = None
    origin: str = ""

    def object(self, oid: str) -> Obj | None:
        return next((o for o in self.objects if o.id == oid), None)

    def model(self) -> dict:
        """Everything that defines the VM (not where it came from): two sources
        describing the same VM have equal models."""
        return {"qemu": self.qemu, "backend": self.backend, "machine": self.machine,
                "memory": self.memory,
                "objects": [(o.type, o.props) for o in self.objects], "numa": self.numa,
                "devices": [(d.type, d.props) for d in self.devices],
                "viommu_maps": self.viommu_maps, "incoming": self.incoming,
                "sections": [{k: v for k, v in s.items() if k != "where"}
                             for s in self.sections]}


def _parse_props(schema: dict, raw: dict, where: str, kind: str,
                 locate=lambda key: None) -> dict:
    out = {}
    for key, value in raw.items():
        loc = locate(key) or where
        if key not in schema:
            near = difflib.get_close_matches(key, list(schema), n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise UsageError(f"unknown property {key!r} for {kind}{hint}", where=loc,
                             field=key, valid=", ".join(sorted(schema)))
        try:
            out[key] = schema[key](value)
        except ValueError as e:
            raise UsageError(f"bad value {value!r} for {kind}", where=loc, field=key,
                             valid=str(e)) from None
    return out


def _check_refs(sc: Scenario) -> None:
    ids = {}
    for o in sc.objects:
        if o.id is None:
            raise UsageError(f"{o.type} needs an id", where=o.where, field="id")
        if o.id in ids:
            raise UsageError(f"duplicate id {o.id!r}", where=o.where, field="id")
        ids[o.id] = o
        if o.type.startswith("memory-backend") and "size" not in o.props:
            raise UsageError(f"{o.type} needs a size", where=o.where, field="size",
                             valid="a size, e.g. 4G")
        if o.type == "memory-backend-file" and "mem-path" not in o.props:
            raise UsageError("mem-path property not set", where=o.where, field="mem-path")
    refs = [("machine", "memory-backend", sc.machine.get("memory-backend"))]
    refs += [("numa", "memdev", m) for m in sc.numa]
    refs += [(d.where, "memdev", d.props.get("memdev")) for d in sc.devices
             if d.type != "vfio-pci"]
    for where, fld, ref in refs:
        if ref is None:
            if fld == "memdev" and where != "numa":
                raise UsageError("memdev property not set", where=where, field="memdev")
            continue
        if ref not in ids or not ids[ref].type.startswith("memory-backend"):
            raise UsageError(f"no memory backend with id {ref!r}", where=where, field=fld,
                             valid=", ".join(i for i, o in ids.items()
                                             if o.type.startswith("memory-backend")) or "none")


# --- TOML ---------------------------------------------------------------------

class _Locator:
    """Line numbers for TOML tables and keys (tomllib gives none), from one pass
    over the text: every lookup afterwards is a dict access, so a file with
    20,000 tables costs no more per table than a file with one."""

    def __init__(self, path: str, text: str):
        self.path = path
        self.tables: dict[str, list[int]] = {}          # header -> its lines (1-based)
        self.keys: dict[tuple[int | None, str], int] = {}   # (table line, key) -> line
        table = None
        keys = self.keys
        for n, line in enumerate(text.splitlines(), 1):
            s = line.lstrip()
            if s[:1] == "[":
                header = s.split("#", 1)[0].strip().strip("[]").strip()
                table = n
                self.tables.setdefault(header, []).append(n)
            elif "=" in s and s[:1] != "#":
                key = s.partition("=")[0].strip().strip('"')
                if (table, key) not in keys:
                    keys[table, key] = n
                if (None, key) not in keys:
                    keys[None, key] = n     # first anywhere

    def table(self, header: str, index: int = 0) -> int | None:
        hits = self.tables.get(header, ())
        return hits[index] if index < len(hits) else None

    def key(self, after: int | None, key: str) -> int | None:
        return self.keys.get((after, key))

    def at(self, line: int | None) -> str:
        return f"{self.path}:{line}" if line else self.path


MAX_SCENARIO_BYTES = 16 << 20     # foreign input is read bounded


def read_scenario_text(path: str | Path, what: str = "scenario") -> str:
    """A scenario file's text: a regular file, at most MAX_SCENARIO_BYTES, UTF-8;
    else one line naming the file (and the line of a bad byte)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UsageError(f"cannot read {what}: not a regular file", where=str(path))
            data = f.read(MAX_SCENARIO_BYTES + 1)
        if len(data) > MAX_SCENARIO_BYTES:
            raise UsageError(f"{what} file larger than {MAX_SCENARIO_BYTES >> 20} MiB",
                             where=str(path))
        return data.decode("utf-8")
    except OSError as e:
        raise UsageError(f"cannot read {what}: {e.strerror}", where=str(path)) from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise UsageError(f"not UTF-8: byte 0x{e.object[e.start]:02x} at offset {e.start}",
                         where=f"{path}:{line}", valid=f"a UTF-8 {what} file") from None


def load_toml(path: str | Path) -> Scenario:
    path = Path(path)
    return loads_toml(read_scenario_text(path), str(path), path.stem)


def loads_toml(text: str, source: str, name: str) -> Scenario:
    try:
        data = tomllib.loads(text)
    except RecursionError:
        raise UsageError("TOML nested too deeply", where=source) from None
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"line (\d+)", str(e))
        where = f"{source}:{m.group(1)}" if m else source
        raise UsageError(f"malformed TOML: {e}", where=where) from None
    loc = _Locator(source, text)
    unknown = set(data) - TOP_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise UsageError(f"unknown top-level key {key!r}", where=loc.at(loc.key(None, key)),
                         field=key, valid=", ".join(sorted(TOP_KEYS)))

    def table(name_, schema, kind):
        raw = data.get(name_, {})
        if not isinstance(raw, dict):
            raise UsageError(f"[{name_}] must be a table", where=loc.at(loc.key(None, name_)))
        line = loc.table(name_)
        return _parse_props(schema, raw, loc.at(line), kind,
                            lambda k: loc.at(loc.key(line, k)))

    def array(name_):
        raw = data.get(name_, [])
        if not isinstance(raw, list) or not all(isinstance(x, dict) for x in raw):
            raise UsageError(f"{name_} must be an array of tables ([[{name_}]])",
                             where=loc.at(loc.key(None, name_)))
        return [(x, loc.table(name_, i)) for i, x in enumerate(raw)]

    def typed(name_, typekey, types):
        out = []
        for i, (raw, line) in enumerate(array(name_)):
            where = loc.at(line)
            raw = dict(raw)
            kind = raw.pop(typekey, None)
            if not isinstance(kind, str) or kind not in types:
                raise UsageError(f"unknown {typekey} {kind!r} in [[{name_}]] #{i + 1}",
                                 where=loc.at(loc.key(line, typekey) or line), field=typekey,
                                 valid=", ".join(sorted(types)))
            props = _parse_props(types[kind], raw, where, kind,
                                 lambda k, line=line: loc.at(loc.key(line, k)))
            out.append(Obj(kind, props, where))
        return out

    sc = Scenario(name=name, source=source)
    for key in ("title", "upstream", "description"):
        if key in data and not isinstance(data[key], str):
            raise UsageError(f"{key} must be a string", where=loc.at(loc.key(None, key)),
                             field=key)
    sc.title = data.get("title", "")
    sc.upstream = data.get("upstream", "")
    sc.qemu = _opt_choice(data, "qemu", None, loc)
    if sc.qemu is not None:
        from vmm_model.qemu_versions import get_qemu
        try:
            get_qemu(sc.qemu)
        except UsageError as e:
            raise UsageError(e.message, where=loc.at(loc.key(None, "qemu")), field="qemu",
                             valid=e.valid) from None
    sc.backend = _opt_choice(data, "backend", backend_names(), loc)
    sc.machine = {"type": "q35", **table("machine", MACHINE_PROPS, "machine")}
    sc.memory = table("memory", MEMORY_PROPS, "memory (-m)")
    sc.host = table("host", HOST_PROPS, "host")
    if "iommu" in sc.host:
        from backends.simulated.iommu import HOST_IOMMUS
        if sc.host["iommu"] not in HOST_IOMMUS:
            raise UsageError(f"unknown host IOMMU {sc.host['iommu']!r}",
                             where=loc.at(loc.key(loc.table("host"), "iommu")), field="iommu",
                             valid=", ".join(HOST_IOMMUS))
    sc.objects = typed("object", "qom-type", OBJECT_TYPES)
    sc.devices = typed("device", "driver", DEVICE_TYPES)
    for raw, line in array("numa"):
        props = _parse_props({"memdev": parse_str, "nodeid": parse_int}, raw, loc.at(line),
                             "numa node")
        if "memdev" not in props:
            raise UsageError("numa node needs memdev", where=loc.at(line), field="memdev")
        sc.numa.append(props["memdev"])
    for raw, line in array("section"):
        props = _parse_props(SECTION_PROPS, raw, loc.at(line), "section",
                             lambda k, line=line: loc.at(loc.key(line, k)))
        missing = {"gpa", "size", "mr"} - set(props)
        if missing:
            raise UsageError("section needs gpa, size and mr", where=loc.at(line),
                             field=sorted(missing)[0])
        props["where"] = loc.at(line)
        sc.sections.append(props)
    viommu = data.get("viommu")
    if viommu is not None:
        line = loc.table("viommu")
        if not isinstance(viommu, dict) or set(viommu) - {"map"}:
            raise UsageError("[viommu] takes only map = [{iova, size, gpa, perm}, ...]",
                             where=loc.at(line), field="viommu")
        sc.viommu_maps = []
        for ev in viommu.get("map", []):
            if not isinstance(ev, dict):
                raise UsageError("viommu map entries are tables", where=loc.at(line),
                                 field="map")
            props = _parse_props(VIOMMU_MAP_PROPS, ev, loc.at(line), "viommu map")
            if set(VIOMMU_MAP_PROPS) - set(props):
                raise UsageError("viommu map needs iova, size, gpa, perm", where=loc.at(line),
                                 field=sorted(set(VIOMMU_MAP_PROPS) - set(props))[0])
            if props["perm"] not in ("none", "ro", "wo", "rw"):
                raise UsageError(f"bad perm {props['perm']!r}", where=loc.at(line),
                                 field="perm", valid="none, ro, wo, rw")
            sc.viommu_maps.append(props)
    mig = data.get("migration", {})
    if mig:
        if not isinstance(mig, dict) or set(mig) - {"incoming"} or \
                mig.get("incoming") not in ("cpr-transfer", None):
            raise UsageError("[migration] takes incoming = \"cpr-transfer\"",
                             where=loc.at(loc.table("migration")), field="incoming",
                             valid="cpr-transfer")
        sc.incoming = mig.get("incoming")
    _validate(sc)
    return sc


def _opt_choice(data, key, choices, loc):
    if key not in data:
        return None
    value = data[key]
    if not isinstance(value, str) or (choices and value not in choices):
        raise UsageError(f"bad {key} {value!r}", where=loc.at(loc.key(None, key)), field=key,
                         valid=", ".join(choices) if choices else "a string")
    return value


def _validate(sc: Scenario) -> None:
    if sc.machine.get("type") not in MACHINE_TYPES:
        raise UsageError(f"unsupported machine type {sc.machine.get('type')!r}",
                         where=sc.source, field="machine.type", valid=", ".join(MACHINE_TYPES))
    if sc.qemu is not None:
        from vmm_model.qemu_versions import get_qemu
        get_qemu(sc.qemu, where=f"{sc.source}: qemu")
    _check_refs(sc)


# --- QEMU command line (vmm_model/qemu/cmdline.py) ------------------------------

def split_qemu_opts(text: str, where: str) -> tuple[str | None, dict]:
    """QEMU's QemuOpts syntax: ``[implied,]key=value,...`` with ``,,`` escaping a comma."""
    parts, cur, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == ",":
            if text[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    parts.append("".join(cur))
    implied = None
    props: dict = {}
    for n, part in enumerate(parts):
        if "=" in part:
            k, _, v = part.partition("=")
            if not k:
                raise UsageError(f"empty property name in {text!r}", where=where)
            if "." in k:        # keyval dotted keys: host-nodes.0=0 -> host-nodes list
                k, _, sub = k.partition(".")
                if sub.isdigit():
                    props.setdefault(k, []).append(v)
                    continue
                props[f"{k}.{sub}"] = v
                continue
            props[k] = v
        elif n == 0:
            implied = part
        elif part:
            props[part] = "on"
        else:
            raise UsageError(f"empty element in {text!r}", where=where)
    return implied, props


def from_qemu_args(argv: list[str], name: str = "command-line") -> Scenario:
    """A Scenario from QEMU arguments: see vmm_model.qemu.cmdline.from_qemu_args."""
    from vmm_model.qemu.cmdline import from_qemu_args as build
    return build(argv, name)


# --- any scenario file, by content ----------------------------------------------

def scenario_kind(text: str) -> str:
    """What a scenario file holds, decided by its content: ``libvirt`` (a
    ``<domain`` element), ``cmdline`` (a captured QEMU command line or a
    -readconfig file) or ``toml``."""
    from vmm_model.qemu.cmdline import is_readconfig
    head = text.lstrip("\ufeff \t\r\n")
    if head.startswith("<"):
        return "libvirt"
    if "\0-" in text or is_readconfig(text):     # /proc/PID/cmdline: NUL before each option
        return "cmdline"
    first = head.split(None, 1)[0] if head else ""
    if first.startswith("-"):
        return "cmdline"
    if re.match(r"^[A-Za-z_]\w*=[^\s\"'\[{]", first) or "qemu" in first.rsplit("/", 1)[-1]:
        try:
            tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return "cmdline"
    return "toml"


def load_scenario(path: str | Path, libvirt: str | None = None) -> Scenario:
    """Any scenario file: TOML, a libvirt domain XML (translated as libvirt
    ``libvirt`` would, default the newest modelled), a QEMU command line."""
    path = Path(path)
    return loads_scenario(read_scenario_text(path), str(path), path.stem, libvirt)


def loads_scenario(text: str, source: str, name: str, libvirt: str | None = None) -> Scenario:
    kind = scenario_kind(text)
    if libvirt is not None and kind != "libvirt":
        raise UsageError("--libvirt applies to libvirt domain XML only", where=source)
    if kind == "libvirt":
        from vmm_model.libvirt import from_domain_xml
        return from_domain_xml(text, source, name, libvirt)
    if kind == "cmdline":
        from vmm_model.qemu.cmdline import loads_command_line
        return loads_command_line(text, source, name)
    return loads_toml(text, source, name)


# --- writing -------------------------------------------------------------------

def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return f'"0x{v:x}"' if v >= 4096 else str(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f'{_key(k)} = {_toml_value(x)}' for k, x in v.items()) + "}"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else f'"{k}"'


def to_toml(sc: Scenario) -> str:
    """The scenario as a TOML file that ``load_toml`` reads back to the same model."""
    out = []
    for key in ("title", "upstream", "qemu", "backend"):
        if getattr(sc, key):
            out.append(f"{key} = {_toml_value(getattr(sc, key))}")

    def table(name, props):
        if props:
            out.append(f"\n[{name}]")
            out.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in props.items())

    table("machine", sc.machine)
    table("memory", sc.memory)
    table("host", sc.host)
    for o in sc.objects:
        out.append("\n[[object]]")
        out.append(f'qom-type = "{o.type}"')
        out.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in o.props.items())
    for m in sc.numa:
        out.append(f'\n[[numa]]\nmemdev = "{m}"')
    for d in sc.devices:
        out.append("\n[[device]]")
        out.append(f'driver = "{d.type}"')
        for k, v in d.props.items():
            if k == "x-populated":
                v = [f"{a}-{b - 1}" for a, b in v]
            if k == "x-bars":
                v = [{"index": b["index"], "size": b["size"],
                      **({"gpa": b["gpa"]} if b["gpa"] is not None else {}),
                      "mmaps": [list(m) for m in b["mmaps"]]} for b in v]
            out.append(f"{_key(k)} = {_toml_value(v)}")
    if sc.viommu_maps is not None:
        out.append("\n[viommu]")
        out.append("map = " + _toml_value(sc.viommu_maps))
    if sc.incoming:
        out.append(f'\n[migration]\nincoming = "{sc.incoming}"')
    for s in sc.sections:
        out.append("\n[[section]]")
        out.extend(f"{_key(k)} = {_toml_value(v)}" for k, v in s.items() if k != "where")
    return "\n".join(out) + "\n"
