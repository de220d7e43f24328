"""Semantic columns: numbers that mean an address, an errno, a syscall... decoded.

A DataFrame column is decoded when its C type is one of bpf/bpfnb.h's semantic
typedefs (``bpfnb_ipv4_t daddr;``), or when asked by column name, for programs
written without them: ``map.to_df(decode={"daddr": "ipv4", "ret": "errno"})``,
``map.stream(decode=...)``, ``stream.to_df(decode=...)``. The decoded column keeps
the name and place; the original numbers come as ``<name>_raw``, after the record's
own columns.

==========  ======================================  ==================================
decoder     typedef / raw value                     decoded
==========  ======================================  ==================================
ipv4        ``bpfnb_ipv4_t``: 4 bytes, network      ``"127.0.0.1"``
            order (``sin_addr.s_addr``, ``daddr``)
ipv6        ``bpfnb_ipv6_t``: 16 bytes              ``"::1"``
port        ``bpfnb_port_t``: ``__be16``            ``8080`` (an int, host order)
errno       ``bpfnb_errno_t``: a return value       ``"ENOENT"`` for -2; a value >= 0
                                                    stays its number as text (``"3"``)
syscall     ``bpfnb_syscall_t``: x86-64 number      ``"openat"`` (``syscall_<n>`` when
                                                    the table lacks it)
signal      ``bpfnb_signal_t``                      ``"SIGUSR1"``, ``"SIGRTMIN+2"``
ksym        ``bpfnb_ksym_t``: kernel address        ``"pipe_read"``, ``"vfs_read+0x1a"``
                                                    (kallsyms; hex when unknown)
ktime       ``bpfnb_ktime_t``: bpf_ktime_get_ns()   a pandas Timestamp (UTC, naive);
                                                    0 -> NaT
dev         ``bpfnb_dev_t``: kernel dev_t           ``"8:0"`` (major = dev >> 20)
cgroup      ``bpfnb_cgroup_t``: cgroup id           its path under the cgroup2 mount,
                                                    as /proc/PID/cgroup shows it
strings     a char array of NUL-separated strings   a list of str
bytes       a char array                            its bytes
==========  ======================================  ==================================

Char arrays: ``char comm[16]`` is a str up to the first NUL. A char array with a
sibling ``<name>_size`` or ``<name>_len`` field (execsnoop's ``args`` and
``args_size``) holds several strings: it becomes the list of the NUL-separated
strings within its first ``size`` bytes; with only a ``<name>_count`` sibling, the
first ``count`` strings. ``decode={"args": "strings"}`` asks for the list (without a
size: up to the last non-NUL byte), ``"bytes"`` keeps the bytes (within the size when
there is one). These columns have no ``_raw`` twin: ``"bytes"`` is the raw form.

Every decoder works on the unique values of a column once and maps them back with
numpy: a million rows of a hundred addresses cost a hundred lookups.
"""

from __future__ import annotations

import errno as _errno
import ipaddress
import os
import platform
import re
import signal as _signal
import sys
from pathlib import Path

import numpy as np

from .libbpf.names import is_internal

TYPEDEFS = {f"bpfnb_{name}_t": name for name in
            ("ipv4", "ipv6", "port", "errno", "syscall", "signal", "ksym", "ktime", "dev",
             "cgroup")}
CHAR_DECODERS = ("strings", "bytes")
DECODERS = tuple(TYPEDEFS.values()) + CHAR_DECODERS
SIZE_SUFFIXES = ("_size", "_len")
COUNT_SUFFIX = "_count"
RAW_SUFFIX = "_raw"


def semantic_type(btf, type_id) -> str:
    """The decoder named by ``type_id``'s typedefs (through const/volatile), or ""."""
    if btf is None or not type_id:
        return ""
    for _ in range(16):
        t = btf.type(type_id)
        if t.kind == "typedef":
            if t.name in TYPEDEFS:
                return TYPEDEFS[t.name]
        elif t.kind not in ("const", "volatile", "restrict", "type_tag"):
            return ""
        type_id = t.type_id
    return ""


