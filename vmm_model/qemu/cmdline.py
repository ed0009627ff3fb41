"""Real QEMU command lines -> Scenario.

What users capture, all accepted:

* an argv list (``vfio-emu plan -- ARGS``), a shell-quoted command line (libvirt's
  ``virsh domxml-to-native`` output, with its ``VAR=value`` prefix and ``\\``
  continuations), a ``ps -o args`` line (quoting already gone: split on blanks),
  a ``/proc/PID/cmdline`` file (NUL separators);
* ``-readconfig FILE`` (QEMU's ``[group "id"]`` / ``key = "value"`` format,
  qemu_config_parse() in util/qemu-config.c), also as a file on its own;
* QemuOpts (``-object memory-backend-file,id=m0,...``, ``,,`` escaping a comma),
  dotted keys (``host-nodes.0=0``) and JSON (``-object '{"qom-type":...}'``,
  ``-device '{"driver":"vfio-pci",...}'``), as QEMU 6.0+ accepts for -object and
  7.0+ for -device (qemu_opts_from_qdict / qobject_from_json in softmmu/vl.c);
* versioned machine types (``pc-q35-7.2``, ``pc-i440fx-10.0``) and every machine
  property QEMU has; every option QEMU has (vmm_model/qemu/names.py).

What does not touch guest memory or VFIO is listed in ``Scenario.not_modelled``
(one entry per option/object/device/property), never silently dropped.  A
misspelled option, object type, device driver or memory/VFIO property is an
error naming it and the nearest valid name (difflib, as QEMU's own "Did you
mean" hints in qemu_opts/qdev).
"""

from __future__ import annotations

import difflib
import json
import re
import shlex

from backends.errors import UsageError
from vmm_model.qemu import names
from vmm_model.scenario import (DEVICE_TYPES, MACHINE_PROPS, MEMORY_PROPS, OBJECT_TYPES, Obj,
                                Scenario, _parse_props, _validate, read_scenario_text,
                                split_qemu_opts)

# vl.c handles these -machine keys itself (machine_parse_property_opt, accel
# compatibility options) or they are board aliases that -machine help omits.
_MACHINE_EXTRA = {"type", "accel", "kernel-irqchip", "kernel_irqchip", "nvdimm",
                  "nvdimm-persistence", "pflash0", "pflash1", "igd-passthru", "hmat", "cxl",
                  "vmport", "usb", "dump-guest-core", "mem-merge", "graphics", "sata",
                  "smbus", "pit", "hpet", "smm", "acpi", "memory-encryption", "max-ram-below-4g"}
_DEVICE_COMMON = {"id", "bus", "addr", "driver"}
# -m keys (qemu_mem_opts in softmmu/vl.c)
_MEMORY_KEYS = {"size", "slots", "maxmem"}


def _suggest(name: str, candidates) -> str:
    near = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {near[0]!r}?)" if near else ""


# --- reading argv from what users capture ------------------------------------

def split_command_line(text: str) -> list[str]:
    """A captured command line -> argv.  NUL-separated (/proc/PID/cmdline) when it
    has NULs; shell-quoted when some word starts with a quote (libvirt's
    ``domxml-to-native``); else split on blanks (``ps -o args``, where quoting is
    gone and JSON arguments contain no blanks).  Leading ``VAR=value`` words and
    the QEMU binary are dropped."""
    if "\0" in text:
        argv = [a for a in text.split("\0") if a]
    else:
        text = text.replace("\\\n", " ")
        if re.search(r"(^|\s)['\"]", text):
            try:
                argv = shlex.split(text, comments=False, posix=True)
            except ValueError as e:
                raise UsageError(f"cannot split the command line: {e}",
                                 where="QEMU command line") from None
        else:
            argv = text.split()
    while argv and not argv[0].startswith("-") and re.match(r"^[A-Za-z_]\w*=", argv[0]):
        argv.pop(0)
    if argv and not argv[0].startswith("-"):
        argv.pop(0)     # the binary
    return argv


_RC_GROUP = re.compile(r'^\[\s*([\w-]+)(?:\s+"([^"]*)")?\s*\]$')
_RC_KEY = re.compile(r'^([\w.-]+)\s*=\s*"((?:[^"\\]|\\.)*)"$')


def readconfig_to_args(text: str, source: str) -> list[str]:
    """QEMU's -readconfig format -> the equivalent arguments: ``[group "id"]`` ->
    ``-group id=ID,key=value,...`` (``[memory]`` is ``-m``)."""
    out: list[str] = []
    group: tuple[str, dict] | None = None

    def flush():
        if group is None:
            return
        name, props = group
        opt = {"memory": "-m"}.get(name, "-" + name)
        out.extend([opt, ",".join(f"{k}={v.replace(',', ',,')}" for k, v in props.items())])

    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _RC_GROUP.match(line)
        if m:
            flush()
            group = (m.group(1), {"id": m.group(2)} if m.group(2) is not None else {})
            continue
        m = _RC_KEY.match(line)
        if not m or group is None:
            raise UsageError(f"parse error in config file: {line!r}", where=f"{source}:{n}",
                             valid='[group "id"] headers and key = "value" lines')
        group[1][m.group(1)] = m.group(2).replace('\\"', '"')
    flush()
    return out


