"""docs/real-qemu-rig.md from the committed real-QEMU rig artefacts, from the
repository root:

    python scripts/real_qemu_doc.py                  # rewrite docs/real-qemu-rig.md
    python scripts/real_qemu_doc.py --check          # exit 1 if the page is out of date
    python scripts/real_qemu_doc.py RIG.json...      # first turn rig run documents
        (vfio-emu rig run --set real-qemu --json, or the rig test's
        <cache>/results/KERNEL--real-qemu.json) into fixtures/rig/real-qemu-KERNEL.json

tests/test_rig_real_qemu.py runs the check.  Explanations of disagreements
are vmm_model/rig_qemu.py's EXPLAINED.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "real-qemu-rig.md"
FIXTURES = ROOT / "fixtures" / "rig"


def artefacts() -> list[dict]:
    paths = sorted(FIXTURES.glob("real-qemu-*.json"), key=lambda p: p.name.replace("+", "~"))
    return [json.loads(p.read_text()) for p in paths]      # iommufd-7.2 before iommufd-7.2+fix


def page() -> str:
    from vmm_model.rig_qemu import render
    return render(artefacts())


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from vmm_model.rig_qemu import summarize
    inputs = [a for a in argv if not a.startswith("--")]
    for path in inputs:
        art = summarize(json.loads(Path(path).read_text()))
        FIXTURES.mkdir(parents=True, exist_ok=True)
        out = FIXTURES / f"real-qemu-{art['kernel']}.json"
        out.write_text(json.dumps(art, indent=0, sort_keys=True) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    new = page()
    if "--check" in argv:
        if DOC.read_text() != new:
            print(f"{DOC.relative_to(ROOT)} is out of date: python scripts/real_qemu_doc.py",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    print(f"wrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
