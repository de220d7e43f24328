"""Re-running cells: what N re-runs of a %%bpf cell with a stream and a dashboard leave.

Each re-run, in a real IPython InteractiveShell (ipywidgets without a kernel), runs
two cells as a notebook would: the %%bpf cell (a raw_tp program counting the shell's
own system calls into a hash map and a ring buffer), then the cell that opens a stream
of that ring buffer, causes a few calls and shows ``obj.live()``. Cases, each in its
own process, measured the same way in one run:
  dashboard  the loop above
  baseline   the same loop without the dashboard (the stream only)

RSS is taken after a warm-up of WARMUP re-runs (fonts, caches, the compile cache) and
after N more and ``%bpf stop --all``; threads are counted before the first cell and
right after ``%bpf stop --all`` (no waiting: dashboards and streams stop with their
object). Targets: RSS growth <= 10 MB for 1,000 re-runs, no thread left.

    python bench/bench_rerun_memory.py [N]      (default 1000: ~6 min on a busy 2-core
                                                  machine, a new dashboard's first frame
                                                  being most of a re-run; N=100: ~40 s)

Prints JSON lines: {"bench": "rerun_memory", "metric": ..., "value": ..., "unit": ...,
"baseline": ..., "reruns": N}.
"""

import gc
import json
import os
import subprocess
import sys
import threading
import time

WARMUP = 20

BPF_CELL = r"""%%bpf tool -q --set target_pid={os.getpid()}
struct event {
    u32 pid;
    u32 tid;
};

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
} events SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, u32);
    __type(value, u64);
} by_tid SEC(".maps");

const volatile u32 target_pid = 0;
u64 total = 0;

SEC("raw_tp/sys_enter")
int on_enter(void *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    u32 tid = id, one = 1;

    if ((id >> 32) != target_pid)
        return 0;
    __sync_fetch_and_add(&total, 1);
    u64 *n = bpf_map_lookup_elem(&by_tid, &tid);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        bpf_map_update_elem(&by_tid, &tid, &one, BPF_NOEXIST);
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (e) {
        e->pid = id >> 32;
        e->tid = tid;
        bpf_ringbuf_submit(e, 0);
    }
    return 0;
}
"""

STREAM_CELL = """events = tool.maps.events.stream()
for _ in range(10):
    os.getppid()
"""
DASHBOARD_CELL = STREAM_CELL + "dash = tool.live(interval=0.05)\ndash\n"


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def rerun_loop(n: int, dashboard: bool, warmup: int = WARMUP) -> dict:
    """In this process: the loop of the module docstring; what it grew and left."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    ip = InteractiveShell.instance()
    threads_before = {t.ident for t in threading.enumerate()}
    ip.run_line_magic("load_ext", "bpfnb")
    ip.run_cell("import os", store_history=False)
    use = DASHBOARD_CELL if dashboard else STREAM_CELL

    def rerun():
        # Cell ids as Jupyter sends them: re-running a cell is running its id again.
        for cell_id, text in (("bpf", BPF_CELL), ("use", use)):
            with capture_output():
                ip.run_cell(text, cell_id=cell_id).raise_error()

    for _ in range(warmup):
        rerun()
    gc.collect()
    start_rss = rss_bytes()
    t0 = time.perf_counter()
    for _ in range(n):
        rerun()
    seconds = time.perf_counter() - t0
    ip.run_line_magic("bpf", "stop --all -q")
    left = [t.name for t in threading.enumerate() if t.ident not in threads_before
            and t.name != "bpfnb-stats-off"]  # BPF stats' timer: ends by itself
    ip.run_cell("del events" + (", dash" if dashboard else ""), store_history=False)
    gc.collect()
    return {"rss_growth": rss_bytes() - start_rss, "threads_left": left,
            "seconds_per_rerun": seconds / max(n, 1)}


def _child(case: str, n: int):
    print(json.dumps(rerun_loop(n, case == "dashboard")))


def measure(case: str, n: int) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", case, str(n)],
                          capture_output=True, text=True, timeout=3600,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if done.returncode != 0:
        raise SystemExit(f"{case}: {done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    base = measure("baseline", n)
    dash = measure("dashboard", n)
    for metric, unit, scale in (("rss_growth", "MB", 1e-6), ("threads_left", "threads", 1),
                                ("seconds_per_rerun", "ms", 1e3)):
        value, baseline = dash[metric], base[metric]
        if metric == "threads_left":
            value, baseline = len(value), len(baseline)
        print(json.dumps({"bench": "rerun_memory", "metric": metric,
                          "value": round(value * scale, 2), "unit": unit,
                          "baseline": round(baseline * scale, 2), "reruns": n}))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _child(sys.argv[2], int(sys.argv[3]))
    else:
        main()
