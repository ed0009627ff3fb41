"""The memory and VFIO arguments of a QEMU argv, in a form two argvs can be
compared by: one string per argument, JSON objects with sorted keys, PCI
placement (bus=, addr=) dropped."""

from __future__ import annotations

import json

from vmm_model.qemu.cmdline import option_props

_DEVICES = ("pc-dimm", "nvdimm", "virtio-mem-pci", "virtio-pmem-pci", "vfio-pci",
            "vfio-pci-nohotplug")
_MACHINE_KEYS = ("memory-backend", "mem-merge", "smm")


def memory_vfio_args(argv: list[str]) -> list[str]:
    out = []
    i = 0
    while i < len(argv):
        opt, val = argv[i], argv[i + 1] if i + 1 < len(argv) else ""
        if opt in ("-m", "-mem-path", "-overcommit"):
            out.append(f"{opt} {val}")
        elif opt == "-mem-prealloc":
            out.append(opt)
            i -= 1
        elif opt == "-machine":
            props = option_props(val, opt, "type")
            out.append("-machine " + ",".join(f"{k}={props[k]}" for k in _MACHINE_KEYS
                                              if k in props))
        elif opt == "-numa":
            out.append(f"-numa {val}")
        elif opt == "-object":
            props = option_props(val, opt, "qom-type")
            if str(props.get("qom-type")).startswith(("memory-backend", "iommufd")):
                out.append("-object " + json.dumps(props, sort_keys=True))
        elif opt == "-device":
            props = option_props(val, opt, "driver")
            if props.get("driver") in _DEVICES:
                props.pop("bus", None)
                if props["driver"] != "pc-dimm":
                    props.pop("addr", None)
                out.append("-device " + json.dumps(props, sort_keys=True))
        else:
            i -= 1 if not (i + 1 < len(argv) and not argv[i + 1].startswith("-")) else 0
        i += 2
    return sorted(out)
