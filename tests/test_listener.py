"""QEMU's failure handling in vfio_listener_region_add() and vfio_container_region_add()
(hw/vfio/listener.c, 10.1+; hw/vfio/common.c before): a BAR (RAM device) failure
warns and continues (test_17_*), a RAM failure at init fails realize (test_20_*)
and at runtime aborts QEMU (test_21_*), a virtio-mem failure unmaps the whole
section (test_27_*).  test_17_* and test_27_* use gallery scenarios s17 and s27.

The backend here is a test double that answers chosen IOVAs with a chosen errno:
no kernel model exists yet (the simulated kernel is issue 4). What is tested is
QEMU's side — which failures are fatal, when, and the exact messages.
"""

import errno

import pytest

from backends.base import DmaResult, strerror
from vmm_model.container_legacy import Type1Plan
from vmm_model.iommufd import IommufdPlan
from vmm_model import gallery
from vmm_model.container import VFIOContainer, attach, realize_error
from vmm_model.machine import build_machine
from vmm_model.qemu_versions import get_qemu
from vmm_model.scenario import loads_toml


def failing(base, fail: dict[int, int]):
    """A planning backend whose dma_map / dma_map_file at the given IOVAs returns -errno."""

    class Failing(base):
        def dma_map(self, iova, size, vaddr, readonly, mr=None):
            r = super().dma_map(iova, size, vaddr, readonly, mr)
            note = f"VFIO_MAP_DMA failed: {strerror(-fail[iova])}" if base is Type1Plan \
                and iova in fail else ""
            return DmaResult(-fail[iova], r.request, note=note) if iova in fail else r

        if base is IommufdPlan:
            def dma_map_file(self, iova, size, fd, start, readonly):
                r = super().dma_map_file(iova, size, fd, start, readonly)
                return DmaResult(-fail[iova], r.request) if iova in fail else r

    return Failing()


def run(sc, qemu, backend):
    m = build_machine(sc, get_qemu(qemu))
    return m, attach(m, VFIOContainer(backend, get_qemu(qemu)))


def test_20_init_time_ram_failure_fails_realize_with_first_error():
    sc = gallery.load("s15")
    # at realize q35's PAM is still disabled: ram-below-4g is one section from 0
    m, c = run(sc, "10.1", failing(Type1Plan, {0x0: errno.EFAULT, 0x100000000: errno.ENOMEM}))
    host = m.regions["ram0"].ram_block.host
    assert c.error == (f"Region ram0: vfio_container_dma_map(0x55d0c0a0b000, 0x0, "
                       f"0x80000000, 0x{host:x}) = -14 (Bad address)")
    assert realize_error(m, c).startswith("vfio vfio-pci: memory listener initialization failed: "
                                          "Region ram0: vfio_container_dma_map(")
    assert not c.initialized and c.aborted is None
    assert [e.fatal for e in c.events if e.kind == "map" and e.result.ret] == [True, True]


def test_20_qemu_7_2_names_the_function_vfio_dma_map():
    m, c = run(gallery.load("s15"), "7.2", failing(Type1Plan, {0x0: errno.EFAULT}))
    assert c.error.startswith("Region ram0: vfio_dma_map(0x55d0c0a0b000, 0x0, 0x80000000,")
    # up to 9.2 the type1 backend prints its own line first (889695f8f3c1 removed it)
    ev = next(e for e in c.events if e.kind == "map" and e.result.ret)
    assert ev.message.split("\n")[0] == "VFIO_MAP_DMA failed: Bad address"
    m, c = run(gallery.load("s15"), "10.0", failing(Type1Plan, {0x0: errno.EFAULT}))
    ev = next(e for e in c.events if e.kind == "map" and e.result.ret)
    assert ev.message.startswith("vfio_container_dma_map(")


SC_HOTPLUG = """
qemu = "10.1"
[memory]
size = "1G"
slots = 1
maxmem = "2G"
[[object]]
qom-type = "memory-backend-memfd"
id = "d0"
size = "512M"
[[device]]
driver = "pc-dimm"
memdev = "d0"
x-hotplug = true
"""


