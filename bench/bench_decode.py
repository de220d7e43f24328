"""Decoding semantic columns (bpfnb/decode.py) of 1,000,000 events: the DataFrame of
records whose fields use bpfnb.h's typedefs, against the same bytes undecoded (the
baseline) and against decoding each row in Python. Prints JSON lines."""

import errno
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bpfnb  # noqa: E402
from bpfnb import frames  # noqa: E402

SRC = r"""
struct typed { bpfnb_ktime_t ts; bpfnb_errno_t ret; bpfnb_ipv4_t daddr; bpfnb_port_t dport;
               bpfnb_syscall_t nr; };
struct plain { u64 ts; s64 ret; u32 daddr; u16 dport; s64 nr; };
struct typed *t_; struct plain *p_;
"""
ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
RUNS = 5


def best(fn):
    times = []
    for _ in range(RUNS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def emit(metric, seconds, baseline, baseline_name):
    print(json.dumps({"bench": "decode", "metric": metric, "value": round(seconds * 1e3, 2),
                      "unit": "ms", "rows": ROWS, "baseline": round(baseline * 1e3, 2),
                      "baseline_name": baseline_name}), flush=True)


def main():
    with bpfnb.open(SRC) as obj:
        btf = obj.btf
        typed, plain = btf.find("struct typed"), btf.find("struct plain")
        rng = np.random.default_rng(1)
        rec = np.zeros(ROWS, btf.dtype(typed))
        rec["ts"] = time.monotonic_ns() + np.arange(ROWS)
        rec["ret"] = rng.choice([-2, -13, 0, 3, 4], ROWS)
        rec["daddr"] = rng.integers(0, 100, ROWS, dtype=np.uint32) << 24 | 0x7f
        rec["dport"] = rng.integers(1, 200, ROWS)
        rec["nr"] = rng.integers(0, 60, ROWS)
        as_plain = rec.view(btf.dtype(plain))
        raw, _ = best(lambda: frames.records_to_df(as_plain.copy(), btf, plain))
        dec, _ = best(lambda: frames.records_to_df(rec.copy(), btf, typed))
        emit("records_to_df with 5 decoded columns", dec, raw, "records_to_df undecoded")

        def per_row():
            names = errno.errorcode
            [(socket.inet_ntoa(int(a).to_bytes(4, "little")), names.get(-int(r), str(r)))
             for a, r in zip(rec["daddr"].tolist(), rec["ret"].tolist())]
        naive, _ = best(per_row)
        ipv4_errno, _ = best(lambda: frames.records_to_df(
            as_plain.copy(), btf, plain, decode={"daddr": "ipv4", "ret": "errno"}))
        emit("decode= ipv4 + errno columns", ipv4_errno - raw, naive,
             "per-row Python ipv4 + errno")


if __name__ == "__main__":
    main()
