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
CHILD = ("import time; t0 = time.perf_counter(); import bpfnb; t1 = time.perf_counter(); "
         "n = len(bpfnb.probes('*')); t2 = time.perf_counter(); "
         "print(n, t1 - t0, t2 - t1)")

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
    cold, imports, n = [], [], 0
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                             check=True, env=env).stdout.split()
        n, imports, cold = int(out[0]), imports + [float(out[1])], cold + [float(out[2])]
    emit("probes_all_cold_fresh_process", statistics.median(cold), "s", base, name,
         probes=n, baseline_probes=base_count, import_s=round(statistics.median(imports), 4),
         note="bpfnb.probes('*') in a new process after `import bpfnb`: BTF parse, tracefs "
              "format files, the doctor's tries (compile cache warm)")

    import bpfnb
    bpfnb.probes("*")
    emit("probes_all_warm", timed(lambda: bpfnb.probes("*")), "s", base, name, probes=n)
    emit("probes_one_warm", timed(lambda: bpfnb.probes(OPENAT), RUNS * 4), "s", base, name)

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