def test_21_runtime_failure_aborts_qemu():
    sc = loads_toml(SC_HOTPLUG, "hotplug.toml", "hotplug")
    m, c = run(sc, "10.1", failing(IommufdPlan, {0x100000000: errno.ENOSPC}))
    assert c.initialized and c.error is None
    ev = c.events[-1]
    assert ev.fatal and ev.section.mr.name == "d0"
    assert ev.message.endswith("= -28 (No space left on device)\n"
                               "vfio: DMA mapping failed, unable to continue")
    assert c.aborted == "hw_error: vfio: DMA mapping failed, unable to continue"


def test_17_ram_device_failure_warns_once_and_continues():
    sc = gallery.load("s17")
    fail = {0xE0000000: errno.EFAULT, 0xE1000000: errno.EFAULT}
    m, c = run(sc, "10.2", failing(IommufdPlan, fail))
    bad = [e for e in c.events if e.kind == "map" and e.result.ret]
    assert len(bad) == 2 and not any(e.fatal for e in bad)
    assert bad[0].message.startswith("warning: vfio_container_dma_map(")
    assert bad[0].message.endswith("= -14 (Bad address)\n0000:01:00.0: PCI peer-to-peer "
                                   "transactions on BARs are not supported.")
    assert bad[1].message.startswith("(warned once already)")
    assert c.error is None and c.initialized
    # RAM after the BARs was still mapped
    assert any(e.iova == 0xFFFC0000 and e.result.ret is None for e in c.events if e.kind == "map")


def test_ram_device_failure_before_10_0_is_error_report():
    m, c = run(gallery.load("s17"), "9.2", failing(Type1Plan, {0xE0000000: errno.EFAULT}))
    ev = next(e for e in c.events if e.kind == "map" and e.result.ret)
    assert ev.message.endswith("failed to vfio_dma_map. pci p2p may not work") and not ev.fatal
    assert c.error is None


def test_27_virtio_mem_failure_unmaps_whole_section_and_fails():
    sc = gallery.load("s27")
    base = 0x100000000
    m, c = run(sc, "10.1", failing(IommufdPlan, {base + (2 << 20): errno.ENOMEM}))
    rdm = [e for e in c.events if e.path == "rdm"]
    assert [(e.kind, e.iova, e.size) for e in rdm[:3]] == [
        ("map", base, 2 << 20), ("map", base + (2 << 20), 2 << 20), ("unmap", base, 1 << 30)]
    assert c.error.startswith("Region vmem0: vfio_container_dma_map(") and "-12" in c.error


@pytest.mark.parametrize("qemu", ["10.1", "11.1"])
def test_viommu_map_failure_is_error_report_only(qemu):
    sc = gallery.load("s29")
    m, c = run(sc, qemu, failing(IommufdPlan, {0x100000: errno.EFAULT}))
    ev = next(e for e in c.events if e.path == "iommu" and e.kind == "map")
    assert ev.result.ret == -errno.EFAULT and not ev.fatal
    assert ev.message.startswith("vfio_container_dma_map(") and c.error is None


@pytest.mark.parametrize("qemu,kernel,fails", [
    ("10.2", "6.12", True),       # 3ca0a0ab05ca: the blocker's 0 read as false
    ("10.2", "6.13", False),      # IOMMU_IOAS_CHANGE_PROCESS: no blocker needed
    ("11.0.0", "6.12", False),    # fixed by 0e387bd1dff4
    ("10.1", "6.12", False),
])
def test_10_2_iommufd_cpr_registration_fails_realize_on_kernels_before_6_13(qemu, kernel, fails):
    from vmm_model.plan import make_plan
    p = make_plan(gallery.load("s02"), get_qemu(qemu), "iommufd", kernel=kernel)
    if fails:
        assert p.events == [] and p.realize_error.startswith(
            "vfio vfio-pci: iommufd_backend_connect() fails: vfio_iommufd_cpr_register_iommufd()")
    else:
        assert p.realize_error is None and p.events
    t = make_plan(gallery.load("s02"), get_qemu(qemu), "type1", kernel=kernel)
    assert t.realize_error is None


