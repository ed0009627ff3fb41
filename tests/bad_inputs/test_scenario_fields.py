"""Every scenario field x wrong type / out of range / missing / duplicated,
generated from the scenario schemas (vmm_model/scenario.py), on two valid base
scenarios; each error names the file and the line of the field."""

from __future__ import annotations

import pytest

from tests.bad_inputs.conftest import assert_error
from vmm_model import scenario as S

# A base scenario as a list of (header, [(key, toml value)]); header None = top level.
BASE_A = [
    (None, [("title", '"bad-input base A"'), ("qemu", '"10.2"'), ("backend", '"iommufd"'),
            ("description", '"every object and device kind"')]),
    ("[machine]", [("type", '"q35"'), ("memory-backend", '"ram0"'), ("aux-ram-share", "false"),
                   ("vga", '"none"')]),
    ("[memory]", [("size", '"1G"'), ("slots", "2"), ("maxmem", '"8G"')]),
    ("[[object]]", [("qom-type", '"memory-backend-ram"'), ("id", '"ram0"'), ("size", '"1G"'),
                    ("share", "false"), ("prealloc", "false"), ("merge", "true"),
                    ("dump", "true"), ("reserve", "true"), ("host-nodes", '"0"'),
                    ("policy", '"default"'), ("prealloc-threads", "1"),
                    ("x-use-canonical-path-for-ramblock-id", "false")]),
    ("[[object]]", [("qom-type", '"memory-backend-file"'), ("id", '"f0"'), ("size", '"1G"'),
                    ("mem-path", '"/dev/hugepages/f0"'), ("share", "true"),
                    ("offset", '"0"'), ("align", '"2M"'), ("discard-data", "false"),
                    ("pmem", "false"), ("readonly", "false"), ("rom", '"off"'),
                    ("x-fs", '"hugetlbfs"')]),
    ("[[object]]", [("qom-type", '"memory-backend-memfd"'), ("id", '"d0"'), ("size", '"1G"'),
                    ("hugetlb", "false"), ("hugetlbsize", '"2M"'), ("seal", "true")]),
    ("[[object]]", [("qom-type", '"memory-backend-shm"'), ("id", '"s0"'), ("size", '"64M"')]),
    ("[[object]]", [("qom-type", '"memory-backend-epc"'), ("id", '"e0"'), ("size", '"64M"')]),
    ("[[object]]", [("qom-type", '"memory-backend-memfd"'), ("id", '"v0"'), ("size", '"1G"')]),
    ("[[object]]", [("qom-type", '"iommufd"'), ("id", '"iommufd0"')]),
    ("[[device]]", [("driver", '"pc-dimm"'), ("id", '"dimm0"'), ("memdev", '"f0"'),
                    ("slot", "0"), ("node", "0")]),
    ("[[device]]", [("driver", '"pc-dimm"'), ("id", '"dimm1"'), ("memdev", '"d0"'),
                    ("x-hotplug", "true")]),
    ("[[device]]", [("driver", '"virtio-mem-pci"'), ("id", '"vm0"'), ("memdev", '"v0"'),
                    ("block-size", '"2M"'), ("requested-size", '"8M"'), ("node", "0"),
                    ("x-populated", '["0-3"]')]),
    ("[[device]]", [("driver", '"vfio-pci"'), ("id", '"hostdev0"'), ("host", '"0000:01:00.0"'),
                    ("iommufd", '"iommufd0"'), ("x-bars", '[{index = 0, size = "16M"}]'),
                    ("x-bypass-ro", "false"), ("x-iommu-pgsizes", '"0x1000"')]),
]
BASE_B = [
    (None, [("title", '"bad-input base B"'), ("qemu", '"10.2"'), ("upstream", '"none"')]),
    ("[machine]", [("type", '"pc"')]),
    ("[[object]]", [("qom-type", '"memory-backend-memfd"'), ("id", '"m0"'), ("size", '"1G"')]),
    ("[[numa]]", [("memdev", '"m0"'), ("nodeid", "0")]),
    ("[[section]]", [("gpa", '"0x0"'), ("size", '"0xa0000"'), ("mr", '"m0"')]),
    ("[[section]]", [("gpa", '"0x100000"'), ("size", '"0x3ff00000"'), ("mr", '"m0"'),
                     ("offset", '"0x100000"'), ("type", '"ram"'), ("readonly", "false")]),
    ("[[section]]", [("gpa", '"0xfffc0000"'), ("size", '"0x40000"'), ("mr", '"pc.bios"'),
                     ("type", '"rom"')]),
    ("[viommu]", [("map", '[{iova = "0x1000", size = "0x1000", gpa = "0x100000", perm = "rw"}]')]),
    ("[migration]", [("incoming", '"cpr-transfer"')]),
]
BASES = {"A": BASE_A, "B": BASE_B}


def render(base, edit=None) -> tuple[str, dict]:
    """TOML text of ``base`` with ``edit(table_index, key, value) -> [(key, value), ...]``
    applied, and the line number of each (table_index, key) and of each header."""
    lines, where = [], {}
    for t, (header, items) in enumerate(base):
        if header:
            lines.append("")
            lines.append(header)
            where[t, None] = len(lines)
        for key, value in items:
            for k, v in (edit(t, key, value) if edit else [(key, value)]):
                lines.append(f"{k} = {v}")
                where.setdefault((t, k), len(lines))
                where[t, k, "last"] = len(lines)
    return "\n".join(lines) + "\n", where


