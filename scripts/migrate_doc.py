"""Fill the ``console`` blocks of docs/migrate.md with real runs of the command
each block starts with (``$ vfio-emu ...``), from the repository root:

    python scripts/migrate_doc.py          # rewrite docs/migrate.md
    python scripts/migrate_doc.py --check  # exit 1 if a block is out of date

tests/test_migration.py runs the check.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "migrate.md"
BLOCK = re.compile(r"```console\n\$ (vfio-emu [^\n]*)\n.*?```", re.S)


def run(command: str) -> str:
    from vmm_model.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        main(shlex.split(command)[1:])
    return out.getvalue()


def render(text: str) -> str:
    return BLOCK.sub(lambda m: f"```console\n$ {m[1]}\n{run(m[1])}```", text)


def main(argv: list[str]) -> int:
    import os
    os.chdir(DOC.parent.parent)
    text = DOC.read_text()
    new = render(text)
    if "--check" in argv:
        return 0 if new == text else 1
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
