"""What live BPF programs cost: run counts, events/s, ns per run, share of one CPU.

The counts are the kernel's BPF run-time statistics (bpfnb.libbpf.stats), which run
only while somebody looks: every ``measure()`` keeps them on for ``stats.LOOK_S``
more seconds, and they stop by themselves after that. ``runs`` therefore counts the
runs made while they were on; ``ns_per_run`` is exact (run time and run count are
counted together). Rates (events/s, share of a CPU) come from two readings of the
same program: the previous reading is kept per object, and a rate is given only
when counting ran without a gap since that reading; otherwise it is None (unknown),
never a number that is not true.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

from .libbpf import BPFError, ObjectClosedError, look_stats, stats_since

FIRST_WAIT_S = 0.25   # what measure(wait=True) waits for a first rate
NO_STATS = ("run counts unknown: the kernel counts runs (BPF stats) only for a process "
            "with CAP_SYS_ADMIN (root)")


@dataclass(frozen=True)
class Cost:
    """One program's overhead; None where it is unknown."""
    program: str
    runs: int | None          # runs counted while BPF stats were on
    per_s: float | None       # runs per second between the last two readings
    ns_per_run: int | None    # mean run time (None before the first counted run)
    cpu_pct: float | None     # percent of one CPU spent in the program

    def cells(self) -> tuple[str, str, str, str]:
        """runs, events/s, ns/run, CPU as a person reads them ("-": unknown)."""
        return (_text(self.runs, "{:,}"), rate_text(self.per_s),
                _text(self.ns_per_run, "{:,}"), cpu_text(self.cpu_pct))


_lock = threading.Lock()
# obj -> {program name: (monotonic time, run_cnt, run_time_ns)}
_previous: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def measure(objs, wait: bool = False) -> list[dict[str, Cost]]:
    """The cost of every loaded program of each of ``objs`` (by program name), one
    dict per object. ``wait``: when a rate has no previous reading yet, read, wait
    FIRST_WAIT_S and read again (what ``%bpf list`` does, so it shows rates at once)."""
    objs = list(objs)
    counting = look_stats()
    if wait and counting and any(_needs_first(o) for o in objs):
        for obj in objs:
            _read(obj, counting)
        time.sleep(FIRST_WAIT_S)
    return [_read(obj, counting) for obj in objs]


def total(costs: dict[str, Cost]) -> Cost:
    """All programs of an object as one (rates add; ns/run weighted by runs)."""
    values = list(costs.values())
    runs = _sum(c.runs for c in values)
    weighted = [(c.runs, c.ns_per_run) for c in values if c.runs and c.ns_per_run is not None]
    ns = round(sum(r * n for r, n in weighted) / sum(r for r, _ in weighted)) if weighted \
        else None
    return Cost("", runs, _sum(c.per_s for c in values), ns, _sum(c.cpu_pct for c in values))


def rate_text(per_s: float | None) -> str:
    if per_s is None:
        return "-"
    return f"{per_s:,.0f}" if per_s >= 10 or per_s == 0 else f"{per_s:.1f}"


def cpu_text(pct: float | None) -> str:
    if pct is None:
        return "-"
    if pct == 0:
        return "0%"
    return f"{pct:.2g}%" if pct < 10 else f"{pct:.0f}%"


def _needs_first(obj) -> bool:
    since = stats_since()
    with _lock:
        prev = _previous.get(obj, {})
    return any(p.name not in prev or since is None or prev[p.name][0] < since
               for p in _loaded(obj))


def _loaded(obj):
    if getattr(obj, "lock", None) is None:   # not a kernel object (a replay)
        return []
    try:
        return [p for p in obj.progs if p.autoload] if obj.state == "loaded" else []
    except ObjectClosedError:
        return []


def _read(obj, counting: bool) -> dict[str, Cost]:
    since = stats_since()
    out = {}
    lock = getattr(obj, "lock", None)
    if lock is None:   # not a kernel object (a replay): no program runs here
        return out
    # the object's lock first: destroy() waits for this read (no freed program read)
    with lock, _lock:
        prev = _previous.setdefault(obj, {})
        for p in _loaded(obj):
            try:
                info = p.stats
            except (BPFError, ObjectClosedError):  # destroyed meanwhile, or not loaded
                continue
            now = time.monotonic()
            cnt, ns = info["run_cnt"], info["run_time_ns"]
            before = prev.get(p.name)
            per_s = cpu = None
            if before is not None and since is not None and before[0] >= since \
                    and now > before[0]:
                dt = now - before[0]
                per_s = (cnt - before[1]) / dt
                cpu = (ns - before[2]) / (dt * 1e9) * 100
            prev[p.name] = (now, cnt, ns)
            # not counting ourselves (no privilege), the kernel's count covers only the
            # times somebody else had stats on: not the runs, so unknown
            runs = cnt if counting else None
            out[p.name] = Cost(p.name, runs, per_s, round(ns / cnt) if cnt else None, cpu)
    return out


def _sum(values):
    values = list(values)
    return None if not values or None in values else sum(values)


def _text(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)
