"""Ring buffer -> DataFrame: events per second, against C libbpf and a per-event callback.

Drain: a tracepoint on lseek fills a ring buffer with N 32-byte records (64 per call),
then each consumer, starting from nothing, drains exactly those N records. Timed in
total and without the set-up (opening the ring: mostly its mmap, twice its size,
~7 ms for 64 MiB, the same for all):

  c_libbpf         ring_buffer__consume in C copying each record into an array
                   (bench/ringbuf_consumer.c, built here with the system cc -lbpf;
                   it opens the map by id)
  ctypes_callback  ring_buffer__new with a Python CFUNCTYPE callback per record,
                   copying it into a preallocated buffer
  reader           bpfnb.libbpf.ringbuf.RingBuffer.read() in this thread: numpy
                   batches, no DataFrame
  stream           EventStream (background thread) until it holds N rows, then
                   to_df(): ring buffer -> DataFrame, the headline number

Concurrent: the C program calls lseek in a loop for a while (another process, PER_CALL
records a call) while the stream, or the C consumer, collects from a smaller ring;
records the ring could not take are counted by the object (bpfnb_lost: bpfnb's
<bpf/bpf_helpers.h> counts every failed reservation and output). As
fast as it can, the producer runs at different speeds against the two consumers
(libbpf's is woken for nearly every record, and the wake-ups slow the producer), so
a paced run at one rate for both compares their losses like for like.

Prints JSON lines {"bench": "ringbuf", "case": ..., ...}; progress on stderr.
    .venv/bin/python bench/bench_ringbuf.py [--ring-mib 64] [--repeat 3]
"""

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import bpfnb
import bpfnb.frames  # imported before timing: pandas' first import is slow
from bpfnb.libbpf import _lib
from bpfnb.libbpf.ringbuf import RingBuffer

HERE = Path(__file__).resolve().parent
FILL, LIVE = 0x7770, 0x7771  # lseek whence values the program reacts to
RECORD = 32
STRIDE = 40  # record + 8-byte header

SOURCE = r"""
struct rec { u64 seq; u64 ts; u32 pid; u32 cpu; u64 value; };

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 0); } fill SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 0); } live SEC(".maps");

u64 seq = 0;

SEC("tracepoint/syscalls/sys_enter_lseek")
int emit(struct trace_event_raw_sys_enter *ctx)
{
    u64 whence = ctx->args[2];
    u64 n = ctx->args[1];
    if (whence != %(FILL)d && whence != %(LIVE)d)
        return 0;
    void *ring = whence == %(FILL)d ? (void *)&fill : (void *)&live;
    struct rec r = { .pid = bpf_get_current_pid_tgid() >> 32,
                     .cpu = bpf_get_smp_processor_id(), .ts = bpf_ktime_get_ns() };
    for (int i = 0; i < 64 && i < n; i++) {
        r.seq = __sync_fetch_and_add(&seq, 1);
        r.value = i;
        bpfnb_ringbuf_output(ring, &r, sizeof(r));
    }
    return 0;
}
""" % {"FILL": FILL, "LIVE": LIVE}

libc = ctypes.CDLL(None, use_errno=True)
libc.lseek.argtypes = [ctypes.c_int, ctypes.c_long, ctypes.c_int]
libc.lseek.restype = ctypes.c_long


def emit(line: dict):
    print(json.dumps({"bench": "ringbuf", **line}), flush=True)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def build_consumer(tmp: str) -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise SystemExit("no C compiler (cc) for the C baseline")
    out = os.path.join(tmp, "ringbuf_consumer")
    subprocess.run([cc, "-O2", "-o", out, str(HERE / "ringbuf_consumer.c"), "-lbpf"],
                   check=True)
    return out


class _MapInfo(ctypes.Structure):  # the head of struct bpf_map_info
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32),
                ("rest", ctypes.c_uint8 * 80)]


def map_id(m) -> int:
    info = _MapInfo()
    size = ctypes.c_uint32(ctypes.sizeof(info))
    rc = _lib.lib.bpf_obj_get_info_by_fd(m.fd, ctypes.byref(info), ctypes.byref(size))
    if rc < 0:
        raise OSError(ctypes.get_errno(), "bpf_obj_get_info_by_fd")
    return info.id


def bss(obj, name) -> int:
    return int(getattr(obj.bss, name))


def fill(obj, n: int):
    """Emit n records (a multiple of 64) into the fill ring, checking none was lost."""
    lost, first = bss(obj, "bpfnb_lost"), bss(obj, "seq")
    for _ in range(n // 64):
        libc.lseek(-1, 64, FILL)
    assert bss(obj, "seq") - first == n, "records missing: is the tracepoint attached?"
    assert bss(obj, "bpfnb_lost") == lost, "the ring overflowed while filling"


def check_seq(seq: np.ndarray, n: int):
    assert len(seq) == n and (np.diff(seq.astype(np.int64)) == 1).all(), "out of order"


def drain_c(obj, consumer, n):
    fill(obj, n)
    out = subprocess.run([consumer, "drain", str(map_id(obj.maps.fill)), str(n)],
                         check=True, capture_output=True, text=True).stdout
    result = json.loads(out)
    assert result["events"] == n, result
    return result["seconds"], result["setup_seconds"]


def drain_callback(obj, n):
    fill(obj, n)
    buf = ctypes.create_string_buffer(n * RECORD)
    base = ctypes.addressof(buf)
    count = 0

    def on_record(_ctx, data, size):
        nonlocal count
        ctypes.memmove(base + count * RECORD, data, RECORD)
        count += 1
        return 0

    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                ctypes.c_size_t)(on_record)
    start = time.perf_counter()
    rb = _lib.lib.ring_buffer__new(obj.maps.fill.fd, ctypes.cast(callback, ctypes.c_void_p),
                                   None, None)
    assert rb, "ring_buffer__new failed"
    setup = time.perf_counter() - start
    try:
        while count < n and _lib.lib.ring_buffer__consume(rb) > 0:
            pass
        seconds = time.perf_counter() - start
    finally:
        _lib.lib.ring_buffer__free(rb)
    assert count == n, (count, n)
    check_seq(np.frombuffer(buf, dtype=np.uint64).reshape(n, 4)[:, 0], n)
    return seconds, setup


