"""The built-in scenarios (``sNN-…``, and ``seed001-…`` for iommufd live
update), each naming the upstream source it reproduces; docs/qemu-versions.md
lists them."""

from __future__ import annotations

from importlib import resources

from backends.errors import UsageError
from vmm_model.scenario import Scenario, loads_toml


def names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files(__name__).iterdir()
                  if p.name.endswith(".toml"))


def load(name: str) -> Scenario:
    """A gallery scenario by name, or by its number prefix (e.g. ``s06``)."""
    matches = [n for n in names() if n == name or n.split("-")[0] == name]
    if len(matches) != 1:
        raise UsageError(f"no scenario file or gallery scenario {name!r}", where="vfio-emu plan",
                         valid="a .toml path or one of: " + ", ".join(names()))
    res = resources.files(__name__) / f"{matches[0]}.toml"
    return loads_toml(res.read_text(), f"gallery/{matches[0]}.toml", matches[0])


def load_all() -> list[Scenario]:
    return [load(n) for n in names()]
