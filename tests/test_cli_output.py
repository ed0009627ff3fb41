"""Output people can read (issue 19 item 4) and output that streams (issue 18
item 2): 80 columns when not a terminal, --wide, runs of identical sections, a
summary line, --check reasons, --version, examples in every --help, JSON and
JSON lines written as produced, lazy imports."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from vmm_model import cli
from vmm_model.qemu_versions import QEMU_VERSIONS

S27 = """\
== s27-virtio-mem: virtio-mem, block-size 2M, 3 populated blocks: one dma_map p…
   upstream: hw/vfio/listener.c: vfio_ram_discard_notify_populate()
   QEMU 10.2 · backend iommufd · policy fd · simulated kernel 7.2
   when     GPA range                      RAMBlock  action               kernel
   realize  [0x0, 0x80000000)              pc.ram    IOMMU_IOAS_MAP       0
   realize  [0xfffc0000, 0x100000000)      pc.bios   IOMMU_IOAS_MAP       0
   realize  [0x100000000, 0x100400000) ×2  vmem0     IOMMU_IOAS_MAP_FILE  0
   realize  [0x100a00000, 0x100c00000)     vmem0     IOMMU_IOAS_MAP_FILE  0
   reset    [0x0, 0x80000000)              pc.ram    IOMMU_IOAS_UNMAP     0
   reset    [0x0, 0xc0000)                 pc.ram    IOMMU_IOAS_MAP       0
   reset    [0xc0000, 0xe0000)             pc.rom    IOMMU_IOAS_MAP       0
   reset    [0xe0000, 0x100000)            pc.bios   IOMMU_IOAS_MAP       0
   reset    [0x100000, 0x80000000)         pc.ram    IOMMU_IOAS_MAP       0
   (fd, shared, ramd, arguments, flags left out to fit 80 columns: --wide shows
     them)
   live at the end (8): [0x0, 0xc0000), [0xc0000, 0xe0000) ro, [0xe0000,
     0x100000) ro, [0x100000, 0x80000000), [0xfffc0000, 0x100000000) ro,
     [0x100000000, 0x100200000), [0x100200000, 0x100400000), [0x100a00000,
     0x100c00000)
   summary: 9 sections mapped: 6 by VA, 3 by file, 0 failed; 0 skipped; 0
     hazards; realize ok
