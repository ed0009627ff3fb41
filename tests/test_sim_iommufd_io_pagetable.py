"""drivers/iommu/iommufd/io_pagetable.c on SimHost: where areas go (alignment,
overlap, reserved ranges, apertures, allowed ranges, automatic IOVAs), what an
unmap removes, and a property over random sequences."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from backends.simulated.iommu import SimVfioDevice

from iommufd_env import E, P, U64_MAX, Env


# ============================================================================
# IOMMU_IOAS_MAP (ioas.c iommufd_ioas_map() -> io_pagetable.c iopt_map_user_pages())
# ============================================================================

def test_map_length_zero_and_overflows(env):
    """iopt_alloc_user_pages(): uptr + length == 2^64 -> EOVERFLOW; length 0 ->
    EINVAL; iopt_check_iova(): iova + length - 1 wraps -> EOVERFLOW."""
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, 0, 0)[0] == -E.EINVAL
    assert env.map(ioas, (1 << 64) - P, P, 0)[0] == -E.EOVERFLOW
    assert env.map(ioas, va, 2 * P, (1 << 64) - P)[0] == -E.EOVERFLOW


def test_map_no_domain_accepts_any_alignment(env):
    """iova_alignment is 1 without a domain: unaligned iova, size, vaddr all map
    (as on the rig: backends/rig/guest/test_probe_iommufd.py
    test_4a_map_unaligned_user_va_ok_while_nothing_attached; selftest ioas_iova_alloc)."""
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va + 100, 3 * P + 7, 0x100123)[0] == 0
    assert env.map(ioas, va, 1, None)[0] == 0


def test_map_with_domain_alignment(env):
    """With a 4 KiB domain: iova (iopt_check_iova), size (iopt_alloc_area_pages),
    vaddr page offset (iopt_insert_area) misaligned -> EINVAL (as on the rig:
    test_probe_iommufd.py test_4b_map_unaligned_einval)."""
    ioas, va = env.ioas(), env.mem()
    assert env.attach(ioas)[0] == 0
    assert env.map(ioas, va, P, 0x100800)[0] == -E.EINVAL
    assert env.map(ioas, va, P + 1, 0x100000)[0] == -E.EINVAL
    assert env.map(ioas, va + 100, P, 0x100000)[0] == -E.EINVAL
    assert env.map(ioas, va + 100, P, None)[0] == -E.EINVAL          # auto: alignment < 4096
    assert env.map(ioas, va, P, 0x100000)[0] == 0


def test_map_overlap_is_eexist_and_auto_finds_a_hole(env):
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, 4 * P, 0x100000)[0] == 0
    assert env.map(ioas, va, 4 * P, 0x102000)[0] == -E.EEXIST
    assert env.map(ioas, va, P, 0x103000)[0] == -E.EEXIST
    ret, iova = env.map(ioas, va, 4 * P)
    assert ret == 0 and (iova + 4 * P <= 0x100000 or iova > 0x103FFF) and iova % (4 * P) == 0


def test_map_reserved_and_outside_aperture_is_einval(env):
    """reserved_itree (MSI window, aperture) -> EINVAL (as on the rig at 0xfee00000:
    test_probe_iommufd.py test_4b_map_into_msi_window_einval)."""
    ioas, va = env.ioas(), env.mem()
    assert env.attach(ioas)[0] == 0
    assert env.map(ioas, va, P, 0xFEE00000)[0] == -E.EINVAL
    assert env.map(ioas, va, P, 1 << 39)[0] == -E.EINVAL
    assert env.map(ioas, va, P, (1 << 39) - P)[0] == 0


def test_map_fixed_ignores_allowed_ranges(env):
    """ALLOW_IOVAS only bounds automatic allocation (iopt_alloc_iova(); a fixed
    IOVA goes through iopt_check_iova(), which does not look at allowed_itree)."""
    ioas, va = env.ioas(), env.mem()
    assert env.allow(ioas, [(0x10000, 0x1FFFF)]) == 0
    assert env.map(ioas, va, P, 0x900000)[0] == 0
    ret, iova = env.map(ioas, va, P)
    assert ret == 0 and 0x10000 <= iova <= 0x1FFFF


def test_map_auto_enospc(env):
    ioas, va = env.ioas(), env.mem()
    assert env.allow(ioas, [(0x10000, 0x11FFF)]) == 0
    assert env.map(ioas, va, 2 * P)[0] == 0
    assert env.map(ioas, va, P)[0] == -E.ENOSPC


# ============================================================================
# IOMMU_IOAS_UNMAP (ioas.c iommufd_ioas_unmap() -> io_pagetable.c iopt_unmap_iova_range())
# ============================================================================

@pytest.mark.parametrize("profile", ["6.13", "6.18", "7.2"])
def test_unmap_empty_range_is_enoent_every_version(profile):
    """<6.18 from iopt_unmap_iova_range()'s rc init, >=6.18 from 'if (!unmapped)'."""
    e = Env(profile)
    ioas = e.ioas()
    assert e.unmap(ioas, 0x100000, P) == (-E.ENOENT, P)           # length not written back
    assert e.unmap(ioas, 0, U64_MAX) == (0, 0)          # unmap-all on an empty IOAS


