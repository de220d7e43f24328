"""Compile times of a small tracepoint program: cold cache, with the PCH, without it,
and a cache hit; each also from C text to attached (compile + open + load + attach).
Prints JSON lines. Targets: attached under 100 ms with the PCH, under 20 ms on a hit.

What the cache's checks of a hit cost (owner and mode, manifest HMAC, the object's
sha256): the same hit with the checks skipped is the baseline, measured in this run,
alternating with the checked one. Target: the checks add under 0.5 ms.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SRC = r'''struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024); __type(key, u32); __type(value, u64);} counts SEC(".maps");
u64 total = 0;
SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx) { u32 pid = bpf_get_current_pid_tgid() >> 32; u64 one = 1, *v = bpf_map_lookup_elem(&counts, &pid); if (v) __sync_fetch_and_add(v, 1); else bpf_map_update_elem(&counts, &pid, &one, BPF_ANY); __sync_fetch_and_add(&total, 1); return 0; }
'''
RUNS = int(os.environ.get("BENCH_RUNS", "7"))


def emit(case, runs, **extra):
    runs = list(runs)
    print(json.dumps({"bench": "compile", "case": case,
                      "seconds": round(statistics.median(runs), 6),
                      "min": round(min(runs), 6), "runs": len(runs), **extra}), flush=True)


def metric(name, value, unit, baseline, **extra):
    print(json.dumps({"bench": "compile", "metric": name, "value": round(value, 4),
                      "unit": unit, "baseline": round(baseline, 4), **extra}), flush=True)


def checks_cost(build, attached):
    """Cache hits with and without the entry checks, alternating (same run, same
    object), as build.build and as bpfnb.load (C text to attached)."""
    from bpfnb import cache

    checked = cache.Cache._verify

    def unchecked(self, path, kind, key):  # what a hit read before: the manifest alone
        return json.loads((path / cache.MANIFEST).read_bytes())

    hits = {True: [], False: []}
    loads = {True: [], False: []}
    for i in range(RUNS * 40):
        check = i % 2 == 0
        cache.Cache._verify = checked if check else unchecked
        hits[check].append(timed(lambda: build.build(SRC)))
        if i < RUNS * 4:
            loads[check].append(attached(SRC))
    cache.Cache._verify = checked
    size = build.build(SRC).path.stat().st_size
    ms = {k: statistics.median(v) * 1e3 for k, v in hits.items()}
    note = ("baseline: the same hit with the entry checks (owner/mode, HMAC, sha256 of "
            "the object) skipped, alternating in this run")
    metric("cache_hit", ms[True], "ms", ms[False], runs=len(hits[True]), note=note,
           object_bytes=size)
    metric("cache_hit_check_cost", ms[True] - ms[False], "ms", 0.0, target=0.5,
           note="checked minus unchecked hit (medians)")
    ms = {k: statistics.median(v) * 1e3 for k, v in loads.items()}
    metric("attached_cache_hit", ms[True], "ms", ms[False], runs=len(loads[True]),
           note=note)


def timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    root = Path(tempfile.mkdtemp(prefix="bpfnb-bench-"))
    try:
        os.environ["BPFNB_CACHE"] = str(root / "cache")
        os.environ.pop("BPFNB_NO_PCH", None)
        from bpfnb import build
        # the process-wide memo (clang path/version, kernel BTF hash) is part of "cold"
        t_cold = timed(lambda: build.compile(SRC))
        emit("cold", [t_cold], clang=build.clang_version(), note="empty cache: "
             "vmlinux.h + PCH + compile, incl. clang --version and hashing the BTF")
        n = [0]

        def fresh():  # a new source each time, so the object cache never hits
            n[0] += 1
            return SRC + f"// variant {n[0]} {time.time_ns()}\n"

        emit("pch", [timed(lambda: build.compile(fresh())) for _ in range(RUNS)])
        emit("no_pch", [timed(lambda: build.compile(fresh(), pch=False))
                        for _ in range(RUNS)])
        build.compile(SRC)
        emit("cache_hit", [timed(lambda: build.compile(SRC)) for _ in range(RUNS * 10)])

        # from C text to attached: what a user waits for when running a cell
        import bpfnb

        def attached(source):
            t0 = time.perf_counter()
            obj = bpfnb.load(source)
            seconds = time.perf_counter() - t0
            obj.destroy()
            return seconds

        emit("attached_pch", [attached(fresh()) for _ in range(RUNS)], target=0.1)
        os.environ["BPFNB_NO_PCH"] = "1"
        emit("attached_no_pch", [attached(fresh()) for _ in range(RUNS)])
        del os.environ["BPFNB_NO_PCH"]
        emit("attached_cache_hit", [attached(SRC) for _ in range(RUNS * 3)], target=0.02)
        checks_cost(build, attached)

        # the parts of a cold compile, on a second empty cache (memo already warm)
        os.environ["BPFNB_CACHE"] = str(root / "cache2")
        emit("cold_vmlinux_h", [timed(build.vmlinux_h)])
        emit("cold_pch_build", [timed(build.vmlinux_pch)],
             pch_bytes=build.vmlinux_pch().stat().st_size)
        from bpfnb.libbpf.cheader import dump_c_header
        emit("dump_c_header", [timed(dump_c_header) for _ in range(3)])
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
