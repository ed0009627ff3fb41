"""The rig's guest side: the test sets (backends/rig/sets.py) that ``vfio-emu rig
run`` runs inside a booted kernel, with this package's pytest.ini and conftest.py.
Shipped in the wheel: an installed vfio-emu runs them from here."""
