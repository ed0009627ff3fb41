"""The real-QEMU rig set's host side, without the rig: the observer
(backends/rig/vfio_observe.c), the decoding of its lines, the committed
artefacts (fixtures/rig/real-qemu-*.json) re-compared with the model, and
docs/real-qemu-rig.md generated from them (scripts/real_qemu_doc.py).
The rig run itself is tests/test_rig.py's ``iommufd-7.2:real-qemu``."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from backends import uapi
from backends.rig.real_qemu import (BACKENDS, CONFIGS, OBSERVER_SOURCE, QEMUS, decode, matrix,
                                    observer_env, qemu_args)
from vmm_model.rig_qemu import compare, counts, run_result, sequence

REPO = Path(__file__).resolve().parents[1]
ARTEFACTS = sorted((REPO / "fixtures" / "rig").glob("real-qemu-*.json"))


def _doc_script():
    spec = importlib.util.spec_from_file_location("real_qemu_doc",
                                                  REPO / "scripts" / "real_qemu_doc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_configuration_set_covers_what_the_issue_asks():
    assert len(CONFIGS) >= 25 and set(QEMUS) == {"7.2", "10.0", "11.1"}
    text = " ".join(" ".join(c.args) for c in CONFIGS)
    for what in ("memory-backend-ram", "memory-backend-memfd", "memory-backend-file",
                 "memory-backend-shm", "share=on", "share=off", "hugetlb=on", "readonly=on",
                 "rom=off", "offset=", "-mem-path", "pc-dimm", "virtio-mem-pci",
                 "aux-ram-share=on", "/dev/shm/", "/dev/hugepages/", "/dev/ramfs/", "/dev/zero"):
        assert what in text, what


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_model_reads_every_configuration(config):
    """Every command line of the set is one the model plans (or rejects as QEMU
    does), for every release and backend: never 'model cannot plan'."""
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import get_qemu
    from vmm_model.scenario import from_qemu_args
    for v in QEMUS:
        for b in BACKENDS:
            plan = make_plan(from_qemu_args(qemu_args(config, b, "0000:00:01.0")),
                             get_qemu(v), b, kernel="7.2")
            assert plan.qemu.name == v


def test_observer_numbers_are_the_uapi_ones():
    """The request numbers vfio_observe.c special-cases are include/uapi's."""
    from backends.shim import pci
    src = OBSERVER_SOURCE.read_text()
    nr = {n: getattr(uapi, n, getattr(pci, n, None)) & 0xff for n in (
        "VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU",
        "VFIO_GROUP_SET_CONTAINER", "VFIO_GROUP_UNSET_CONTAINER", "VFIO_GROUP_GET_DEVICE_FD",
        "VFIO_DEVICE_RESET", "VFIO_IOMMU_MAP_DMA", "IOMMU_IOAS_MAP", "IOMMU_IOAS_MAP_FILE")}
    assert "nr == 100 || nr == 101 || nr == 102 || nr == 105 || nr == 111" in src
    assert [nr[n] for n in ("VFIO_GET_API_VERSION", "VFIO_CHECK_EXTENSION", "VFIO_SET_IOMMU",
                            "VFIO_GROUP_UNSET_CONTAINER", "VFIO_DEVICE_RESET")] == \
        [100, 101, 102, 105, 111]
    assert (nr["VFIO_GROUP_SET_CONTAINER"], nr["VFIO_GROUP_GET_DEVICE_FD"]) == (104, 106)
    assert "nr == 0x8f" in src and nr["IOMMU_IOAS_MAP_FILE"] == 0x8f
    assert "nr == 0x85" in src and nr["IOMMU_IOAS_MAP"] == 0x85
    assert "nr == 113" in src and nr["VFIO_IOMMU_MAP_DMA"] == 113


def test_observer_passes_calls_through_and_records_vfio_opens(tmp_path):
    """Preloaded into a real process: a VFIO path's open is recorded with the
    kernel's answer (here ENOENT: this host has no /dev/vfio), other files are
    not, and the process sees what libc returned."""
    from backends.shim.build import build
    log = tmp_path / "obs.log"
    code = ("import errno\ntry:\n open('/dev/vfio/vfio', 'rb')\nexcept OSError as e:\n"
            " print(e.errno)\nopen('/dev/null', 'rb').close()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=observer_env(str(log), build(OBSERVER_SOURCE)), timeout=60)
    assert out.stdout.strip() == "2", out.stderr
    lines = log.read_text().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"O \d+ -1 1 -1 2 /dev/vfio/vfio", lines[0]), lines


# Lines the observer wrote for QEMU 11.1 with memory-backend-memfd on iommufd-7.2.
LOG = """O 1 13 3 13 0 /dev/vfio/devices/vfio0
O 2 12 4 12 0 /dev/iommu
I 3 12 4 3b81 0 0 7ffd747933bc 0c0000000000000000000000 0c0000000000000002000000
I 4 12 4 3b8f 0 0 7ffd74793260 280000000700000002000000030000000000000000000000000000040000000000000000000000 280000000700000002000000030000000000000000000000000000040000000000000000000000
F 5 3 102 100777 1021994 /memfd:m0 (deleted)
I 6 12 4 3b85 0 0 7ffd74793260 280000000500000002000000000000000000e015fa7f000000000400000000000000fcff00000000 280000000500000002000000000000000000e015fa7f000000000400000000000000fcff00000000
V 7 7ffa15e00000 7ffa15e00000-7ffa15e40000 r--p 00000000 00:00 0 
M ready
I 8 12 4 3b86 -1 2 7ffd74793260 180000000200000000000000000000000000000400000000 180000000200000000000000000000000000000400000000
"""


