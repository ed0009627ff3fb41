"""What QEMU refuses, vfio-emu refuses with QEMU's own message: the same command
line is given to the real QEMU binaries on this machine and to ``vfio-emu plan
--``; QEMU's error text must appear verbatim in vfio-emu's error line.  And what
QEMU accepts, vfio-emu plans (exit 0)."""

from __future__ import annotations

import re
import subprocess

import pytest

from tests.bad_inputs.conftest import assert_error
from vmm_model.qemu import find_qemu

COMMON = ["-machine", "q35,accel=tcg", "-display", "none", "-nodefaults", "-S",
          "-monitor", "none", "-serial", "none"]
RAM = "memory-backend-ram,id=m0,size=1G"
RAM1 = "memory-backend-ram,id=m1,size=1G"
REFUSED = {
    "dimm-no-slots": ["-m", "1G", "-object", RAM, "-device", "pc-dimm,memdev=m0"],
    "slots-no-maxmem": ["-m", "1G,slots=2"],
    "maxmem-equal": ["-m", "1G,slots=2,maxmem=1G"],
    "maxmem-below": ["-m", "2G,slots=2,maxmem=1G"],
    "too-many-slots": ["-m", "1G,slots=300,maxmem=4G"],
    "dimm-busy-memdev": ["-m", "1G,slots=2,maxmem=4G", "-object", RAM,
                         "-device", "pc-dimm,memdev=m0", "-device", "pc-dimm,memdev=m0"],
    "dimm-machine-memdev": ["-m", "1G,slots=2,maxmem=2G", "-object", RAM,
                            "-machine", "memory-backend=m0", "-device", "pc-dimm,memdev=m0"],
    "dimm-numa-memdev": ["-m", "1G,slots=2,maxmem=4G", "-object", RAM, "-numa",
                         "node,memdev=m0", "-device", "pc-dimm,memdev=m0"],
    "virtio-mem-busy": ["-m", "1G,maxmem=4G", "-object", RAM, "-device",
                        "virtio-mem-pci,memdev=m0", "-device", "virtio-mem-pci,memdev=m0"],
    "not-enough-space": ["-m", "1G,slots=2,maxmem=2G", "-object", RAM, "-object", RAM1,
                         "-device", "pc-dimm,memdev=m0", "-device", "pc-dimm,memdev=m1"],
    "addr-unaligned": ["-m", "1G,slots=2,maxmem=3G", "-object", RAM,
                       "-device", "pc-dimm,memdev=m0,addr=0x100001000"],
    "addr-below": ["-m", "1G,slots=2,maxmem=3G", "-object", RAM,
                   "-device", "pc-dimm,memdev=m0,addr=0x80000000"],
    "addr-beyond": ["-m", "1G,slots=2,maxmem=3G", "-object", RAM,
                    "-device", "pc-dimm,memdev=m0,addr=0x200000000"],
    "addr-conflict": ["-m", "1G,slots=2,maxmem=3G", "-object", RAM, "-object", RAM1,
                      "-device", "pc-dimm,memdev=m0,addr=0x100000000,id=d0",
                      "-device", "pc-dimm,memdev=m1,addr=0x100000000"],
    "size-not-aligned": ["-m", "1G,slots=2,maxmem=3G", "-object",
                         "memory-backend-ram,id=m0,size=1001M", "-device", "pc-dimm,memdev=m0"],
    "slot-out-of-range": ["-m", "1G,slots=2,maxmem=4G", "-object", RAM,
                          "-device", "pc-dimm,memdev=m0,slot=5"],
    "slot-busy": ["-m", "1G,slots=2,maxmem=4G", "-object", RAM, "-object", RAM1,
                  "-device", "pc-dimm,memdev=m0,slot=0", "-device", "pc-dimm,memdev=m1,slot=0"],
    "no-free-slot": ["-m", "1G,slots=1,maxmem=4G", "-object", RAM, "-object", RAM1,
                     "-device", "pc-dimm,memdev=m0", "-device", "pc-dimm,memdev=m1"],
    "dimm-node": ["-m", "1G,slots=2,maxmem=4G", "-object", RAM,
                  "-device", "pc-dimm,memdev=m0,node=1"],
    "virtio-mem-node": ["-m", "1G,maxmem=4G", "-object", RAM,
                        "-device", "virtio-mem-pci,memdev=m0,node=3"],
    "block-size-not-pow2": ["-m", "1G,maxmem=4G", "-object", RAM,
                            "-device", "virtio-mem-pci,memdev=m0,block-size=3M"],
    "block-size-small": ["-m", "1G,maxmem=4G", "-object", RAM,
                         "-device", "virtio-mem-pci,memdev=m0,block-size=512K"],
    "virtio-mem-no-maxmem": ["-m", "1G", "-object", RAM, "-device", "virtio-mem-pci,memdev=m0"],
    "unknown-device": ["-m", "1G", "-device", "foo-bar"],
    "unknown-json-device": ["-m", "1G", "-device", '{"driver":"foo-bar"}'],
    "iommufd-missing": ["-m", "1G", "-device", "vfio-pci,host=0000:01:00.0,iommufd=nope"],
    "iommufd-wrong-type": ["-m", "1G", "-object", RAM,
                           "-device", "vfio-pci,host=0000:01:00.0,iommufd=m0"],
}
ACCEPTED = {
    "m-zero-is-default": ["-m", "0"],
    "memfd-dimm-4k-aligned": ["-m", "1G,slots=2,maxmem=3G", "-object",
                              "memory-backend-memfd,id=m0,size=1G",
                              "-device", "pc-dimm,memdev=m0,addr=0x140001000"],
    "virtio-mem-maxmem-no-slots": ["-m", "1G,maxmem=4G", "-object", RAM,
                                   "-device", "virtio-mem-pci,memdev=m0"],
    "unmodelled-device": ["-m", "1G", "-device", "virtio-rng-pci"],
}
# iommufd= exists from QEMU 9.0 (vfio/iommufd); 7.2 says the property is not found
NOT_IN = {"7.2": {"iommufd-missing", "iommufd-wrong-type"}}


