"""MkDocs hooks for vfio-emu's user guide (mkdocs.yml ``hooks:``).

- ``on_config``: drop nav entries whose page has not been written yet (pages
  owned by other parts of the project land at different times); every other
  problem stays a warning, and ``mkdocs build --strict`` fails on it.
- ``on_files``: generate ``errno-reference.md`` from the simulated kernel itself
  (:func:`errno_reference`), so the reference cannot drift from the code.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SIM = REPO / "backends" / "simulated"
_KFILE = re.compile(r"\b((?:drivers|mm|fs|include)/[\w/.-]+\.[ch])")
_KFUNC = re.compile(r"``?(\w+)\(\)")
_DOC_ERRNO = re.compile(r"-?\b(E[A-Z0-9]{2,})\b")


# --- nav ------------------------------------------------------------------------------

def _prune(items: list, docs: Path, generated: set[str]) -> list:
    out = []
    for item in items:
        if isinstance(item, dict):
            (title, value), = item.items()
            if isinstance(value, list):
                kept = _prune(value, docs, generated)
                if kept:
                    out.append({title: kept})
            elif value in generated or "://" in value or (docs / value).exists():
                out.append(item)
        elif isinstance(item, str) and (item in generated or (docs / item).exists()):
            out.append(item)
    return out


_MISSING: set[str] = set()


def _pages(items: list) -> list[str]:
    out = []
    for item in items:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        out += _pages(value) if isinstance(value, list) else [value]
    return out


def on_config(config, **kwargs):
    if config.get("nav"):
        docs = Path(config["docs_dir"])
        _MISSING.clear()
        _MISSING.update(p for p in _pages(config["nav"])
                        if p != "errno-reference.md" and not (docs / p).exists())
        config["nav"] = _prune(config["nav"], docs, {"errno-reference.md"})
    return config


def on_page_markdown(markdown, page, config, files, **kwargs):
    """A link to a nav page that is not written yet becomes its plain text."""
    if not _MISSING:
        return markdown
    here = os.path.dirname(page.file.src_uri)

    def unlink(m: re.Match) -> str:
        target = os.path.normpath(os.path.join(here, m.group(2).split("#")[0]))
        return m.group(1) if target in _MISSING else m.group(0)
    return re.sub(r"\[([^\]]+)\]\(([\w./-]+\.md(?:#[\w-]*)?)\)", unlink, markdown)


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File
    files.append(File.generated(config, "errno-reference.md", content=errno_reference()))
    return files


# --- errno reference --------------------------------------------------------------------

class _Fn:
    def __init__(self, module: str, node: ast.FunctionDef, aliases: dict[str, str],
                 kfile: str):
        self.module, self.node, self.kfile = module, node, kfile
        self.name = node.name
        self.doc = ast.get_docstring(node) or ""
        m = _KFUNC.match(self.doc.strip()) or re.match(r"(\w+)\(\)", self.doc.strip())
        self.kfunc = m.group(1) if m else node.name.lstrip("_")
        self.errnos: set[str] = set()
        self.switches: set[str] = set()
        self.calls: set[str] = set()
        for n in ast.walk(node):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) \
                    and n.value.id == "errno" and n.attr.startswith("E"):
                self.errnos.add(n.attr)
            elif isinstance(n, ast.Name) and n.id in aliases:
                self.errnos.add(aliases[n.id])
            if isinstance(n, ast.Attribute) and isinstance(n.value, (ast.Name, ast.Attribute)):
                self.switches.add(n.attr)
            if isinstance(n, ast.Call):
                f = n.func
                self.calls.add(f.id if isinstance(f, ast.Name) else
                               f.attr if isinstance(f, ast.Attribute) else "")


def _add(handlers: dict[str, list[str]], ioctl: str, name: str) -> None:
    names = handlers.setdefault(ioctl, [])
    if name and name not in names:
        names.append(name)


def _functions() -> tuple[dict[str, list[_Fn]], dict[str, list[str]]]:
    """Every function of backends/simulated by name, and ioctl name -> handler name."""
    fns: dict[str, list[_Fn]] = {}
    handlers: dict[str, list[str]] = {}
    for path in sorted(SIM.rglob("*.py")):
        tree = ast.parse(path.read_text())
        mdoc = ast.get_docstring(tree) or ""
        m = _KFILE.search(mdoc)
        kfile = m.group(1) if m else ""
        aliases: dict[str, str] = {}
        for n in tree.body:      # _EINVAL = -errno.EINVAL, and tuples of them
            if isinstance(n, ast.Assign):
                targets = [t for t in n.targets]
                values = [n.value]
                if isinstance(n.targets[0], ast.Tuple) and isinstance(n.value, ast.Tuple):
                    targets, values = list(n.targets[0].elts), list(n.value.elts)
                for t, v in zip(targets, values):
                    e = v.operand if isinstance(v, ast.UnaryOp) else v
                    if isinstance(t, ast.Name) and isinstance(e, ast.Attribute) \
                            and isinstance(e.value, ast.Name) and e.value.id == "errno":
                        aliases[t.id] = e.attr
        for n in ast.walk(tree):
            if isinstance(n, ast.FunctionDef):
                fns.setdefault(n.name, []).append(_Fn(path.relative_to(REPO).as_posix(), n, aliases,
                                                        kfile))
            # iommufd's op table: ("IOMMU_IOAS_MAP", iommufd_ioas_map)
            if isinstance(n, ast.Tuple) and len(n.elts) == 2 \
                    and isinstance(n.elts[0], ast.Constant) and isinstance(n.elts[1], ast.Name) \
                    and str(n.elts[0].value).startswith(("IOMMU_", "VFIO_")):
                _add(handlers, str(n.elts[0].value), n.elts[1].id)
            # if request == uapi.VFIO_X: return handler(...)
            if isinstance(n, ast.If) and isinstance(n.test, ast.Compare) \
                    and isinstance(n.test.comparators[0], ast.Attribute) \
                    and n.test.comparators[0].attr.startswith(("VFIO_", "IOMMU_")):
                for r in n.body:
                    if isinstance(r, ast.Return) and r.value is not None:
                        call = next((c for c in ast.walk(r.value) if isinstance(c, ast.Call)),
                                    None)
                        if call is not None:
                            f = call.func
                            name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
                            _add(handlers, n.test.comparators[0].attr, name)
    return fns, handlers


def _profiles_where(switch: str) -> str:
    from backends.kernel_profiles import PROFILES
    values: dict[str, list[str]] = {}
    for p in PROFILES.values():
        v = getattr(p, switch)
        text = ("on" if v else "off") if isinstance(v, bool) else \
            (f"-{__import__('errno').errorcode.get(v, v)}" if switch.endswith("errno") else str(v))
        values.setdefault(text, []).append(p.name)
    return "; ".join(f"{v}: {', '.join(names)}" for v, names in values.items())


def _ioctl_profiles(ioctl: str) -> str | None:
    """The profiles whose /dev/iommu op table registers ``ioctl`` (iommufd only)."""
    from backends.simulated.iommufd.main import _op_table
    from backends.kernel_profiles import PROFILES
    from backends import uapi
    if not ioctl.startswith("IOMMU_") or ioctl not in uapi.IOCTLS:
        return None
    nr = uapi.IOCTLS[ioctl].nr
    have = [p.name for p in PROFILES.values() if p.iommufd and nr in _op_table(p)]
    return ", ".join(have) if have else "none"


_NOTES = re.compile(r"\s*\([^()]*(?:\.md\b|research §)[^()]*\)|;?\s*research [\w.-]+\.md[^;)]*"
                    r"|\s*research §[\w.]+(?: item \d+)?")


def _clean(text: str) -> str:
    """Drop references to notes that are not part of the project."""
    return _NOTES.sub("", text)


def _callees(fn: _Fn, pick, depth: int = 4) -> list[_Fn]:
    """The simulator functions ``fn`` calls, breadth first, ``depth`` levels deep."""
    seen: list[_Fn] = []
    level = [fn]
    for _ in range(depth):
        nxt = []
        for f in level:
            for name in sorted(f.calls):
                c = pick(name)
                if c is not None and c is not fn and c not in seen:
                    seen.append(c)
                    nxt.append(c)
        level = nxt
    return seen


def _handler(fn: _Fn, pick, fields: set[str], lines: list[str]) -> set[str]:
    """The lines for one kernel function answering an ioctl; returns the switches read."""
    callees = _callees(fn, pick)
    errnos = sorted(fn.errnos | set(_DOC_ERRNO.findall(fn.doc)) - {"EXXX"})
    switches = sorted((fn.switches | {s for c in callees for s in c.switches}) & fields)
    where = f" in `{fn.kfile}`" if fn.kfile else ""
    lines += [f"Kernel function: `{fn.kfunc}()`{where} (simulated in `{fn.module}`).", ""]
    if errnos:
        lines.append(f"Errnos returned here: {', '.join(f'`{e}`' for e in errnos)}.")
    via = [(c, sorted(c.errnos | set(_DOC_ERRNO.findall(c.doc)))) for c in callees]
    via = [(c, es) for c, es in via if es]
    if via:
        lines += ["", "| called function | kernel file | errnos |", "|---|---|---|"]
        lines += [f"| `{c.kfunc}()` | {c.kfile or '-'} | {', '.join(es)} |" for c, es in via]
    if switches:
        lines += ["", "Version differences (profile switches read):", ""]
        lines += [f"- `{s}`: {_profiles_where(s)}" for s in switches]
    if fn.doc:
        lines += ["", *("> " + line if line else ">" for line in _clean(fn.doc).splitlines())]
    lines.append("")
    return set(switches)


def errno_reference() -> str:
    from backends.kernel_profiles import SOURCES, KernelProfile
    fields = set(KernelProfile(name="", description="").switches())
    fns, handlers = _functions()

    def pick(name: str) -> _Fn | None:
        return fns[name][0] if name in fns else None

    lines = [
        "# Errno reference",
        "",
        "Generated from the simulated kernel (`backends/simulated/`) when the documentation "
        "is built: for each ioctl the simulator answers, the kernel function behind it, the "
        "errnos that function and the functions it calls return, the kernel profiles that "
        "have the ioctl, and the profile switches (kernel version differences) it reads.  "
        "The text under each ioctl is the function's own docstring: the order in which "
        "the kernel checks.  Profiles: `vfio-emu profiles`; "
        "what a switch means and its upstream source: the table at the end.",
        "",
    ]
    used_switches: set[str] = set()
    from backends import uapi
    for ioctl in sorted(handlers):
        fns_here = [f for f in map(pick, handlers[ioctl]) if f is not None]
        if not fns_here or ioctl not in uapi.IOCTLS:    # not an ioctl: an op or extension code
            continue
        lines += [f"## {ioctl}", ""]
        profs = _ioctl_profiles(ioctl)
        if profs is not None:
            lines += [f"Kernel profiles with this ioctl: {profs}.", ""]
        for fn in fns_here:
            if len(fns_here) > 1:
                lines += [f"### `{fn.kfunc}()`", ""]
            used_switches.update(_handler(fn, pick, fields, lines))
        lines += ["## Profile switches", "",
              "Each switch with the kernel versions where it holds and its upstream source.",
              ""]
    for s in sorted(SOURCES):
        mark = "" if s in used_switches else " (read outside the ioctl handlers)"
        lines += [f"### `{s}`{mark}", "", f"{_profiles_where(s)}", "", _clean(SOURCES[s]), ""]
    return "\n".join(lines)
