#!/bin/busybox sh
# /init of the rig's initramfs (docs/kernel-model.md, "The kernel rig"), generalized:
#  - insmod /lib/modules/* in the order of /modules.order (stock Debian kernels)
#  - bind every QEMU edu device (1234:11e8) to vfio-pci
#  - the host root (9p tag "host", read-only) becomes the chroot; a tmpfs hides
#    its /tmp, and each host path in rig.bind=P1,P2 is bound back from the 9p view
#  - the writable run directory (9p tag "rig") appears at rig.out=DIR, the same
#    path as on the host; DIR/run.sh runs in the chroot
#  - the last word is always "RIG: exit status N" (QEMU's exit code doesn't carry it)
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
finish() { echo "RIG: exit status $1"; sync; poweroff -f; }
die() { echo "RIG: error: $*"; finish 125; }
echo "RIG: kernel $(uname -r)"
if [ -f /modules.order ]; then
  for m in $(cat /modules.order); do insmod /lib/modules/$m || die "insmod $m failed"; done
fi
OUT=; BIND=
for a in $(cat /proc/cmdline); do
  case $a in rig.out=*) OUT=${a#rig.out=};; rig.bind=*) BIND=${a#rig.bind=};; esac
done
[ -n "$OUT" ] || die "no rig.out= on the kernel command line"
opts=trans=virtio,version=9p2000.L,msize=512000
# cache=loose: the host root does not change under a run; halves Python start-up
mount -t 9p -o $opts,ro,cache=loose host /host || die "9p mount of the host root failed"
mount --bind /host /hostro   # the 9p view without the mounts added below
for d in /sys/bus/pci/devices/*; do
  if [ "$(cat $d/vendor)" = 0x1234 ] && [ "$(cat $d/device)" = 0x11e8 ]; then
    echo vfio-pci > $d/driver_override; echo ${d##*/} > /sys/bus/pci/drivers_probe
    echo "RIG: edu ${d##*/} driver=$(basename "$(readlink $d/driver)") group=$(basename "$(readlink $d/iommu_group)")"
  fi
done
echo "RIG: /dev/iommu: $(ls /dev/iommu 2>&1)"
echo "RIG: /dev/vfio: $(ls /dev/vfio /dev/vfio/devices 2>&1 | tr '\n' ' ')"
mount --bind /proc /host/proc; mount --bind /dev /host/dev; mount --bind /sys /host/sys
mount -t tmpfs tmpfs /host/tmp
mount -t debugfs none /host/sys/kernel/debug 2>/dev/null
for p in $(echo "$BIND" | tr , ' '); do
  mkdir -p /host$p 2>/dev/null; mount --bind /hostro$p /host$p || die "cannot bind $p"
done
mkdir -p /host$OUT 2>/dev/null
mount -t 9p -o $opts rig /host$OUT || die "9p mount of the run directory failed"
chroot /host /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin HOME=/tmp TERM=dumb \
  /bin/sh $OUT/run.sh
rc=$?
umount /host$OUT
finish $rc
