"""A recording in the RECORDING.md format (version 1), written with pyarrow alone, so the
replay tests depend on the format and not on bpfnb.record.

``write(path)`` writes an execsnoop-like object recorded for 2.5 s with a snapshot
every second and returns ``Truth``: what each snapshot and stream held, to check
replays against. The numbers follow simple rules (see the comments) so a test can
say exactly what it expects at a given clock.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

T0 = 1_796_086_800 * 10**9        # 2026-12-01 01:00:00 UTC, the first snapshot
SNAPSHOTS = 3                     # at T0, T0 + 1 s, T0 + 2 s
INTERVAL_NS = 10**9
STOP = T0 + 2_500_000_000         # recording stopped 2.5 s after the first snapshot
CATEGORIES = ["EXEC", "OPEN", "EXIT"]
HOST = "recorder-host"

SOURCE = """\
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "events.h"

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 20); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024);
         __type(key, struct key); __type(value, u64); } counts SEC(".maps");
u64 total;
"""


@dataclass
class Truth:
    path: str
    events: pd.DataFrame                     # every record, with its _time
    counts: list = field(default_factory=list)   # per snapshot: the counts rows
    errors: list = field(default_factory=list)   # per snapshot (empty at 0)
    hists: list = field(default_factory=list)    # per snapshot: the lat histogram rows
    totals: list = field(default_factory=list)   # per snapshot: bss.total


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, timezone.utc).isoformat()


def _write(path, df: pd.DataFrame):
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), path)


def events_frame(n: int, start: int = T0, stop: int = STOP) -> pd.DataFrame:
    """``n`` event records received evenly between start and stop (record i at
    start + i * step): pid 1000 + i % 50, ppid 1, comm "proc<i % 50>", a filename,
    ts, and the category EXEC/OPEN/EXIT by i % 3 (an enum: a pandas categorical)."""
    i = np.arange(n, dtype=np.int64)
    step = (stop - start) // max(n, 1)
    comms = np.array([f"proc{k}" for k in range(50)], dtype=object)
    files = np.array([f"/usr/lib/x86_64-linux-gnu/lib{k}.so.6" for k in range(97)],
                     dtype=object)
    return pd.DataFrame({
        "pid": (1000 + i % 50).astype(np.uint32),
        "ppid": np.ones(n, np.uint32),
        "comm": comms[i % 50],
        "filename": files[i % 97],
        "ts": (i * 1000 + 12345).astype(np.uint64),
        "category": pd.Categorical.from_codes(i % 3, CATEGORIES),
        "_time": start + i * step,
    })


def write(path, *, events: int = 250, state: str = "complete") -> Truth:
    os.makedirs(os.path.join(path, "maps"))
    os.makedirs(os.path.join(path, "hists"))
    os.makedirs(os.path.join(path, "streams"))
    ev = events_frame(events)
    truth = Truth(str(path), ev)
    counts, errors, hists, hist_raw, globs = [], [], [], [], []
    for k in range(SNAPSHOTS):
        t = T0 + k * INTERVAL_NS
        # counts: pids 100..100+k, count (k + 1) * 10 + i: grows with every snapshot.
        c = pd.DataFrame({"pid": np.arange(100, 101 + k, dtype=np.uint32),
                          "comm": [f"cmd{i}" for i in range(k + 1)],
                          "value": np.array([(k + 1) * 10 + i for i in range(k + 1)],
                                            np.uint64)})
        truth.counts.append(c.copy())
        counts.append(c.assign(_snapshot=k, _time=t))
        # errors: empty at snapshot 0 (no rows at all), then one errno counted k times.
        e = pd.DataFrame({"key": np.array([-2] * (k > 0), np.int32),
                          "value": np.array([k] * (k > 0), np.uint64)})
        truth.errors.append(e.copy())
        errors.append(e.assign(_snapshot=k, _time=t))
        # lat: log2 buckets [1,2) [2,4) [4,8) holding k + 1, 2(k + 1), 3(k + 1).
        h = pd.DataFrame({"low": [1.0, 2.0, 4.0], "high": [2.0, 4.0, 8.0],
                          "count": np.array([1, 2, 3], np.int64) * (k + 1)})
        truth.hists.append(h.copy())
        hists.append(h.assign(_snapshot=k, _time=t))
        hist_raw.append(pd.DataFrame({"key": np.arange(3, dtype=np.uint32) + 1,
                                      "value": h["count"].to_numpy().astype(np.uint64)})
                        .assign(_snapshot=k, _time=t))
        truth.totals.append(10 * (k + 1))
        globs.append({"_snapshot": k, "_time": t, "bss.total": 10 * (k + 1),
                      "bss.last_comm": f"cmd{k}", "rodata.targ_pid": 0})
    _write(os.path.join(path, "maps", "counts.parquet"), pd.concat(counts))
    _write(os.path.join(path, "maps", "errors.parquet"), pd.concat(errors))
    _write(os.path.join(path, "hists", "lat.parquet"), pd.concat(hists))
    _write(os.path.join(path, "maps", "lat.parquet"), pd.concat(hist_raw))
    _write(os.path.join(path, "globals.parquet"), pd.DataFrame(globs))
    # Two row groups, as a running recording writes them.
    table = pa.Table.from_pandas(ev, preserve_index=False)
    with pq.ParquetWriter(os.path.join(path, "streams", "events.parquet"), table.schema) as w:
        half = table.num_rows // 2
        w.write_table(table.slice(0, half))
        w.write_table(table.slice(half))
    out = pd.DataFrame({"time": pd.to_datetime([T0 + 5 * 10**8, T0 + 15 * 10**8], unit="ns"),
                        "pid": [1000, 1001], "comm": ["proc0", "proc1"], "cpu": [0, 1],
                        "text": ["hello 0", "hello 1"],
                        "_time": [T0 + 5 * 10**8, T0 + 15 * 10**8]})
    _write(os.path.join(path, "output.parquet"), out)
    hash_map = {"type": "hash", "key_type": "struct key", "value_type": "u64",
                "max_entries": 1024, "percpu": False, "histogram": False,
                "hist_file": None}
    manifest = {
        "format": "bpfnb-recording", "version": 1, "state": state,
        "error": "No space left on device" if state == "failed" else None,
        "name": "snoop", "source": SOURCE, "source_path": None, "cflags": [],
        "kernel_release": "6.18.0", "machine": "x86_64", "hostname": HOST,
        "btf_sha256": "0" * 64, "libbpf_version": "1.1.2", "bpfnb_version": "0.1",
        "started": _iso(T0 - 10**8), "stopped": _iso(STOP) if state != "recording" else None,
        "interval": 1.0, "snapshots": SNAPSHOTS,
        "programs": [{"name": "handle_exec", "section": "tp/sched/sched_process_exec",
                      "type": "tracepoint", "attached": True}],
        "maps": {
            "counts": {**hash_map, "file": "maps/counts.parquet"},
            "errors": {**hash_map, "key_type": "int", "file": "maps/errors.parquet"},
            "lat": {"type": "array", "key_type": "u32", "value_type": "u64",
                    "max_entries": 27, "percpu": False, "histogram": True,
                    "file": "maps/lat.parquet", "hist_file": "hists/lat.parquet"},
        },
        "streams": {"events": {"file": "streams/events.parquet",
                               "record_type": "struct event", "rows": events, "lost": 3,
                               "dropped": 0}},
        "globals": {"file": "globals.parquet",
                    "variables": {"bss.total": "u64", "bss.last_comm": "char[16]",
                                  "rodata.targ_pid": "pid_t"}},
        "output": {"file": "output.parquet", "rows": 2},
    }
    with open(os.path.join(path, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return truth