def test_decode_turns_lines_into_requests():
    reqs, ready = decode(LOG)
    assert ready == 5 and [r.name for r in reqs] == [
        "/dev/vfio/devices/vfio0", "/dev/iommu", "IOMMU_IOAS_ALLOC", "IOMMU_IOAS_MAP_FILE",
        "IOMMU_IOAS_MAP", "IOMMU_IOAS_UNMAP"]
    alloc, mf, va, unmap = reqs[2:]
    assert alloc.out == {"out_ioas_id": 2}
    assert (mf.fields["fd"], mf.fields["start"], mf.fields["length"], mf.fields["iova"],
            mf.fields["flags"]) == (3, 0, 64 << 20, 0, 7)
    assert mf.backing == {"what": "fd", "name": "/memfd:m0 (deleted)", "kind": "file",
                          "fs": "tmpfs", "f_flags": 0o102}
    assert (va.fields["user_va"], va.fields["iova"], va.fields["length"]) == \
        (0x7ffa15e00000, 0xfffc0000, 0x40000)
    assert va.backing == {"what": "vma", "shared": False, "name": "", "kind": "anonymous"}
    assert (unmap.ret, unmap.errno) == (-2, "ENOENT")


def test_a_recording_compares_with_the_model():
    """The decoded run is a RunResult the model comparison reads: 11.1's model
    maps the memfd by file and the BIOS by VA read-only as recorded; this
    recording is cut before the machine reset (which splits RAM around the
    ROM windows), so exactly the reset's mappings are reported."""
    reqs, ready = decode(LOG)
    cfg = next(c for c in CONFIGS if c.name == "memfd")
    run = {"binary": QEMUS["11.1"], "args": qemu_args(cfg, "iommufd", "0000:00:01.0"),
           "qemu": "11.1.3", "backend": "iommufd", "stderr": "", "exit_status": 0,
           "reached": "realize", "ready": ready, "requests": [r.json() for r in reqs]}
    res = run_result(run, "7.2")
    assert [e["ioctl"] for e in res.events()] == ["IOMMU_IOAS_MAP_FILE", "IOMMU_IOAS_MAP"]
    assert [(d["range"], d["what"], d["model"], d["real"]) for d in compare(run, "7.2")] == [
        ("[0x0, 0xc0000)", "only in the model", "IOMMU_IOAS_MAP_FILE rw = 0", None),
        ("[0x0, 0x4000000)", "only in the real run", None, "IOMMU_IOAS_MAP_FILE rw = 0"),
        ("[0xc0000, 0xe0000)", "only in the model", "IOMMU_IOAS_MAP ro = 0", None),
        ("[0xe0000, 0x100000)", "only in the model", "IOMMU_IOAS_MAP ro = 0", None),
        ("[0x100000, 0x4000000)", "only in the model", "IOMMU_IOAS_MAP_FILE rw = 0", None)]


@pytest.mark.skipif(not ARTEFACTS, reason="no committed real-QEMU rig artefact yet")
@pytest.mark.parametrize("path", ARTEFACTS, ids=[p.stem for p in ARTEFACTS])
def test_committed_artefact_compares_as_recorded(path):
    """Re-running the comparison on the committed recordings gives the committed
    differences: the table in docs/ is what the model says today."""
    art = json.loads(path.read_text())
    done = [r for r in art["runs"] if not r.get("missing")]
    assert [(r["config"], r["version"], r["backend"]) for r in art["runs"]] == \
        [(c.name, v, b) for c, v, b in matrix(art["kernel"])]
    for r in done:
        assert compare(r, art["profile"]) == r["differences"], (r["config"], r["version"])
        assert sequence(r, art["profile"]) == r["sequence"], (r["config"], r["version"])
    total = sum(n for *_, n in counts(art).values())
    assert total == len(done)


def test_docs_page_is_generated_from_the_artefacts():
    assert _doc_script().main(["--check"]) == 0, \
        "docs/real-qemu-rig.md is out of date: python scripts/real_qemu_doc.py"


# Issue 20: the same binary and command line on the simulated kernel of the guest's
# profile (vfio-emu run: the shim) issues the same map/unmap requests and gets the
# same answers as on the real kernel in the rig.  Configurations without files the
# guest mounted (the shim runs QEMU on this host).
SHIM_RUNS = [("default", "10.0", "type1"), ("memfd", "11.1", "iommufd"),
             ("file-devzero-shared", "11.1", "iommufd"), ("ovmf-pflash", "7.2", "type1"),
             ("aux-ram-share", "10.0", "iommufd"), ("pc-memfd", "7.2", "type1")]


@pytest.mark.parametrize("config,version,backend", SHIM_RUNS,
                         ids=[f"{c}-{v}-{b}" for c, v, b in SHIM_RUNS])
def test_real_qemu_on_the_simulated_kernel_matches_the_rig(config, version, backend):
    from vmm_model.qemu.launcher import find_qemu
    from vmm_model.rig_qemu import _step
    from vmm_model.run import run
    binary, why = find_qemu(version)
    if binary is None:
        pytest.skip(why)
    art = json.loads((REPO / "fixtures" / "rig" / "real-qemu-iommufd-7.2.json").read_text())
    (r,) = [r for r in art["runs"] if (r["config"], r["version"], r["backend"]) ==
            (config, version, backend)]
    res = run(binary, r["args"], kernel=art["profile"])
    shim = [_step(e) for e in res.events() if e["phase"] != "runtime"]
    rig = [_step(e) for e in run_result(r, art["profile"]).events()]
    assert shim == rig and len(rig) >= 4, res.stderr
    assert bool(res.reached) == bool(r["reached"]), res.stderr
