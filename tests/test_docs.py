"""The user guide (mkdocs.yml, docs/) builds with warnings as errors, its API
reference comes from the docstrings and its errno reference from the simulator;
the policies it documents behave as it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config),
                           "-d", str(site)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)


def test_docs_build_strict(tmp_path):
    r = _build(REPO / "mkdocs.yml", tmp_path / "site")
    assert r.returncode == 0, r.stderr
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "plan_scenario" in api and "Per-section differences from" in api
    errnos = (tmp_path / "site" / "errno-reference" / "index.html").read_text()
    assert "<h2 id=\"iommu_ioas_map_file\">IOMMU_IOAS_MAP_FILE" in errnos
    assert "<code>iommufd_ioas_map_file()</code> in <code>drivers/iommu/iommufd/ioas.c</code>" \
        in errnos
    assert "Kernel profiles with this ioctl: 6.13, 6.18," in errnos


def test_a_broken_link_fails_the_build(tmp_path):
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-R", str(REPO / "docs"), str(docs)], check=True)
    (docs / "index.md").write_text((docs / "index.md").read_text() + "\n[gone](no-such-page.md)\n")
    cfg = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    cfg["docs_dir"] = str(docs)
    cfg["hooks"] = [str(REPO / "docs" / "hooks.py")]
    cfg["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(REPO)]
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(cfg))
    r = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert r.returncode == 1
    assert "contains a link 'no-such-page.md', but the target is not found" in r.stderr


def test_documented_policies_do_what_the_guide_says():
    import vmm_model
    text = (REPO / "docs" / "policies.md").read_text()
    ns: dict = {}
    for block in re.findall(r"```python\n(.*?)```", text, re.S)[1:]:
        exec(compile(block, "docs/policies.md", "exec"), ns)
    private = vmm_model.load_command_line("-machine q35,memory-backend=m0 -m 4G -object "
                                          "memory-backend-memfd,id=m0,size=4G,share=off")
    plan = vmm_model.plan_scenario(private, qemu="10.1", policy=ns["never_map_file_private"])
    assert plan.section("m0").ioctls == {"IOMMU_IOAS_MAP"} and plan.ok
    plan = vmm_model.plan_scenario("s17-bar-va-map", policy=ns["bars_only_on_type1"])
    assert plan.section("0000:01:00.0 BAR 0 mmaps[0]").outcomes == ["map no ioctl = 0"]
    unsealed = vmm_model.load_command_line(
        "-machine q35,memory-backend=m0 -m 2G "
        "-object memory-backend-memfd,id=m0,size=2G,share=on,seal=off")
    plan = vmm_model.plan_scenario(unsealed, policy=ns["refuse_unsealed_memfds"])
    assert plan.section("m0").outcomes[0] == "map no ioctl = EPERM"
    assert "memory listener initialization failed" in plan.realize_error