def check(decode: dict | None, columns) -> dict:
    """``decode`` validated against the column names: {column: decoder}."""
    if not decode:
        return {}
    if not isinstance(decode, dict):
        raise TypeError(f"decode must be a dict of column -> decoder, e.g. "
                        f"{{'daddr': 'ipv4'}}, not {type(decode).__name__}")
    bad = {c: d for c, d in decode.items() if d not in DECODERS}
    if bad:
        col, name = next(iter(bad.items()))
        raise ValueError(f"decode={{{col!r}: {name!r}}}: no such decoder; choose one of "
                         f"{', '.join(DECODERS)}")
    columns = list(columns)
    missing = [c for c in decode if c not in columns]
    if missing:
        raise ValueError(f"decode: no column {missing[0]!r}; the columns are "
                         f"{', '.join(columns) or 'none'}")
    return dict(decode)


def columns(pairs: list, decode: dict | None, plain) -> dict:
    """(column name, leaf) pairs -> {name: column}, decoded where asked.

    A leaf has ``raw`` (numpy values, one row each), ``kind`` ("num", "str", ...) and
    ``decoder`` (from its typedef, or ""); ``plain(leaf)`` is its undecoded column.
    Fields with internal names (bpfnb/libbpf/names.py) make no column.
    """
    pairs = [(name, leaf) for name, leaf in pairs if not is_internal(name)]
    asked = check(decode, (name for name, _ in pairs))
    by_name = dict(pairs)
    out, raws = {}, {}
    for name, leaf in pairs:
        how = asked.get(name) or leaf.decoder
        size, count = _siblings(name, by_name)
        if (not how and leaf.kind == "str" and leaf.raw.ndim == 1
                and (size is not None or count is not None)):
            how = "strings"
        if not how:
            out[name] = plain(leaf)
        elif how in CHAR_DECODERS:
            out[name] = _char_array(name, leaf.raw, how, size, count)
        else:
            out[name] = _decode(name, leaf.raw, how)
            if name + RAW_SUFFIX not in by_name:
                raws[name + RAW_SUFFIX] = plain(leaf)
    # The raw twins go last: the frame's leading columns stay those of the record
    # (views count a map's key columns by position).
    return {**out, **raws}


def _siblings(name: str, by_name: dict):
    """Raw values of integer fields ``<name>_size``/``_len`` and ``<name>_count``."""
    def ints(field):
        leaf = by_name.get(field)
        ok = leaf is not None and leaf.raw.ndim == 1 and leaf.raw.dtype.kind in "iu"
        return leaf.raw if ok else None
    size = next((ints(name + s) for s in SIZE_SUFFIXES if ints(name + s) is not None), None)
    return size, ints(name + COUNT_SUFFIX)


# --- numbers -------------------------------------------------------------------------

def _decode(name: str, raw: np.ndarray, how: str):
    if how == "ipv4":  # the 4 bytes as one native u32: hashed, not sorted as bytes
        words = _row_bytes(name, raw, 4, how).view(np.uint32)
        return _mapped(words, lambda v: ".".join(map(str, v.to_bytes(4, sys.byteorder))))
    if how == "ipv6":  # numpy 'S' drops trailing NULs: pad back to 16 bytes
        return _mapped(_row_bytes(name, raw, 16, how),
                       lambda b: ipaddress.IPv6Address(b.ljust(16, b"\0")).compressed)
    if raw.ndim != 1 or raw.dtype.kind not in "iu":
        raise TypeError(f"column {name!r} ({_describe(raw)}) cannot be decoded as {how}: "
                        f"it needs one integer per row")
    if how == "port":  # the two bytes as stored are the port in network order
        b = np.ascontiguousarray(raw.astype(np.uint16)).view(np.uint8).reshape(-1, 2)
        return (b[:, 0].astype(np.uint16) << 8) | b[:, 1]
    if how == "ktime":
        return _ktime(raw)
    if how == "dev":
        return _mapped(raw.astype(np.uint64), lambda v: f"{int(v) >> 20}:{int(v) & 0xfffff}")
    return _mapped(raw, _NAMERS[how]())


