"""What the attach_* calls need of their target: interface indexes, sockets, the shared
clsact qdisc of tc filters, online CPUs and sampling perf events, and the option structs
libbpf takes for them."""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import socket
import stat
import threading

from . import _check
from ._lib import lib
from .errors import AttachError, last_errno, make


class UprobeOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ref_ctr_offset", ctypes.c_size_t),
                ("bpf_cookie", ctypes.c_uint64), ("retprobe", ctypes.c_bool),
                ("func_name", ctypes.c_char_p)]


class TcHook(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("ifindex", ctypes.c_int),
                ("attach_point", ctypes.c_int), ("parent", ctypes.c_uint32)]


class TcOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("prog_fd", ctypes.c_int), ("flags", ctypes.c_uint32),
                ("prog_id", ctypes.c_uint32), ("handle", ctypes.c_uint32),
                ("priority", ctypes.c_uint32)]


TC_INGRESS, TC_EGRESS = 1, 2
SO_ATTACH_BPF, SO_DETACH_BPF = 50, 27

# The clsact qdisc we create is shared by our ingress and egress filters on one
# interface: count users so the last detach removes it, and never remove one we
# did not create.
_tc_lock = threading.Lock()
_tc_users: dict[int, int] = {}


def tc_hook_acquire(ifindex: int):
    with _tc_lock:
        if ifindex in _tc_users:
            _tc_users[ifindex] += 1
            return
        hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex,
                       attach_point=TC_INGRESS | TC_EGRESS)
        rc = lib.bpf_tc_hook_create(ctypes.byref(hook))
        if rc < 0 and last_errno(rc) != errno.EEXIST:
            raise make(AttachError, f"cannot create the clsact qdisc on ifindex {ifindex}",
                       last_errno(rc))
        _tc_users[ifindex] = 1 if rc == 0 else -(1 << 30)  # negative: not ours to remove


def tc_hook_release(ifindex: int):
    with _tc_lock:
        _tc_users[ifindex] -= 1
        if _tc_users[ifindex] == 0:
            del _tc_users[ifindex]
            hook = TcHook(sz=ctypes.sizeof(TcHook), ifindex=ifindex,
                           attach_point=TC_INGRESS | TC_EGRESS)
            lib.bpf_tc_hook_destroy(ctypes.byref(hook))
        elif _tc_users[ifindex] == -(1 << 30):
            del _tc_users[ifindex]


def interface_index(interface: str | int) -> int:
    if not isinstance(interface, str):
        return _check.check(interface, "interface index", 32, True, lo=1)
    try:
        return socket.if_nametoindex(interface)
    except OSError:
        raise AttachError(f"no network interface named {interface!r} in this network "
                          f"namespace (see `ip link`)", errno.ENODEV) from None


def socket_from_fd(fd, what: str) -> socket.socket:
    """A socket object over a duplicate of ``fd``, after checking it is a socket."""
    fd = _check.fd(fd, f"{what}: fd")
    try:
        mode = os.fstat(fd).st_mode
    except OSError as e:
        raise AttachError(f"{what}: fd {fd} is not open", e.errno) from None
    if not stat.S_ISSOCK(mode):
        raise AttachError(f"{what}: fd {fd} is not a socket; pass a socket or its "
                          f"fileno()", errno.ENOTSOCK)
    dup = os.dup(fd)
    try:
        return socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        raise


def online_cpus() -> list[int]:
    """CPUs listed in /sys/devices/system/cpu/online ("0-3,5")."""
    try:
        with open("/sys/devices/system/cpu/online") as f:
            text = f.read().strip()
    except OSError:
        return list(range(os.cpu_count() or 1))
    cpus = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


class _PerfEventAttr(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("size", ctypes.c_uint32),
                ("config", ctypes.c_uint64), ("sample_period", ctypes.c_uint64),
                ("sample_type", ctypes.c_uint64), ("read_format", ctypes.c_uint64),
                ("flags", ctypes.c_uint64), ("wakeup_events", ctypes.c_uint32),
                ("bp_type", ctypes.c_uint32), ("config1", ctypes.c_uint64)]


_PERF_TYPE_HARDWARE, _PERF_TYPE_SOFTWARE = 0, 1
_PERF_EVENTS = {"cpu-clock": (_PERF_TYPE_SOFTWARE, 0), "task-clock": (_PERF_TYPE_SOFTWARE, 1),
                "cycles": (_PERF_TYPE_HARDWARE, 0), "instructions": (_PERF_TYPE_HARDWARE, 1)}
_PERF_FLAG_FREQ = 1 << 10
_NR_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "arm64": 241}.get(platform.machine(), 241)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def perf_event_open(event: str = "cpu-clock", cpu: int = 0, pid: int = -1,
                    freq: int | None = 99, period: int | None = None) -> int:
    """Open a sampling perf event; returns its fd."""
    if event not in _PERF_EVENTS:
        raise ValueError(f"unknown perf event {event!r}; known: {', '.join(_PERF_EVENTS)}")
    ptype, config = _PERF_EVENTS[event]
    what = f"perf_event_open({event})"
    cpu = _check.check(cpu, f"{what}: cpu", 32, True, lo=-1)
    pid = _check.pid(pid, what)
    _check.sample_rate(freq, period, what)
    attr = _PerfEventAttr(type=ptype, size=ctypes.sizeof(_PerfEventAttr), config=config)
    if period:
        attr.sample_period = period
    else:
        attr.sample_period, attr.flags = freq or 99, _PERF_FLAG_FREQ
    fd = _libc.syscall(_NR_PERF_EVENT_OPEN, ctypes.byref(attr), ctypes.c_int(pid),
                       ctypes.c_int(cpu), ctypes.c_int(-1), ctypes.c_ulong(0))
    if fd < 0:
        err = ctypes.get_errno()
        hint = ("hardware counters are often missing in VMs: use event='cpu-clock'"
                if err == errno.ENOENT else "")
        raise make(AttachError, f"perf_event_open({event}, cpu {cpu}) failed", err, hint=hint)
    return fd
