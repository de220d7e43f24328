"""Map read: a 100,000-entry hash map into Python values, batch vs per-key, one run;
once with a struct value (decoded through BTF per entry) and once with a u64 value
(decoded by numpy in one go).

Prints JSON lines: {"bench": "map_read", "value": ..., "case": ..., "seconds": ...}.
"""

import json
import time

import bpfnb

N = 100_000
SOURCE = r"""
struct io_stat { u64 count; u64 bytes; };
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 100000);
    __type(key, u32);
    __type(value, struct io_stat);
} by_struct SEC(".maps");
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 100000);
    __type(key, u32);
    __type(value, u64);
} by_u64 SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getppid")
int touch(void *ctx) { return 0; }
"""


def timed(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def bench(m, value):
    def per_key():
        return [(k, m.lookup(k)) for k in m.keys()]

    cases = {"batch_raw_numpy": m.lookup_batch, "batch_items": m.items,
             "per_key_items": per_key}
    results = {}
    for case, fn in cases.items():
        seconds, out = timed(fn, repeat=1 if case == "per_key_items" else 3)
        n = len(out[0]) if isinstance(out, tuple) else len(out)
        assert n == N, (case, n)
        results[case] = seconds
        print(json.dumps({"bench": "map_read", "value": value, "case": case, "entries": N,
                          "seconds": round(seconds, 4)}))
    print(json.dumps({"bench": "map_read", "value": value,
                      "case": "speedup_batch_items_vs_per_key",
                      "ratio": round(results["per_key_items"] / results["batch_items"], 2)}))


def main():
    with bpfnb.load(SOURCE, attach=False) as obj:
        for k in range(N):
            obj.maps.by_struct[k] = (k, 2 * k)
            obj.maps.by_u64[k] = 3 * k
        bench(obj.maps.by_struct, "struct io_stat")
        bench(obj.maps.by_u64, "u64")


if __name__ == "__main__":
    main()
