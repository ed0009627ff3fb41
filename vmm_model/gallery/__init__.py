"""The built-in scenarios (``sNN-…``, and ``seed001-…`` for iommufd live
update), each naming the upstream source it reproduces; docs/qemu-versions.md
lists them."""

from __future__ import annotations

from importlib import resources

from backends.errors import UsageError
from vmm_model.scenario import Scenario, loads_scenario

_SUFFIXES = (".toml", ".xml")     # .xml: libvirt domains (vmm_model/libvirt.py)


def names() -> list[str]:
    return sorted(p.name.rsplit(".", 1)[0] for p in resources.files(__name__).iterdir()
                  if p.name.endswith(_SUFFIXES))


def load(name: str, libvirt: str | None = None) -> Scenario:
    """A gallery scenario by name, or by its number prefix (e.g. ``s06``)."""
    matches = [n for n in names() if n == name or n.split("-")[0] == name]
    if len(matches) != 1:
        raise UsageError(f"no scenario file or gallery scenario {name!r}", where="vfio-emu plan",
                         valid="a .toml path or one of: " + ", ".join(names()))
    res = next(r for r in (resources.files(__name__) / f"{matches[0]}{x}" for x in _SUFFIXES)
               if r.is_file())
    return loads_scenario(res.read_text(), f"gallery/{res.name}", matches[0], libvirt)


def load_all() -> list[Scenario]:
    return [load(n) for n in names()]
