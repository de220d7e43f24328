"""Program and Link: attach by section, or explicitly to a target.

Sections that name their hook (tracepoint/, raw_tp/, tp_btf/, uprobe/bin:func, usdt/,
iter/) attach with ``attach()``. Hooks that need a target at run time have their own
call: ``attach_uprobe``, ``attach_usdt``, ``attach_perf_event``, ``attach_xdp``,
``attach_tc``, ``attach_cgroup``, ``attach_socket``.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import weakref

from . import _check, _lib, proginfo, sysfs, targets, teardown
from ._lib import lib
from .errors import (AttachError, BPFError, ObjectClosedError, last_errno, make,
                     missing_capabilities, tracefs_hint)

_AUTO_PREFIXES = ("tracepoint/", "tp/", "raw_tp/", "raw_tracepoint/", "tp_btf/",
                  "fentry/", "fexit/", "fmod_ret/", "lsm/", "kprobe/", "kretprobe/",
                  "ksyscall/", "kretsyscall/", "uprobe/", "uretprobe/", "uprobe.s/",
                  "uretprobe.s/", "usdt/", "iter/", "iter.s/")


def prog_type_name(prog_type: int) -> str:
    name = lib.libbpf_bpf_prog_type_str(prog_type)
    return name.decode() if name else str(prog_type)


class Link:
    """An attachment. ``destroy()`` detaches; the kernel also does when we exit.

    ``perf_fds``: dups of the perf events behind a perf-event link, so that detaching
    does not wait for them to be freed (see teardown.py)."""

    def __init__(self, ptr: int | None, target: str, detach=None, perf_fds=()):
        self._ptr = ptr
        self.target = target
        self._detach = detach
        self.perf_fds = list(perf_fds)

    @property
    def fd(self) -> int:
        return lib.bpf_link__fd(self._ptr) if self._ptr else -1

    @property
    def attached(self) -> bool:
        return self._ptr is not None or self._detach is not None

    def destroy(self, wait: bool = True):
        """Detach: the program no longer runs when this returns (see teardown.py)."""
        teardown.destroy_links([self], wait)

    def _destroy_now(self):
        ptr, self._ptr = self._ptr, None
        detach, self._detach = self._detach, None
        if ptr:
            lib.bpf_link__destroy(ptr)
        if detach:
            detach()

    def __repr__(self):
        return f"<Link {self.target}{'' if self.attached else ' (detached)'}>"


class Program:
    """One BPF program of an Object (``obj.progs.name``)."""

    def __init__(self, obj, ptr: int):
        self._obj = weakref.ref(obj)
        self._ptr = ptr
        self.name = lib.bpf_program__name(ptr).decode()
        self.section = (lib.bpf_program__section_name(ptr) or b"").decode()
        self.links: list[Link] = []

    # --- state --------------------------------------------------------------

    @property
    def object(self):
        obj = self._obj()
        if obj is None or obj.state == "destroyed":
            raise ObjectClosedError(f"program {self.name!r}: its BPF object has been destroyed")
        return obj

    @property
    def type(self) -> int:
        self.object
        return lib.bpf_program__type(self._ptr)

    @property
    def type_name(self) -> str:
        return prog_type_name(self.type)

    @property
    def autoload(self) -> bool:
        self.object
        return bool(lib.bpf_program__autoload(self._ptr))

    @autoload.setter
    def autoload(self, value: bool):
        if self.object.state != "opened":
            raise BPFError(f"program {self.name!r}: autoload can only change before load()")
        lib.bpf_program__set_autoload(self._ptr, bool(value))

    @property
    def fd(self) -> int:
        if self.object.state != "loaded":
            raise BPFError(f"program {self.name!r} is in the kernel only after load()")
        fd = lib.bpf_program__fd(self._ptr)
        if fd < 0:
            raise BPFError(f"program {self.name!r} was not loaded (autoload is off)")
        return fd

    @property
    def auto_attachable(self) -> bool:
        """Whether the section alone names the hook (libbpf can attach it unaided)."""
        sec = self.section
        if not sec.startswith(_AUTO_PREFIXES) or sec.endswith("/"):
            return False
        if sec.startswith(("uprobe", "uretprobe")):
            return ":" in sec
        return True

    @property
    def attach_call(self) -> str:
        """The method that attaches a program needing a target, e.g.
        ``attach_perf_event(freq=99)`` ("" when the section names the hook)."""
        return "" if self.auto_attachable else _explicit_call(self.section)

    @property
    def hook(self) -> str:
        """The attach point, for display: section plus targets of explicit attaches."""
        targets = [link.target for link in self.links if link.attached]
        return ", ".join(targets) if targets else self.section

    # --- attach -------------------------------------------------------------

    def _link(self, ptr: int, target: str, log: str = "", hint: str = "",
              perf: bool = False, pfd: int | None = None) -> Link:
        """Wrap what a libbpf attach call returned. ``perf``: the call made a perf link
        (libbpf opened the perf event); ``pfd``: the perf fd the caller opened."""
        if not ptr:
            err = last_errno()
            hook = target if target.startswith("tracepoint/") else self.section
            raise make(AttachError, f"cannot attach program {self.name!r} to {target}",
                       err, log, hint or _attach_hint(hook, err))
        link_fd = lib.bpf_link__fd(ptr)
        if pfd is not None:
            perf_fds = teardown.hold_perf_fd(pfd, link_fd)
        elif perf:
            perf_fds = teardown.perf_fd_of(ptr, link_fd)
        else:
            perf_fds = []
        link = Link(ptr, target, perf_fds=perf_fds)
        self.links.append(link)
        return link

    def attach(self) -> Link:
        """Attach to the hook named by the section (tracepoint/..., raw_tp/..., ...)."""
        self.fd
        if not self.auto_attachable:
            raise AttachError(
                f"program {self.name!r} (SEC(\"{self.section}\")) needs a target: "
                f"use obj.progs.{self.name}.{self.attach_call}")
        if self.section.startswith(("tracepoint/", "tp/")):
            sysfs.ensure_tracefs()
        with _lib.capture() as log:
            ptr = lib.bpf_program__attach(self._ptr)
        return self._link(ptr, self.section, log.text,
                          perf=self.section.startswith(teardown.PERF_HOOKS))

    def attach_tracepoint(self, category: str, name: str) -> Link:
        self.fd
        sysfs.ensure_tracefs()
        with _lib.capture() as log:
            ptr = lib.bpf_program__attach_tracepoint(self._ptr, category.encode(), name.encode())
        return self._link(ptr, f"tracepoint/{category}/{name}", log.text, perf=True)

    def attach_raw_tracepoint(self, name: str) -> Link:
        self.fd
        with _lib.capture() as log:
            ptr = lib.bpf_program__attach_raw_tracepoint(self._ptr, name.encode())
        return self._link(ptr, f"raw_tp/{name}", log.text)

    def attach_uprobe(self, binary: str, function: str | None = None, offset: int = 0,
                      pid: int = -1, retprobe: bool | None = None) -> Link:
        """Attach to ``function`` (or ``offset``) in ``binary`` (a path or a library name
        like "libc.so.6"); ``pid=-1`` traces every process."""
        self.fd
        pid = _check.pid(pid, f"attach_uprobe of {self.name!r}")
        offset = _check.u64(offset, f"attach_uprobe of {self.name!r}: offset")
        if retprobe is None:
            retprobe = self.section.startswith("uretprobe")
        opts = targets.UprobeOpts(sz=ctypes.sizeof(targets.UprobeOpts), retprobe=retprobe,
                           func_name=function.encode() if function else None)
        with _lib.capture() as log:
            ptr = lib.bpf_program__attach_uprobe_opts(self._ptr, pid, binary.encode(), offset,
                                                      ctypes.byref(opts))
        kind = "uretprobe" if retprobe else "uprobe"
        return self._link(ptr, f"{kind}/{binary}:{function or hex(offset)}", log.text,
                          perf=True)

    def attach_usdt(self, binary: str, provider: str, name: str, pid: int = -1) -> Link:
        self.fd
        pid = _check.pid(pid, f"attach_usdt of {self.name!r}")
        with _lib.capture() as log:
            ptr = lib.bpf_program__attach_usdt(self._ptr, pid, binary.encode(),
                                               provider.encode(), name.encode(), None)
        return self._link(ptr, f"usdt/{binary}:{provider}:{name}", log.text)

    def attach_perf_event(self, freq: int | None = 99, period: int | None = None,
                          cpus=None, event: str = "cpu-clock", pid: int = -1) -> list[Link]:
        """Sample on every CPU (or ``cpus``) at ``freq`` Hz, or every ``period`` events."""
        self.fd
        what = f"attach_perf_event of {self.name!r}"
        cpus = targets.online_cpus() if cpus is None else [
            _check.check(cpu, f"{what}: cpu", 32, True, lo=0) for cpu in cpus]
        pid = _check.pid(pid, what)
        _check.sample_rate(freq, period, what)
        links = []
        try:
            for cpu in cpus:
                pfd = targets.perf_event_open(event, cpu=cpu, pid=pid,
                                              freq=None if period else freq, period=period)
                with _lib.capture() as log:
                    ptr = lib.bpf_program__attach_perf_event(self._ptr, pfd)
                if not ptr:
                    os.close(pfd)  # libbpf owns the perf fd only once attached
                links.append(self._link(ptr, f"perf_event/{event}/cpu{cpu}", log.text,
                                        pfd=pfd))
        except BaseException:
            teardown.destroy_links(links)
            raise
        return links

    def attach_perf_event_fd(self, pfd: int) -> Link:
        """Attach to a perf event the caller opened; the link owns ``pfd`` from now on
        (on failure the caller still does)."""
        self.fd
        pfd = _check.fd(pfd, f"attach_perf_event_fd of {self.name!r}: pfd")
        with _lib.capture() as log:
            ptr = lib.bpf_program__attach_perf_event(self._ptr, pfd)
        return self._link(ptr, f"perf_event/fd{pfd}", log.text, pfd=pfd)

    def attach_xdp(self, interface: str | int) -> Link:
        self.fd
        ifindex = targets.interface_index(interface)
        with _lib.capture() as log:
            ptr = lib.bpf_program__attach_xdp(self._ptr, ifindex)
        return self._link(ptr, f"xdp/{interface}", log.text)

    def attach_cgroup(self, path: str | None = None) -> Link:
        """Attach to a cgroup v2 directory; by default the root of the cgroup v2 mount."""
        self.fd
        path = path or sysfs.cgroup2_mount()
        if path is None:
            raise AttachError("cgroup v2 is not mounted: mount -t cgroup2 none /sys/fs/cgroup",
                              errno.ENOENT)
        try:
            cg = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            raise AttachError(f"cannot attach program {self.name!r}: cannot open cgroup "
                              f"{path} ({e.strerror}); give a cgroup v2 directory",
                              e.errno) from None
        try:
            with _lib.capture() as log:
                ptr = lib.bpf_program__attach_cgroup(self._ptr, cg)
        finally:
            os.close(cg)  # the link holds its own reference to the cgroup
        return self._link(ptr, f"cgroup:{path}", log.text)

    def attach_tc(self, interface: str | int, direction: str = "ingress",
                  priority: int = 1) -> Link:
        """Attach as a tc classifier (direct action) on ``interface``; the clsact qdisc is
        created when missing and removed again when the last of our filters goes."""
        fd = self.fd
        ifindex = targets.interface_index(interface)
        if direction not in ("ingress", "egress"):
            raise ValueError(f"attach_tc of {self.name!r}: direction is 'ingress' or "
                             f"'egress', not {direction!r}")
        point = {"ingress": targets.TC_INGRESS, "egress": targets.TC_EGRESS}[direction]
        # tc filter priorities are 16-bit (0: the kernel picks one, read back below)
        priority = _check.u16(priority, f"attach_tc of {self.name!r}: priority")
        hook = targets.TcHook(sz=ctypes.sizeof(targets.TcHook), ifindex=ifindex, attach_point=point)
        opts = targets.TcOpts(sz=ctypes.sizeof(targets.TcOpts), prog_fd=fd, priority=priority)
        with _lib.capture() as log:
            targets.tc_hook_acquire(ifindex)
            rc = lib.bpf_tc_attach(ctypes.byref(hook), ctypes.byref(opts))
        if rc < 0:
            targets.tc_hook_release(ifindex)
            raise make(AttachError, f"cannot attach program {self.name!r} to tc {direction} "
                       f"of {interface}", last_errno(rc), log.text)
        handle, prio = opts.handle, opts.priority

        def detach():
            o = targets.TcOpts(sz=ctypes.sizeof(targets.TcOpts), handle=handle, priority=prio)
            lib.bpf_tc_detach(ctypes.byref(hook), ctypes.byref(o))
            targets.tc_hook_release(ifindex)

        link = Link(None, f"tc/{interface}/{direction}", detach)
        self.links.append(link)
        return link

    def attach_socket(self, sock: socket.socket | int) -> Link:
        """Attach a socket filter to a socket (SO_ATTACH_BPF): a socket object, or the
        fd of one (the link keeps its own duplicate, closed on detach)."""
        fd = self.fd
        owned = not isinstance(sock, socket.socket)
        if owned:
            sock = targets.socket_from_fd(sock, f"attach_socket of {self.name!r}")
        try:
            sock.setsockopt(socket.SOL_SOCKET, targets.SO_ATTACH_BPF, fd)
        except OSError as e:
            if owned:
                sock.close()
            raise make(AttachError, f"cannot attach socket filter {self.name!r}",
                       e.errno) from None

        def detach():
            try:
                sock.setsockopt(socket.SOL_SOCKET, targets.SO_DETACH_BPF, 0)
            except OSError:
                pass  # socket already closed: the filter went with it
            if owned:
                sock.close()

        link = Link(None, f"socket/{sock.fileno()}", detach)
        self.links.append(link)
        return link

    def read(self) -> str:
        """Run an iterator program (SEC("iter/...")) and return what it printed."""
        self.fd
        link = next((lk for lk in self.links if lk.attached and lk._ptr), None) or self.attach()
        fd = lib.bpf_iter_create(link.fd)
        if fd < 0:
            raise BPFError(f"cannot create an iterator from {self.name!r}", last_errno(fd))
        chunks = []
        try:
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
        finally:
            os.close(fd)
        return b"".join(chunks).decode(errors="replace")

    def detach(self, wait: bool = True):
        """Destroy every link (see teardown.destroy_links for ``wait``)."""
        links, self.links = self.links, []
        teardown.destroy_links(links, wait)

    # --- introspection ------------------------------------------------------

    def info(self) -> dict:
        """Kernel id, name, run count and run time (counted while BPF stats are on)."""
        info = proginfo.prog_info(self.fd)
        if info is None:
            raise BPFError(f"cannot read info of program {self.name!r}", last_errno())
        return info

    @property
    def id(self) -> int:
        return self.info()["id"]

    @property
    def stats(self) -> dict:
        info = self.info()
        return {"run_cnt": info["run_cnt"], "run_time_ns": info["run_time_ns"]}

    @property
    def state(self) -> str:
        """"off" (autoload off, with the reason when bpfnb turned it off), "attached",
        "loaded" (with what it still needs), "opened" or "destroyed"."""
        obj = self._obj()
        if obj is None or obj.state == "destroyed":
            return "destroyed"
        reason = obj.skipped.get(self.name)
        if not self.autoload:
            return f"off: {reason}" if reason else "off"
        if any(link.attached for link in self.links):
            return "attached"
        if obj.state != "loaded":
            return obj.state
        if reason:
            return f"loaded, not attached: {reason}"
        if self.attach_call:
            return f"loaded, needs a target: obj.progs.{self.name}.{self.attach_call}"
        return "loaded"

    def __repr__(self):
        state = self.state
        if state == "destroyed":
            return f"<Program {self.name!r} (destroyed)>"
        return f"<Program {self.name!r} {self.type_name} {self.hook} {state}>"


def _explicit_call(section: str) -> str:
    calls = {"xdp": "attach_xdp(interface)", "tc": "attach_tc(interface)",
             "classifier": "attach_tc(interface)", "perf_event": "attach_perf_event(freq=99)",
             "cgroup": "attach_cgroup(path)", "socket": "attach_socket(sock)",
             "uprobe": "attach_uprobe(binary, function)",
             "uretprobe": "attach_uprobe(binary, function, retprobe=True)",
             "usdt": "attach_usdt(binary, provider, name)"}
    for prefix, call in calls.items():
        if section.startswith(prefix):
            return call
    return "the attach_* call for its hook"


def _attach_hint(section: str, err: int) -> str:
    if section.startswith(("tracepoint/", "tp/")) and err in (errno.EACCES, errno.EPERM):
        hint = tracefs_hint()  # CAP_BPF and CAP_PERFMON held, tracefs closed
        if hint:
            return hint
    if section.startswith(("tracepoint/", "tp/")) and err == errno.ENOENT:
        ok, note = sysfs.ensure_tracefs()
        if not ok:
            return note
        parts = section.split("/")
        if len(parts) >= 3:
            return (f"no tracepoint {parts[1]}:{parts[2]} on this kernel; list them in "
                    f"{sysfs.TRACEFS}/events/{parts[1]}/")
    if section.startswith(("uprobe", "uretprobe", "usdt")) and err in (
            errno.EACCES, errno.EPERM) and missing_capabilities(("CAP_SYS_ADMIN",)):
        return ("the kernel refused the uprobe perf event without CAP_SYS_ADMIN (CAP_BPF "
                "and CAP_PERFMON are not enough for uprobes on this kernel): run the "
                "notebook kernel as root (sudo)")
    if section.startswith(("uprobe", "uretprobe", "usdt")) and err in (errno.ENOENT,
                                                                        errno.ESRCH):
        return "the binary or the function was not found: check the path and the symbol name"
    if section.startswith(("fentry", "fexit", "fmod_ret", "lsm")) and err in (
            errno.EPERM, errno.EOPNOTSUPP, 524):  # 524: the kernel's ENOTSUPP
        return "this kernel refuses fentry/fexit/lsm attachment: use a tp_btf or tracepoint hook"
    if section.startswith(("kprobe", "kretprobe", "ksyscall", "kretsyscall")):
        if not (os.path.isdir(_KPROBE_PMU) or os.path.exists(
                f"{sysfs.TRACEFS}/kprobe_events")):
            return ("kprobes are not in this kernel (no kprobe PMU, no tracefs kprobe_events; "
                    "CONFIG_KPROBES): use a tracepoint/ or tp_btf/ hook")
        if err == errno.ENOENT:
            return "no such kernel function to probe: check /proc/kallsyms"
    return ""


_KPROBE_PMU = "/sys/bus/event_source/devices/kprobe"