def loads_command_line(text: str, source: str, name: str) -> Scenario:
    if is_readconfig(text):
        argv = readconfig_to_args(text, source)
    else:
        argv = split_command_line(text)
    return from_qemu_args(argv, name, source)


def is_readconfig(text: str) -> bool:
    first = next((ln.strip() for ln in text.splitlines()
                  if ln.strip() and not ln.strip().startswith("#")), "")
    return text.lstrip().startswith("# qemu config file") or bool(
        re.match(r'^\[\s*[\w-]+\s+"[^"]*"\s*\]$', first))


# --- option values ----------------------------------------------------------------

def option_props(text: str, where: str, implied_key: str) -> dict:
    """One -object/-device value, JSON or QemuOpts, as a property dict."""
    if text.lstrip().startswith("{"):
        try:
            props = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"malformed JSON: {e.msg} at column {e.colno}", where=where) from None
        if not isinstance(props, dict):
            raise UsageError("JSON argument must be an object", where=where)
        for key in ("qom-type", "driver", "id", "type"):
            if key in props and not isinstance(props[key], str):
                raise UsageError(f"{key} must be a string", where=where, field=key)
        return props
    implied, props = split_qemu_opts(text, where)
    if implied is not None:
        props.setdefault(implied_key, implied)
    return props


def _host_nodes(value) -> str:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _modelled(schema: dict, props: dict, known, kind: str, where: str,
              notes: list[str]) -> dict:
    """Split ``props`` into those vfio-emu models (returned) and those QEMU has
    that do not change DMA mapping (noted); anything else is an error."""
    out = {}
    for k, v in props.items():
        if k in schema:
            out[k] = _host_nodes(v) if k == "host-nodes" else v
        elif k in known:
            notes.append(f"{kind} property {k}")
        else:
            raise UsageError(f"{kind} has no property {k!r}{_suggest(k, set(schema) | set(known))}",
                             where=where, field=k)
    return out


def machine_type(value: str, where: str) -> tuple[str, str | None]:
    """``q35``, ``pc``, ``pc-q35-7.2``, ``pc-i440fx-10.0`` (any versioned or
    distribution name, e.g. ``pc-q35-rhel9.4.0``) -> (q35|pc, version)."""
    m = re.fullmatch(r"(q35|pc)|pc-(q35|i440fx)-(\S+)", value)
    if not m:
        raise UsageError(f"unsupported machine type {value!r}"
                         f"{_suggest(value, ('q35', 'pc', 'pc-q35-10.0', 'pc-i440fx-10.0'))}",
                         where=where, field="type",
                         valid="q35, pc, pc-q35-X.Y, pc-i440fx-X.Y")
    if m.group(1):
        return m.group(1), None
    return ("q35" if m.group(2) == "q35" else "pc"), m.group(3)


# --- the importer ----------------------------------------------------------------

