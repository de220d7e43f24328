"""Record types from DWARF: decode rate against BTF types, and what the analysis adds
to a load. Prints JSON lines.

decode  1,000,000 records of bootstrap's `struct event` (168 bytes), in ring-buffer
        sized batches viewed through the type's numpy dtype, into one DataFrame
        (frames.records_to_df, what EventStream.to_df does): with the type as clang
        wrote it into .BTF (a global uses it), and converted from DWARF alone; after a
        warm-up of each, best of BENCH_RUNS interleaved runs. Target: the same rate.
load    a typical cell (lab 4's execsnoop: a ring buffer reserved through a local
        pointer, a task_struct read with CO-RE, so ~28,000 DIEs of kernel types in its
        DWARF): bpfnb.load from the compile cache (baseline), then the record analysis
        of the loaded object (DWARF scan, instructions, the record's type converted),
        which the cell's summary runs. Target: at most 10 ms.
find    a type by name that only DWARF has (every DIE scanned once), against one the
        object's BTF has.
"""

import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpfnb  # noqa: E402
from bpfnb import frames, recordtypes, stream  # noqa: E402
from bpfnb.dwarf import Dwarf, DwarfTypes  # noqa: E402

N = 1_000_000
BATCH = 4096
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
PROGS = Path(__file__).resolve().parent.parent / "tests" / "progs"

# bootstrap.bpf.c with a global that puts `struct event` into .BTF too
WITH_GLOBAL = (PROGS / "bootstrap.bpf.c").read_text().replace(
    '#include "bootstrap.h"', '#include "bootstrap.h"\nstruct event *unused_event;')

CELL = r"""
struct exec_event { u64 ts; u32 pid; u32 ppid; char comm[16]; char filename[128]; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 256 * 1024); } events SEC(".maps");

SEC("tracepoint/sched/sched_process_exec")
int execsnoop(struct trace_event_raw_sched_process_exec *ctx)
{
    struct task_struct *task = (struct task_struct *)bpf_get_current_task();
    unsigned int offset = ctx->__data_loc_filename & 0xFFFF;
    struct exec_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);

    if (!e)
        return 0;
    e->ts = bpf_ktime_get_ns();
    e->pid = bpf_get_current_pid_tgid() >> 32;
    e->ppid = BPF_CORE_READ(task, real_parent, tgid);
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), (void *)ctx + offset);
    bpf_ringbuf_submit(e, 0);
    return 0;
}
"""


def emit(**fields):
    print(json.dumps({"bench": "records", **fields}), flush=True)


def decode_seconds(btf, tid, data: bytes) -> float:
    dtype = btf.dtype(tid)
    step = BATCH * dtype.itemsize
    t0 = time.perf_counter()
    runs = [np.frombuffer(data, dtype=dtype, offset=off,
                          count=min(BATCH, (len(data) - off) // dtype.itemsize))
            for off in range(0, len(data), step)]
    records_, _ = stream._typed_records(runs, dtype)  # what EventStream.to_df does
    df = frames.records_to_df(records_, btf, tid)
    assert len(df) == N and df["comm"].iloc[-1] == "true"
    return time.perf_counter() - t0


def bench_decode():
    obj = bpfnb.open(WITH_GLOBAL, cflags=["-I", str(PROGS)])
    try:
        base, image = obj.btf, obj.image
    finally:
        obj.destroy()
    from_btf = base.find("struct event")
    alone = DwarfTypes(Dwarf.from_elf(image), None)
    from_dwarf = alone.find("struct event")
    dbtf = alone.btf
    assert dbtf.dtype(from_dwarf) == base.dtype(from_btf)
    rows = np.zeros(N, base.dtype(from_btf))  # what /bin/true's exec and exit look like
    rows["pid"] = np.arange(N) + 1000
    rows["ppid"] = 999
    rows["duration_ns"] = np.arange(N) * 1000
    rows["comm"] = b"true"
    rows["filename"][::2] = b"/usr/bin/true"
    rows["exit_event"][1::2] = True
    data = rows.tobytes()
    cases = [(base, from_btf), (dbtf, from_dwarf)]
    for btf, tid in cases:  # warm-up: dtypes, decoders and memory made once
        decode_seconds(btf, tid, data)
    best = [float("inf"), float("inf")]
    for run in range(RUNS):  # interleaved, in turns first: both see the same machine
        for i in (0, 1) if run % 2 == 0 else (1, 0):
            gc.collect()
            best[i] = min(best[i], decode_seconds(*cases[i], data))
    btf_s, dwarf_s = best
    emit(case="decode", metric="records per second, DWARF-derived type",
         value=round(N / dwarf_s), unit="records/s",
         baseline=round(N / btf_s), baseline_is="the same struct through clang's .BTF",
         records=N, record_bytes=base.size(from_btf), runs=RUNS)


def bench_load():
    bpfnb.load(CELL, attach=False).destroy()  # compiled once: the loads below hit the cache
    loads, analyses, dies = [], [], 0
    for _ in range(15):
        t0 = time.perf_counter()
        obj = bpfnb.load(CELL, attach=False)
        t1 = time.perf_counter()
        rec = recordtypes.of(obj)
        btf, tid = rec.typed(rec.types("events")[0].die)
        t2 = time.perf_counter()
        assert btf.c_name(tid) == "struct exec_event"
        dies = sum(len(u.top) for u in rec.dwarf.units)
        obj.destroy()
        loads.append(t1 - t0)
        analyses.append(t2 - t1)
    emit(case="load", metric="record analysis added to a load (median)",
         value=round(statistics.median(analyses) * 1e3, 2), unit="ms",
         baseline=round(statistics.median(loads) * 1e3, 2),
         baseline_is="bpfnb.load of the cell from the compile cache, without it",
         target_ms=10, top_level_dies=dies, runs=len(loads))


def bench_find():
    """`.stream("struct exec_event")` for a type only DWARF has: one scan of every DIE
    and a name index, against the same lookup in the object's BTF."""
    dwarf_t, btf_t = [], []
    for _ in range(15):
        obj = bpfnb.load(CELL, attach=False)
        t0 = time.perf_counter()
        obj.btf.find("struct trace_event_raw_sched_process_exec")
        t1 = time.perf_counter()
        rec = recordtypes.of(obj)
        btf, tid = rec.find("struct exec_event")
        t2 = time.perf_counter()
        assert btf.c_name(tid) == "struct exec_event"
        obj.destroy()
        btf_t.append(t1 - t0)
        dwarf_t.append(t2 - t1)
    emit(case="find", metric="a type by name from DWARF, first lookup (median)",
         value=round(statistics.median(dwarf_t) * 1e3, 2), unit="ms",
         baseline=round(statistics.median(btf_t) * 1e3, 2),
         baseline_is="a type by name from the object's BTF, first lookup", runs=15)


if __name__ == "__main__":
    bench_decode()
    bench_load()
    bench_find()