"""


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_text_fits_80_columns_with_runs_and_a_summary(capsys):
    rc, out, err = run(capsys, "plan", "s27", "--qemu", "10.2", "--backend", "iommufd",
                       "--no-compare")
    assert (rc, out, err) == (0, S27, "")


def test_all_lists_every_section_and_wide_every_column(capsys):
    rc, out, err = run(capsys, "plan", "s27", "--qemu", "10.2", "--backend", "iommufd",
                       "--no-compare", "--all", "--wide")
    rows = [ln for ln in out.splitlines() if "vmem0" in ln]
    assert [r.split()[1:3] for r in rows] == [["[0x100000000,", "0x100200000)"],
                                               ["[0x100200000,", "0x100400000)"],
                                               ["[0x100a00000,", "0x100c00000)"]]
    assert "iova=0x100200000 length=0x200000 fd=3 start=0x200000" in rows[1]
    assert "FIXED_IOVA|WRITEABLE|READABLE" in rows[1]
    assert "left out" not in out and max(map(len, out.splitlines())) > 80


def test_every_gallery_line_fits_80_columns(capsys):
    rc, out, err = run(capsys, "plan", "--qemu", "10.2")
    assert rc == 0 and err == ""
    # plan text (the libvirt/command-line translation report above a plan is not cut)
    assert max(len(ln) for ln in out.splitlines() if ln.startswith(("== ", "   "))) <= 80
    assert re.search(r"^\d+ plans: \d+ realize ok, \d+ not; \d+ hazards$", out.splitlines()[-1])


def test_long_runs_are_one_row(capsys, tmp_path):
    path = tmp_path / "vm.toml"
    path.write_text('[memory]\nsize = "4G"\nmaxmem = "8G"\n[[object]]\nqom-type = '
                    '"memory-backend-memfd"\nid = "v0"\nsize = "1G"\n[[device]]\ndriver = '
                    '"virtio-mem-pci"\nmemdev = "v0"\nx-populated = ["0-511"]\n')
    rc, out, err = run(capsys, "plan", path, "--qemu", "10.2", "--backend", "iommufd")
    assert rc == 0
    assert re.search(r"^   realize  \[0x180000000, 0x1c0000000\) ×512  v0 +MAP_FILE +0$",
                     out, re.M), out       # (short ioctl names: the row fits 80 columns)
    assert "live at the end (518): " in out and "… (--all lists them)" in out
    assert out.splitlines()[-2:] == [
        "   summary: 519 sections mapped: 7 by VA, 512 by file, 0 failed; 0 skipped; 0",
        "     hazards; realize ok"]


def test_check_prints_each_reason(capsys):
    rc, out, err = run(capsys, "plan", "s17", "--qemu", "10.2", "--backend", "iommufd",
                       "--check", "--no-compare")
    assert rc == 1
    assert err.splitlines() == [
        f"vfio-emu: check: s17-bar-va-map (QEMU 10.2, iommufd): IOMMU_IOAS_MAP of 0000:01:00.0 "
        f"BAR {b} mmaps[{m}] [{r}) = -14 [EFAULT]" for b, m, r in
        ((0, 0, "0xe0000000, 0xe1000000"), (2, 0, "0xe1000000, 0xe1003000"),
         (2, 1, "0xe1004000, 0xe1010000"))]
    assert "3 failed" in out


def test_version(capsys):
    rc, out, err = run(capsys, "--version")
    assert (rc, out, err) == (0, "vfio-emu 0.1.0\n", "")


def test_help_examples_use_the_newest_qemu_release(capsys):
    newest = max((q for q in QEMU_VERSIONS if re.fullmatch(r"\d+\.\d+", q)),
                 key=lambda v: tuple(map(int, v.split("."))))
    assert f"--qemu {newest} --backend iommufd --check" in cli.examples("plan")
    for cmd in [None, *cli.COMMANDS]:
        rc, out, err = run(capsys, *([cmd] if cmd else []), "--help")
        assert rc == 0 and err == ""
        tail = out[out.rindex("examples:"):].splitlines()
        assert len(tail) >= 3 and all(ln.startswith("  vfio-emu") or ln.startswith("      ")
                                      for ln in tail[1:]), (cmd, tail)


def test_no_reference_to_documents_users_do_not_have(capsys):
    texts = [run(capsys, "plan", "--qemu", "all", "--wide")[1],
             run(capsys, "plan", "--qemu", "10.2", "--json")[1],
             run(capsys, "gallery", "--json")[1]]
    for t in texts:
        for bad in ("research", "seed 0", "§", "kernel-iommu-errno", "qemu-vfio-dma-map"):
            assert bad not in t, bad


def test_json_streams_the_same_document(capsys):
    from vmm_model import gallery, report
    from vmm_model.plan import make_plan
    from vmm_model.qemu_versions import get_qemu
    plans = [make_plan(gallery.load(n), get_qemu("10.2"), "iommufd", None, "7.2")
             for n in ("s06", "s17", "s27")]
    import io
    buf = io.StringIO()
    report.write_json(plans, buf)
    assert json.loads(buf.getvalue()) == report.document(plans)
    lines = io.StringIO()
    report.write_json(plans, lines, jsonl=True)
    recs = [json.loads(ln) for ln in lines.getvalue().splitlines()]
    doc = report.document(plans)
    assert [r for r in recs if r["record"] == "plan"][1]["summary"] == doc["plans"][1]["summary"]
    events = [{k: v for k, v in r.items() if k not in ("record", "plan", "index")}
              for r in recs if r["record"] == "event" and r["plan"] == 2]
    assert events == doc["plans"][2]["events"]
    # onto a file's text layer: ASCII bytes straight to its buffer, in order with
    # the text around them; re-encoded when the encoding is not ASCII-compatible
    for enc in ("utf-8", "utf-16"):
        raw = io.BytesIO()
        out = io.TextIOWrapper(raw, encoding=enc)
        out.write("[")
        report.write_json(plans, out)
        out.write("]")
        out.flush()
        assert json.loads(raw.getvalue().decode(enc)) == [doc]


def test_jsonl_on_the_command_line(capsys):
    rc, out, err = run(capsys, "plan", "s27", "--qemu", "10.2", "--backend", "iommufd",
                       "--jsonl")
    recs = [json.loads(ln) for ln in out.splitlines()]
    doc = json.loads(run(capsys, "plan", "s27", "--qemu", "10.2", "--backend", "iommufd",
                         "--json")[1])["plans"][0]
    assert rc == 0 and [r["record"] for r in recs] == (["plan"] + ["event"] * len(doc["events"])
                                                        + ["live"] * len(doc["live"]))
    assert recs[0]["summary"] == {"by_va": 6, "by_file": 3, "no_ioctl": 0, "failed": 0,
                                  "skipped": 0, "hazards": 0, "result": "realize ok",
                                  "check": []}
    assert recs[3]["ramblock"] == "vmem0" and recs[3]["other_qemu"] == [
        {"versions": ["9.0", "9.1", "9.2", "10.0"],
         "decision": "IOMMU_IOAS_MAP FIXED_IOVA|WRITEABLE|READABLE"}]


def test_help_imports_no_subcommand():
    code = ("import io, sys, contextlib\nfrom vmm_model.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            "print(sorted(m for m in sys.modules if m.startswith(('vmm_model', 'backends'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    # vmm_model._imports: the package's guard against a user's own top-level 'backends'
    assert out.strip() == ("['backends', 'backends.errors', 'vmm_model', 'vmm_model._imports', "
                           "'vmm_model.cli']")
