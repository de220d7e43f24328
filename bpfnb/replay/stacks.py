"""Stacks on a replay: the frames a recorded stack id named live (stacks/<map>.parquet,
see bpfnb/record/stacks.py), so ``resolve_stacks``, ``folded`` and ``flame`` of
bpfnb.symbols / bpfnb.flame answer on a replayed map as on the live one, at the
snapshot the replay shows (the read's, following reads).

A recording made before stack names were recorded still has the stack map's rows
(maps/<map>.parquet: kernel frames named, user frames hex, no offsets): those answer.
"""

from __future__ import annotations

import bisect
import re

from ..follow import uncounted
from .parts import ReplayError

NO_PID = -1
_OFFSET = re.compile(r"\+0x[0-9a-f]+$")


def _plain(name: str, offsets: bool, modules: bool) -> str:
    """A recorded name ("main+0x3 (busy)", "f+0x1 [mod]") as Symbolizer.frames names
    it with ``offsets``/``modules`` off."""
    base, where = name, ""
    for opening, closing in ((" (", ")"), (" [", "]")):
        if name.endswith(closing) and opening in name:
            base, rest = name.rsplit(opening, 1)
            where = opening + rest
            break
    if not offsets:
        base = _OFFSET.sub("", base)
    return base + (where if modules else "")


class StackLog:
    """stacks/<map>.parquet by (stack id, pid): the snapshots where its names changed."""

    def __init__(self, table):
        self.index: dict = {}
        if table.num_rows:
            cols = [table.column(c).to_pylist() for c in ("_snapshot", "stack_id", "pid",
                                                          "frames")]
            for snap, stack_id, pid, text in sorted(zip(*cols), key=lambda r: r[0]):
                snaps, texts = self.index.setdefault((stack_id, pid), ([], []))
                snaps.append(snap)
                texts.append(text)

    def names(self, stack_id: int, pid: int | None, snapshot: int) -> list | None:
        """The names at ``snapshot`` (innermost first), or None: not in the map then."""
        for key in ((stack_id, NO_PID if pid is None else int(pid)), (stack_id, NO_PID)):
            found = self.index.get(key)
            if found is None:
                continue
            i = bisect.bisect_right(found[0], snapshot) - 1
            if i < 0:
                continue
            text = found[1][i]
            return None if text is None else (text.split("\n") if text else [])
        return None


def recorded_frames(m, stack_id: int, pid: int | None = None, *, offsets: bool = False,
                    modules: bool = False) -> list | None:
    """The frames stack ``stack_id`` of the replayed stack map ``m`` named live
    (through ``pid``'s memory map), innermost first; None: not in the map."""
    obj = m._obj
    obj._check_open()
    stack_id = int(stack_id)
    snapshot = obj._snapshot_now()
    if stack_id < 0 or snapshot is None:
        return None
    if m._stack_log is None and m.info.get("stacks_file"):
        m._stack_log = StackLog(obj._read(f"stack names of {m.name!r}",
                                          m.info["stacks_file"]))
    if m._stack_log is not None:
        names = m._stack_log.names(stack_id, pid, snapshot)
        return None if names is None else [_plain(n, offsets, modules) for n in names]
    if offsets or modules:
        raise ReplayError(f"{obj.describe()} was recorded before stack names were: its "
                          f"frames of {m.name!r} have no offsets nor modules (and user "
                          f"frames are hex); record it again for them")
    df = m._snaps.rows(snapshot)
    hit = df[df["stack_id"] == stack_id]
    return None if hit.empty else list(hit["frames"].iloc[0])


def recorded_folded(m, *, stack_map=None, symbolizer=None, **options) -> str:
    """flame.folded_of() of a replayed map counting stacks (bpfnb.symbols.folded)."""
    from .. import symbols
    if m._snaps is None:
        raise TypeError(f"flame/folded want a map of counts; {m.name!r} has no snapshots")
    columns = {c.rsplit(".", 1)[-1] for c in m._snaps.table.column_names}
    if {"kstack", "ustack"} & columns:
        # Keyed by bpfnb_kstack/ustack: named when recorded; live, this reads the map
        # without counting (aggregate.to_df), so here too.
        with uncounted():
            df = m.to_df()
        return symbols.folded(df, symbolizer=symbolizer, **options)
    if stack_map is None:
        from ..flame import stack_map_of  # how we got here: flame.folded_of
        stack_map = stack_map_of(m)
    return symbols.folded(m.to_df(), stack_map, symbolizer=symbolizer, **options)
