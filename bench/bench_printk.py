"""bpf_printk to obj.output(): how fast the reader routes lines, and what the streams
probe costs once per process. Prints JSON lines, each figure beside a baseline from
the same run:
- "routed": a burst of lines (two per getppid() call of this process) until all are in
  obj.output(), lines/s; baseline: the rate the kernel produced them (the getppid
  loop alone, with the program attached). kernel_lost counts lines the instance
  buffer overwrote before the reader came (0 means it kept up).
- "probe": streams_verdict() in a fresh process state (compile cache hit + load + run
  + read), seconds; baseline: bpfnb.load() of a cached trivial program.
"""

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bpfnb  # noqa: E402
from bpfnb import output  # noqa: E402

PROG = Path(__file__).resolve().parent.parent / "tests" / "progs" / "printk_counter.bpf.c"
CALLS = int(os.environ.get("BENCH_CALLS", "5000"))
TRIVIAL = 'SEC("syscall")\nint nothing(void *ctx) { return 0; }\n'


def emit(**fields):
    print(json.dumps({"bench": "printk", **fields}), flush=True)


def main():
    t0 = time.perf_counter()
    verdict = output.streams_verdict()
    probe = time.perf_counter() - t0
    bpfnb.load(TRIVIAL, attach=False).destroy()  # warm the cache for the baseline
    t0 = time.perf_counter()
    bpfnb.load(TRIVIAL, attach=False).destroy()
    trivial = time.perf_counter() - t0
    output._verdict = None  # probe again, now that every compile is a cache hit
    t0 = time.perf_counter()
    output.streams_verdict()
    probe_hit = time.perf_counter() - t0
    emit(metric="probe", value=round(probe_hit, 4), unit="s",
         baseline=round(trivial, 4), first_in_process=round(probe, 4),
         verdict=str(verdict))

    obj = bpfnb.load(PROG, rodata={"target_pid": os.getpid(), "id": 1})
    try:
        want = 2 * CALLS
        t0 = time.perf_counter()
        for _ in range(CALLS):
            os.getppid()
        produced = time.perf_counter() - t0
        last, last_change = -1, time.monotonic()
        while obj._output.received + (output._hub.kernel_lost() or 0) < want:
            if obj._output.received != last:
                last, last_change = obj._output.received, time.monotonic()
            elif time.monotonic() - last_change > 1.0:
                break  # nothing more is coming
            time.sleep(0.002)
        routed = time.perf_counter() - t0
        emit(metric="routed", value=round(obj._output.received / routed), unit="lines/s",
             baseline=round(want / produced), lines=want, received=obj._output.received,
             kernel_lost=output._hub.kernel_lost())
    finally:
        obj.destroy()


if __name__ == "__main__":
    main()
