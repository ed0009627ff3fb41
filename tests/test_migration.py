"""migrate-check: every rule of vmm_model.migration.RULES driven through the
simulator on both sides (vmm_model/simulate.py: real clients, simulated
kernels), asserting the exact finding (code, verdict, section); QEMU's
blockers per mode and version; the CLI (exit codes, fleets, JSON, bad input)."""

from __future__ import annotations

import dataclasses
import errno
import json

import pytest

from backends.errors import UsageError
from backends.kernel_profiles import get_profile
from vmm_model.cli import main
from vmm_model.migration import (RULES, MigrationCheck, Side, compare_runs, migrate_check,
                                 run_side)
from vmm_model.scenario import loads_toml

HOTPLUG_TOML = '''
qemu = "10.1"
[memory]
size = "2G"
slots = 1
maxmem = "4G"
[[object]]
qom-type = "memory-backend-file"
id = "rom0"
size = "1G"
mem-path = "/dev/shm/rom0"
readonly = true
rom = "off"
[[device]]
driver = "pc-dimm"
memdev = "rom0"
x-hotplug = true
'''
HOTPLUG_READONLY_FILE = loads_toml(HOTPLUG_TOML, "hotplug.toml", "hotplug-readonly-file")

# Only sealed memfd RAM in the flat view (an explicit layout without pc.bios):
# every area MAP_FILE with SEAL|GROW|SHRINK at map time.
SEALED_ONLY = loads_toml('''
qemu = "10.2"
[machine]
memory-backend = "ram0"
[[object]]
qom-type = "memory-backend-memfd"
id = "ram0"
size = "1G"
seal = true
[[section]]
gpa = "0x100000"
size = "0x3ff00000"
mr = "ram0"
offset = "0x100000"
''', "sealed.toml", "sealed-memfd-only")


# Shared memfd RAM, aux-ram-share=on (nothing for cpr-transfer to block) and a BAR:
# from 11.0 on a 6.19+ kernel the BAR is a VFIO dma-buf area in the IOAS.
CPR_BAR = loads_toml('''
qemu = "11.1"
[machine]
memory-backend = "ram0"
aux-ram-share = true
[[object]]
qom-type = "memory-backend-memfd"
id = "ram0"
size = "1G"
share = true
[[device]]
driver = "vfio-pci"
host = "0000:01:00.0"
x-bars = [{index = 0, size = "1M", gpa = "0xfe000000"}]
''', "cpr-bar.toml", "cpr-bar")


def _virtio_mem(populated: str) -> object:
    return loads_toml(f'''
qemu = "10.1"
[memory]
size = "2G"
slots = 1
maxmem = "4G"
[[object]]
qom-type = "memory-backend-memfd"
id = "vmem0"
size = "1G"
[[device]]
driver = "virtio-mem-pci"
id = "vm0"
memdev = "vmem0"
block-size = "2M"
x-populated = ["{populated}"]
''', "vmem.toml", "virtio-mem")


def _file_ram(readonly: bool):
    rom = 'readonly = true\nrom = "on"' if readonly else ""
    return loads_toml(f'''
qemu = "10.1"
[machine]
memory-backend = "m0"
[[object]]
qom-type = "memory-backend-file"
id = "m0"
size = "1G"
mem-path = "/dev/shm/m0"
{rom}
''', "file.toml", "file-ram")


def find(r: MigrationCheck, code: str, section: str):
    hits = [f for f in r.findings if f.code == code and f.section == section]
    assert hits, f"no [{code}] at {section!r} in:\n{r}"
    return hits[0]


RAM_BLOCKER = ("Memory region %s is not compatible with CPR. share=on is required for "
               "memory-backend objects, and aux-ram-share=on is required.")
BAR0 = "0000:01:00.0 BAR 0 mmaps[0] [0xe0000000, 0xe1000000)"
CPR = "mode cpr-transfer"
RAM = "pc.ram [0x100000, 0x80000000)"

