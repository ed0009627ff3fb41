"""The other end of the shim's socket (vfio_shim.c): a simulated host with
vfio-pci devices, answering a real QEMU's VFIO and iommufd calls, and the log
of every request with the simulated kernel's answer.

``ShimServer(profile, devices)``: ``devices`` maps a PCI address (what QEMU's
``host=`` names) to a ``PciShape``.  ``sysfs(root)`` writes the sysfs tree the
shim redirects QEMU's lookups to; ``serve(path)`` listens; ``close()`` ends
every connection and releases the simulated host.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import struct
import threading
from dataclasses import dataclass, field

from backends import uapi
from backends.host import F_DUPFD_CLOEXEC
from backends.base import errno_name
from backends.simulated.dma import _translate
from backends.simulated.iommu import IOMMU_READ, IOMMU_WRITE, SimVfioDevice
from backends.simulated.mmap import VM_PFNMAP, VM_SHARED
from backends.simulated.vfio import VfioDeviceFile, install

from .pci import (DEVICE_IOCTLS, IRQ_IOCTLS, PciFunction, PciShape, device_ioctl, irq_fields,
                  is_dma_buf_get)
from .prochost import ProcHost

OP_OPEN, OP_CLOSE, OP_IOCTL, OP_PREAD, OP_PWRITE, OP_MMAP, OP_MUNMAP, OP_LOOKUP, OP_DUP = range(1, 10)
KINDS = {1: "container", 2: "group", 3: "device", 4: "iommufd", 5: "dmabuf"}
KIND_DMABUF = 5
SIM_FD = 1                            # an ioctl value: the fd inside is a simulated one
_REQ = struct.Struct("<IIiiQQQQII")
_REP = struct.Struct("<qII")
MAX_PAYLOAD = 1 << 20
# Requests after which QEMU's address space matters to the simulated kernel.
_MAPS = {uapi.VFIO_IOMMU_MAP_DMA, uapi.IOMMU_IOAS_MAP, uapi.IOMMU_IOAS_MAP_FILE,
         uapi.IOMMU_IOAS_COPY}
_FD_FIELD = 12                        # struct iommu_ioas_map_file: size, flags, ioas_id, fd


@dataclass
class Request:
    """One VFIO/iommufd call QEMU made and the simulated kernel's answer."""
    seq: int
    op: str                           # open, close, ioctl, pread, pwrite, mmap, munmap, sysfs, dma
    fd_kind: str | None
    name: str                         # path, ioctl name, region
    fields: dict = field(default_factory=dict)
    ret: int = 0
    out: dict = field(default_factory=dict)
    backing: dict | None = None       # a map's memory: the passed fd (MAP_FILE) or the VMA

    @property
    def errno(self) -> str:
        return errno_name(self.ret) if self.ret < 0 else ""

    def json(self) -> dict:
        d = {"seq": self.seq, "op": self.op, "fd_kind": self.fd_kind, "name": self.name,
             "fields": self.fields, "ret": self.ret, "errno": self.errno or None}
        if self.out:
            d["out"] = self.out
        if self.backing is not None:
            d["backing"] = self.backing
        return d


def _plain(c) -> dict:
    return {k: v for k, v in dict(c).items() if not k.startswith("_") and
            isinstance(v, (int, str, bytes, list)) and not isinstance(v, bytes)}


def decode_fields(name: str, data: bytes) -> dict:
    ioc = uapi.IOCTLS.get(name)
    if ioc is None or ioc.arg not in uapi.STRUCTS:
        return {}
    try:
        return _plain(uapi.parse(ioc.arg, data, zero_extend=True))
    except Exception:                 # a short or odd buffer: log it raw
        return {"raw": data[:64].hex()}


