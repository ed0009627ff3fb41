"""What the device reads after the guest writes: the copy-on-write divergence."""

from vmm_model import dma_read

from acme_vmm.vms import vm


def test_map_file_of_private_ram_hides_guest_writes(vfio_sim):
    sim = vfio_sim(vm("legacy"), qemu="10.1")
    sim.host.write_mem(sim.block("m0").host + 0x200000, b"guest")
    assert dma_read(sim.device, 0x200000, 5) == (5, b"\0" * 5)


def test_acme_policy_lets_the_device_see_guest_writes(vfio_sim):
    sim = vfio_sim(vm("legacy"), qemu="10.1", policy="acme_vmm.policies:never_map_file_private")
    sim.host.write_mem(sim.block("m0").host + 0x200000, b"guest")
    assert dma_read(sim.device, 0x200000, 5) == (5, b"guest")
