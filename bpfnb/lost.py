"""Counting the records that never reach a ring or perf buffer (EventStream.lost).

Objects built by bpfnb count their failed writes themselves: bpf/bpf/bpf_helpers.h
wraps bpf_ringbuf_reserve, bpf_ringbuf_output, bpf_ringbuf_reserve_dynptr and
bpf_perf_event_output, and a failure adds 1 to the .bss total ``bpfnb_lost`` and to
a counter of the call site, whose BTF decl tag ``bpfnb_lost:<map argument>`` keeps
the map argument as written (``&events``). A map's count is the total minus the sites
that name other maps: a site writing through a pointer variable (``void *ring = ...``)
names none, so it counts towards every map of the object -- more than the truth
rather than less, never a silent 0.

A perf buffer counts its own losses (its events, see libbpf/ringbuf.py): used unless
a counted call site names the map, which also sees failures the events do not (no
event on that CPU, a record too big). A ring buffer keeps no count: for an object
that does not count, its losses are unknown (None) and ``reason`` says why.
"""

from __future__ import annotations

import re
from pathlib import Path

from .libbpf import BPFError, ObjectClosedError
from .libbpf.map import PERF_EVENT_ARRAY

TOTAL = "bpfnb_lost"
SITE_TAG = "bpfnb_lost:"
NOT_COUNTED = ("the object was not built by bpfnb, so failed reservations are not "
               "counted")

# What the map argument reads as once spaces and a cast are gone: &name, (&name)...
_MAP_ARGUMENT = re.compile(r"\(*&?\(*(\w+)\)*")
_SPACES_AND_CASTS = re.compile(r"\s+|\((?:const\s*)?(?:void|struct\s*\w+)\s*\*\)")


class LostCounter:
    """The failed writes into one map so far (``read()``), or None with ``reason``."""

    def __init__(self, obj, map, perf_reader=None):
        self._bss = obj.globals.get("bss")
        self._perf = perf_reader
        self._others: list[str] | None = None  # site counters of the other maps
        self._last = 0
        self.reason: str | None = None
        if self._bss is None or obj.btf is None or TOTAL not in self._bss:
            if map.type != PERF_EVENT_ARRAY:
                self.reason = _not_counted_reason(obj)
            return
        named = _sites_by_map(obj, self._bss)
        if map.type == PERF_EVENT_ARRAY and map.name not in named:
            return  # no counted write names it: its events' count is the better one
        self._others = [site for name, sites in named.items() if name != map.name
                        for site in sites]

    def read(self) -> int | None:
        if self._others is None:
            return self._perf.lost if self._perf is not None else None
        try:  # once the object is gone its last value stands
            self._last = int(getattr(self._bss, TOTAL)) - sum(
                int(getattr(self._bss, site)) for site in self._others)
        except (ObjectClosedError, BPFError):
            pass
        return self._last


def _sites_by_map(obj, bss) -> dict[str, list[str]]:
    """{map name: [its call sites' counter variables]}, from the BTF decl tags."""
    btf = obj.btf
    named: dict[str, list[str]] = {}
    for t in btf.types():
        if t.kind != "decl_tag" or not t.name.startswith(SITE_TAG):
            continue
        m = _MAP_ARGUMENT.fullmatch(_SPACES_AND_CASTS.sub("", t.name[len(SITE_TAG):]))
        var = btf.type(t.type_id)
        if m and m.group(1) in obj.maps and var.name in bss:
            named.setdefault(m.group(1), []).append(var.name)
    return named


def _not_counted_reason(obj) -> str:
    from . import build
    path = getattr(obj, "path", None)
    try:
        ours = path is not None and (
            Path(path).resolve().parent == (build.cache_dir() / "obj").resolve())
    except OSError:
        ours = False
    if ours:
        return ("no write into this ring buffer was compiled through bpfnb's "
                "<bpf/bpf_helpers.h> (is another one first on the include path?), so "
                "failed reservations are not counted")
    return NOT_COUNTED
