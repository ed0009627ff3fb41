"""ACME VMM's block backends (the VMM's own package, unrelated to vfio-emu's
``backends``: both are importable at the same time)."""

NAMES = ("qcow2", "raw")