class ShimServer:
    def __init__(self, profile: str, devices: dict[str, PciShape]):
        self.host = ProcHost(profile)
        self.devices: list[SimVfioDevice] = []
        for i, (bdf, shape) in enumerate(devices.items()):
            dev = SimVfioDevice(name=bdf, group=i + 1, cdev=i,
                                bars={n: b.size for n, b in shape.bars.items() if not b.io})
            self.devices.append(dev)
            self.host.pci_functions[id(dev)] = PciFunction(dev, shape)
        install(self.host, self.devices)
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self.sock: socket.socket | None = None
        self.conns: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.pids: list[int] = []
        # What the IOMMU maps, as QEMU asked and the kernel accepted: iova ->
        # (size, vaddr | None, real fd | None, file offset), for device DMA.
        self.mappings: dict[int, tuple[int, int | None, int | None, int]] = {}

    # ---- sysfs --------------------------------------------------------------------
    def sysfs(self, root: str) -> list[str]:
        """Write the simulated devices' sysfs below ``root``; return the paths the
        shim redirects there (VFIO_EMU_REDIRECT)."""
        null = os.stat("/dev/null").st_rdev         # the shim's placeholder fds are /dev/null
        prefixes = ["/sys/bus/pci/drivers/vfio-pci"]
        os.makedirs(f"{root}/sys/bus/pci/drivers/vfio-pci", exist_ok=True)
        for dev in self.devices:
            shape = self.host.pci_functions[id(dev)].shape
            d = f"{root}/sys/devices/pci0000:00/{dev.name}"
            os.makedirs(d, exist_ok=True)
            os.makedirs(f"{root}/sys/kernel/iommu_groups/{dev.group}/devices", exist_ok=True)
            os.makedirs(f"{root}/sys/bus/pci/devices", exist_ok=True)
            for name, val in (("vendor", f"0x{shape.vendor:04x}"), ("device", f"0x{shape.device:04x}"),
                              ("subsystem_vendor", f"0x{shape.subsystem_vendor:04x}"),
                              ("subsystem_device", f"0x{shape.subsystem:04x}"),
                              ("class", f"0x{shape.class_code:06x}"),
                              ("revision", f"0x{shape.revision:02x}")):
                with open(f"{d}/{name}", "w") as f:
                    f.write(val + "\n")
            os.symlink(f"../../../kernel/iommu_groups/{dev.group}", f"{d}/iommu_group")
            os.symlink("../../../bus/pci", f"{d}/subsystem")
            os.symlink("../../../bus/pci/drivers/vfio-pci", f"{d}/driver")
            os.symlink(f"../../../../devices/pci0000:00/{dev.name}",
                       f"{root}/sys/kernel/iommu_groups/{dev.group}/devices/{dev.name}")
            os.symlink(f"../../../devices/pci0000:00/{dev.name}",
                       f"{root}/sys/bus/pci/devices/{dev.name}")
            if self.host.profile.vfio_cdev:            # vfio_device_add(): vfio-dev/vfioN (6.6+)
                os.makedirs(f"{d}/vfio-dev/vfio{dev.cdev}", exist_ok=True)
                with open(f"{d}/vfio-dev/vfio{dev.cdev}/dev", "w") as f:
                    f.write(f"{os.major(null)}:{os.minor(null)}\n")
            prefixes += [f"/sys/bus/pci/devices/{dev.name}", f"/sys/devices/pci0000:00/{dev.name}",
                         f"/sys/kernel/iommu_groups/{dev.group}"]
        # The simulated kernel's VFIO/iommufd nodes, for path lookups only (opens go to
        # the server): QEMU 11.1 checks access("/dev/iommu", F_OK) before it opens it
        # ("/dev/iommu does not exist (is your kernel config missing CONFIG_IOMMUFD?)").
        # Links to /dev/null: stat() agrees with fstat() of the shim's placeholder fds.
        for path in sorted(p for p in self.host.names if p == "/dev/iommu" or
                           p.startswith("/dev/vfio/")):
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            os.symlink("/dev/null", root + path)
        os.makedirs(f"{root}/dev/vfio", exist_ok=True)
        return prefixes + ["/dev/iommu", "/dev/vfio"]

    # ---- socket ---------------------------------------------------------------------
    def serve(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
            with self.lock:
                self.conns.append(conn)
                if self.host.pid is None:
                    self.host.attach(pid)
                self.pids.append(pid)
            t = threading.Thread(target=self._session, args=(conn,), daemon=True)
            t.start()
            self.threads.append(t)

    def _recv(self, conn, n: int, fds: list | None = None) -> bytes | None:
        buf = b""
        while len(buf) < n:
            if fds is not None and not buf:
                anc = socket.CMSG_SPACE(4)
                data, ancdata, _, _ = conn.recvmsg(n, anc)
                for level, typ, cdata in ancdata:
                    if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                        a = array.array("i")
                        a.frombytes(cdata[:len(cdata) - len(cdata) % 4])
                        fds.extend(a)
            else:
                data = conn.recv(n - len(buf))
            if not data:
                return None
            buf += data
        return buf

    def _session(self, conn: socket.socket) -> None:
        try:
            while True:
                fds: list[int] = []
                head = self._recv(conn, _REQ.size, fds)
                if head is None:
                    return
                op, kind, fd, has_fd, a, b, c, d, length, _ = _REQ.unpack(head)
                payload = self._recv(conn, length) if length else b""
                if payload is None or length > MAX_PAYLOAD:
                    return
                with self.lock:
                    try:
                        ret, out, newfd = self.handle(op, KINDS.get(kind), fd, a, b, c, d,
                                                      payload, fds[0] if fds else -1)
                    except Exception as e:      # a simulator bug: QEMU gets -EIO, the report says why
                        self._record(op="error", fd_kind=KINDS.get(kind),
                                     name=f"vfio-emu internal error: {type(e).__name__}: {e}",
                                     ret=-errno.EIO)
                        ret, out, newfd = -errno.EIO, b"", 0
                for extra in fds[1:]:
                    os.close(extra)
                conn.sendall(_REP.pack(ret, len(out), newfd) + out)
        except OSError:
            return
        finally:
            conn.close()

    # ---- requests -------------------------------------------------------------------
    def _record(self, **kw) -> Request:
        r = Request(seq=len(self.log), **kw)
        self.log.append(r)
        return r

    def handle(self, op, kind, fd, a, b, c, d, payload: bytes, real_fd: int):
        """(ret, reply bytes, new fd kind) for one request; every call is logged."""
        h = self.host
        if op == OP_OPEN:
            path = payload.split(b"\0", 1)[0].decode(errors="replace")
            ret = h.open(path, a)
            self._record(op="open", fd_kind=None, name=path, fields={"flags": a}, ret=ret)
            return ret, b"", 0
        if op == OP_DUP:                    # dup() of a VFIO fd: the same open file description
            ret = h.fcntl(fd, F_DUPFD_CLOEXEC, 0)
            self._record(op="dup", fd_kind=kind, name=str(fd), ret=ret)
            return ret, b"", 0
        if op == OP_CLOSE:
            ret = h.close(fd)
            self._record(op="close", fd_kind=kind, name=str(fd), ret=ret)
            return ret, b"", 0
        if op == OP_IOCTL:
            return self._ioctl(kind, fd, a, b, c, payload, real_fd)
        if op in (OP_PREAD, OP_PWRITE):
            file = h.file_of(fd)
            fn = h.pci_functions.get(id(file.dev.dev)) if file is not None and \
                isinstance(file.dev, VfioDeviceFile) else None
            region = f"region {b >> 40} +0x{b & ((1 << 40) - 1):x}"
            if op == OP_PREAD:
                ret, data = fn.rw(b, a, None) if fn is not None else h.pread(fd, a, b)
                self._record(op="pread", fd_kind=kind, name=region, fields={"count": a}, ret=ret)
                return ret, data if ret > 0 else b"", 0
            ret = fn.rw(b, len(payload), payload) if fn is not None else h.pwrite(fd, payload, b)
            self._record(op="pwrite", fd_kind=kind, name=region,
                         fields={"count": len(payload), "data": payload[:8].hex()}, ret=ret)
            return ret, b"", 0
        if op == OP_MMAP:
            prot, flags = c & 0xFFFFFFFF, c >> 32
            ret = h.record_device_mmap(a, b, prot, flags, fd, d)
            self._record(op="mmap", fd_kind=kind, name=f"region {d >> 40}",
                         fields={"addr": a, "length": b, "prot": prot, "flags": flags,
                                 "offset": d}, ret=ret)
            return ret, b"", 0
        if op == OP_MUNMAP:
            h.forget_device_mmap(a, b)
            ret = h.munmap(a, b)
            self._record(op="munmap", fd_kind=None, name="", fields={"addr": a, "length": b}, ret=ret)
            return ret, b"", 0
        if op == OP_LOOKUP:                 # a redirected sysfs lookup and its outcome
            fn, _, path = payload.split(b"\0", 1)[0].decode(errors="replace").partition(" ")
            self._record(op="sysfs", fd_kind=None, name=path, fields={"call": fn},
                         ret=-a if a else 0)
            return 0, b"", 0
        return -errno.ENOSYS, b"", 0

    def _ioctl(self, kind, fd, request, mode, value, buf: bytes, real_fd: int):
        h = self.host
        name = DEVICE_IOCTLS.get(request) if kind == "device" else None
        name = name or uapi.ioctl_name(request, kind if kind in uapi.FD_KINDS else None)
        if request in _MAPS:
            h.sync_maps()
        file = h.file_of(fd)
        arg: bytes | int = value if mode == 0 else buf
        passed = None
        if request == uapi.IOMMU_IOAS_MAP_FILE and value == SIM_FD and len(buf) >= _FD_FIELD + 4:
            f = h.file_of(struct.unpack_from("<i", buf, _FD_FIELD)[0])   # a VFIO dma-buf
            if f is not None:
                passed = {"what": "fd", "kind": f.inode.kind, "size": f.inode.i_size,
                          "seals": f.inode.seals, "f_flags": f.f_flags, "name": f.inode.name}
        elif request == uapi.IOMMU_IOAS_MAP_FILE and real_fd < 0 and len(buf) >= _FD_FIELD + 4:
            arg = buf[:_FD_FIELD] + struct.pack("<i", -1) + buf[_FD_FIELD + 4:]   # not an fd: -EBADF
        elif request == uapi.IOMMU_IOAS_MAP_FILE and real_fd >= 0 and len(buf) >= _FD_FIELD + 4:
            sim_fd = h.install_real_fd(real_fd)
            f = h.file_of(sim_fd)
            passed = {"what": "fd", "kind": f.inode.kind, "size": f.inode.i_size,
                      "seals": f.inode.seals, "f_flags": f.f_flags, "name": f.inode.name}
            arg = buf[:_FD_FIELD] + struct.pack("<i", sim_fd) + buf[_FD_FIELD + 4:]
        if file is not None and isinstance(file.dev, VfioDeviceFile):
            ret, out = device_ioctl(h, file.dev, request, arg)
        else:
            ret, out = h.ioctl(fd, request, arg)
        if passed is not None and value != SIM_FD:
            h.close(sim_fd)
            out = bytes(out)[:_FD_FIELD] + buf[_FD_FIELD:_FD_FIELD + 4] + bytes(out)[_FD_FIELD + 4:]
        fields: dict = {"value": value} if mode == 0 else decode_fields(name, buf)
        if request in (uapi.VFIO_IOMMU_MAP_DMA, uapi.IOMMU_IOAS_MAP):
            passed = self.backing(fields.get("vaddr", fields.get("user_va", 0)))
        if request in IRQ_IOCTLS and kind == "device" and mode:
            fields = irq_fields(request, buf)
        if request == uapi.VFIO_GROUP_GET_DEVICE_FD:
            fields = {"name": buf.split(b"\0", 1)[0].decode(errors="replace")}
        rec = self._record(op="ioctl", fd_kind=kind, name=name, fields=fields, ret=ret,
                           backing=passed)
        if ret >= 0 and mode and out and out != buf:
            rec.out = {k: v for k, v in decode_fields(name, bytes(out)).items()
                       if fields.get(k) != v}
        if ret == 0 and mode:
            self._track(name, fields, real_fd)
        newfd = 0
        if ret >= 0 and request == uapi.VFIO_GROUP_GET_DEVICE_FD:
            newfd = 3
        elif ret > 0 and kind == "device" and is_dma_buf_get(request, buf):
            newfd = KIND_DMABUF
        return ret, (bytes(out) if mode else b""), newfd

    def _track(self, name: str, f: dict, real_fd: int) -> None:
        if name == "VFIO_IOMMU_MAP_DMA":
            self.mappings[f["iova"]] = (f["size"], f["vaddr"], None, 0)
        elif name == "IOMMU_IOAS_MAP":
            self.mappings[f["iova"]] = (f["length"], f["user_va"], None, 0)
        elif name == "IOMMU_IOAS_MAP_FILE":
            self.mappings[f["iova"]] = (f["length"], None, real_fd, f["start"])
        elif name in ("VFIO_IOMMU_UNMAP_DMA", "IOMMU_IOAS_UNMAP"):
            lo = f["iova"]
            size = f.get("size", f.get("length", 0))
            everything = size >= (1 << 64) - 1 or (name == "VFIO_IOMMU_UNMAP_DMA" and
                                                   f["flags"] & uapi.VFIO_DMA_UNMAP_FLAG_ALL)
            for iova in [i for i, m in self.mappings.items()
                         if everything or lo <= i and i + m[0] <= lo + size]:
                del self.mappings[iova]

    def dma(self, bdf: str, iova: int, length: int = 0, data: bytes | None = None):
        """The device ``bdf`` reads ``length`` bytes (data None) or writes ``data``
        at ``iova`` of QEMU's real memory.  The simulated IOMMU decides whether
        it may (backends/simulated/dma.py: unmapped, no domain or no permission
        -> -EFAULT, logged in the device's ``faults``); the bytes move with
        process_vm_readv/writev at the mapped vaddr, or pread/pwrite on the
        file QEMU passed for MAP_FILE.  Returns (n | -errno, bytes read)."""
        dev = next(d for d in self.devices if d.name == bdf)
        n = len(data) if data is not None else length
        with self.lock:
            segs = _translate(dev, iova, n, IOMMU_WRITE if data is not None else IOMMU_READ)
            ret, out = (segs, b"") if isinstance(segs, int) else self._dma_move(iova, n, data)
            self._record(op="dma", fd_kind=None, name=f"{bdf} {'write' if data is not None else 'read'}",
                         fields={"iova": iova, "length": n}, ret=ret)
        return ret, out

    def _dma_move(self, iova: int, n: int, data: bytes | None):
        out, done = bytearray(), 0
        while done < n:
            a = iova + done
            base = max((i for i in self.mappings if i <= a), default=None)
            if base is None or a >= base + self.mappings[base][0]:
                return -errno.EFAULT, b""
            size, vaddr, fd, start = self.mappings[base]
            k = min(n - done, base + size - a)
            if vaddr is not None:
                if data is None:
                    r, chunk = self.host.read_mem(vaddr + a - base, k)
                else:
                    r, chunk = self.host.write_mem(vaddr + a - base, data[done:done + k]), b""
            else:
                try:
                    if data is None:
                        chunk = os.pread(fd, k, start + a - base)
                        r = len(chunk)
                    else:
                        r, chunk = os.pwrite(fd, data[done:done + k], start + a - base), b""
                except OSError as e:
                    r = -(e.errno or errno.EIO)
            if r < 0:
                return r, b""
            out += chunk
            done += k
        return n, bytes(out)

    def backing(self, vaddr: int) -> dict | None:
        """What QEMU's memory at ``vaddr`` is (from /proc/PID/smaps, as synced)."""
        vma = self.host.mm.find_vma(vaddr)
        if vma is None:
            return None
        inode = vma.file.inode if vma.file is not None else None
        return {"what": "vma", "start": vma.start, "end": vma.end,
                "kind": "pfnmap" if vma.vm_flags & VM_PFNMAP else
                        inode.kind if inode is not None else "anonymous",
                "shared": bool(vma.vm_flags & VM_SHARED), "name": inode.name if inode else ""}

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        for t in self.threads:
            t.join(timeout=2)
        self.host.close_all()