def _describe(raw: np.ndarray) -> str:
    shape = "x".join(str(n) for n in raw.shape[1:])
    return f"{raw.dtype}" + (f" arrays of {shape}" if shape else "")


def _row_bytes(name: str, raw: np.ndarray, width: int, how: str) -> np.ndarray:
    """Each row's ``width`` bytes as one fixed-size bytes value (numpy 'S')."""
    n = len(raw)
    per_row = raw.dtype.itemsize * (int(np.prod(raw.shape[1:])) if raw.ndim > 1 else 1)
    if per_row != width:
        raise TypeError(f"column {name!r} ({_describe(raw)}) cannot be decoded as {how}: "
                        f"it needs {width} bytes per row, not {per_row}")
    return np.ascontiguousarray(raw).view(np.uint8).reshape(n, width).view(f"S{width}")[:, 0]


def _mapped(raw: np.ndarray, name_of) -> np.ndarray:
    """``name_of`` applied to each distinct value once, mapped back to every row."""
    if raw.dtype.kind in "iu":  # a hash table: ~5x faster than np.unique's sort
        import pandas as pd
        inverse, uniq = pd.factorize(raw)
    else:
        uniq, inverse = np.unique(raw, return_inverse=True)
    names = np.empty(len(uniq), dtype=object)
    names[:] = [name_of(v) for v in uniq.tolist()]
    return names[inverse.reshape(-1)]


def _errno_namer():
    codes = _errno.errorcode
    return lambda v: codes.get(-v, str(v)) if v < 0 else str(v)


def _syscall_namer():
    table = syscall_names()
    return lambda v: table.get(v, f"syscall_{v}") if v >= 0 else str(v)


def _signal_namer():
    names = {int(s): s.name for s in _signal.Signals}
    rtmin, rtmax = int(_signal.SIGRTMIN), int(_signal.SIGRTMAX)
    for v in range(rtmin + 1, rtmax):  # libc names only the two ends of the range
        names[v] = f"SIGRTMIN+{v - rtmin}"
    return lambda v: names.get(v, f"SIG{v}" if 0 < v < 65 else str(v))


def _ksym_namer():
    from .symbols import default_symbolizer
    return default_symbolizer().kernel


def _cgroup_namer():
    return lambda v: cgroup_path(v) or str(v)


_NAMERS = {"errno": _errno_namer, "syscall": _syscall_namer, "signal": _signal_namer,
           "ksym": _ksym_namer, "cgroup": _cgroup_namer}


def _ktime(raw: np.ndarray) -> np.ndarray:
    from .stream import clock_offset
    ns = raw.astype(np.int64)
    out = (ns + clock_offset("monotonic")).view("datetime64[ns]")
    return np.where(ns == 0, np.datetime64("NaT", "ns"), out)


# --- syscall numbers -------------------------------------------------------------------

_syscalls: dict[int, str] = {}


def syscall_names() -> dict[int, str]:
    """{number: name} of this machine's system calls (read once).

    This kernel does not publish its table (kallsyms lists no data symbols such as
    sys_call_table without CONFIG_KALLSYMS_ALL, BTF has no syscall enum, tracefs
    shows no numbers), so the numbers come from the uapi header ``asm/unistd_64.h``
    (linux-libc-dev): x86-64 numbers are a fixed ABI, new kernels only add to it;
    a number the header lacks decodes as ``syscall_<n>``.
    """
    if not _syscalls:
        arch = platform.machine()
        for header in (f"/usr/include/{arch}-linux-gnu/asm/unistd_64.h",
                       "/usr/include/asm/unistd_64.h"):
            if Path(header).exists():
                text = Path(header).read_text()
                _syscalls.update({int(nr): name for name, nr in
                                  re.findall(r"#define __NR_(\w+)\s+(\d+)", text)})
                break
        else:
            raise FileNotFoundError("syscall names need asm/unistd_64.h: "
                                    "apt install linux-libc-dev")
    return _syscalls