# code, scenario, --from, --to, --mode, section, (before, after) or None
CASES = [
    ("rejected", "s34", "qemu=10.2", "qemu=7.2", None, "VM", None),
    ("rejected", "s02", "qemu=10.0,backend=type1", "qemu=7.2,backend=iommufd", None, "VM",
     ("runs", "rejected: QEMU 7.2 rejects this command line: qemu-system-x86_64: -object "
      "iommufd,id=iommufd0: Parameter 'qom-type' does not accept value 'iommufd'")),
    ("backend-unavailable", "s02", "kernel=7.2", "kernel=6.1", None, "VM", None),
    ("attach-fails", "s22", "backend=type1", "backend=iommufd", None, "VM",
     ("runs", "cannot start: /dev/vfio/devices/vfio0: VFIO_DEVICE_ATTACH_IOMMUFD_PT: "
      "[iommufd=6] error attach /dev/vfio/devices/vfio0 (7) to id=1: Invalid argument [EINVAL]")),
    ("realize-fails", "s38", "qemu=10.1,kernel=7.2", "kernel=7.2+fix", None, "VM", None),
    ("realize-works", "s38", "qemu=10.1,kernel=7.2+fix", "kernel=7.2", None, "VM", None),
    ("iommufd-cpr-register-fails", "s02", "qemu=10.1,kernel=6.12", "qemu=10.2", None, "VM", None),
    ("aborts", HOTPLUG_READONLY_FILE, "backend=iommufd,kernel=7.2", "kernel=7.2+fix", None, "VM",
     ("runs", "aborts: hw_error: vfio: DMA mapping failed, unable to continue")),
    ("section-fails", HOTPLUG_READONLY_FILE, "backend=iommufd,kernel=7.2", "kernel=7.2+fix", None,
     "rom0 [0x100000000, 0x140000000)", ("MAP_FILE 0", "MAP_FILE EPERM")),
    ("bar-pfnmap-efault", "s17", "qemu=10.2,backend=type1", "backend=iommufd", None, BAR0,
     ("VA map 0", "VA map EFAULT")),
    ("bar-pfnmap-efault", "s18", "qemu=master,kernel=7.2", "kernel=6.13", None, BAR0,
     ("MAP_FILE 0", "VA map EFAULT")),       # no VFIO dma-buf before 6.19: the BAR by VA
    ("section-works", "s17", "qemu=10.2,backend=iommufd", "backend=type1", None, BAR0,
     ("VA map EFAULT", "VA map 0")),
    ("map-va-to-file", "s03", "qemu=10.0", "qemu=10.1", None, "ram0 [0x100000, 0x80000000)",
     ("VA map 0", "MAP_FILE 0")),
    ("map-file-to-va", "s03", "qemu=10.1", "backend=type1", None, "ram0 [0x100000, 0x80000000)",
     ("MAP_FILE 0", "VA map 0")),
    ("cow-divergence-appears", "s06", "qemu=10.0,backend=type1,kernel=6.12",
     "qemu=10.2,backend=iommufd,kernel=7.2", None, RAM, ("VA map 0", "MAP_FILE 0")),
    ("cow-divergence-gone", "s06", "qemu=10.1", "qemu=11.1", None, RAM,
     ("MAP_FILE 0", "VA map 0")),
    ("section-lost", "s26", "qemu=10.2", "qemu=master", None, "pc.rom [0xc0000, 0xe0000)",
     ("VA map RO 0", "not mapped")),
    ("section-new", "s26", "qemu=master", "qemu=10.2", None, "pc.rom [0xc0000, 0xe0000)",
     ("not mapped", "VA map RO 0")),
    ("memlock-changes", "s02", "backend=type1", "backend=iommufd", None, "VM",
     ("4096.25 MiB mm->locked_vm", "4096.25 MiB user->locked_vm")),
    ("dirty-tracking-lost", "s02", "backend=type1", "backend=iommufd", None, "VM",
     ("container (VFIO_IOMMU_DIRTY_PAGES)",
      "none (IOMMU_HWPT_ALLOC(DIRTY_TRACKING) = EOPNOTSUPP)")),
    ("dirty-tracking-gained", "s02", "backend=compat", "backend=type1", None, "VM",
     ("none (VFIO_IOMMU_GET_INFO has no VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION)",
      "container (VFIO_IOMMU_DIRTY_PAGES)")),
    ("migration-blocked", "s06", "qemu=10.2,backend=type1", "qemu=master", "cpr-transfer", CPR,
     ("source QEMU", "Memory region pc.ram is not compatible with CPR. share=on is required for "
      "memory-backend objects, and aux-ram-share=on is required.")),
    ("blocker-appears", "s34", "qemu=10.2,backend=type1", "backend=compat", "cpr-transfer", CPR,
     ("no such blocker", "VFIO container does not support VFIO_UPDATE_VADDR")),
    ("blocker-gone", "s34", "qemu=10.2,backend=compat", "backend=type1", "cpr-transfer", CPR,
     ("VFIO container does not support VFIO_UPDATE_VADDR", "no such blocker")),
    ("machine-change", "s34", "qemu=10.2", "machine=pc", "cpr-transfer", "VM", ("q35", "pc")),
    ("cpr-host-change", "s34", "qemu=10.2,backend=type1", "backend=iommufd", "cpr-transfer", CPR,
     ("type1 on 7.2", "iommufd on 7.2")),
    ("cpr-map-kind-changes", "s08", "qemu=10.2", "qemu=11.1", "cpr-transfer",
     "ram0 [0x100000, 0x80000000)", ("MAP_FILE 0", "VA map 0")),
    ("cpr-fails", "s34", "qemu=10.0,backend=type1", "qemu=10.0", "cpr-transfer", CPR,
     ("migrate", "vfio 0000:00:01.0: Could not open '/dev/vfio/1': Device or resource busy")),
    ("cpr-fails", "s34", "qemu=10.0,backend=iommufd", "qemu=11.1", "cpr-transfer", CPR,
     ("migrate", "ERROR:hw/vfio/cpr-iommufd.c:220:vfio_cpr_load_device: assertion failed: "
      "(ret)")),
    ("cpr-fails", CPR_BAR, "backend=iommufd,kernel=7.2", "kernel=7.2", "cpr-transfer", CPR,
     ("migrate", "some memory regions do not support IOMMU_IOAS_CHANGE_PROCESS")),
    ("live-update-blocked", "seed001", "qemu=10.2,kernel=7.2", "kernel=7.2+lu", None,
     "live update", ("-", "preserve = EINVAL")),
    ("live-update-preserved", SEALED_ONLY, "kernel=7.2", "kernel=7.2+lu", None, "live update",
     ("-", "preserved; QEMU's next unmap = EBUSY")),
]


