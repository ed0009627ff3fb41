"""The VM shapes ACME ships, as the QEMU command lines its management layer builds."""

from __future__ import annotations

from vmm_model import Scenario, load_command_line

SHAPES = {
    # 4 GiB of shared memfd RAM: the default shape.
    "small": "-machine q35,memory-backend=m0 -m 4G "
             "-object memory-backend-memfd,id=m0,size=4G,share=on",
    # A private memfd (share=off), as an old template still does.
    "legacy": "-machine q35,memory-backend=m0 -m 4G "
              "-object memory-backend-memfd,id=m0,size=4G,share=off",
    # A memfd without seals (seal=off), which ACME's policy refuses.
    "unsealed": "-machine q35,memory-backend=m0 -m 2G "
                "-object memory-backend-memfd,id=m0,size=2G,share=on,seal=off",
}


def vm(shape: str) -> Scenario:
    """The scenario for one ACME VM shape."""
    return load_command_line(SHAPES[shape], name=f"acme-{shape}")