# --- cgroups -----------------------------------------------------------------------------

_cgroups: dict[int, str] = {}
_MAX_CGROUPS = 100_000  # a walk of the hierarchy stops there


def cgroup2_mount() -> str | None:
    """Where the cgroup2 hierarchy is mounted (usually /sys/fs/cgroup)."""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    return fields[4]
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_path(cgroup_id: int) -> str | None:
    """The path of cgroup ``cgroup_id`` as /proc/PID/cgroup writes it ("/" is the root).

    A cgroup's id is the inode number of its directory in the cgroup2 mount; the
    hierarchy is walked again when an id is not known (cgroups come and go)."""
    if cgroup_id not in _cgroups:
        root = cgroup2_mount()
        if root is None:
            return None
        _cgroups.clear()
        stack = [root]
        while stack and len(_cgroups) < _MAX_CGROUPS:
            path = stack.pop()
            try:
                _cgroups[os.stat(path).st_ino] = "/" + os.path.relpath(path, root).lstrip(".")
                stack.extend(e.path for e in os.scandir(path) if e.is_dir(follow_symlinks=False))
            except OSError:  # removed meanwhile
                continue
    return _cgroups.get(cgroup_id)


# --- char arrays -----------------------------------------------------------------------

def _char_array(name: str, raw: np.ndarray, how: str, size, count):
    """NUL-separated strings of each row (or its bytes), within ``size`` when known."""
    if not (raw.ndim == 1 and raw.dtype.kind in "SV"
            or raw.ndim == 2 and raw.dtype.itemsize == 1):
        raise TypeError(f"column {name!r} ({_describe(raw)}) is not a char array: "
                        f"{how!r} decodes char[N] fields")
    n = len(raw)
    width = raw.dtype.itemsize if raw.ndim == 1 else raw.shape[1]
    b = np.ascontiguousarray(raw).view(np.uint8).reshape(n, width)
    if size is not None:
        used = np.clip(size.astype(np.int64), 0, width)
    else:  # up to the last non-NUL byte, its terminator included
        nonzero = b != 0
        last = width - 1 - np.argmax(nonzero[:, ::-1], axis=1)
        used = np.where(nonzero.any(axis=1), np.minimum(last + 2, width), 0)
    padded = np.pad(b, ((0, 0), (0, 1)))  # room for a terminator after a full row
    if how == "bytes":
        flat = padded[np.arange(width + 1) < used[:, None]].tobytes()
        ends = np.cumsum(used)
        return _per_row(flat, ends - used, ends)
    # Every row's used bytes end with a NUL (a cut-off last string gets one), so one
    # split of all rows' bytes yields each row's strings in turn.
    rows = np.arange(n)
    open_end = (used > 0) & (padded[rows, np.maximum(used - 1, 0)] != 0)
    padded[rows[open_end], used[open_end]] = 0
    inside = np.arange(width + 1) < (used + open_end)[:, None]
    strings = padded[inside].tobytes().decode("utf-8", "replace").split("\0")
    found = ((padded == 0) & inside).sum(axis=1)
    starts = np.cumsum(found) - found
    if count is not None and size is None:
        found = np.minimum(found, np.clip(count.astype(np.int64), 0, None))
    return _per_row(strings, starts, starts + found)


def _per_row(seq, starts, ends):
    """seq[start:end] for each row, as an object column."""
    import pandas as pd
    return pd.Series([seq[a:e] for a, e in zip(starts.tolist(), ends.tolist())],
                     dtype=object)
