"""BPF program streams (kernel 6.17+) and test runs, through the bpf() syscall.

libbpf 1.1.2 has no wrapper for BPF_PROG_STREAM_READ_BY_FD (a program's stdout and
stderr, written by the ``bpf_stream_vprintk`` kfunc and by the kernel when it reports
an error of the program), so this calls bpf(2) itself. Every buffer handed to the
kernel is a ctypes buffer of this module, with its true length.
"""

from __future__ import annotations

import ctypes
import os
import platform

BPF_PROG_TEST_RUN = 10
BPF_PROG_STREAM_READ_BY_FD = 37
BPF_STDOUT, BPF_STDERR = 1, 2

# bpf(2) syscall numbers (asm/unistd.h of each architecture)
_NR_BPF = {"x86_64": 321, "amd64": 321, "i386": 357, "i686": 357, "aarch64": 280,
           "arm64": 280, "riscv64": 280, "loongarch64": 280, "s390x": 351,
           "ppc64le": 361, "ppc64": 361, "armv7l": 386}

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class _TestRunAttr(ctypes.Structure):
    """union bpf_attr, the test run part (uapi/linux/bpf.h)."""
    _fields_ = [("prog_fd", ctypes.c_uint32), ("retval", ctypes.c_uint32),
                ("data_size_in", ctypes.c_uint32), ("data_size_out", ctypes.c_uint32),
                ("data_in", ctypes.c_uint64), ("data_out", ctypes.c_uint64),
                ("repeat", ctypes.c_uint32), ("duration", ctypes.c_uint32),
                ("ctx_size_in", ctypes.c_uint32), ("ctx_size_out", ctypes.c_uint32),
                ("ctx_in", ctypes.c_uint64), ("ctx_out", ctypes.c_uint64),
                ("flags", ctypes.c_uint32), ("cpu", ctypes.c_uint32),
                ("batch_size", ctypes.c_uint32)]


class _StreamReadAttr(ctypes.Structure):
    """union bpf_attr, the prog_stream_read part (6.17+)."""
    _fields_ = [("stream_buf", ctypes.c_uint64), ("stream_buf_len", ctypes.c_uint32),
                ("stream_id", ctypes.c_uint32), ("prog_fd", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    """bpf(cmd, &attr, sizeof attr) -> result, or -errno."""
    nr = _NR_BPF.get(platform.machine().lower())
    if nr is None:
        return -38  # ENOSYS: an architecture this table does not know
    rc = _libc.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr),
                       ctypes.c_uint(ctypes.sizeof(attr)))
    return rc if rc >= 0 else -ctypes.get_errno()


def run_once(prog_fd: int) -> int:
    """Run a program once with no input (BPF_PROG_TYPE_SYSCALL and others that allow
    it) -> its return value. Raises OSError when the kernel refuses the run."""
    attr = _TestRunAttr(prog_fd=prog_fd)
    rc = _bpf(BPF_PROG_TEST_RUN, attr)
    if rc < 0:
        raise OSError(-rc, f"BPF_PROG_TEST_RUN: {os.strerror(-rc)}")
    return ctypes.c_int32(attr.retval).value


def read_stream(prog_fd: int, stream_id: int, size: int = 65536) -> bytes:
    """What the program wrote to stream ``stream_id`` (BPF_STDOUT, BPF_STDERR) since
    the last read, at most ``size`` bytes; b"" when nothing. Raises OSError (EINVAL
    on a kernel without streams, ENOENT for an unknown stream id)."""
    if size <= 0 or size > 1 << 24:
        raise ValueError(f"read_stream: size {size} out of range (1 .. 16 MiB)")
    buf = ctypes.create_string_buffer(size)
    attr = _StreamReadAttr(stream_buf=ctypes.addressof(buf), stream_buf_len=size,
                           stream_id=stream_id, prog_fd=prog_fd)
    rc = _bpf(BPF_PROG_STREAM_READ_BY_FD, attr)
    if rc < 0:
        raise OSError(-rc, f"BPF_PROG_STREAM_READ_BY_FD: {os.strerror(-rc)}")
    return buf.raw[:min(rc, size)]