@pytest.mark.parametrize("kernel,ioctl,ret", [
    ("7.2", "IOMMU_IOAS_MAP_FILE", 0),          # VFIO_DEVICE_FEATURE_DMA_BUF (6.19+)
    ("6.18", "IOMMU_IOAS_MAP", -errno.EFAULT),   # ENOTTY: no dma-buf, VA map of the PFNMAP
])
def test_11_0_bar_dmabuf_needs_a_kernel_with_vfio_dma_buf(kernel, ioctl, ret):
    from vmm_model.plan import make_plan
    p = make_plan(gallery.load("s18"), get_qemu("11.1"), "iommufd", kernel=kernel)
    bars = [e for e in p.events if e.kind == "map" and e.section.mr.ram_device]
    assert bars and {(e.result.request.ioctl, e.result.ret) for e in bars} == {(ioctl, ret)}
    assert p.realize_error is None            # ram_device failures only warn


@pytest.mark.parametrize("qemu", ["10.1", "11.0.2", "11.1", "master"])
def test_map_file_failure_fails_realize_without_a_va_retry(qemu):
    """Shared RAM on ext4: MAP_FILE gets EINVAL from the kernel (memfd_pin_folios()
    takes shmem and hugetlbfs only).  No version retries by VA: the one request at
    each IOVA is the MAP_FILE, and realize fails with its error."""
    from vmm_model.plan import make_plan
    p = make_plan(gallery.load("s13"), get_qemu(qemu), "iommufd", kernel="7.2")
    at0 = [e for e in p.events if e.kind == "map" and e.iova == 0]
    assert [(e.result.request.ioctl, e.result.ret) for e in at0] == \
        [("IOMMU_IOAS_MAP_FILE", -errno.EINVAL)]
    assert p.realize_error.endswith("Region ram0: vfio_container_dma_map(0x55d0c0a0b000, "
                                    f"0x0, 0x80000000, 0x{at0[0].vaddr:x}) = -22 "
                                    "(Invalid argument)")


def test_legacy_cpr_incoming_replays_the_sources_view_once_after_load():
    """hw/vfio/cpr-legacy.c (10.1): vfio_container_post_load() registers the
    listener after reset and the device state load, so the incoming QEMU issues
    one VADDR-only map per range of the source's (post-reset) view and no
    reset-time unmap; 10.0 has no VFIO CPR, so its ordinary map of the still
    mapped range fails realize (EEXIST)."""
    from vmm_model.plan import make_plan
    p = make_plan(gallery.load("s33"), get_qemu("10.1"), "type1", kernel="7.2")
    maps = [(e.phase, e.iova, e.size, e.result.request.flag_names(), e.result.ret)
            for e in p.events if e.kind in ("map", "unmap")]
    assert maps == [("realize", 0x0, 0xC0000, "VADDR", 0),
                    ("realize", 0xC0000, 0x20000, "VADDR", 0),
                    ("realize", 0xE0000, 0x20000, "VADDR", 0),
                    ("realize", 0x100000, 0x7FF00000, "VADDR", 0),
                    ("realize", 0xFFFC0000, 0x40000, "VADDR", 0)]
    old = make_plan(gallery.load("s33"), get_qemu("10.0"), "type1", kernel="7.2")
    assert old.realize_error.endswith("= -17 (File exists)")


@pytest.mark.parametrize("enabled_before", [True, False])
def test_replay_pauses_the_cyclic_gc_and_restores_it(enabled_before):
    """attach() replays with the cyclic garbage collector off (every map keeps its
    objects: a collection would find nothing) and leaves it as it found it."""
    import gc
    seen = []

    class Watching(IommufdPlan):
        def dma_map(self, iova, size, vaddr, readonly, mr=None):
            seen.append(gc.isenabled())
            return super().dma_map(iova, size, vaddr, readonly, mr)

    (gc.enable if enabled_before else gc.disable)()
    try:
        m, c = run(gallery.load("s15"), "10.1", Watching())
        assert gc.isenabled() is enabled_before
    finally:
        gc.enable()
    assert c.initialized and seen and not any(seen)


