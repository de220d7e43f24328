"""Recording a ring buffer: its throughput and losses against the stream alone.

The producer and program are bench_ringbuf.py's (a tracepoint on lseek writing 32-byte
records; bench/ringbuf_consumer.c's "produce" mode calling lseek from another process).
In the same run, against the same object:

  drain       N records written before, then collected from nothing: by an EventStream
              until it holds them all and to_df() (the baseline), and by obj.record()
              until they are all on disk in Parquet (stop() returns with the file closed)
  concurrent  the producer runs for a while, flat out and paced, while the stream alone
              (the baseline) or a recording collects: records received per second and
              records lost (the object's bpfnb_lost counter; for the recording also
              the rows its recorder dropped, more than it holds between two moves)

Target (issue 11): recording costs at most 20% of the stream's throughput, and loses
0 where the stream alone loses 0.

Prints JSON lines {"bench": "record", "metric": ..., "value": ..., "unit": ...,
"baseline": ...}; progress on stderr.
    .venv/bin/python bench/bench_record.py [--ring-mib 32] [--seconds 1]
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

import bpfnb
from bench_ringbuf import (LIVE, SOURCE, STRIDE, bss, build_consumer, check_seq, concurrent,
                           fill)


# The program writes through a pointer to either ring: name the type, as the stream does.
TYPES = {"fill": "struct rec", "live": "struct rec"}


def emit(metric, value, unit, baseline, **extra):
    print(json.dumps({"bench": "record", "metric": metric, "value": value, "unit": unit,
                      "baseline": baseline, **extra}), flush=True)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def drain_stream(obj, n) -> float:
    fill(obj, n)
    start = time.perf_counter()
    with obj.maps.fill.stream("struct rec", max_rows=n) as s:
        deadline = start + 60
        while len(s) < n and time.perf_counter() < deadline:
            time.sleep(0.0005)
        df = s.to_df()
    seconds = time.perf_counter() - start
    check_seq(df["seq"].to_numpy(), n)
    return seconds


def drain_record(obj, n, where: Path) -> float:
    fill(obj, n)
    start = time.perf_counter()
    rec = obj.record(where, interval=60, overwrite=True, types=TYPES)
    deadline = start + 60
    while rec.rows["fill"] < n and time.perf_counter() < deadline:
        time.sleep(0.0005)
    rec.stop()
    seconds = time.perf_counter() - start
    assert rec.error is None, rec.error
    check_seq(pq.read_table(where / "streams/fill.parquet")["seq"].to_numpy(), n)
    return seconds


def concurrent_record(obj, consumer, per_call, seconds, rate, where: Path) -> dict:
    lost0, seq0 = bss(obj, "bpfnb_lost"), bss(obj, "seq")
    rec = obj.record(where, interval=0.5, overwrite=True, types=TYPES)
    subprocess.run([consumer, "produce", str(LIVE), str(per_call), str(seconds), str(rate)],
                   check=True, capture_output=True)
    rec.stop()
    assert rec.error is None, rec.error
    got = pq.read_metadata(where / "streams/live.parquet").num_rows
    produced = bss(obj, "seq") - seq0
    # Not in the file: lost by the kernel (the ring was full), or dropped by the
    # recorder (more than its stream holds between two moves).
    lost = bss(obj, "bpfnb_lost") - lost0
    dropped = rec._manifest["streams"]["live"]["dropped"]
    assert got + lost + dropped == produced, (got, lost, dropped, produced)
    return {"produced": produced, "received": got, "lost": lost + dropped,
            "dropped": dropped, "events_per_s": round(produced / seconds)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ring-mib", type=int, default=32, help="drain ring size (MiB)")
    ap.add_argument("--live-mib", type=int, default=8, help="concurrent ring size (MiB)")
    ap.add_argument("--seconds", type=float, default=1.0, help="concurrent run length")
    ap.add_argument("--paced", type=float, nargs="+", default=[200_000, 50_000],
                    help="calls/s of the paced concurrent runs (16 records a call)")
    args = ap.parse_args()
    ring = args.ring_mib << 20
    n = int(ring * 0.95) // STRIDE // 64 * 64

    with tempfile.TemporaryDirectory() as tmp:
        consumer = build_consumer(tmp)
        where = Path(tmp) / "rec"
        obj = bpfnb.load(SOURCE, maps={"fill": ring, "live": args.live_mib << 20})
        try:
            log(f"record: draining {n} records, stream then recording (best of 3 each)")
            stream_s = min(drain_stream(obj, n) for _ in range(3))
            record_s = min(drain_record(obj, n, where) for _ in range(3))
            emit("drain_events_per_s", round(n / record_s), "events/s", round(n / stream_s),
                 events=n, record_bytes=32,
                 baseline_is="EventStream until it holds them, then to_df()",
                 value_is="obj.record() until they are in a closed Parquet file")
            for per_call, rate in [(16, 0)] + [(16, r) for r in args.paced]:
                label = "flat out" if not rate else f"{rate:g} calls/s"
                log(f"record: concurrent, {per_call} per call, {label}")
                alone = concurrent(obj, consumer, "stream", per_call, args.seconds, rate)
                recorded = concurrent_record(obj, consumer, per_call, args.seconds, rate,
                                             where)
                case = {"per_call": per_call, "calls_per_s": rate or "flat out",
                        "ring_bytes": args.live_mib << 20, "seconds": args.seconds}
                emit("concurrent_received_per_s", round(recorded["received"] / args.seconds),
                     "events/s", round(alone["received"] / args.seconds), **case,
                     baseline_is="the stream alone", value_is="a recording")
                emit("concurrent_lost", recorded["lost"], "events", alone["lost"], **case,
                     produced=recorded["produced"], baseline_produced=alone["produced"],
                     dropped_by_recorder=recorded["dropped"])
                emit("concurrent_throughput_ratio",
                     round(recorded["received"] / max(alone["received"], 1), 3),
                     "recording/stream", 1.0, **case, target=">= 0.8, and 0 lost where "
                                                           "the stream alone loses 0")
        finally:
            obj.destroy()


if __name__ == "__main__":
    main()
