"""Hypothesis fuzzing of TOML scenarios and QEMU command lines built from the
scenario schemas with values that are often wrong: whatever comes in, vfio-emu
plans it (exit 0 or 1) or says in one line what is wrong (exit 2), never a
traceback, an internal error (3) or a hang."""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.bad_inputs.conftest import ERROR_LINE
from vmm_model import scenario as S
from vmm_model.cli import main

IDS = st.sampled_from(["m0", "m1", "m2", "iommufd0", "nope", ""])
SIZES = st.sampled_from(["0", "4K", "1M", "2M", "3M", "1G", "4G", "1T", "4Z", "-1", "0x1000",
                         "1.5G", "99999P", "512"])
VALUES = st.one_of(SIZES, IDS, st.booleans(), st.integers(-3, 300),
                   st.sampled_from(["on", "off", "auto", "yes", "rw", "0-3", "q35", "pc"]),
                   st.text(max_size=8), st.floats(allow_nan=True))
SETTINGS = settings(max_examples=100, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])


def props(schema: dict, extra=()):
    keys = st.sampled_from(sorted(schema) + list(extra) + ["bogus"])
    return st.dictionaries(keys, VALUES, max_size=6)


def typed(schemas: dict, typekey: str):
    return st.sampled_from(sorted(schemas) + ["no-such"]).flatmap(
        lambda t: props(schemas.get(t, {})).map(lambda p: {typekey: t, **p}))


SCENARIO = st.fixed_dictionaries({}, optional={
    "qemu": st.sampled_from(["7.2", "10.0", "10.2", "master", "6.0"]),
    "backend": st.sampled_from(["type1", "iommufd", "vfio-user"]),
    "machine": props(S.MACHINE_PROPS),
    "memory": props(S.MEMORY_PROPS),
    "object": st.lists(typed(S.OBJECT_TYPES, "qom-type"), max_size=4),
    "device": st.lists(typed(S.DEVICE_TYPES, "driver"), max_size=4),
    "numa": st.lists(props({"memdev": 0, "nodeid": 0}), max_size=2),
    "section": st.lists(props(S.SECTION_PROPS), max_size=3),
})


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if v == v and abs(v) != float("inf") else ("nan" if v != v else
                                                                  ("inf" if v > 0 else "-inf"))
    if isinstance(v, int):
        return str(v)
    return json.dumps(v)          # a TOML basic string


def to_toml(doc: dict) -> str:
    out = []
    for k in ("qemu", "backend"):
        if k in doc:
            out.append(f"{k} = {toml_value(doc[k])}")
    for k in ("machine", "memory"):
        if k in doc:
            out.append(f"[{k}]")
            out += [f'"{pk}" = {toml_value(pv)}' for pk, pv in doc[k].items()]
    for k in ("object", "device", "numa", "section"):
        for t in doc.get(k, []):
            out.append(f"[[{k}]]")
            out += [f'"{pk}" = {toml_value(pv)}' for pk, pv in t.items()]
    return "\n".join(out) + "\n"


def run(argv) -> None:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        rc = main(argv)
    assert "Traceback" not in err.getvalue()
    assert rc in (0, 1, 2), (rc, err.getvalue())
    if rc == 2:
        assert ERROR_LINE.fullmatch(err.getvalue()), err.getvalue()
        assert out.getvalue() == "" or "rejects this configuration" in err.getvalue()


@SETTINGS
@given(SCENARIO)
def test_fuzz_toml_scenarios(doc):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "fuzz.toml")
        with open(path, "w") as f:
            f.write(to_toml(doc))
        run(["plan", path, "--kernel", "none", "--no-compare", "--backend", "iommufd"])


def opt_arg(schema_kind):
    return st.dictionaries(st.sampled_from(sorted(schema_kind) + ["bogus", "id"]),
                           st.one_of(SIZES, IDS, st.sampled_from(["on", "off", ",", "="])),
                           max_size=4)


def qemu_opts(implied: str, d: dict) -> str:
    return ",".join([implied] + [f"{k}={v}" for k, v in d.items()])


TOKENS = st.one_of(
    st.tuples(st.just("-m"), st.one_of(SIZES, opt_arg(S.MEMORY_PROPS).map(
        lambda d: qemu_opts("1G", d)))),
    st.tuples(st.just("-object"), st.sampled_from(sorted(S.OBJECT_TYPES) + ["foo"]).flatmap(
        lambda t: opt_arg(S.OBJECT_TYPES.get(t, {})).map(lambda d: qemu_opts(t, d)))),
    st.tuples(st.just("-device"), st.sampled_from(sorted(S.DEVICE_TYPES) + ["virtio-rng-pci",
                                                                          "foo"]).flatmap(
        lambda t: opt_arg(S.DEVICE_TYPES.get(t, {})).map(lambda d: qemu_opts(t, d)))),
    st.tuples(st.just("-device"), st.sampled_from(['{"driver": "pc-dimm", "memdev": "m0"}',
                                                   '{"driver": 5}', "{", "[]"])),
    st.tuples(st.just("-machine"), opt_arg(S.MACHINE_PROPS).map(lambda d: qemu_opts("q35", d))),
    st.tuples(st.just("-numa"), IDS.map(lambda i: f"node,memdev={i}")),
    st.tuples(st.sampled_from(["-mem-path", "-cpu", "-smp"]), st.sampled_from(
        ["/dev/hugepages", "host", "4", ""])),
    st.tuples(st.sampled_from(["-nographic", "-S", "-bogus", "--m"])),
)


@SETTINGS
@given(st.lists(TOKENS, min_size=1, max_size=8))
def test_fuzz_qemu_command_lines(tokens):
    argv = [t for tok in tokens for t in tok]
    run(["plan", "--kernel", "none", "--no-compare", "--backend", "iommufd", "--", *argv])
