"""Command lines an older QEMU refuses, against the real binaries: Debian's 7.2
exits with the message the model puts in the plan ("QEMU 7.2 rejects this
command line: ..."), and bookworm-backports' 10.0 starts with the same command
line, as the model says.  Skips with the reason when a binary is missing."""

from __future__ import annotations

import subprocess

import pytest

from vmm_model.plan import make_plan
from vmm_model.qemu import find_qemu
from qemu_testing import scratch_dir
from vmm_model.qemu_versions import get_qemu
from vmm_model.scenario import from_qemu_args

CASES = {
    "iommufd-object": ["-object", "iommufd,id=iommufd0"],
    "file-rom": ["-m", "64M", "-object", "memory-backend-file,id=m0,size=64M,"
                 "mem-path={d}/ram,rom=on,readonly=on", "-machine", "memory-backend=m0"],
    "file-offset": ["-m", "64M", "-object", "memory-backend-file,id=m0,size=64M,"
                    "mem-path={d}/ram,offset=0", "-machine", "memory-backend=m0"],
    "memory-backend-shm": ["-m", "64M", "-object", "memory-backend-shm,id=m0,size=64M",
                           "-machine", "memory-backend=m0"],
    "aux-ram-share": ["-machine", "q35,aux-ram-share=on"],
}
BASE = ["-nodefaults", "-S", "-display", "none", "-accel", "tcg"]


def start(binary: str, args: list[str]) -> tuple[int, str]:
    """Run QEMU with QMP on stdio, quit at once: (exit status, first stderr line)."""
    p = subprocess.run([binary, *BASE, *args, "-qmp", "stdio"], capture_output=True,
                       text=True, timeout=60, stdin=None,
                       input='{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n')
    return p.returncode, (p.stderr.strip().splitlines() or [""])[0]


@pytest.mark.parametrize("case", list(CASES))
def test_7_2_refuses_with_the_message_in_the_plan_and_10_0_starts(case):
    with scratch_dir() as d:
        with open(f"{d}/ram", "wb") as f:
            f.truncate(64 << 20)
        args = [a.replace("{d}", d) for a in CASES[case]]
        sc = from_qemu_args(args)
        p72 = make_plan(sc, get_qemu("7.2"), "type1")
        p10 = make_plan(sc, get_qemu("10.0"), "type1")
        assert p72.rejected.startswith("QEMU 7.2 rejects this command line: "
                                       "qemu-system-x86_64: ")
        assert p10.rejected is None
        binary, why = find_qemu("7.2")
        if binary is None:
            pytest.skip(why)
        rc, line = start(binary, args)
        assert rc == 1 and line.startswith("qemu-system-x86_64: ")
        # QEMU echoes the option as given; the error after it is the same text
        assert line.rsplit(": ", 1)[1] == p72.rejected.rsplit(": ", 1)[1]
        binary, why = find_qemu("10.0")
        if binary is None:
            pytest.skip(why)
        rc, line = start(binary, args)
        assert (rc, line) == (0, "")
