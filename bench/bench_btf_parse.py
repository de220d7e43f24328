"""BTF parse: the running kernel's vmlinux BTF through BTF() (scan and validation), one
run; baseline: libbpf's own btf__parse of the same file (C, also validating), same run.

Prints JSON lines: {"bench": "btf_parse", "metric": ..., "value": ..., "unit": "ms",
"baseline": ...}.  Minimum of REPEAT runs each, so other load on the machine counts
as little as it can.
"""

import json
import time

from bpfnb.libbpf import BTF, _lib

VMLINUX = "/sys/kernel/btf/vmlinux"
REPEAT = 25


def best_ms(fn):
    best = float("inf")
    for _ in range(REPEAT):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def libbpf_parse():
    btf = _lib.lib.btf__parse(VMLINUX.encode(), None)
    if not btf:
        raise OSError(f"libbpf could not parse {VMLINUX}")
    _lib.lib.btf__free(btf)


def main():
    import bpfnb.libbpf.cheader  # noqa: F401  (sets btf__parse's prototype)
    with open(VMLINUX, "rb") as f:
        data = f.read()
    ours = best_ms(lambda: BTF(data))
    theirs = best_ms(libbpf_parse)
    print(json.dumps({"bench": "btf_parse", "metric": "vmlinux BTF() min",
                      "types": len(BTF(data)), "bytes": len(data), "value": round(ours, 2),
                      "unit": "ms", "baseline": round(theirs, 2),
                      "baseline_is": "libbpf btf__parse"}))


if __name__ == "__main__":
    main()
