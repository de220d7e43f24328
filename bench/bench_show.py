"""Printing maps like bpftrace, against the DataFrame snapshot of the same map, same run.

A 100,000-entry hash u32 -> u64 printed as ``@counts[key]: value`` lines (sorted by
value, first 20 shown) against ``to_df()``; a 10,000-entry runqlat-shaped hash (u32 ->
``struct hist { u32 slots[26]; char comm[16]; }``, 5 slots in use per entry) as
``hist()`` and its printed bars against ``to_df()``. Prints JSON lines; target:
printing within 2x of the snapshot it starts from.
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpfnb  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
COUNTERS, HISTS = 100_000, 10_000

SOURCE = r"""
struct hist { u32 slots[26]; char comm[16]; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 100000);
         __type(key, u32); __type(value, u64); } counts SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 10000);
         __type(key, u32); __type(value, struct hist); } hists SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getppid")
int touch(void *ctx) { return 0; }
"""


def best_ms(fn) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 2)


def emit(metric, value, baseline, **extra):
    print(json.dumps({"bench": "show", "metric": metric, "value": value, "unit": "ms",
                      "baseline": baseline, **extra}), flush=True)


def main():
    rng = np.random.default_rng(1)
    with bpfnb.load(SOURCE, attach=False) as obj:
        counts = obj.maps.counts
        counts.update_batch(np.arange(COUNTERS, dtype=np.uint32),
                            rng.integers(0, 1 << 40, COUNTERS).astype(np.uint64))
        base = best_ms(counts.to_df)
        emit("print 100k counters", best_ms(lambda: repr(counts)), base,
             baseline_what="to_df() of the same map")

        hists = obj.maps.hists
        values = np.zeros(HISTS, hists.value_dtype)
        for k in range(5):
            values["slots"][:, 3 + k * 2] = rng.integers(1, 1000, HISTS)
        values["comm"] = b"worker"
        hists.update_batch(np.arange(HISTS, dtype=np.uint32), values)
        base = best_ms(hists.to_df)
        emit("hist() of 10k slot arrays", best_ms(hists.hist), base,
             baseline_what="to_df() of the same map")
        emit("print 10k histograms (first 10)", best_ms(lambda: repr(hists)), base,
             baseline_what="to_df() of the same map")


if __name__ == "__main__":
    main()