def drain_reader(obj, n):
    fill(obj, n)
    m = obj.maps.fill
    dtype = obj.btf.dtype(obj.btf.find("struct rec"))
    start = time.perf_counter()
    reader = RingBuffer(m.fd, m.max_entries, dtype)
    setup = time.perf_counter() - start
    try:
        runs, got = [], 0
        while got < n:
            new = reader.read()
            runs += new
            got += sum(len(r) for r in new)
        seconds = time.perf_counter() - start
    finally:
        reader.close()
    check_seq(np.concatenate(runs)["seq"], n)
    return seconds, setup


def drain_stream(obj, n):
    fill(obj, n)
    start = time.perf_counter()
    with obj.maps.fill.stream("struct rec", max_rows=n) as s:
        setup = time.perf_counter() - start  # the thread is already reading by now
        deadline = start + 60
        while len(s) < n and time.perf_counter() < deadline:
            time.sleep(0.0005)
        collected = time.perf_counter() - start
        df = s.to_df()
        seconds = time.perf_counter() - start
    check_seq(df["seq"].to_numpy(), n)
    return seconds, setup, seconds - collected


def concurrent(obj, consumer, side: str, per_call: int, seconds: float, rate: float = 0):
    """Produce for ``seconds`` (``rate`` calls/s, 0: flat out) while ``side`` collects;
    counts of produced/got/lost."""
    lost0, seq0 = bss(obj, "bpfnb_lost"), bss(obj, "seq")
    if side == "stream":
        s = obj.maps.live.stream("struct rec", max_rows=1 << 26)
    else:
        c = subprocess.Popen([consumer, "follow", str(map_id(obj.maps.live)),
                              str(seconds + 0.5)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.2)  # let it open the ring before the producer starts
    subprocess.run([consumer, "produce", str(LIVE), str(per_call), str(seconds), str(rate)],
                   check=True, capture_output=True)
    if side == "stream":
        s.close()
        got = len(s)
    else:
        got = json.loads(c.communicate(timeout=seconds + 30)[0])["events"]
    produced = bss(obj, "seq") - seq0
    lost = bss(obj, "bpfnb_lost") - lost0
    assert got + lost == produced, (side, got, lost, produced)
    return {"produced": produced, "received": got, "lost": lost,
            "lost_percent": round(100 * lost / max(produced, 1), 3),
            "events_per_s": round(produced / seconds)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ring-mib", type=int, default=64, help="drain ring size (MiB)")
    ap.add_argument("--live-mib", type=int, default=1, help="concurrent ring size (MiB)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0, help="concurrent run length")
    ap.add_argument("--paced", type=float, default=200_000,
                    help="calls/s of the paced concurrent run (16 records a call)")
    args = ap.parse_args()
    ring = args.ring_mib << 20
    n = int(ring * 0.95) // STRIDE // 64 * 64

    with tempfile.TemporaryDirectory() as tmp:
        consumer = build_consumer(tmp)
        obj = bpfnb.load(SOURCE, maps={"fill": ring, "live": args.live_mib << 20})
        try:
            best = {}
            cases = {"c_libbpf": lambda: drain_c(obj, consumer, n),
                     "ctypes_callback": lambda: drain_callback(obj, n),
                     "reader": lambda: drain_reader(obj, n),
                     "stream_to_df": lambda: drain_stream(obj, n)}
            for case, run in cases.items():
                log(f"ringbuf: draining {n} records with {case}")
                repeat = 1 if case == "ctypes_callback" else args.repeat
                runs = [run() for _ in range(repeat)]
                total, setup, *to_df = min(runs)
                best[case] = (total, total - setup)
                emit({"case": case, "events": n, "record_bytes": RECORD,
                      "seconds": round(total, 5), "setup_seconds": round(setup, 5),
                      **({"to_df_seconds": round(to_df[0], 5)} if to_df else {}),
                      "events_per_s": round(n / total),
                      "events_per_s_after_setup": round(n / (total - setup))})
            c, stream = best["c_libbpf"], best["stream_to_df"]
            callback = best["ctypes_callback"]
            emit({"case": "summary",
                  "stream_vs_callback": round(callback[0] / stream[0], 1),
                  "stream_vs_c": round(c[0] / stream[0], 3),
                  "stream_vs_c_after_setup": round(c[1] / stream[1], 3),
                  "reader_vs_c_after_setup": round(c[1] / best["reader"][1], 3),
                  "targets": {"stream_vs_callback": 10, "stream_vs_c": 0.25}})
            for per_call, rate in ((1, 0), (16, 0), (16, args.paced)):
                for side in ("c_libbpf", "stream"):
                    log(f"ringbuf: concurrent, {per_call} per call, {side} collecting")
                    emit({"case": f"concurrent_{side}", "per_call": per_call,
                          "calls_per_s": rate or "flat out",
                          "ring_bytes": args.live_mib << 20, "seconds": args.seconds,
                          **concurrent(obj, consumer, side, per_call, args.seconds, rate)})
        finally:
            obj.destroy()


if __name__ == "__main__":
    main()
