"""Probe explorer and starter cells: bpfnb.probes("*") over this whole machine (cold in a
fresh process, and warm), against `bpftrace -l '*'` when installed, else against
listing tracefs's available_events; and a starter cell to attached against loading
the same hand-written cell. Prints JSON lines."""

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RUNS = int(os.environ.get("BENCH_RUNS", "3"))
AVAILABLE_EVENTS = "/sys/kernel/tracing/available_events"
# A fresh process: the phases of a first bpfnb.probes("*") after `import bpfnb`.
CHILD = """
import json, time
t0 = time.perf_counter(); import bpfnb; t1 = time.perf_counter()
import pandas; t2 = time.perf_counter()
from bpfnb.probes import KERNEL_KINDS, kind_verdict
for kind in KERNEL_KINDS:
    kind_verdict(kind)
t3 = time.perf_counter(); n = len(bpfnb.probes("*")); t4 = time.perf_counter()
print(json.dumps({"n": n, "import": t1 - t0, "pandas": t2 - t1, "doctor": t3 - t2,
                  "listing": t4 - t3}))
"""

# What bpfnb.starter(OPENAT, count_by="comm") writes, as a person would write it.
HAND = r"""
struct key_t {
    char comm[16];
};

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 10240);
    __type(key, struct key_t);
    __type(value, u64);
} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int count_openat(struct trace_event_raw_sys_enter *ctx)
{
    struct key_t key;
    u64 zero = 0, *n;

    __builtin_memset(&key, 0, sizeof(key));
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    bpf_map_update_elem(&counts, &key, &zero, BPF_NOEXIST);
    n = bpf_map_lookup_elem(&counts, &key);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""
OPENAT = "tracepoint/syscalls/sys_enter_openat"


def emit(metric, value, unit, baseline=None, baseline_name=None, **extra):
    row = {"bench": "probes", "metric": metric, "value": round(value, 6), "unit": unit,
           "baseline": None if baseline is None else round(baseline, 6)}
    if baseline_name:
        row["baseline_name"] = baseline_name
    print(json.dumps({**row, **extra}), flush=True)


def timed(fn, runs=RUNS):
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def baseline_listing():
    """(name, seconds, probes listed) of the tool a person would use to list probes."""
    if shutil.which("bpftrace"):
        def run():
            return subprocess.run(["bpftrace", "-l", "*"], capture_output=True, text=True,
                                  check=True).stdout.count("\n")
        name = "bpftrace -l '*'"
    else:
        def run():
            return subprocess.run(["cat", AVAILABLE_EVENTS], capture_output=True, text=True,
                                  check=True).stdout.count("\n")
        name = f"cat {AVAILABLE_EVENTS} (bpftrace is not installed)"
    count = run()
    return name, timed(run), count


def main():
    name, base, base_count = baseline_listing()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    phases = [json.loads(subprocess.run([sys.executable, "-c", CHILD], capture_output=True,
                                        text=True, check=True, env=env).stdout)
              for _ in range(2)]
    med = {k: statistics.median(p[k] for p in phases) for k in phases[0]}
    emit("probes_all_cold_fresh_process", med["pandas"] + med["doctor"] + med["listing"], "s",
         base, name, probes=int(med["n"]), baseline_probes=base_count,
         listing_s=round(med["listing"], 4), doctor_s=round(med["doctor"], 4),
         pandas_import_s=round(med["pandas"], 4), import_bpfnb_s=round(med["import"], 4),
         note="first bpfnb.probes('*') in a new process after `import bpfnb`: pandas import, "
              "the doctor's tries of 5 program types (compile cache warm), BTF parse and "
              "every tracefs format file; the baseline lists tracepoint names only")
    import bpfnb
    bpfnb.probes("*")
    emit("probes_all_warm", timed(lambda: bpfnb.probes("*")), "s", base, name,
         probes=int(med["n"]))
    emit("probes_one_warm", timed(lambda: bpfnb.probes(OPENAT), RUNS * 4), "s", base, name)
    if shutil.which("bpftool"):
        def funcs():
            out = subprocess.run(["bpftool", "btf", "dump", "file", "/sys/kernel/btf/vmlinux",
                                  "format", "raw"], capture_output=True, text=True, check=True)
            return out.stdout.count("] FUNC '")
        emit("probes_kprobe_all_warm", timed(lambda: bpfnb.probes("kprobe:*")), "s",
             timed(funcs), "bpftool btf dump format raw (FUNC names, no C prototypes)",
             probes=len(bpfnb.probes("kprobe:*")), baseline_probes=funcs())

    def attach(source):
        bpfnb.load(source).destroy()

    cell = bpfnb.starter(OPENAT, count_by="comm")
    attach(cell.split("\n", 1)[1])
    attach(HAND)
    seq = [0]

    def fresh(text):  # a new comment each time: the compile cache never hits
        seq[0] += 1
        return f"{text}\n// run {seq[0]} {time.time_ns()}\n"

    emit("starter_to_attached_compiled", timed(
        lambda: attach(fresh(bpfnb.starter(OPENAT, count_by="comm").split("\n", 1)[1]))),
        "s", timed(lambda: attach(fresh(HAND))), "hand-written cell, compiled and attached",
        note="starter text + compile (PCH) + load + attach + destroy")
    emit("starter_to_attached_cached", timed(
        lambda: attach(bpfnb.starter(OPENAT, count_by="comm").split("\n", 1)[1])), "s",
        timed(lambda: attach(HAND)), "hand-written cell, compile cache hit")
    emit("starter_text", timed(lambda: bpfnb.starter(OPENAT, count_by="comm"), RUNS * 4),
         "s", note="writing the cell alone (probe lookup cached per process)")


if __name__ == "__main__":
    main()
