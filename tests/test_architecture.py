"""docs/architecture.md is true of the code: every module it names exists, and
the import rules it states hold (read from the source with ast, module by module)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"

#: backends/ -> vmm_model/ imports that exist today, with why; nothing else may.
UPWARD: dict[tuple[str, str], str] = {}


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute; relative ones resolved), at any depth."""
    pkg = path.relative_to(REPO).with_suffix("").parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = list(pkg[:len(pkg) - node.level + 1]) if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return out


def _modules(top: str) -> list[Path]:
    return sorted((REPO / top).rglob("*.py"))


def _named_paths() -> set[str]:
    """The paths in the doc's module tables, whole (``backends/simulated/iommufd/``
    rows name their files relative to the table's directory)."""
    names, where = set(), None
    for line in DOC.read_text().splitlines():
        m = re.match(r"(?:QEMU's side|The kernel's side|The simulated kernel), `([^`]+)`", line)
        if m:
            where = m[1]
        elif line.startswith("| `") and where:
            first, second = line.split("|")[1:3]
            for n in re.findall(r"`([^`]+)`", first):
                names.add(where + n)
                if n.endswith("/"):       # a package row lists its files
                    names |= {where + n + f for f in re.findall(r"`([^`/]+\.py)`", second)}
    return names


def test_every_module_the_page_names_exists():
    names = _named_paths()
    assert len(names) > 45, sorted(names)
    missing = [n for n in names if not (REPO / n).exists()]
    assert not missing


def test_backends_do_not_import_vmm_model():
    found = {(str(p.relative_to(REPO)), m.split(".", 2)[0] + "." + m.split(".")[1])
             for p in _modules("backends") for m in _imports(p)
             if m.startswith("vmm_model.")}
    assert found == set(UPWARD)


@pytest.mark.parametrize("module", ["backends/host.py", "backends/kernel_profiles.py",
                                    "backends/uapi.py", "backends/errors.py"])
def test_the_seam_and_profiles_do_not_import_the_simulated_kernel(module):
    assert not [m for m in _imports(REPO / module) if m.startswith("backends.simulated")]


def test_the_simulated_kernel_sees_only_bytes():
    """backends/simulated/ imports neither the clients nor QEMU's side."""
    clients = ("backends.type1", "backends.iommufd", "backends.base", "backends.probe",
               "vmm_model")
    found = [(str(p.relative_to(REPO)), m) for p in _modules("backends/simulated")
             for m in _imports(p) if m.startswith(clients)]
    assert not found


#: Citations of notes a user does not have (users get only the repository): the
#: notes' directory, their file names, and their sections ("§2.1").  Each part is
#: spelled so that this file does not match it.
PRIVATE_NOTES = re.compile(
    r"/work/(?:shared)\b"
    r"|(?<![\w/.-])research[/]"
    r"|\bresearch §\s*\d"
    r"|\b(?:kernel-)?rig §\s*\d"
    r"|\b(?:kernel-iommu-errno|qemu-vfio-dma-map|kernel-rig|migration-and-upstream)(?:\.md\b|\s*§)")


def _tracked(*suffixes: str) -> list[str]:
    """The repository's tracked files with these suffixes, outside tests/bad_inputs/."""
    import subprocess
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                         check=True).stdout.decode()
    return [f for f in out.split("\0")
            if f.endswith(suffixes) and not f.startswith("tests/bad_inputs/")]


# Split so that this file does not cite them itself.
@pytest.mark.parametrize("text,cited", [
    ("rows of research " + "§2.1", True), ("see research" + "/notes" + ".md", True),
    ("/work/" + "shared/seeds/000", True), ("kernel-iommu-errno" + ".md §4", True),
    ("kernel-rig" + " §4b", True), ("rig " + "§4c", True), ("qemu-vfio-dma-map" + ".md", True),
    ("migration-and-upstream" + ".md", True),
    ("https://example.org/research/paper", False), ("research into the errno", False),
    ("docs/kernel-model.md, 'The kernel rig'", False), ("Property '§1' not found", False),
    ("(?:\\.md\\b|research §)", False)])
def test_the_private_notes_pattern(text, cited):
    assert bool(PRIVATE_NOTES.search(text)) is cited


def test_no_file_cites_notes_users_do_not_have():
    """Code, tests, docs and scripts cite upstream source and docs/, never the notes
    the project was written from."""
    files = _tracked(".py", ".md", ".toml", ".sh")
    assert len(files) > 100
    found = [f"{f}:{n}: {line.strip()}" for f in files
             for n, line in enumerate((REPO / f).read_text(errors="replace").splitlines(), 1)
             if PRIVATE_NOTES.search(line)]
    assert not found, "\n".join(found)