def test_unmap_straddle_enoent_earlier_areas_gone(env):
    ioas, va = env.ioas(), env.mem()
    assert env.map(ioas, va, P, 0x100000)[0] == 0
    assert env.map(ioas, va, 2 * P, 0x101000)[0] == 0
    assert env.unmap(ioas, 0x100000, 2 * P)[0] == -E.ENOENT
    assert env.unmap(ioas, 0x100000, P)[0] == -E.ENOENT           # the first one is gone
    assert env.unmap(ioas, 0x101000, 2 * P) == (0, 2 * P)


def test_unmap_no_alignment_check_sums_whole_areas(env):
    ioas, va = env.ioas(), env.mem()
    for i in range(3):
        assert env.map(ioas, va, P, 0x100000 + 2 * i * P)[0] == 0
    assert env.unmap(ioas, 0x100000 - 5, 6 * P) == (0, 3 * P)


# ============================================================================
# properties (hypothesis)
# ============================================================================

OPS = st.lists(st.one_of(
    st.tuples(st.just("map"), st.integers(0, 31), st.integers(1, 4), st.booleans()),
    st.tuples(st.just("map_file"), st.integers(0, 31), st.integers(1, 4), st.integers(0, 3)),
    st.tuples(st.just("unmap"), st.integers(0, 31), st.integers(1, 8), st.just(0)),
    st.tuples(st.just("copy"), st.integers(0, 31), st.integers(1, 4), st.integers(0, 31)),
    st.tuples(st.just("attach"), st.integers(0, 1), st.just(0), st.just(0)),
    st.tuples(st.just("detach"), st.just(0), st.just(0), st.just(0))), max_size=40)


def _check_invariants(e: Env, ioas_ids):
    ctx = e.ctx
    for i in ioas_ids:
        areas = list(ctx.get_ioas(i).iopt.area_itree)
        for a, b in zip(areas, areas[1:]):
            assert a.last < b.iova                                   # no overlapping areas
    pinned = sum(pin.npages for store in {id(s): s for s in _stores(e)}.values() for pin in store.pins)
    assert e.h.pinned_vm == pinned == e.h.user_locked_vm


def _stores(e: Env):
    yield e.h.mm.private
    for f in list(e.h.fds.values()):
        yield f.inode.mapping


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS, st.sampled_from(["6.13", "7.2"]))
def test_property_random_sequences(ops, profile):
    """Random MAP / MAP_FILE / UNMAP / COPY / attach / detach: areas never
    overlap, an unmap reports the bytes mapped, pins and charges always match
    the areas of IOASes with a domain, and everything returns to zero after
    unmap-all and close."""
    e = Env(profile, devices=[SimVfioDevice(), SimVfioDevice(name="b", group=2, cdev=1)])
    a, b = e.ioas(), e.ioas()
    va = e.mem(64, fill=b"x" * 64)
    fd = e.memfd(32 * P)
    mapped: dict[int, int] = {}                 # iova -> length, of IOAS a
    for op, x, n, y in ops:
        if op == "map":
            ret, iova = e.map(a, va + x * P, n * P, 0x100000 + x * P if y else None)
            if ret == 0:
                mapped[iova] = n * P
        elif op == "map_file":
            ret, iova = e.map_file(a, fd, y * P, n * P, 0x100000 + x * P)
            if ret == 0:
                mapped[iova] = n * P
        elif op == "unmap":
            start = 0x100000 + x * P
            ret, length = e.unmap(a, start, n * P)
            inside = {i: L for i, L in mapped.items() if i >= start and i + L <= start + n * P}
            if ret == 0:
                assert length == sum(inside.values())
                for i in inside:
                    del mapped[i]
            else:
                # earlier whole areas may be gone (iopt_unmap_iova_range()); resync
                live = {ar.iova: ar.last - ar.iova + 1 for ar in e.ctx.get_ioas(a).iopt.area_itree}
                mapped = live
        elif op == "copy":
            e.copy(b, a, n * P, 0x100000 + x * P, 0x800000 + y * P)
        elif op == "attach":
            e.attach([a, b][x], x)
        elif op == "detach" and 0 in e.cdevs:
            e.detach(0)
        _check_invariants(e, [a, b])
    assert sum(mapped.values()) == sum(ar.last - ar.iova + 1 for ar in e.ctx.get_ioas(a).iopt.area_itree)
    assert e.unmap(a, 0, U64_MAX)[0] == 0 and e.unmap(b, 0, U64_MAX)[0] == 0
    assert e.counters() == (0, 0, 0)
    e.h.close_all()
    assert e.counters() == (0, 0, 0)
    assert all(d.domain is None for d in e.devs)
