"""Stack traces to names, and stacks to flame-graph input.

Kernel addresses resolve through /proc/kallsyms; user addresses through the process's
/proc/PID/maps and the ELF symbol tables (.symtab, .dynsym, and a
/usr/lib/debug/.build-id/ debug file when one is installed) of the mapped files.

API
---
``Symbolizer()``
    ``kernel(addr)`` -> ``"vfs_read+0x12"``; ``user(pid, addr)`` ->
    ``"main+0x3 (prog)"``; an address nothing covers comes back as hex.
    ``frames(ips, pid)`` names a whole stack; ``snapshot(pid)`` captures a process's
    mappings (and reads their symbols) while it still runs.
``stack_map_to_df(map, pid=None)``
    A BPF_MAP_TYPE_STACK_TRACE map as a DataFrame: ``stack_id``, ``frames``
    (innermost first), ``depth``.
``resolve_stacks(df, stack_map, kernel_col="kstack_id", user_col="ustack_id",
pid_col="pid")``
    Adds ``kstack``/``ustack`` frame-list columns to rows carrying stack ids.
``folded(df, stack_map=None, ...)``
    Brendan Gregg's folded format (``comm;outer;...;inner count``) for
    flamegraph.pl, speedscope or inferno.

A process that has exited cannot be resolved: its /proc/PID/maps is gone. Call
``Symbolizer.snapshot(pid)`` while it runs and resolve through that same Symbolizer
(``symbolizer=`` of the functions above). Frames are named by their symbol only: no
inlined functions, no line numbers, no C++/Rust demangling; JIT code (anonymous
mappings) stays hex. User stacks need frame pointers in the traced code
(``-fno-omit-frame-pointer``); without them the kernel's walk stops early.
"""

from __future__ import annotations

import errno
import os
import time
import weakref
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import symtab
from .libbpf.map import STACK_TRACE
from .symtab import KERNEL_MIN, ElfSymbols, KernelSymbols

BPF_F_STACK_BUILD_ID = 1 << 5


def _hex(addr: int) -> str:
    return f"{addr:#x}"


def _name(sym: str, off: int, offset: bool, where: str) -> str:
    text = f"{sym}+{off:#x}" if offset and off else sym
    return f"{text} {where}" if where else text


# --- processes ----------------------------------------------------------------------

_UNREAD = object()


@dataclass
class _Mapping:
    start: int
    end: int
    offset: int
    inode: int
    path: str
    elf: object = field(default=_UNREAD, repr=False)

    @property
    def label(self) -> str:
        return f"({os.path.basename(self.path.removesuffix(' (deleted)'))})"


class _Process:
    """One reading of /proc/PID/maps: executable file-backed mappings, sorted."""

    def __init__(self, pid: int, pinned: bool = False):
        self.pid = pid
        self.pinned = pinned
        with open(f"/proc/{pid}/maps") as f:
            self.text = f.read()
        self.starttime = _starttime(pid)
        self.read_at = time.monotonic()
        self.maps = []
        for line in self.text.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) < 6 or "x" not in parts[1]:
                continue
            lo, hi = parts[0].split("-")
            self.maps.append(_Mapping(int(lo, 16), int(hi, 16), int(parts[2], 16),
                                      int(parts[4]), parts[5]))
        self.maps.sort(key=lambda m: m.start)
        self.starts = np.array([m.start for m in self.maps], dtype=np.uint64)
        self.memo: dict = {}

    def find(self, addr: int) -> _Mapping | None:
        i = int(np.searchsorted(self.starts, np.uint64(addr), side="right")) - 1
        if i >= 0 and addr < self.maps[i].end:
            return self.maps[i]
        return None

    def symbols(self, m: _Mapping) -> ElfSymbols | None:
        if m.elf is _UNREAD:
            if m.path == "[vdso]":
                m.elf = symtab.vdso_symbols()
            else:
                m.elf = self._open(m) if m.inode else None  # 0: [heap], [vsyscall]...
        return m.elf

    def _open(self, m: _Mapping) -> ElfSymbols | None:
        # map_files/ reaches deleted and replaced files; root/ other mount namespaces.
        for path in (f"/proc/{self.pid}/map_files/{m.start:x}-{m.end:x}",
                     f"/proc/{self.pid}/root{m.path}", m.path):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                if os.fstat(fd).st_ino == m.inode:  # the very file the process mapped
                    return symtab.elf_symbols(fd)
            finally:
                os.close(fd)
        return None


