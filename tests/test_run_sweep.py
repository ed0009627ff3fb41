"""The gallery under real QEMU (vmm_model/run_sweep.py): the committed sweep
(docs/run-sweep.json) against the gallery and the docs table, the command
lines against the scenarios they express, and a live re-run of a sample of
the grid (one configuration per QEMU × backend × kernel) that must reproduce
the recorded outcome and agreement."""

from __future__ import annotations

import json
import os

import pytest

from vmm_model import gallery
from vmm_model.qemu.cmdline import from_qemu_args
from vmm_model.qemu.launcher import find_qemu
from vmm_model.run_sweep import (BEGIN, DOC_PATH, END, JSON_PATH, SWEEP_BACKENDS, SWEEP_KERNELS,
                                 SWEEP_VERSIONS, not_expressible, render_table, run_row,
                                 scenario_argv, scratch)

DOC = json.loads(JSON_PATH.read_text())
GRID = {(v, b, k) for v in SWEEP_VERSIONS for b in SWEEP_BACKENDS for k in SWEEP_KERNELS}


def test_the_docs_table_is_generated_from_the_json():
    assert f"{BEGIN}\n{render_table(DOC)}\n{END}" in DOC_PATH.read_text()


def test_every_gallery_scenario_is_run_on_the_whole_grid_or_says_why_not():
    ran = {r["scenario"] for r in DOC["rows"]}
    assert sorted(ran | set(DOC["not_run"])) == gallery.names()
    assert not ran & set(DOC["not_run"])
    for name in ran:
        assert {(r["qemu"], r["backend"], r["kernel"]) for r in DOC["rows"]
                if r["scenario"] == name} == GRID, name
    for name, why in DOC["not_run"].items():
        assert not_expressible(gallery.load(name)) == why
    assert set(DOC["versions"]) == set(SWEEP_VERSIONS)


def test_every_recorded_configuration_agrees_with_the_model():
    assert [(r["scenario"], r["qemu"], r["backend"], r["kernel"], r["diffs"])
            for r in DOC["rows"] if not r["agree"]] == []


def _model(sc):
    """The scenario's VM without what the sweep chooses (backend, the vfio-pci
    device's iommufd, file locations)."""
    m = sc.model()
    m["qemu"] = m["backend"] = None
    m["objects"] = [(t, {k: os.path.basename(v) if k == "mem-path" else v for k, v in p.items()})
                    for t, p in m["objects"] if t != "iommufd"]
    m["devices"] = [(t, p) for t, p in m["devices"] if t != "vfio-pci"]
    if "mem-path" in m["memory"]:
        m["memory"]["mem-path"] = os.path.basename(m["memory"]["mem-path"])
    return m


@pytest.mark.parametrize("backend", SWEEP_BACKENDS)
def test_the_command_lines_express_the_scenarios(backend):
    """QEMU's command line for each scenario reads back (the model's own parser)
    as the same VM: machine, memory, objects, NUMA, devices."""
    with scratch() as (shm, disk):
        for name in gallery.names():
            sc = gallery.load(name)
            if not_expressible(sc):
                continue
            back = from_qemu_args(scenario_argv(sc, backend, shm, disk))
            want = _model(sc)
            want["memory"].setdefault("size", back.memory.get("size"))
            assert _model(back) == want, name
            vfio = [d for d in back.devices if d.type == "vfio-pci"]
            assert len(vfio) == 1 and ("iommufd" in vfio[0].props) == (backend == "iommufd")


def _sample() -> list[dict]:
    """One row per QEMU × backend × kernel, a different scenario for each (the
    stride 7 gives realize by VA and by MAP_FILE, QEMU's own errors, a refused
    VA map and a refused MAP_FILE, and s34's VGA)."""
    names = sorted({r["scenario"] for r in DOC["rows"]})
    out = []
    for i, (v, b, k) in enumerate(sorted(GRID)):
        name = names[7 * i % len(names)]
        out += [r for r in DOC["rows"]
                if (r["scenario"], r["qemu"], r["backend"], r["kernel"]) == (name, v, b, k)]
    return out


@pytest.mark.parametrize("row", _sample(), ids=lambda r: f"{r['scenario']}-{r['qemu']}-"
                         f"{r['backend']}-{r['kernel']}")
def test_a_sample_reruns_as_recorded(row):
    binary, why = find_qemu(row["qemu"])
    if binary is None:
        pytest.skip(why)
    got = run_row(row["scenario"], row["qemu"], row["backend"], row["kernel"], binary)
    assert (got["outcome"], got["error"], got["agree"], got["diffs"]) == (
        row["outcome"], row["error"], row["agree"], row["diffs"])


# ---- the rig's recordings (real QEMU on a real kernel) against the simulated kernel ----

RIG = {p.name: json.loads(p.read_text())
       for p in sorted((JSON_PATH.parent.parent / "fixtures" / "rig").glob("real-qemu-*.json"))}


def _rig_sample() -> list[tuple[str, int]]:
    """Per artefact, one recording per QEMU × backend, each a different
    configuration this host can run (RIG_NOT_HERE: no hugetlbfs, no ramfs)."""
    from vmm_model.run_sweep import RIG_NOT_HERE
    out = []
    for name, art in RIG.items():
        runs = [(i, r) for i, r in enumerate(art["runs"]) if not r.get("missing") and
                not any(p in a for a in r["args"] for p in RIG_NOT_HERE)]
        combos = sorted({(r["version"], r["backend"]) for _, r in runs})
        for j, combo in enumerate(combos):
            cand = [i for i, r in runs if (r["version"], r["backend"]) == combo]
            out.append((name, cand[(5 * j + 3) % len(cand)]))
    return out


def test_the_rig_sample_covers_every_release_and_backend():
    for name, art in RIG.items():
        want = {(r["version"], r["backend"]) for r in art["runs"] if not r.get("missing")}
        assert {(RIG[n]["runs"][i]["version"], RIG[n]["runs"][i]["backend"])
                for n, i in _rig_sample() if n == name} == want, name


@pytest.mark.parametrize("artefact, index", _rig_sample(),
                         ids=lambda x: x if isinstance(x, str) else str(x))
def test_real_qemu_gets_the_same_answers_from_the_simulated_kernel_as_in_the_rig(artefact, index):
    """The same QEMU binary and command line as a rig recording (real kernel
    in the rig guest, QEMU's edu bound to vfio-pci), run under the shim on that
    kernel's simulated profile: the same DMA map/unmap requests in the same
    order (ioctl, IOVA, length, flags) with the same answers, until QMP
    answered (vmm_model/run_sweep.py rig_replay())."""
    from vmm_model.qemu.launcher import binary_version
    from vmm_model.run_sweep import rig_replay
    art = RIG[artefact]
    rec = art["runs"][index]
    binary, why = find_qemu(rec["version"])
    if binary is None:
        pytest.skip(why)
    assert binary_version(binary) == rec["qemu"]
    assert rig_replay(rec, art["profile"], binary) == []
