"""What ``%bpf list`` shows: the registry's live objects, one row per program, with
what each program costs (bpfnb.overhead)."""

from __future__ import annotations

import html

import pandas as pd

from . import overhead
from .registry import Registry, registry

EMPTY = "no BPF objects loaded (a %%bpf NAME cell loads one)"


class ObjectsFrame(pd.DataFrame):
    """A DataFrame that says so when it is empty (instead of showing bare headers);
    what is computed from it is a plain DataFrame."""

    @property
    def _constructor(self):
        return pd.DataFrame

    def __repr__(self):
        return EMPTY if self.empty else super().__repr__()

    def _repr_html_(self):
        return f"<i>{html.escape(EMPTY)}</i>" if self.empty else super()._repr_html_()


LIST_COLUMNS = ["name", "state", "program", "hook", "runs", "events_per_s", "ns_per_run",
                "cpu_pct", "maps", "age_s"]


def objects_frame(reg: Registry | None = None, wait: bool = True) -> "ObjectsFrame":
    """The live objects, one row per program, with what each costs (what ``%bpf list``
    shows): runs counted while BPF stats are on, events/s and share of one CPU since
    the previous look (``wait``: a first look waits a moment for them; see
    bpfnb.overhead), mean ns per run. Integers stay integers (pandas' Int64: <NA>
    where unknown)."""
    entries = (reg or registry).entries()
    # a bpfnb.fleet object (live_ids) runs its programs on other machines
    here = [e.obj for e in entries if getattr(e.obj, "live_ids", None) is None]
    costs = dict(zip(map(id, here), overhead.measure(here, wait=wait)))
    rows = []
    for entry in entries:
        obj = entry.obj
        maps = ", ".join(m.name for m in obj.maps)
        common = {"name": entry.name, "maps": maps, "age_s": round(entry.age, 1)}
        if id(obj) not in costs:
            rows.append({**common, "state": f"on {len(obj.live_ids)} engines",
                         "program": ", ".join(p.name for p in obj.progs)})
            continue
        cost = costs[id(obj)]
        progs = [p for p in obj.progs if p.autoload]
        for p in progs or [None]:
            c = cost.get(p.name) if p is not None else None
            rows.append({**common,
                         "state": ("attached" if p is not None and p.links else obj.state),
                         "program": "" if p is None else p.name,
                         "hook": "" if p is None else p.hook,
                         "runs": None if c is None else c.runs,
                         "events_per_s": None if c is None or c.per_s is None
                         else round(c.per_s, 1),
                         "ns_per_run": None if c is None else c.ns_per_run,
                         "cpu_pct": None if c is None or c.cpu_pct is None
                         else round(c.cpu_pct, 3)})
    df = pd.DataFrame(rows, columns=LIST_COLUMNS)
    return ObjectsFrame(df.astype({"runs": "Int64", "ns_per_run": "Int64",
                                   "events_per_s": "float64", "cpu_pct": "float64"}))