def _starttime(pid: int) -> int:
    """Boot-relative start time of ``pid``: tells a process from a later one reusing its id."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


# --- the symbolizer -----------------------------------------------------------------

class Symbolizer:
    """Names for kernel and user addresses; caches kallsyms, mappings and ELF symbols.

    A process's mappings are re-read at most every ``maps_ttl`` seconds while it runs;
    once it has exited, the last reading (or ``snapshot``) stays in use. kallsyms is
    re-read when older than ``kallsyms_ttl`` seconds, for the BPF programs and
    modules loaded since (reading it takes ~0.1 s).
    """

    def __init__(self, kallsyms: str = "/proc/kallsyms", maps_ttl: float = 1.0,
                 kallsyms_ttl: float = 10.0):
        self._kallsyms_path = kallsyms
        self._kallsyms: KernelSymbols | None = None
        self._kallsyms_at = 0.0
        self._kmemo: dict = {}
        self._procs: dict[int, _Process] = {}
        self.maps_ttl = maps_ttl
        self.kallsyms_ttl = kallsyms_ttl

    @property
    def kallsyms(self) -> KernelSymbols:
        now = time.monotonic()
        if self._kallsyms is None or now - self._kallsyms_at > self.kallsyms_ttl:
            self._kallsyms = KernelSymbols(self._kallsyms_path)
            self._kallsyms_at = now
            self._kmemo.clear()
        return self._kallsyms

    def refresh(self):
        """Forget kallsyms (BPF programs and modules come and go) and live mappings."""
        self._kallsyms = None
        self._kmemo.clear()
        self._procs = {pid: p for pid, p in self._procs.items() if p.pinned}

    def kernel(self, addr: int, offset: bool = True, module: bool = True) -> str:
        """``"func+0x12"`` (``"func+0x12 [mod]"`` in a module); hex when unknown."""
        table = self.kallsyms  # first: a reload clears the memo
        key = (addr, offset, module)
        name = self._kmemo.get(key)
        if name is None:
            hit = table.lookup(addr)
            name = _hex(addr) if hit is None else _name(
                hit[0], hit[1], offset, f"[{hit[2]}]" if module and hit[2] else "")
            self._kmemo[key] = name
        return name

    def snapshot(self, pid: int) -> "Symbolizer":
        """Read ``pid``'s mappings and their symbols now, to resolve its stacks after
        it exits. Raises ProcessLookupError when it is already gone."""
        try:
            proc = _Process(pid, pinned=True)
        except (FileNotFoundError, ProcessLookupError):
            raise ProcessLookupError(errno.ESRCH, f"no process {pid}: snapshot a process "
                                                  f"while it runs") from None
        for m in proc.maps:
            proc.symbols(m)
        self._procs[pid] = proc
        _snapshots[pid] = proc
        return self

    def adopt(self, pid: int) -> bool:
        """Name ``pid``'s frames through another Symbolizer's snapshot of it (a recorder,
        for a process the notebook snapshotted); False when there is none."""
        proc = _snapshots.get(pid)
        if proc is None or pid in self._procs:
            return False
        self._procs[pid] = proc
        return True

    def forget(self, pid: int):
        self._procs.pop(pid, None)

    def _process(self, pid: int) -> _Process | None:
        old = self._procs.get(pid)
        if old is not None and time.monotonic() - old.read_at < self.maps_ttl:
            return old
        try:
            new = _Process(pid, pinned=old is not None and old.pinned)
        except OSError:  # exited: keep the last reading, if any
            return old
        if old is not None and old.starttime == new.starttime and old.text == new.text:
            old.read_at = new.read_at  # unchanged: keep its memo and loaded symbols
            return old
        if old is not None and old.pinned and old.starttime != new.starttime:
            return old  # the pid now belongs to another process; the snapshot stays
        self._procs[pid] = new
        return new

    def user(self, pid: int, addr: int, offset: bool = True, module: bool = True) -> str:
        """``"func+0x3 (libc.so.6)"``; ``"0x7f.. (libc.so.6)"`` without a symbol; hex
        outside any file mapping or when the process is unknown."""
        proc = self._process(pid)
        if proc is None:
            return _hex(addr)
        key = (addr, offset, module)
        name = proc.memo.get(key)
        if name is None:
            name = self._user(proc, addr, offset, module)
            proc.memo[key] = name
        return name

    def _user(self, proc: _Process, addr: int, offset: bool, module: bool) -> str:
        m = proc.find(addr)
        if m is None:
            return _hex(addr)
        where = m.label if module else ""
        elf = proc.symbols(m)
        vaddr = elf.vaddr(addr - m.start + m.offset) if elf is not None else None
        hit = elf.lookup(vaddr) if vaddr is not None else None
        if hit is None:
            return _name(_hex(addr), 0, False, where)
        return _name(hit[0], hit[1], offset, where)

    def frames(self, ips, pid: int | None = None, offsets: bool = False,
               modules: bool = False) -> list[str]:
        """Names of a stack's addresses, innermost first, up to the first 0. Kernel
        addresses (upper half) via kallsyms; user ones via ``pid`` (hex without it)."""
        out = []
        for ip in ips:
            ip = int(ip)
            if ip == 0:
                break
            if ip >= KERNEL_MIN:
                out.append(self.kernel(ip, offsets, modules))
            elif pid is not None:
                out.append(self.user(pid, ip, offsets, modules))
            else:
                out.append(_hex(ip))
        return out


_default: Symbolizer | None = None
# The snapshots taken (Symbolizer.snapshot), while a Symbolizer holds them: for adopt().
_snapshots: "weakref.WeakValueDictionary[int, _Process]" = weakref.WeakValueDictionary()


def default_symbolizer() -> Symbolizer:
    """The process-wide Symbolizer the functions below use when given none."""
    global _default
    if _default is None:
        _default = Symbolizer()
    return _default


# --- stack-trace maps -----------------------------------------------------------------

def read_stacks(stack_map) -> dict[int, np.ndarray]:
    """Stack id -> array of instruction pointers (innermost first, zeros dropped)."""
    if stack_map.type != STACK_TRACE:
        raise TypeError(f"map {stack_map.name!r} is a {stack_map.type_name}, not a "
                        f"stack_trace map")
    if stack_map.map_flags & BPF_F_STACK_BUILD_ID:
        raise TypeError(f"map {stack_map.name!r} holds build-id stacks "
                        f"(BPF_F_STACK_BUILD_ID), which bpfnb does not decode")
    keys, values = stack_map.lookup_batch()
    n = len(keys)
    if n == 0:
        return {}
    ids = np.frombuffer(keys.tobytes(), dtype="<u4")
    ips = np.frombuffer(values.tobytes(), dtype="<u8").reshape(n, -1)
    zero = ips == 0
    depth = np.where(zero.any(axis=1), zero.argmax(axis=1), ips.shape[1])
    return {int(i): ips[row, :depth[row]] for row, i in enumerate(ids)}


def stack_map_to_df(stack_map, pid: int | None = None, *,
                    symbolizer: Symbolizer | None = None, offsets: bool = False,
                    modules: bool = False) -> pd.DataFrame:
    """One row per stack id: ``stack_id``, ``frames`` (innermost first), ``depth``.

    User frames are named through ``pid``'s mappings; without ``pid`` they stay hex.
    """
    sym = symbolizer or default_symbolizer()
    stacks = read_stacks(stack_map)
    ids = sorted(stacks)
    frames = [sym.frames(stacks[i], pid, offsets, modules) for i in ids]
    return pd.DataFrame({"stack_id": pd.Series(ids, dtype="int64"),
                         "frames": pd.Series(frames, dtype=object),
                         "depth": pd.Series([len(stacks[i]) for i in ids], dtype="int64")})


def _column(df: pd.DataFrame, name: str | None) -> str | None:
    """``name``, or the one column ending in ``.name`` (struct keys flatten to key.x)."""
    if name is None:
        return None
    if name in df.columns:
        return name
    found = [c for c in df.columns if isinstance(c, str) and c.endswith("." + name)]
    return found[0] if len(found) == 1 else None


def _missing(stack_id: int) -> list[str]:
    # -EFAULT: no stack of that kind (a sample in user mode has no kernel stack, a
    # kernel thread no user stack); other errors mean the stack was lost.
    if stack_id == -errno.EFAULT:
        return []
    if stack_id < 0:
        return [f"[lost stack: {errno.errorcode.get(-stack_id, -stack_id)}]"]
    return [f"[stack {stack_id} not in map]"]


def resolve_stacks(df: pd.DataFrame, stack_map, kernel_col: str = "kstack_id",
                   user_col: str = "ustack_id", pid_col: str | None = "pid", *,
                   symbolizer: Symbolizer | None = None, offsets: bool = False,
                   modules: bool = False) -> pd.DataFrame:
    """A copy of ``df`` with ``kstack``/``ustack`` columns of frame lists (innermost
    first) for its stack-id columns. Negative ids are bpf_get_stackid() errors:
    -EFAULT gives an empty list, others a ``[lost stack: E...]`` frame."""
    sym = symbolizer or default_symbolizer()
    kcol, ucol, pcol = _column(df, kernel_col), _column(df, user_col), _column(df, pid_col)
    if kcol is None and ucol is None:
        raise KeyError(f"no stack-id column {kernel_col!r} or {user_col!r}; the "
                       f"DataFrame has {list(df.columns)}")
    # A replayed stack map (bpfnb.replay) answers with the names recorded live.
    recorded = getattr(stack_map, "recorded_frames", None)
    stacks = read_stacks(stack_map) if recorded is None else {}
    memo: dict = {}

    def named(stack_id, pid):
        stack_id = int(stack_id)
        key = (stack_id, pid)
        if key not in memo:
            if recorded is not None:
                names = recorded(stack_id, pid, offsets=offsets, modules=modules)
                memo[key] = _missing(stack_id) if names is None else names
            else:
                ips = stacks.get(stack_id)
                memo[key] = (_missing(stack_id) if ips is None
                             else sym.frames(ips, pid, offsets, modules))
        return memo[key]

    out = df.copy()
    pids = out[pcol].astype(int).tolist() if pcol else [None] * len(out)
    if kcol is not None:
        out["kstack"] = pd.Series([named(s, None) for s in out[kcol].tolist()],
                                  index=out.index, dtype=object)
    if ucol is not None:
        out["ustack"] = pd.Series([named(s, p) for s, p in zip(out[ucol].tolist(), pids)],
                                  index=out.index, dtype=object)
    return out


# --- folded stacks ----------------------------------------------------------------------

_COUNT_NAMES = ("count", "counts", "samples", "value", "val")


def _count_column(df: pd.DataFrame, count_col: str | None) -> str | None:
    if count_col is not None:
        found = _column(df, count_col)
        if found is None:
            raise KeyError(f"no count column {count_col!r} in {list(df.columns)}")
        return found
    for name in _COUNT_NAMES:
        found = _column(df, name)
        if found is not None:
            return found
    return None  # one row per event: each counts 1


def _clean(frame: str) -> str:
    # ';' separates frames and a line ends in " count": keep names on one line.
    return str(frame).replace(";", ":").replace("\n", " ")


def folded(df, stack_map=None, *, count_col: str | None = None, comm_col: str | None = "comm",
           kernel_col: str = "kstack", user_col: str = "ustack", pid_col: str | None = "pid",
           kernel_suffix: str = "", symbolizer: Symbolizer | None = None) -> str:
    """Folded stacks, one ``comm;user outer;...;user inner;kernel outer;...;kernel inner
    count`` line per distinct stack, for flamegraph.pl and friends.

    ``df`` holds frame-list columns ``kstack``/``ustack`` (from ``resolve_stacks``), or
    the stack-id columns ``kstack_id``/``ustack_id`` together with ``stack_map``; a
    counts map (profile.bpf.c style, keyed by pid, stack ids and comm) may be passed
    as the map itself. The count comes from ``count_col`` (default: a column named
    count/samples/value), else each row counts 1. ``kernel_suffix="_[k]"`` marks kernel
    frames the way flamegraph.pl's --color=java colours them.
    """
    if not isinstance(df, pd.DataFrame):
        if not hasattr(df, "to_df"):
            raise TypeError(f"folded() wants a DataFrame or a bpfnb Map of counts, not "
                            f"{type(df).__name__}")
        df = df.to_df()
    kcol, ucol = _column(df, kernel_col), _column(df, user_col)
    if kcol is None and ucol is None:
        if stack_map is None:
            raise KeyError(f"no {kernel_col!r}/{user_col!r} frame columns: pass the "
                           f"stack map to resolve stack ids (columns: {list(df.columns)})")
        df = resolve_stacks(df, stack_map, pid_col=pid_col, symbolizer=symbolizer)
        kcol, ucol = _column(df, "kstack"), _column(df, "ustack")
    ccol, ncol = _column(df, comm_col), _count_column(df, count_col)
    empty = [[]] * len(df)
    comms = df[ccol].tolist() if ccol else [None] * len(df)
    counts = df[ncol].tolist() if ncol else [1] * len(df)
    kstacks = df[kcol].tolist() if kcol else empty
    ustacks = df[ucol].tolist() if ucol else empty
    totals: dict[str, int] = {}
    for comm, count, kstack, ustack in zip(comms, counts, kstacks, ustacks):
        parts = [_clean(comm)] if comm else []
        parts += [_clean(f) for f in reversed(list(ustack))]
        parts += [_clean(f) + kernel_suffix for f in reversed(list(kstack))]
        if parts:
            line = ";".join(parts)
            totals[line] = totals.get(line, 0) + int(count)
    return "".join(f"{line} {n}\n" for line, n in sorted(totals.items()))
