"""Real QEMU binaries against the guest's edu bound to vfio-pci (set ``real-qemu``).

For every configuration of backends/rig/real_qemu.py × QEMU release × IOMMU
backend: QEMU starts paused (-S) with the observer (vfio_observe.c) preloaded,
QMP answers once its devices are realized and the machine reset is done
(``M ready`` goes into the recording then), ``quit`` ends it.  Each run's
recording, stderr, exit status and whether QMP answered go into
``$RIG_OUT/artefact-real-qemu.json``; the host decodes and compares them with
the model (vmm_model/rig_qemu.py).  A test here asserts what the guest alone
can tell: QEMU either answered QMP with guest RAM at GPA 0 mapped by the
kernel (realize succeeded) or exited non-zero with its error on stderr.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time

import pytest

from backends.rig.guest.rigutil import sim_profile
from backends.rig.real_qemu import (MOUNTS, QEMUS, decode, matrix, mount_all, observer_env,
                                    qemu_args, umount_all)

RUN_TIMEOUT = 180.0
ARTEFACT = "artefact-real-qemu.json"
RECORDS: list[dict] = []
MAPS = ("VFIO_IOMMU_MAP_DMA", "IOMMU_IOAS_MAP", "IOMMU_IOAS_MAP_FILE")


@pytest.fixture(scope="module")
def env():
    """Mount the file systems the configurations name; the edu's address; the
    observer; at the end, the artefact."""
    if os.environ.get("RIG_GUEST") != "1":
        pytest.skip("a rig guest test: run it with vfio-emu rig run --set real-qemu")
    from backends.rig.edu import edu_devices
    observer, rig_out = os.environ.get("RIG_OBSERVER"), os.environ.get("RIG_OUT")
    assert observer and os.path.exists(observer), f"RIG_OBSERVER={observer!r} (boot.py builds it)"
    mount_all()
    bdf = edu_devices()[0]
    versions = {}
    for label, binary in QEMUS.items():
        if os.path.exists(binary):
            said = subprocess.run([binary, "--version"], capture_output=True, text=True).stdout
            versions[label] = re.search(r"version (\d+\.\d+\.\d+)", said)[1]
    head = {"kernel": os.environ.get("RIG_KERNEL"), "release": os.environ.get("RIG_RELEASE"),
            "features": os.environ.get("RIG_FEATURES"), "profile": sim_profile().name,
            "versions": versions, "bdf": bdf}
    state = {"observer": observer, "bdf": bdf,
             "save": lambda: _save(os.path.join(rig_out, ARTEFACT), head)}
    state["save"]()
    yield state
    umount_all()


def _save(path: str, head: dict) -> None:
    """The artefact so far (rewritten after every run: a crash keeps what ran)."""
    with open(path + ".tmp", "w") as f:
        json.dump(dict(head, runs=RECORDS), f)
    os.replace(path + ".tmp", path)


def _qmp(proc, deadline: float, buf: list[bytes]) -> dict | None:
    """The next QMP reply (events skipped), or None if QEMU closed stdout or timed out."""
    while True:
        while b"\n" not in buf[0]:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return None
            buf[0] += chunk
        line, buf[0] = buf[0].split(b"\n", 1)
        msg = json.loads(line)
        if "event" not in msg:
            return msg


def run_qemu(binary: str, args: list[str], observer: str, log: str) -> dict:
    """One QEMU run: QMP greeting, qmp_capabilities, query-status, ``M ready``, quit."""
    t0 = time.monotonic()
    deadline = t0 + RUN_TIMEOUT
    err_path = log + ".stderr"
    with open(err_path, "wb") as err:
        proc = subprocess.Popen([binary, *args, "-qmp", "stdio"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err,
                                env=observer_env(log, observer))
    buf = [b""]
    reached, status = "", None
    try:
        if _qmp(proc, deadline, buf) is not None:          # the greeting: after realize+reset
            proc.stdin.write(b'{"execute": "qmp_capabilities"}\n'
                             b'{"execute": "query-status"}\n')
            proc.stdin.flush()
            if _qmp(proc, deadline, buf) is not None:
                st = _qmp(proc, deadline, buf)
                if st is not None:
                    reached, status = "realize", st["return"]["status"]
                    with open(log, "a") as f:
                        f.write("M ready\n")
            proc.stdin.write(b'{"execute": "quit"}\n')
            proc.stdin.flush()
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, BrokenPipeError):
        pass
    finally:
        killed = proc.poll() is None
        if killed:
            proc.kill()
        proc.wait()
    text = open(log).read() if os.path.exists(log) else ""
    stderr = open(err_path, errors="replace").read()
    for p in (log, err_path):
        if os.path.exists(p):
            os.unlink(p)
    return {"reached": reached, "qmp_status": status, "exit_status": proc.returncode,
            "killed": killed, "stderr": stderr, "log": text,
            "seconds": round(time.monotonic() - t0, 2)}


def _cleanup(config) -> None:
    for _, where in MOUNTS:
        for name in os.listdir(where):
            os.unlink(os.path.join(where, name))


MATRIX = matrix(os.environ.get("RIG_KERNEL", ""))


@pytest.mark.parametrize("config,version,backend", MATRIX,
                         ids=[f"{c.name}-{v}-{b}" for c, v, b in MATRIX])
def test_real_qemu(env, config, version, backend):
    binary = QEMUS[version]
    rec = {"config": config.name, "version": version, "backend": backend, "binary": binary}
    if not os.path.exists(binary):
        RECORDS.append(dict(rec, missing=True))
        env["save"]()
        pytest.skip(f"QEMU {version} is not installed at {binary} (scripts/install-qemu.sh)")
    _cleanup(config)
    for path, size in config.files:
        with open(path, "wb") as f:
            f.truncate(size)
    args = qemu_args(config, backend, env["bdf"])
    try:
        res = run_qemu(binary, args, env["observer"], "/tmp/real-qemu.log")
    finally:
        _cleanup(config)
    rec.update(args=args, **res)
    RECORDS.append(rec)
    env["save"]()
    reqs, ready = decode(res["log"])
    if res["reached"]:
        assert not res["killed"], res["stderr"]
        ram0 = [r for r in reqs[:ready] if r.op == "ioctl" and r.name in MAPS and r.ret == 0
                and r.fields.get("iova") == 0]
        assert ram0, f"QEMU realized but GPA 0 was never mapped: {[r.json() for r in reqs]}"
        assert res["exit_status"] == 0, res["stderr"]
    else:
        assert res["exit_status"] not in (0, None) and "qemu-system-x86_64:" in res["stderr"], res
    if backend == "iommufd" and res["reached"]:
        assert any(r.op == "open" and r.name == "/dev/iommu" and r.ret >= 0 for r in reqs)
        assert any(r.name == "IOMMU_IOAS_ALLOC" and r.ret == 0 for r in reqs)
