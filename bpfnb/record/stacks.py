"""What a recording keeps of its stack-trace maps: the names of the frames each stack id
stands for, taken while recording (naming needs kallsyms and the sampled process's
memory map, which a replay elsewhere has not), so resolve_stacks/folded/flame answer
on a replay (bpfnb.replay) as they did live.

stacks/<map>.parquet is a change log: a row (``_snapshot``, ``_time``, ``stack_id``,
``pid``, ``frames``) when a (stack id, pid) pair first names its frames at a snapshot,
when its names change (the id was reused), or when the id left the map (``frames``
null). ``pid`` -1 is the naming without a process (kernel frames named, user ones hex):
every id in the map has it; ids a map's row names as a user stack (a column
``ustack_id``/``user_stack_id`` beside a ``pid``/``tgid`` column, as libbpf-tools'
profile.bpf.c keys its counts) also get their user frames named through that pid.
``frames`` are the names with offsets and modules (``"vfs_read+0x12"``,
``"main+0x3 (busy)"``), joined by newlines ("" for an empty stack); a replay drops the
offsets and modules unless asked for them, as Symbolizer.frames does.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..libbpf.map import STACK_TRACE
from ..symbols import BPF_F_STACK_BUILD_ID, KERNEL_MIN, Symbolizer, read_stacks

USER_COLUMNS = ("ustack_id", "user_stack_id")
PID_COLUMNS = ("pid", "tgid")
NO_PID = -1


def stack_maps(obj) -> list:
    """The stack-trace maps of ``obj`` whose stacks can be named (not build-id ones)."""
    return [m for m in obj.maps
            if m.type == STACK_TRACE and not m.map_flags & BPF_F_STACK_BUILD_ID]


def _column(df: pd.DataFrame, names) -> str | None:
    for c in df.columns:
        if isinstance(c, str) and c.rsplit(".", 1)[-1] in names:
            return c
    return None


def user_pairs(frames: dict) -> set:
    """(user stack id, pid) of every row of the recorded frames ({map: DataFrame})."""
    pairs = set()
    for df in frames.values():
        if df is None or not len(df):
            continue
        ucol, pcol = _column(df, USER_COLUMNS), _column(df, PID_COLUMNS)
        if ucol is None or pcol is None:
            continue
        pairs.update(zip(df[ucol].astype("int64").tolist(), df[pcol].astype("int64").tolist()))
    return pairs


class StackNames:
    """Names the stacks of one object's stack maps at each snapshot (the recorder's
    thread), and keeps what it last wrote per (stack id, pid) to write only changes."""

    def __init__(self, obj):
        self.maps = stack_maps(obj)
        # kallsyms read again when a second old: BPF programs' frames (other tools'
        # tracepoints run inside the sampled syscalls) come and go with them.
        self.sym = Symbolizer(kallsyms_ttl=1.0)
        self._last: dict[str, dict] = {m.name: {} for m in self.maps}
        self._ips: dict[str, dict] = {m.name: {} for m in self.maps}
        self._adopted: set = set()

    def held(self) -> dict | None:
        """The stacks of every stack map now ({map: read_stacks()}), None without any."""
        return {m.name: read_stacks(m) for m in self.maps} or None

    def changes(self, stack_map, frames: dict, stacks: dict | None = None) -> pd.DataFrame:
        """Rows (stack_id, pid, frames) that changed since the last snapshot; ``frames``
        {map: DataFrame} are the rows recorded, ``stacks`` the map's stacks (read_stacks)
        when they were (else read now)."""
        if stacks is None:
            stacks = read_stacks(stack_map)
        last = self._last[stack_map.name]
        now = {(i, NO_PID): ips for i, ips in stacks.items()}
        for stack_id, pid in user_pairs(frames):
            ips = stacks.get(stack_id)
            if ips is not None and pid > 0 and bool((ips < KERNEL_MIN).any()):
                now[(stack_id, pid)] = ips
        rows = []
        seen = self._ips[stack_map.name]
        for (stack_id, pid), ips in now.items():
            old = seen.get((stack_id, pid))
            if old is not None and np.array_equal(old, ips):
                continue  # named already (the names of new stacks only: kallsyms' age)
            seen[(stack_id, pid)] = ips
            if pid != NO_PID and pid not in self._adopted:
                self._adopted.add(pid)
                self.sym.adopt(pid)  # a snapshot the notebook took, for a process gone
            text = "\n".join(self.sym.frames(ips, None if pid == NO_PID else pid,
                                             offsets=True, modules=True))
            if last.get((stack_id, pid)) != text:
                last[(stack_id, pid)] = text
                rows.append((stack_id, pid, text))
        for key, text in list(last.items()):
            if key[0] not in stacks and text is not None:  # the id left the map
                last[key] = None
                seen.pop(key, None)
                rows.append((key[0], key[1], None))
        return pd.DataFrame({"stack_id": pd.Series([r[0] for r in rows], dtype="int64"),
                             "pid": pd.Series([r[1] for r in rows], dtype="int64"),
                             "frames": pd.Series([r[2] for r in rows], dtype=object)})
