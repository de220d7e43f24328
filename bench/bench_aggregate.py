"""Aggregation maps into tidy DataFrames: a 100,000-key BPFNB_STATS map (per-CPU
values combined: counts and sums added, min of mins and max of maxes over the CPUs
that saw the key) against the same map as the generic per-CPU frame (one column per
field and CPU, nothing combined) and against the raw batch lookup, same run.
Prints JSON lines; target: the tidy frame within 2x of the generic one.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpfnb  # noqa: E402
from bpfnb import aggregate, frames  # noqa: E402
from bpfnb.libbpf import _lib  # noqa: E402

N = 100_000
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
SOURCE = r"""
BPFNB_STATS(sizes, u32);
SEC("tracepoint/syscalls/sys_enter_getppid")
int touch(void *ctx) { bpfnb_stats(&sizes, bpfnb_pid(), 1); return 0; }
"""


def best(fn):
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def emit(case, seconds, baseline=None, **extra):
    print(json.dumps({"bench": "aggregate", "metric": case, "value": round(seconds, 6),
                      "unit": "s", "baseline": baseline, "entries": N, **extra}),
          flush=True)


def main():
    with bpfnb.load(SOURCE, maps={"sizes": N}, attach=False) as obj:
        m = obj.maps.sizes
        ncpu = _lib.possible_cpus()
        values = np.zeros((N, ncpu), dtype=m.value_dtype)
        rng = np.random.default_rng(1)
        values["count"] = rng.integers(0, 3, (N, ncpu))
        values["sum"] = values["count"] * 100
        values["min"], values["max"] = 5, 500
        m.update_batch(np.arange(N, dtype=np.uint32), values)
        raw = best(m.lookup_batch)
        generic = best(lambda: frames.map_to_df(m, percpu="columns"))
        tidy = best(lambda: aggregate.to_df(m))
        emit("lookup_batch", raw)
        emit("generic_percpu_df", generic, baseline="lookup_batch",
             ratio=round(generic / raw, 2))
        emit("tidy_stats_df", tidy, baseline="generic_percpu_df",
             ratio=round(tidy / generic, 2), cpus=ncpu)


if __name__ == "__main__":
    main()