@pytest.mark.parametrize("code, sc, src, dst, mode, section, values", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_rule(code, sc, src, dst, mode, section, values):
    r = migrate_check(sc, src, dst, mode)
    f = find(r, code, section)
    assert f.verdict == RULES[code].verdict
    assert r.verdict == ("breaks" if any(x.verdict == "breaks" for x in r.findings) else
                         "changes" if any(x.verdict == "changes" for x in r.findings) else "safe")
    if values:
        assert (f.before, f.after) == values
    assert f.source and f.why


def test_every_rule_has_a_case():
    covered = {c[0] for c in CASES} | {"dma-entry-limit", "readonly-changes", "errno-changes"}
    assert covered == set(RULES)


def test_errno_changes():
    """A hot-plugged DIMM whose file moves from tmpfs (opened read-only: the write-access
    fix refuses EPERM) to ext4 (MAP_FILE cannot pin a non-shmem file: EINVAL); the
    runtime failure aborts QEMU on both sides, the errno differs."""
    side = Side("10.1", "iommufd", "7.2+fix", "q35", "normal")
    ext4 = loads_toml(HOTPLUG_TOML.replace('mem-path = "/dev/shm/rom0"\nreadonly = true\n'
                                           'rom = "off"', 'mem-path = "/var/lib/vm/rom0"\n'
                                           'share = true'), "ext4.toml", "hotplug-ext4")
    fs = compare_runs(run_side(HOTPLUG_READONLY_FILE, side), run_side(ext4, side))
    f, = [f for f in fs if f.code == "errno-changes"]
    assert (f.verdict, f.section, f.before, f.after) == (
        "changes", "rom0 [0x100000000, 0x140000000)", "MAP_FILE EPERM", "MAP_FILE EINVAL")


def test_dma_entry_limit_reached_on_type1():
    """virtio-mem blocks map one by one: on a host with dma_entry_limit=8 (the
    vfio_iommu_type1 module parameter) the 9th map is ENOSPC; iommufd has no limit."""
    sc = _virtio_mem("0-7")     # realize maps pc.ram, pc.bios, then the blocks: the 7th fails
    src = run_side(sc, Side("10.1", "iommufd", "7.2", "q35", "normal"))
    limited = dataclasses.replace(get_profile("7.2"), type1_dma_entry_limit=8)
    dst = run_side(sc, Side("10.1", "type1", limited, "q35", "normal"))
    assert src.starts and src.mappings == 13
    assert dst.dma_limit == 8 and not dst.starts
    fs = compare_runs(src, dst)
    assert [(f.code, f.verdict) for f in fs if f.section == "VM"] == [("realize-fails", "breaks")]
    f, = [f for f in fs if f.code == "dma-entry-limit"]
    assert (f.verdict, f.section, f.after) == ("breaks", "vmem0 [0x100c00000, 0x100e00000)",
                                               "VA map ENOSPC")


def test_readonly_changes():
    """The same file RAM opened readonly=on,rom=on: every section of it is mapped read-only."""
    side = Side("10.1", "type1", "7.2", "q35", "normal")
    fs = compare_runs(run_side(_file_ram(False), side), run_side(_file_ram(True), side))
    f = next(f for f in fs if f.code == "readonly-changes" and f.section == "m0 [0x100000, 0x40000000)")
    assert (f.verdict, f.before, f.after) == ("changes", "VA map 0", "VA map RO 0")


def test_live_update_names_the_unsealed_aux_memfd():
    r = migrate_check("seed001-live-update-memfd", "qemu=10.2,kernel=7.2", "kernel=7.2+lu")
    lu = r.destination.live_update
    assert lu.rc == -errno.EINVAL and lu.after is None
    why = "seals at MAP_FILE time F_SEAL_SEAL: needs F_SEAL_SEAL|F_SEAL_GROW|F_SEAL_SHRINK"
    assert lu.blocking == [("pc.rom [0xc0000, 0xe0000)", why), ("pc.bios [0xe0000, 0x100000)", why),
                           ("pc.bios [0xfffc0000, 0x100000000)", why)]


def test_live_update_preserves_sealed_memfds_in_order():
    r = migrate_check(SEALED_ONLY, "kernel=7.2", "kernel=7.2+lu")
    lu = r.destination.live_update
    assert (lu.rc, lu.after, lu.iommufd_first) == (0, -errno.EBUSY, -errno.ENOENT)
    f = find(r, "live-update-preserved", "live update")
    assert f.why.endswith("the memfds must be preserved first (the iommufd before them: ENOENT)")


def test_live_update_needs_a_cdev():
    r = migrate_check("s02", "backend=type1", "kernel=7.2+lu")
    f = find(r, "live-update-blocked", "live update")
    assert f.after == "preserve = EOPNOTSUPP" and "cdev" in f.why


def test_a_vm_that_starts_nowhere_breaks():
    r = migrate_check("s38", "qemu=10.1,kernel=7.2+fix", "qemu=10.2")
    f = find(r, "realize-fails", "VM")
    assert f.before.startswith("realize fails: ") and r.verdict == "breaks"


def test_same_side_is_safe():
    r = migrate_check("s03", "qemu=10.1", "")
    assert (r.verdict, r.findings) == ("safe", [])
    assert str(r).splitlines()[-1] == "   no differences: safe"


def test_a_mode_on_one_side_is_the_mode_of_the_move():
    r = migrate_check("s34", "qemu=10.2,backend=type1", "mode=cpr-transfer,qemu=master")
    assert (r.source.side.mode, r.destination.side.mode, r.verdict) == (
        "cpr-transfer", "cpr-transfer", "safe")
    with pytest.raises(UsageError, match="one migration mode for both sides, not cpr-exec, "
                                         "cpr-transfer"):
        migrate_check("s34", "mode=cpr-exec", "mode=cpr-transfer")


@pytest.mark.parametrize("release, profile", [("6.12.5", "6.12-regressed"), ("6.12.30", "6.12"),
                                              ("7.2.13", "7.2"), ("6.18.44-amd64", "6.18")])
def test_kernel_release_picks_its_profile(release, profile):
    from vmm_model.migration import parse_side
    assert parse_side(f"kernel={release}") == {"kernel": profile}


def test_destination_inherits_unset_keys_from_the_source():
    r = migrate_check("s02", "qemu=10.0,backend=type1,kernel=6.12", "qemu=10.2")
    assert str(r.destination.side) == "qemu=10.2,backend=type1,kernel=6.12,machine=q35,mode=normal"


# --- QEMU's blockers per mode and version --------------------------------------------------

@pytest.mark.parametrize("qemu, backend, kernel, mode, blockers", [
    ("7.2", "type1", "7.2", "normal", ["VFIO device doesn't support migration"]),
    ("10.1", "type1", "7.2", "normal", ["0000:00:01.0: VFIO migration is not supported in kernel"]),
    ("11.1", "type1", "7.2", "normal",           # query-migrate of the real 11.1.3 in the rig
     ["0000:00:01.0: VFIO migration init failed: migration is not supported in kernel: "
      "Inappropriate ioctl for device"]),
    ("8.2", "type1", "7.2", "cpr-reboot",
     ["0000:00:01.0: VFIO migration is not supported in kernel"]),     # before per-mode blockers
    ("9.0", "type1", "7.2", "cpr-reboot", []),                         # only when suspended
    ("7.2", "type1", "7.2", "cpr-reboot",
     ["Parameter 'mode' does not accept value 'cpr-reboot' (QEMU 7.2 has no migration mode "
      "cpr-reboot)"]),
    ("10.1", "type1", "7.2", "cpr-exec",
     ["Parameter 'mode' does not accept value 'cpr-exec' (QEMU 10.1 has no migration mode "
      "cpr-exec)"]),
    ("10.0", "type1", "7.2", "cpr-transfer", []),        # VFIO blocks normal mode only
    ("10.2", "type1", "7.2", "cpr-transfer", []),
    ("10.2", "compat", "7.2", "cpr-transfer", ["VFIO container does not support VFIO_UPDATE_VADDR"]),
    ("10.2", "compat", "7.2", "cpr-exec", ["VFIO container does not support VFIO_UPDATE_VADDR"]),
    ("master", "iommufd", "6.12", "cpr-transfer",     # anonymous RAM: no MAP_FILE before 6.13
     [RAM_BLOCKER % "pc.ram", RAM_BLOCKER % "pc.bios", RAM_BLOCKER % "pc.rom",
      "vfio iommufd backend does not support IOMMU_IOAS_CHANGE_PROCESS"]),
    ("master", "iommufd", "7.2", "cpr-transfer", []),
])
def test_blockers(qemu, backend, kernel, mode, blockers):
    run = run_side(_aux_or_plain(qemu, kernel), Side(qemu, backend, kernel, "q35", mode))
    assert [m for _, m, _ in run.blockers] == blockers


def _aux_or_plain(qemu: str, kernel: str):
    """s34 (memfd share=on RAM, aux-ram-share=on: nothing private) where QEMU has
    aux-ram-share and the kernel MAP_FILE; else s02 (anonymous RAM)."""
    from vmm_model import gallery
    from vmm_model.qemu_versions import get_qemu
    return gallery.load("s34" if get_qemu(qemu).aux_ram_share and get_profile(kernel).map_file
                        else "s02")



def test_cpr_transfer_ram_blockers_name_every_private_block():
    run = run_side(loads_toml("[memory]\nsize = \"1G\"\n", "m.toml", "plain"),
                   Side("10.2", "type1", "7.2", "q35", "cpr-transfer"))
    assert [k for k, _, _ in run.blockers] == ["cpr-ram pc.ram", "cpr-ram pc.bios",
                                               "cpr-ram pc.rom"]


@pytest.mark.parametrize("backend, failure", [
    ("type1", "vfio 0000:00:01.0: Could not open '/dev/vfio/1': Device or resource busy"),
    ("iommufd", "vfio 0000:00:01.0: error bind device fd=8 to iommufd=7: Invalid argument")])
def test_qemu_10_0_cpr_transfer_is_not_blocked_but_the_new_qemu_cannot_open_the_device(
        backend, failure):
    """QEMU 10.0 has cpr-transfer but no VFIO CPR: vfio_block_migration() blocks normal
    mode only, so query-migrate lists nothing, and the new QEMU's vfio-pci realize
    finds the group (EBUSY) or the cdev (EINVAL) still open in the old one: the
    migration fails (as the kernel rig shows with the real QEMU 10.0.2,
    backends/rig/guest/test_migrate_real.py)."""
    run = run_side(gallery_s34(), Side("10.0", backend, "7.2", "q35", "cpr-transfer"))
    assert run.blockers == []
    assert [(k, m) for k, m, _ in run.failures] == [("vfio-cpr", failure)]


@pytest.mark.parametrize("backend, dst, failure", [
    ("type1", "11.1", "vfio 0000:00:01.0: Could not open '/dev/vfio/1': Device or resource busy"),
    ("iommufd", "11.1", "ERROR:hw/vfio/cpr-iommufd.c:220:vfio_cpr_load_device: assertion "
                        "failed: (ret)"),
    ("iommufd", "10.0", "vfio 0000:00:01.0: error bind device fd=8 to iommufd=7: Invalid "
                        "argument")])
def test_cpr_transfer_from_qemu_10_0_fails_in_the_new_qemu(backend, dst, failure):
    """10.0 hands no VFIO device over: a new 11.1 opens the group (EBUSY) or, for an
    iommufd device, finds none in the CPR state and aborts (as real QEMU 11.1.3 does in
    the kernel rig); nothing is inherited, so no cpr-map-kind-changes either."""
    r = migrate_check("s34", f"qemu=10.0,backend={backend}", f"qemu={dst}", "cpr-transfer")
    assert [(f.code, f.after) for f in r.findings if f.code.startswith("cpr-")] == [
        ("cpr-fails", failure)]


def test_change_process_fails_on_a_dmabuf_bar():
    """iommufd_ioas_change_process() refuses every area that is not
    IOPT_ADDRESS_FILE, a VFIO dma-buf BAR (11.0+ on 6.19+) too, so QEMU 11.1's
    iommufd_cpr_pre_save() fails the cpr-transfer of a VM whose RAM is all shared
    memfd; on 6.18 (no dma-buf) the BAR's VA map is EFAULT, not an area, and the
    move goes through."""
    r = migrate_check(CPR_BAR, "qemu=11.1,backend=iommufd,kernel=7.2", "", "cpr-transfer")
    assert [(f.code, f.after) for f in r.findings] == [
        ("cpr-fails", "some memory regions do not support IOMMU_IOAS_CHANGE_PROCESS")]
    r = migrate_check(CPR_BAR, "qemu=11.1,backend=iommufd,kernel=6.18", "", "cpr-transfer")
    assert r.findings == [] and r.source.failures == []


def gallery_s34():
    from vmm_model import gallery
    return gallery.load("s34")


def test_cpr_exec_registers_no_ram_blocker_but_says_what_is_needed():
    run = run_side(loads_toml("[memory]\nsize = \"1G\"\n", "m.toml", "plain"),
                   Side("10.2", "type1", "7.2", "q35", "cpr-exec"))
    assert run.blockers == []
    assert any("private RAM is not preserved across exec" in n for n in run.needs)


# --- the Python API and the CLI ----------------------------------------------------------------

def test_expect_raises_with_the_report():
    r = migrate_check("s06", "qemu=10.0,backend=type1", "qemu=10.2,backend=iommufd")
    assert r.expect("breaks") is r
    with pytest.raises(AssertionError) as e:
        r.expect("changes")
    text = str(e.value)
    assert text.startswith("migration breaks, expected at most changes:\n== s06-mem-path-hugetlbfs")
    assert "BREAKS  [cow-divergence-appears] pc.ram [0x0, 0x180000000) (3 sections): " \
           "VA map 0 -> MAP_FILE 0" in text


def test_cli_single_vm(capsys):
    rc = main(["migrate-check", "s17", "--from", "qemu=10.2,backend=type1",
               "--to", "backend=iommufd"])
    out = capsys.readouterr().out
    assert rc == 1
    assert "BREAKS  [bar-pfnmap-efault] 0000:01:00.0 BAR 0 mmaps[0] [0xe0000000, 0xe1000000): " \
           "VA map 0 -> VA map EFAULT" in out


@pytest.mark.parametrize("argv, rc", [
    (["s02", "--from", "backend=type1", "--to", "backend=iommufd"], 0),          # changes only
    (["s02", "--from", "backend=type1", "--to", "backend=iommufd", "--strict"], 1),
    (["s03", "--from", "qemu=10.1"], 0),
])
def test_cli_exit_status(argv, rc, capsys):
    assert main(["migrate-check", *argv]) == rc


@pytest.mark.parametrize("argv, message", [
    (["s02", "--to", "x=1"],
     "vfio-emu: error: unknown key 'x' (--to); valid: qemu, backend, kernel, machine, mode"),
    (["s02", "--from", "backend=vfio"], "vfio-emu: error: unknown backend 'vfio' (--from: "
     "backend); valid: type1, iommufd, compat"),
    (["s02", "--from", "kernel=5.4"], "vfio-emu: error: unknown kernel profile '5.4' (--from); "
     "valid: 6.1, 6.6, 6.7, 6.12, 6.12-regressed, 6.13, 6.18, 6.19, 7.1, 7.2, 7.2+fix, 7.2+lu, "
     "a release like 6.12.5, host"),
    (["s02", "--to", "mode=live"], "vfio-emu: error: unknown mode 'live' (--to); valid: "
     "normal, cpr-reboot, cpr-transfer, cpr-exec"),
    (["s02", "--to", "machine"], "vfio-emu: error: machine needs a value (machine=...) (--to)"),
    (["nope.toml"], "vfio-emu: error: no such file (nope.toml)"),
])
def test_cli_bad_input(argv, message, capsys):
    assert main(["migrate-check", *argv]) == 2
    cap = capsys.readouterr()
    assert cap.err.strip() == message and cap.out == ""


def _fleet(tmp_path):
    from importlib import resources
    for name in ("s02-default-ram", "s06-mem-path-hugetlbfs", "s17-bar-va-map"):
        (tmp_path / f"{name}.toml").write_text(
            (resources.files("vmm_model.gallery") / f"{name}.toml").read_text())
    (tmp_path / "vm-memfd.args").write_text(
        "# one VM per file\n-m 2G -object memory-backend-memfd,id=m0,size=2G,share=on "
        "-machine q35,memory-backend=m0\n")
    (tmp_path / "notes.txt").write_text("not a VM")
    return tmp_path


def test_cli_fleet_summary_and_progress(tmp_path, capsys):
    rc = main(["migrate-check", str(_fleet(tmp_path)), "--from", "qemu=10.0,backend=type1",
               "--to", "qemu=10.2,backend=iommufd"])
    cap = capsys.readouterr()
    assert rc == 1
    lines = cap.out.splitlines()
    assert lines[0] == "4 VMs: 2 breaks, 2 changes, 0 safe"
    assert [ln.split()[:2] for ln in lines[2:6]] == [
        ["s06-mem-path-hugetlbfs.toml", "breaks"], ["s17-bar-va-map.toml", "breaks"],
        ["vm-memfd.args", "changes"], ["s02-default-ram.toml", "changes"]]
    assert "  BREAKS  [cow-divergence-appears] 1 VM(s), 3 finding(s): " \
           "s06-mem-path-hugetlbfs.toml" in lines
    assert cap.err.splitlines() == [
        "migrate-check: [1/4] s02-default-ram.toml: changes",
        "migrate-check: [2/4] s06-mem-path-hugetlbfs.toml: breaks",
        "migrate-check: [3/4] s17-bar-va-map.toml: breaks",
        "migrate-check: [4/4] vm-memfd.args: changes"]


def test_cli_fleet_json_with_two_jobs(tmp_path, capsys):
    rc = main(["migrate-check", str(_fleet(tmp_path)), "--from", "qemu=10.0,backend=type1",
               "--to", "qemu=10.2,backend=iommufd", "--json", "--jobs", "2", "--quiet"])
    cap = capsys.readouterr()
    doc = json.loads(cap.out)
    assert rc == 1 and cap.err == ""
    assert (doc["schema_version"], doc["verdict"], doc["summary"]) == (
        1, "breaks", {"safe": 0, "changes": 2, "breaks": 2})
    assert [v["scenario"] for v in doc["vms"]] == [
        "s06-mem-path-hugetlbfs.toml", "s17-bar-va-map.toml", "vm-memfd.args",
        "s02-default-ram.toml"]
    vm = doc["vms"][0]
    assert (vm["from"]["backend"], vm["to"]["backend"], vm["to"]["memlock_scope"]) == (
        "type1", "iommufd", "user->locked_vm")
    assert vm["from"]["dma_entry_limit"] == 65535 and vm["to"]["dma_entry_limit"] is None
    causes = {c["code"]: c for c in doc["causes"]}
    assert causes["bar-pfnmap-efault"]["vms"] == ["s17-bar-va-map.toml"]
    assert causes["bar-pfnmap-efault"]["findings"] == 3


def test_cli_fleet_bad_file_is_bad_input(tmp_path, capsys):
    fleet = _fleet(tmp_path)
    (fleet / "broken.toml").write_text("[memory\n")
    assert main(["migrate-check", str(fleet), "--to", "backend=type1"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith("vfio-emu: error: malformed TOML: ")
    assert cap.err.rstrip().endswith(f"({fleet}/broken.toml:1)")


def test_cli_qemu_arguments(capsys):
    rc = main(["migrate-check", "--from", "qemu=10.1", "--to", "qemu=11.1", "--",
               "-m", "2G", "-object", "memory-backend-memfd,id=m0,size=2G,share=off",
               "-machine", "memory-backend=m0"])
    out = capsys.readouterr().out
    assert rc == 0
    assert out.startswith("== command-line: SAFE\n")
    assert "SAFE    [cow-divergence-gone] m0 [0x0, 0x80000000) (2 sections): MAP_FILE 0 -> " \
           "VA map 0" in out


def test_cli_mode_lists_blockers_per_version(capsys):
    main(["migrate-check", "s34", "--from", "qemu=10.2,backend=type1", "--to", "qemu=master",
          "--mode", "cpr-transfer"])
    out = capsys.readouterr().out
    tail = out[out.index("cpr-transfer blockers per QEMU version (type1, kernel 7.2):"):]
    assert "  10.0          not blocked, fails: vfio 0000:00:01.0: Could not open '/dev/vfio/1': " \
           "Device or resource busy" in tail
    assert "  10.1          none" in tail and "  master        none" in tail


def test_docs_page_is_generated_from_real_runs():
    """docs/migrate.md's console blocks are this command's output (scripts/migrate_doc.py)."""
    import importlib.util
    from pathlib import Path
    path = Path(__file__).resolve().parent.parent / "scripts" / "migrate_doc.py"
    spec = importlib.util.spec_from_file_location("migrate_doc", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--check"]) == 0, "docs/migrate.md is out of date: python scripts/migrate_doc.py"


def test_cli_mode_json_has_blockers_by_version(capsys):
    main(["migrate-check", "s02", "--from", "qemu=10.2,backend=compat", "--mode", "cpr-exec",
          "--json"])
    rows = {r["qemu"]: r for r in json.loads(capsys.readouterr().out)["blockers_by_version"]}
    assert [b["message"] for b in rows["10.1"]["blockers"]] == [
        "Parameter 'mode' does not accept value 'cpr-exec' (QEMU 10.1 has no migration mode "
        "cpr-exec)"]
    assert [b["kind"] for b in rows["10.2"]["blockers"]] == ["cpr-legacy"]


def test_libvirt_default_hugepages_domain(capsys):
    """libvirt's <hugepages/> without <access mode='shared'/>: private hugetlbfs RAM,
    broken by QEMU 11.0.0's MAP_FILE, mapped by VA again from 11.0.2."""
    from pathlib import Path
    xml = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt" / "vm-hugepages-default.xml"
    r = migrate_check(xml, "qemu=10.0,backend=type1", "qemu=11.0.0,backend=iommufd")
    f = find(r, "cow-divergence-appears", "pc.ram [0x100000, 0x80000000)")
    assert (f.before, f.after) == ("VA map 0", "MAP_FILE 0")
    assert "cow-divergence-appears" not in migrate_check(
        xml, "qemu=10.0,backend=type1", "qemu=11.0.2,backend=iommufd").codes()


def test_virtio_mem_blocks_share_one_section_record():
    """A side keeps a dict entry per section; the blocks of one virtio-mem device
    decided alike share one SectionRun, whose region within the RAMBlock follows
    from the key (vmm_model/migration.py _record_sections())."""
    run = run_side(_virtio_mem("0-511"), Side("10.1", "iommufd", "7.2", "q35", "normal"))
    blocks = {k: x for k, x in run.sections.items() if k[0] == "rdm"}
    assert len(blocks) == 512 and len({id(x) for x in blocks.values()}) == 1
    key = ("rdm", 0x100000000 + 5 * 0x200000, 0x200000)
    x = blocks[key]
    assert (x.ramblock, x.kind, x.ioctl, x.ret) == ("vmem0", "file", "IOMMU_IOAS_MAP_FILE", 0)
    assert x.region(key) == (0xa00000, 0xc00000)
    assert x.label(key) == "vmem0 [0x100a00000, 0x100c00000)"


def test_cli_json_is_json_dump_indent_1(tmp_path, capsys):
    """--json streams each side's sections from one template per SectionRun
    (migrate_cli.write_json()): the bytes are json.dump(indent=1)'s, here for a
    RAMBlock id that JSON escapes and that holds the template's ``%``."""
    from types import SimpleNamespace
    from vmm_model.migrate_cli import document
    toml = tmp_path / "vm.toml"
    toml.write_text(HOTPLUG_TOML.replace('"rom0"', r'"r%d\"0"').replace('maxmem = "4G"',
                                                                        'maxmem = "5G"') + '''
[[object]]
qom-type = "memory-backend-memfd"
id = "vmem0"
size = "1G"
seal = true
[[device]]
driver = "virtio-mem-pci"
id = "vm0"
memdev = "vmem0"
block-size = "2M"
x-populated = ["0-3", 7]
''')
    assert main(["migrate-check", str(toml), "--to", "kernel=7.2+fix", "--json"]) == 1
    out = capsys.readouterr().out
    r = migrate_check(str(toml), "", "kernel=7.2+fix")
    doc = document([r], SimpleNamespace(src="", dst="kernel=7.2+fix", mode=None))
    assert out == json.dumps({**doc, "vms": [r.to_json()]}, indent=1) + "\n"
    secs = {s["section"]: s for s in json.loads(out)["vms"][0]["from"]["sections"]}
    assert secs['r%d"0 [0x100000000, 0x140000000)']["ioctl"] == "IOMMU_IOAS_MAP_FILE"
    block = secs["vmem0 [0x140e00000, 0x141000000)"]
    assert (block["iova"], block["size"], block["offset"], block["seals"]) == (
        0x140e00000, 0x200000, 0xe00000, ["F_SEAL_SEAL", "F_SEAL_GROW", "F_SEAL_SHRINK"])


@pytest.mark.parametrize("enabled_before", [True, False])
def test_side_runs_with_the_cyclic_gc_paused(monkeypatch, enabled_before):
    """run_side() records, probes and frees a side's simulation with the cyclic GC
    off (vmm_model/gc_pause.py) and leaves it as it found it."""
    import gc
    from vmm_model import gallery, migration
    seen = []
    probe = migration._probe
    monkeypatch.setattr(migration, "_probe",
                        lambda sim, run: (seen.append(gc.isenabled()), probe(sim, run)))
    (gc.enable if enabled_before else gc.disable)()
    try:
        run = run_side(gallery.load("s02"), Side("10.1", "type1", "7.2", "q35", "normal"))
        assert gc.isenabled() is enabled_before
    finally:
        gc.enable()
    assert seen == [False] and run.probes["VFIO_UNMAP_ALL"] == 1
