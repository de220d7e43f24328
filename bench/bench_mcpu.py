"""What a -mcpu rebuild costs bpfnb.load: tests/progs/funcstack.bpf.c (ksnoop's stack,
rejected at the default -mcpu=v3 and rebuilt at v2) against the same source asked for
at -mcpu=v2, which loads first time; cold (the source compiled afresh) and warm
(compile cache hits), same run.
Prints JSON lines; target: a warm rebuild within 3x of the direct v2 load.
"""

import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpfnb  # noqa: E402

SOURCE = Path(__file__).resolve().parent.parent / "tests" / "progs" / "funcstack.bpf.c"
RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def load_seconds(cflags):
    t0 = time.perf_counter()
    obj = bpfnb.load(SOURCE, cflags=cflags, attach=False)
    seconds = time.perf_counter() - t0
    rebuilt = bool(obj.notes)
    obj.destroy()
    return seconds, rebuilt


def emit(metric, value, baseline):
    print(json.dumps({"bench": "mcpu", "metric": metric, "value": round(value, 4),
                      "unit": "s", "baseline": round(baseline, 4)}))


def main():
    with tempfile.TemporaryDirectory() as cache:
        os.environ["BPFNB_CACHE"] = cache
        load_seconds(["-mcpu=v2"])  # vmlinux.h and the rest of the kernel's files
        # cold: each source text compiled afresh (a -D nobody reads changes the key)
        direct = min(load_seconds(["-mcpu=v2", f"-DNONCE={i}"])[0] for i in range(RUNS))
        rebuilt_cold = []
        for i in range(RUNS):
            seconds, rebuilt = load_seconds([f"-DNONCE={RUNS + i}"])
            assert rebuilt, "funcstack.bpf.c no longer needs the rebuild"
            rebuilt_cold.append(seconds)
        emit("load_rebuilt_cold", min(rebuilt_cold), direct)
        direct = min(load_seconds(["-mcpu=v2"])[0] for _ in range(RUNS))
        warm = min(load_seconds([])[0] for _ in range(RUNS))
        emit("load_rebuilt_warm", warm, direct)


if __name__ == "__main__":
    main()