def _kind(header, items, key):
    """The parser of a field, from the scenario schemas."""
    typ = dict(items).get("qom-type", dict(items).get("driver", "")).strip('"')
    schema = {"[machine]": S.MACHINE_PROPS, "[memory]": S.MEMORY_PROPS,
              "[[object]]": S.OBJECT_TYPES.get(typ, {}), "[[device]]": S.DEVICE_TYPES.get(typ, {}),
              "[[section]]": S.SECTION_PROPS, "[[numa]]": {"memdev": S.parse_str,
                                                           "nodeid": S.parse_int}}.get(header, {})
    return schema.get(key)


# kind-specific values no QEMU accepts (wrong type or out of range)
_BAD = {S.parse_size: ['"4Z"', "-1", '"-5M"', "1.5", "true"],
        S.parse_bool: ['"maybe"', "2"],
        S.parse_int: ['"x"', "1.5", "true"],
        S.parse_str: ['""', "5", "false"],
        S.parse_onoffauto: ['"maybe"', "1"],
        S.parse_populated: ['"0-x"', '["3-1"]', "{a = 1}"],
        S.parse_bars: ['"16M"', "[{size = \"16M\", bogus = 1}]", "[{index = 0}]",
                       "[5]"]}
_REQUIRED = {("[[object]]", "id"), ("[[object]]", "size"), ("[[object]]", "qom-type"),
             ("[[device]]", "driver"), ("[[device]]", "memdev"), ("[[numa]]", "memdev"),
             ("[[section]]", "gpa"), ("[[section]]", "size"), ("[[section]]", "mr")}


def cases():
    out = []
    for bname, base in BASES.items():
        for t, (header, items) in enumerate(base):
            for key, value in items:
                name = f"{bname}{t}-{header or 'top'}-{key}"
                kind = _kind(header, items, key)
                if header is None:
                    bad = ["[1, 2]", "{a = 1}"] + (['"no-such"'] if key in ("qemu", "backend")
                                                   else [])
                elif key in ("qom-type", "driver"):
                    bad = ['"no-such-type"', "[1]"]
                elif header == "[viommu]":
                    bad = ['[{iova = "0x1000", size = "0x1000", gpa = "0x100000", perm = "rx"}]',
                           '[{iova = "0x1000", size = "0x1000", gpa = "0x100000"}]',
                           '[{iova = "x", size = "0x1000", gpa = "0x100000", perm = "rw"}]',
                           "[5]", '"map"']
                elif header == "[migration]":
                    bad = ['"postcopy"', "true"]
                elif key == "type" and header == "[machine]":
                    bad = ['"virt"', "[1, 2]"]
                elif key == "type" and header == "[[section]]":
                    bad = ['"ramx"', "[1, 2]"]
                else:
                    bad = (["[1, 2]", "{a = 1}"] if kind is not S.parse_populated else []) \
                        + _BAD.get(kind, [])
                for i, v in enumerate(dict.fromkeys(bad)):
                    out.append(pytest.param(bname, t, key, "value", v, id=f"{name}-bad{i}"))
                out.append(pytest.param(bname, t, key, "duplicated", value,
                                        id=f"{name}-duplicated"))
                if (header, key) in _REQUIRED:
                    out.append(pytest.param(bname, t, key, "missing", None,
                                            id=f"{name}-missing"))
    return out


CASES = cases()


@pytest.mark.parametrize("base", list(BASES))
def test_bases_are_valid(vfio_emu, tmp_path, base):
    text, _ = render(BASES[base])
    path = tmp_path / "base.toml"
    path.write_text(text)
    r = vfio_emu("plan", path, "--kernel", "none", "--no-compare")
    assert r.rc == 0 and r.err == "", r.err
    assert "realize ok" in r.out.splitlines()[-1]


@pytest.mark.parametrize("base,t,key,how,value", CASES)
def test_scenario_field(vfio_emu, tmp_path, base, t, key, how, value):
    def edit(ti, k, v):
        if (ti, k) != (t, key):
            return [(k, v)]
        if how == "missing":
            return []
        if how == "duplicated":
            return [(k, v), (k, v)]
        return [(k, value)]
    text, where = render(BASES[base], edit)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    r = vfio_emu("plan", path, "--kernel", "none", "--no-compare")
    if how == "duplicated":      # TOML itself: "Cannot overwrite a value"
        assert_error(r, f"{path}:{where[t, key, 'last']}", "malformed TOML")
    elif how == "missing":       # the table that lacks it
        assert_error(r, f"{path}:{where[t, None]}", key)
    elif BASES[base][t][0] is None:
        assert_error(r, f"{path}:{where[t, key]}", key)
    else:                        # the line of the key, or of its table
        line = assert_error(r, str(path))
        assert f"{path}:{where[t, key]}" in line or f"{path}:{where[t, None]}" in line, line


def test_corpus_is_large_enough():
    assert len(CASES) >= 300