def from_qemu_args(argv: list[str], name: str = "command-line",
                   source: str = "QEMU command line") -> Scenario:
    """Build a Scenario from QEMU arguments.  Memory and VFIO options become the
    model; every other option QEMU has is accepted and listed in
    ``not_modelled``; an option QEMU does not have is an error."""
    sc = Scenario(name=name, source=source)
    sc.argv = list(argv)
    notes = sc.not_modelled
    i = 0

    def arg_value(opt):
        nonlocal i
        if i + 1 >= len(argv):
            raise UsageError(f"option {opt} needs an argument", where=f"argument {i + 1}"
                             if source == "QEMU command line" else f"{source}: argument {i + 1}")
        i += 1
        return argv[i]

    while i < len(argv):
        opt = argv[i]
        where = f"{source}: argument {i + 1} ({opt})"
        norm = "-" + opt.lstrip("-") if opt.startswith("-") else opt
        if norm == "-m":
            props = option_props(arg_value(opt), where, "size")
            for k in list(props):
                if k not in _MEMORY_KEYS:
                    raise UsageError(f"-m has no property {k!r}{_suggest(k, _MEMORY_KEYS)}",
                                     where=where, field=k)
            sc.memory.update(_parse_props(MEMORY_PROPS, props, where, "-m"))
        elif norm == "-mem-path":
            sc.memory["mem-path"] = arg_value(opt)
        elif norm == "-vga":
            sc.machine["vga"] = arg_value(opt)
        elif norm == "-bios":       # vl.c: the machine's "firmware" property
            sc.machine["firmware"] = arg_value(opt)
        elif norm == "-drive":
            value = arg_value(opt)
            props = option_props(value, where, "file")
            if props.get("if") == "pflash" and str(props.get("unit", "0")) == "0":
                # pc_system_flash_create()/pc_system_firmware_init(): the firmware is
                # in a flash device, not a pc.bios RAM (the machine's pflash0)
                sc.machine["pflash0"] = str(props.get("file", "drive"))
            else:
                notes.append(f"{norm} {_short(value)}")
        elif norm in ("-machine", "-M"):
            _machine(sc, option_props(arg_value(opt), where, "type"), where, notes)
        elif norm == "-object":
            _object(sc, option_props(arg_value(opt), where, "qom-type"), where, notes)
        elif norm == "-numa":
            props = option_props(arg_value(opt), where, "type")
            if props.get("type") == "node" and "memdev" in props:
                sc.numa.append(props["memdev"])
            elif props.get("type") == "node" and "mem" in props:
                raise UsageError("-numa node,mem= is not modelled (removed in QEMU 5.1 for "
                                 "new machine types)", where=where, field="mem",
                                 valid="-numa node,memdev=ID")
            elif props.get("type") != "node":
                notes.append(f"-numa {props.get('type')}")
        elif norm == "-device":
            _device(sc, option_props(arg_value(opt), where, "driver"), where, notes)
        elif norm == "-readconfig":
            path = arg_value(opt)
            extra = readconfig_to_args(read_scenario_text(path, "config"), path)
            argv = argv[:i + 1] + extra + argv[i + 1:]
        elif norm in names.OPTIONS:
            value = arg_value(opt) if names.OPTIONS[norm] else None
            notes.append(norm if value is None else f"{norm} {_short(value)}")
        elif i == 0 and not opt.startswith("-"):
            pass  # the binary itself
        else:
            # vl.c lookup_opt(): "<opt>: invalid option"
            raise UsageError(f"{opt}: invalid option{_suggest(norm, names.OPTIONS)}",
                             where=where)
        i += 1
    if any(d.type == "vfio-pci" and d.props.get("iommufd") for d in sc.devices):
        sc.backend = "iommufd"
    sc.not_modelled = list(dict.fromkeys(notes))
    _validate(sc)
    return sc


def _short(value: str, limit: int = 48) -> str:
    return value if len(value) <= limit else value[:limit - 1] + "…"


def _machine(sc, props, where, notes):
    known = names.MACHINE_PROPS["q35"] | names.MACHINE_PROPS["pc"] | _MACHINE_EXTRA
    if "type" in props:
        mtype, version = machine_type(str(props["type"]), where)
        props["type"] = mtype
        sc.machine_version = version
    modelled = _modelled(MACHINE_PROPS, props, known, "-machine", where, notes)
    sc.machine.update(_parse_props(MACHINE_PROPS, modelled, where, "-machine"))
    if sc.machine.get("smm") in ("on", "auto"):
        del sc.machine["smm"]       # the default (TCG); only smm=off changes the memory map


def _object(sc, props, where, notes):
    qom_type = props.pop("qom-type", None)
    if qom_type in OBJECT_TYPES:
        known = names.OBJECT_PROPS.get(qom_type, frozenset()) | {"id"}
        raw = _modelled(OBJECT_TYPES[qom_type], props, known, qom_type, where, notes)
        sc.objects.append(Obj(qom_type, _parse_props(OBJECT_TYPES[qom_type], raw, where,
                                                     qom_type), where))
    elif qom_type in names.OBJECTS:
        notes.append(f"-object {qom_type}" + (f" ({props['id']})" if "id" in props else ""))
    else:
        # qom/object_interfaces.c user_creatable_add_type(): "invalid object type: %s"
        raise UsageError(f"invalid object type: {qom_type}"
                         f"{_suggest(str(qom_type), names.OBJECTS)}", where=where,
                         field="qom-type")


def _device(sc, props, where, notes):
    driver = props.pop("driver", None)
    if driver == "vfio-pci-nohotplug":
        driver = "vfio-pci"     # hw/vfio/pci.c: the same device without hot-unplug (ramfb)
    if driver in DEVICE_TYPES:
        known = names.DEVICE_PROPS.get(driver, frozenset()) | _DEVICE_COMMON
        if driver != "pc-dimm":     # PCI addr=; pc-dimm addr= is a GPA
            if "addr" in props:
                notes.append(f"{driver} property addr")
            props.pop("addr", None)
        raw = _modelled(DEVICE_TYPES[driver], props, known, driver, where, notes)
        sc.devices.append(Obj(driver, _parse_props(DEVICE_TYPES[driver], raw, where, driver),
                              where))
    elif driver in names.DEVICES:
        notes.append(f"-device {driver}" + (f" ({props['id']})" if "id" in props else ""))
    else:
        # system/qdev-monitor.c qdev_get_device_class(): "'%s' is not a valid device
        # model name"
        raise UsageError(f"{driver!r} is not a valid device model name"
                         f"{_suggest(str(driver), names.DEVICES)}",
                         where=where, field="driver")
