"""Fleets: load on 3 engines against load on 1, and gathering 3 x 100,000-entry maps
into one DataFrame against one local 100,000-entry map's to_df(), same run.

Starts the test cluster (tests/fleet_cluster.py: 3 ipyparallel engines, each in its
own UTS + network namespace, over veths); needs root. Each figure is the median of
RUNS runs. Prints JSON lines.
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
import bpfnb  # noqa: E402
import fleet_cluster  # noqa: E402
from bpfnb.fleet import engine  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
ENTRIES = 100_000

SOURCE = r"""
struct io_stat { u64 count; u64 bytes; };
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, struct io_stat);
} big SEC(".maps");
SEC("xdp")
int pass(struct xdp_md *ctx) { return XDP_PASS; }
"""
OPTIONS = dict(maps={"big": ENTRIES})
KEYS = np.arange(ENTRIES, dtype=np.uint32)
VALUES = np.zeros(ENTRIES, dtype=[("count", "<u8"), ("bytes", "<u8")])
VALUES["count"] = KEYS


def median_seconds(fn) -> float:
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def emit(metric, value, baseline):
    """Seconds, the baseline's seconds, and their ratio."""
    print(json.dumps({"bench": "fleet", "metric": metric, "value": round(value, 4),
                      "unit": "s", "baseline": round(baseline, 4),
                      "ratio": round(value / baseline, 2)}), flush=True)


def main():
    bpfnb.compile(SOURCE)  # the client's compile cache: both sides load the same bytes
    with fleet_cluster.Cluster(3) as cluster:
        three = bpfnb.Fleet(cluster.client)
        one = bpfnb.Fleet(cluster.client, targets=[cluster.client.ids[0]])
        load1 = median_seconds(lambda: one.load(SOURCE, **OPTIONS).destroy())
        load3 = median_seconds(lambda: three.load(SOURCE, **OPTIONS).destroy())
        emit("load_on_3_engines (baseline: on 1)", load3, load1)

        fo = three.load(SOURCE, **OPTIONS)
        try:
            filled = fo.each(engine.call, "maps", "big", "update_batch", (KEYS, VALUES))
            assert all(r.ok for r in filled.values()), filled
            fleet_df = fo.maps.big.to_df()
            assert len(fleet_df) == 3 * ENTRIES
            gather = median_seconds(fo.maps.big.to_df)
        finally:
            fo.destroy()
    with bpfnb.load(SOURCE, **OPTIONS) as local:
        local.maps.big.update_batch(KEYS, VALUES)
        assert len(local.maps.big.to_df()) == ENTRIES
        alone = median_seconds(local.maps.big.to_df)
    emit(f"to_df_3_engines_x_{ENTRIES} (baseline: local {ENTRIES})", gather, alone)


if __name__ == "__main__":
    main()
