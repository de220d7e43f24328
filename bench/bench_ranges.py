"""Cost of range checks: batch writes and single calls, each beside the unchecked way.

- update_batch of 1,000,000 int64 keys/values into a u32 -> u64 hash: checked (one
  min/max per array) against the same arrays already of the map's dtypes (no check
  needed, nothing to convert); and the conversion alone: _check.array against the
  np.ascontiguousarray it replaced.
- 50,000 bpf_map_update_elem calls through the checked prototypes against a plain
  ctypes prototype of the same function (same map, same buffers).

Prints JSON lines: {"bench": "ranges", "metric": ..., "value": ..., "unit": ...,
"baseline": ...}.
"""

import ctypes
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpfnb  # noqa: E402
from bpfnb.libbpf import _check, _lib  # noqa: E402

N = 1_000_000
CALLS = 50_000
SOURCE = r"""
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1000000);
    __type(key, u32);
    __type(value, u64);
} m SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getppid")
int touch(void *ctx) { return 0; }
"""


def best(fn, runs=3):
    out = float("inf")
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out = min(out, time.perf_counter() - t)
    return out


def emit(metric, value, unit, baseline):
    print(json.dumps({"bench": "ranges", "metric": metric, "value": round(value, 6),
                      "unit": unit, "baseline": round(baseline, 6)}))


def main():
    keys64 = np.arange(N, dtype=np.int64)
    vals64 = np.arange(N, dtype=np.int64)
    keys32, vals_u64 = keys64.astype(np.uint32), vals64.astype(np.uint64)
    emit("convert_1M_int64_to_u32_s", best(lambda: _check.array(keys64, np.uint32, "k")),
         "s", best(lambda: np.ascontiguousarray(keys64, dtype=np.uint32)))
    with bpfnb.load(SOURCE, attach=False) as obj:
        m = obj.maps.m
        m.update_batch(keys32, vals_u64)  # both cases then overwrite existing entries
        checked = plain = float("inf")
        for _ in range(3):  # interleaved: other load on the machine hits both alike
            checked = min(checked, best(lambda: m.update_batch(keys64, vals64), 1))
            plain = min(plain, best(lambda: m.update_batch(keys32, vals_u64), 1))
        emit("update_batch_1M_int64_s", checked, "s", plain)

        raw = ctypes.CDLL(_lib.PATH, use_errno=True).bpf_map_update_elem
        raw.restype = ctypes.c_int
        raw.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint64]
        fd, key, value = m.fd, ctypes.c_uint32(1), ctypes.c_uint64(2)
        kp, vp = ctypes.byref(key), ctypes.byref(value)

        def calls(fn):
            for _ in range(CALLS):
                fn(fd, kp, vp, 0)
        checked = plain = float("inf")
        for _ in range(5):
            checked = min(checked, best(lambda: calls(_lib.lib.bpf_map_update_elem), 1))
            plain = min(plain, best(lambda: calls(raw), 1))
        emit("update_elem_call_us", checked / CALLS * 1e6, "us", plain / CALLS * 1e6)


if __name__ == "__main__":
    main()
