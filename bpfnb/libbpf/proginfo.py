"""What the kernel says of a loaded program (bpf_prog_info), ours or any other by id."""

from __future__ import annotations

import ctypes
import os
import struct

from . import _check
from ._lib import lib


# struct bpf_prog_info (uapi): id at 4, name[16] at 64, run_time_ns at 192, run_cnt at
# 200, verified_insns at 216. The kernel zero-fills what an older kernel lacks.
_PROG_INFO_SIZE = 232


def prog_info(fd: int) -> dict | None:
    """id, name, run_cnt, run_time_ns, verified_insns of the program behind ``fd``."""
    buf = ctypes.create_string_buffer(_PROG_INFO_SIZE)
    size = ctypes.c_uint32(_PROG_INFO_SIZE)
    if lib.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size)) < 0:
        return None
    raw = buf.raw
    return {"id": struct.unpack_from("<I", raw, 4)[0],
            "name": raw[64:80].split(b"\0")[0].decode(errors="replace"),
            "run_time_ns": struct.unpack_from("<Q", raw, 192)[0],
            "run_cnt": struct.unpack_from("<Q", raw, 200)[0],
            "verified_insns": struct.unpack_from("<I", raw, 216)[0]}


def kernel_prog_info(prog_id: int) -> dict | None:
    """prog_info() of any program in the kernel by id; None once it is gone."""
    fd = lib.bpf_prog_get_fd_by_id(_check.u32(prog_id, "kernel_prog_info: prog_id"))
    if fd < 0:
        return None
    try:
        return prog_info(fd)
    finally:
        os.close(fd)


def kernel_ids(kind: str = "prog") -> set[int]:
    """Ids of every BPF program (or link) loaded in the kernel, ours or not."""
    next_id = {"prog": lib.bpf_prog_get_next_id, "link": lib.bpf_link_get_next_id}[kind]
    ids, cur, nxt = set(), 0, ctypes.c_uint32()
    while next_id(cur, ctypes.byref(nxt)) == 0:
        cur = nxt.value
        ids.add(cur)
    return ids
