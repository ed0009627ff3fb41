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
# A citation a reader cannot follow: a section number of some other text,
# a path on the machine the project was written on, or a Markdown file the
# repository does not have (URLs aside).  Pages that exist only when built:
# errno-reference.md (docs/hooks.py generates it); no-such-page.md is the dangling
# link tests/test_docs.py plants on purpose.
SECTION_REF = re.compile(r"\b\w+ §\s*\d|/work" "/")
MD_REF = re.compile(r"[\w./-]*\w\.md\b")
URL = re.compile(r"\w+://\S+")
NOT_TRACKED_MD = {"errno-reference.md", "no-such-page.md"}


def unfollowable(line: str, pages: set[str]) -> bool:
    """Whether ``line`` cites something outside the repository (``pages``: its
    Markdown files, by path and by name)."""
    line = URL.sub("", line)
    return bool(SECTION_REF.search(line)) or any(
        t.lstrip("./") not in pages and t.rsplit("/", 1)[-1] not in pages
        for t in MD_REF.findall(line))


def _tracked(*suffixes: str) -> list[str]:
    """The repository's tracked files with these suffixes, outside tests/bad_inputs/."""
    import subprocess
    out = subprocess.run(["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True,
                         check=True).stdout.decode()
    return [f for f in out.split("\0")
            if f.endswith(suffixes) and not f.startswith("tests/bad_inputs/")]


@pytest.mark.parametrize("text,cited", [
    # split so that this file does not match itself
    ("rows of notes " "§2.1", True), ("see notes/errno" ".md", True), ("a path under /work" "/", True),
    ("errno-table" ".md " "§4", True), ("kernel " "§4b", True),
    ("https://example.org/notes/paper.md", False), ("research into the errno", False),
    ("docs/kernel-model.md, 'The kernel rig'", False), ("Property '§1' not found", False),
    ("the [errno reference](../errno-reference.md)", False), ("README.md", False)])
def test_the_unfollowable_citation_rule(text, cited):
    assert unfollowable(text, {"README.md", "docs/kernel-model.md", "kernel-model.md"}
                        | NOT_TRACKED_MD) is cited


def test_no_file_cites_notes_users_do_not_have():
    """Code, tests, docs and scripts cite upstream source and docs/, never the notes
    the project was written from."""
    files = _tracked(".py", ".md", ".toml", ".sh")
    assert len(files) > 100
    md = [f for f in files if f.endswith(".md")]
    pages = set(md) | {f.rsplit("/", 1)[-1] for f in md} | NOT_TRACKED_MD
    found = [f"{f}:{n}: {line.strip()}" for f in files
             for n, line in enumerate((REPO / f).read_text(errors="replace").splitlines(), 1)
             if unfollowable(line, pages)]
    assert not found, "\n".join(found)