@pytest.mark.parametrize("scenario", ["s08-memfd-share-off", "s03-ram-share-on", "s18-bar-dmabuf",
                                      "s10-file-offset", "s38-readonly-file-rom-off"])
@pytest.mark.parametrize("policy", ["va-only", "fd", "fd-shared-or-ram-device"])
def test_region_mapper_sends_what_the_policy_sends(scenario, policy):
    """policy.region_mapper() decides once per region; every block's request (ioctl
    and bytes: fd, file offset, flags) is the one the policy itself builds."""
    from vmm_model.policy import POLICIES, region_mapper
    m = build_machine(gallery.load(scenario), get_qemu("11.1"))
    b, fn = IommufdPlan(), POLICIES[policy]
    checked = 0
    for mr in m.regions.values():
        rb = mr.ram_block
        if rb is None or rb.host is None:
            continue
        for ro in (False, True):
            mapper = region_mapper(fn, b, mr, ro)
            for off in (0, 0x1000, mr.size - 0x1000):
                want = fn(b, 0x100000 + off, 0x1000, rb.host + off, ro, mr)
                got = mapper(0x100000 + off, 0x1000, rb.host + off)
                assert (got.ioctl, got.data) == (want.ioctl, want.data)
                checked += 1
    assert checked >= 6
    assert region_mapper(lambda *a: None, b, mr, False) is None     # a user policy: per block


def test_live_mappings_drops_what_a_later_unmap_intersects():
    """live_mappings(): a later successful unmap removes every earlier map it
    intersects (one unmap over two maps, one map touching it left alone), a map
    after the unmap stays, failed unmaps and failed maps change nothing."""
    from vmm_model.container import Event, live_mappings
    ok, bad = DmaResult(0), DmaResult(-errno.EINVAL)
    c = VFIOContainer(Type1Plan(), get_qemu("10.0"))
    M = 1 << 20
    c.events = [Event("map", None, "iommu", 0 * M, M, result=ok),
                Event("map", None, "iommu", 1 * M, M, result=ok),
                Event("map", None, "iommu", 2 * M, M, result=ok),
                Event("map", None, "iommu", 3 * M, M, result=bad),
                Event("map", None, "iommu", 4 * M, M, result=ok),
                Event("unmap", None, "iommu", 1 * M + 4096, M, result=ok),    # hits 1M and 2M
                Event("unmap", None, "iommu", 4 * M, M, result=bad),          # fails: 4M stays
                Event("map", None, "iommu", 1 * M, M, result=ok),             # re-mapped
                Event("unmap", None, "iommu", 8 * M, M, result=ok)]           # touches nothing
    assert [(e.iova // M, e.result is ok) for e in live_mappings(c)] == [
        (0, True), (1, True), (4, True)]
    assert live_mappings(c)[1] is c.events[7]


def test_gc_pause_hands_what_it_made_to_the_oldest_generation():
    """gc_paused(): the objects made during the pause are not left in the young
    generation, so leaving the pause starts no young collection (which would walk
    them all to find them alive); a cycle among them that becomes garbage is
    still freed by a full collection."""
    import gc
    import weakref
    from vmm_model.gc_pause import gc_paused

    class Node:
        pass

    gc.collect()
    young = gc.get_stats()[0]["collections"]
    with gc_paused():
        made = [Node() for _ in range(50_000)]
        a, b = Node(), Node()
        a.other, b.other = b, a                   # a cycle
        dead = weakref.ref(a)
    assert gc.isenabled() and gc.get_stats()[0]["collections"] == young
    del a, b
    assert dead() is not None                     # only the collector frees a cycle
    gc.collect()
    assert dead() is None and len(made) == 50_000
