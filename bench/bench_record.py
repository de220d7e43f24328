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
              the rows its recorder dropped, more than it holds between two moves).
              Flat out, --repeat runs of each taking turns, and their medians
              compared: the shared machine's load changes from second to second
              (the stream alone ranges 3.5M-10M events/s here). With each: the peak
              resident memory during the run (sampled every 5 ms)

Target (issue 11): recording costs at most 20% of the stream's throughput, and loses
0 where the stream alone loses 0.

Prints JSON lines {"bench": "record", "metric": ..., "value": ..., "unit": ...,
"baseline": ...}; progress on stderr.
    .venv/bin/python bench/bench_record.py [--ring-mib 32] [--seconds 1] [--repeat 3]
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
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


def rss_mib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


class PeakRSS:
    """How far the resident set size of this process rose above where it was at the
    ``with``, at most (sampled every 5 ms), in MiB: ``peak``."""

    def __enter__(self):
        self.start, self.peak, self._stop = rss_mib(), 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while True:
            self.peak = max(self.peak, rss_mib() - self.start)
            if self._stop.wait(0.005):
                return

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def pairs(obj, consumer, per_call, seconds, rate, where, repeat) -> tuple[list, list]:
    """``repeat`` runs of the stream alone and of a recording, taking turns (the
    machine's load changes from one second to the next: both see it)."""
    alone, recorded = [], []
    for _ in range(repeat):
        with PeakRSS() as rss:
            alone.append(concurrent(obj, consumer, "stream", per_call, seconds, rate))
        alone[-1]["peak_rss_mib"] = rss.peak
        with PeakRSS() as rss:
            recorded.append(concurrent_record(obj, consumer, per_call, seconds, rate,
                                              where))
        recorded[-1]["peak_rss_mib"] = rss.peak
    return alone, recorded


def median(runs: list, key: str):
    return statistics.median(r[key] for r in runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ring-mib", type=int, default=32, help="drain ring size (MiB)")
    ap.add_argument("--live-mib", type=int, default=8, help="concurrent ring size (MiB)")
    ap.add_argument("--seconds", type=float, default=1.0, help="concurrent run length")
    ap.add_argument("--repeat", type=int, default=3,
                    help="flat-out runs of each, taking turns (medians are compared)")
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
                repeat = args.repeat if not rate else 1
                log(f"record: concurrent, {per_call} per call, {label}, {repeat}x each")
                alone, recorded = pairs(obj, consumer, per_call, args.seconds, rate, where,
                                        repeat)
                case = {"per_call": per_call, "calls_per_s": rate or "flat out",
                        "ring_bytes": args.live_mib << 20, "seconds": args.seconds,
                        "runs": repeat}
                got, base = median(recorded, "received"), median(alone, "received")
                emit("concurrent_received_per_s", round(got / args.seconds), "events/s",
                     round(base / args.seconds), **case,
                     each=[r["received"] for r in recorded],
                     baseline_each=[r["received"] for r in alone],
                     baseline_is="the stream alone (median of the runs)",
                     value_is="a recording (median of the runs, taking turns with it)")
                emit("concurrent_lost", max(r["lost"] for r in recorded), "events",
                     max(r["lost"] for r in alone), **case,
                     each=[r["lost"] for r in recorded],
                     baseline_each=[r["lost"] for r in alone],
                     dropped_by_recorder=[r["dropped"] for r in recorded],
                     value_is="the most any run lost")
                emit("concurrent_throughput_ratio", round(got / max(base, 1), 3),
                     "recording/stream", 1.0, **case,
                     each=[round(r["received"] / max(a["received"], 1), 3)
                           for r, a in zip(recorded, alone)],
                     target=">= 0.8, and 0 lost where the stream alone loses 0")
                emit("concurrent_peak_rss_growth", max(r["peak_rss_mib"] for r in recorded), "MiB",
                     max(r["peak_rss_mib"] for r in alone), **case,
                     baseline_is="the stream alone (it holds every record in memory)",
                     value_is="a recording (records held up to record.SPOOL_MEMORY, then "
                              "spooled to disk; Parquet written when quiet and at stop)")
        finally:
            obj.destroy()


if __name__ == "__main__":
    main()
