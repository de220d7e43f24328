"""Map snapshot into a DataFrame: Map.to_df() against C bpf_map_lookup_batch, same run.

A hash map u32 -> struct {4 x u64} is filled with update batches (100,000 and
1,000,000 entries). A small C program linked with -lbpf inherits the map's fd and
times bpf_map_lookup_batch over the whole map; Python times Map.lookup_batch() (raw
numpy), Map.to_df() (DataFrame included) and, on 100,000 entries, Map.items() (per
entry Python decoding). Prints JSON lines; target: to_df within 2x of C.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpfnb  # noqa: E402

SIZES = (100_000, 1_000_000)
RUNS = int(os.environ.get("BENCH_RUNS", "3"))
CHUNK = 4096  # entries per batch call, as Map.lookup_batch() does

SOURCE = r"""
struct io_stat { u64 count; u64 bytes; u64 first_ns; u64 last_ns; };
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1);
    __type(key, u32);
    __type(value, struct io_stat);
} big SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getppid")
int touch(void *ctx) { return 0; }
"""

C_SOURCE = r"""
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <bpf/bpf.h>

/* usage: batch FD RUNS CHUNK -> "best_seconds entries" */
int main(int argc, char **argv)
{
	if (argc != 4)
		return 2;
	int fd = atoi(argv[1]), runs = atoi(argv[2]);
	__u32 chunk = atoi(argv[3]);
	struct bpf_map_info info = {};
	__u32 len = sizeof(info);
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		perror("bpf_obj_get_info_by_fd");
		return 1;
	}
	size_t cap = info.max_entries + chunk;
	char *keys = malloc(cap * info.key_size), *values = malloc(cap * info.value_size);
	double best = 1e9;
	size_t total = 0;
	for (int r = 0; r < runs; r++) {
		struct timespec t0, t1;
		__u64 in = 0, out = 0;
		void *in_tok = NULL;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (total = 0;;) {
			__u32 count = chunk;
			int err = bpf_map_lookup_batch(fd, in_tok, &out, keys + total * info.key_size,
						       values + total * info.value_size, &count, NULL);
			total += count;
			if (err) {
				if (errno == ENOENT)
					break;
				perror("bpf_map_lookup_batch");
				return 1;
			}
			in = out;
			in_tok = &in;
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		double s = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
		if (s < best)
			best = s;
	}
	printf("%.6f %zu\n", best, total);
	return 0;
}
"""


def emit(case, entries, **fields):
    print(json.dumps({"bench": "map_df", "case": case, "entries": entries, **fields}),
          flush=True)


def best_of(fn, runs=RUNS):
    best, out = float("inf"), None
    for _ in range(runs):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def build_c(tmp: Path) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise SystemExit("bench_map_df: no C compiler (cc) found")
    src, exe = tmp / "batch.c", tmp / "batch"
    src.write_text(C_SOURCE)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src), "-lbpf"], check=True)
    return exe


def c_batch(exe: Path, fd: int) -> tuple[float, int]:
    out = subprocess.run([str(exe), str(fd), str(RUNS), str(CHUNK)], pass_fds=(fd,),
                         check=True, capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1])


def peak_mb(fn) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run(exe: Path, n: int):
    with bpfnb.load(SOURCE, attach=False, maps={"big": n}) as obj:
        m = obj.maps.big
        keys = np.arange(n, dtype=np.uint32)
        values = np.zeros(n, dtype=m.value_dtype)
        values["count"] = keys
        values["bytes"] = keys.astype(np.uint64) * 4096
        values["first_ns"] = 1_000_000_000
        values["last_ns"] = values["first_ns"] + keys
        t_fill, _ = best_of(lambda: m.update_batch(keys, values), runs=1)
        emit("fill_update_batch", n, seconds=round(t_fill, 4))

        c_seconds, c_entries = c_batch(exe, m.fd)
        assert c_entries == n, (c_entries, n)
        emit("c_lookup_batch", n, seconds=round(c_seconds, 4), chunk=CHUNK)

        t_raw, (k, _) = best_of(m.lookup_batch)
        assert len(k) == n
        emit("py_lookup_batch_numpy", n, seconds=round(t_raw, 4),
             ratio_to_c=round(t_raw / c_seconds, 2))

        t_df, df = best_of(m.to_df)
        assert len(df) == n and int(df["count"].sum()) == n * (n - 1) // 2
        assert df["key"].is_monotonic_increasing
        emit("to_df", n, seconds=round(t_df, 4), ratio_to_c=round(t_df / c_seconds, 2),
             target_ratio=2.0, within_target=t_df <= 2 * c_seconds,
             peak_mb=round(peak_mb(m.to_df), 1),
             df_mb=round(df.memory_usage(index=False).sum() / 2**20, 1))
        del df

        if n <= 100_000:
            t_items, items = best_of(m.items, runs=1)
            assert len(items) == n
            emit("items_per_entry_python", n, seconds=round(t_items, 4),
                 ratio_to_c=round(t_items / c_seconds, 2))


def main():
    if os.geteuid() != 0:
        raise SystemExit("bench_map_df: needs root to load BPF maps")
    tmp = Path(tempfile.mkdtemp(prefix="bpfnb-bench-df-"))
    try:
        exe = build_c(tmp)
        for n in SIZES:
            run(exe, n)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