def qemu_says(binary: str, argv: list[str]) -> str | None:
    """QEMU's error message (location prefix removed), or None if it started."""
    try:
        p = subprocess.run([binary, *COMMON, *argv], capture_output=True, text=True,
                           timeout=4, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return None                        # paused (-S) and running: accepted
    line = p.stderr.strip().splitlines()[-1]
    line = line.removeprefix(binary.rsplit("/", 1)[-1] + ": ")
    for a in argv:                         # "-device pc-dimm,...: message"
        line = line.removeprefix(a + ": ")
        for opt in ("-device", "-object", "-machine", "-m", "-numa"):
            line = line.removeprefix(f"{opt} {a}: ")
    return line


@pytest.mark.parametrize("version", ["7.2", "10.0"])
@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_with_qemus_message(vfio_emu, version, name):
    binary, why = find_qemu(version)
    if binary is None:
        pytest.skip(why)
    argv = REFUSED[name]
    says = qemu_says(binary, argv)
    if name in NOT_IN.get(version, ()):
        assert says == "Property 'vfio-pci.iommufd' not found"
        return
    assert says, f"QEMU {version} accepted {argv}"
    assert_error(vfio_emu("plan", "--kernel", "none", "--qemu", version, "--", *COMMON, *argv),
                 says)


@pytest.mark.parametrize("name", list(ACCEPTED))
def test_accepted_like_qemu(vfio_emu, name):
    binary, why = find_qemu("10.0")
    if binary is None:
        pytest.skip(why)
    assert qemu_says(binary, ACCEPTED[name]) is None
    r = vfio_emu("plan", "--kernel", "none", "--qemu", "10.0", "--no-compare", "--",
                 *COMMON, *ACCEPTED[name])
    assert r.rc == 0 and r.err == "", r
    if name == "m-zero-is-default":      # 128 MiB, not an empty VM
        assert re.search(r"\[0x100000, 0x8000000\)\s+pc\.ram", r.out)
