"""Live dashboard: frames per second and CPU with four views at 10 Hz over a busy program.

Cases, in one run over the same program and load:
  blit   bpfnb.live: artists updated in place, background redrawn only when it changes
  naive  the same sources, each frame cleared, re-plotted and saved as PNG
  max    bpfnb.live asked for frames as fast as it can draw them (headroom)

CPU is this process's (time.process_time) over the run, in percent of one core; the
load is a child process, so its syscalls (and the BPF program they run) are not counted.
Target: blit >= 10 frames/s at <= 15 % of one core.

Prints JSON lines: {"bench": "live", "case": ..., "fps": ..., "cpu_percent": ..., ...}.
"""

import json
import subprocess
import sys
import threading
import time

import numpy as np

import bpfnb

SECONDS = 8.0
INTERVAL = 0.1
SOURCE = r"""
u64 total = 0;
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4096);
         __type(key, u32); __type(value, u64); } by_pid SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024);
         __type(key, u32); __type(value, u64); } by_syscall SEC(".maps");
BPFNB_HIST(ids, 16);

static __always_inline void add(void *map, u32 key)
{
    u64 one = 1, *v = bpf_map_lookup_elem(map, &key);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(map, &key, &one, BPF_NOEXIST);
}

SEC("tracepoint/raw_syscalls/sys_enter")
int on_enter(struct trace_event_raw_sys_enter *ctx)
{
    add(&by_pid, bpf_get_current_pid_tgid() >> 32);
    add(&by_syscall, (u32)ctx->id);
    bpfnb_hist_log2(&ids, ctx->id);
    __sync_fetch_and_add(&total, 1);
    return 0;
}
"""

# Bursts of cheap syscalls with short sleeps: busy, but leaves the dashboard a core.
LOAD = f"""
import os, time
end = time.monotonic() + {SECONDS * 3 + 10}
while time.monotonic() < end:
    for _ in range(2000):
        os.getppid()
    os.stat("/")
    time.sleep(0.002)
"""


def views(obj):
    live = bpfnb.live
    return [live.TopN(obj.maps.by_pid, n=10), live.Histogram(obj.maps.ids),
            live.TimeSeries(obj.bss), live.KeyLines(obj.maps.by_syscall, n=5)]


def run_dashboard(obj, interval, seconds):
    dash = bpfnb.live(*views(obj), interval=interval, start=False)
    cpu, wall = time.process_time(), time.monotonic()
    dash.start()
    time.sleep(seconds)
    frames = dash.frames
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    dash.stop()
    assert dash.error is None, dash.error
    return {"frames": frames, "seconds": round(wall, 2), "fps": round(frames / wall, 2),
            "cpu_percent": round(100 * cpu / wall, 1),
            "ms_per_frame": round(1000 * cpu / max(frames, 1), 2),
            "full_draws": dash.panels.full_draws, "cell_draws": dash.panels.cell_draws,
            "png_kb": round(len(dash.image.value) / 1024, 1)}


def naive_frame(panels, now):
    """Clear every axes, plot the views' data afresh, save the whole figure as PNG."""
    import io
    panels.sample(now)
    for view in panels.plots:
        ax = view.ax
        ax.clear()
        ax.set_title(view.title, fontsize=10, loc="left")
        if isinstance(view, bpfnb.live.TopN):
            ax.barh(view.data["label"], view.data["value"])
            ax.invert_yaxis()
        elif isinstance(view, bpfnb.live.Histogram):
            labels = [bpfnb.live.bucket_label(lo, hi)
                      for lo, hi in zip(view.data["low"], view.data["high"])]
            ax.bar(labels, view.data["count"])
            ax.tick_params(axis="x", labelrotation=45, labelsize=7)
        else:
            series = view.history
            x = np.array([t - now for t, _ in series])
            names = view.ranked if isinstance(view, bpfnb.live.KeyLines) else \
                (list(series[-1][1]) if series else [])
            for name in names:
                ax.plot(x, [p.get(name, np.nan) for _, p in series], label=name)
            if names:
                ax.legend(loc="upper left", fontsize=8)
            ax.set_xlim(-view.window, 0)
    buf = io.BytesIO()
    panels.figure.savefig(buf, format="png")
    return buf.getvalue()


def run_naive(obj, interval, seconds):
    dash = bpfnb.live(*views(obj), interval=interval, start=False)
    panels = dash.panels
    frames, stop = 0, threading.Event()

    def loop():
        nonlocal frames
        deadline = time.monotonic()
        while not stop.is_set():
            dash.image.value = naive_frame(panels, time.monotonic())
            frames += 1
            deadline = max(deadline + interval, time.monotonic())
            stop.wait(deadline - time.monotonic())

    thread = threading.Thread(target=loop)
    cpu, wall = time.process_time(), time.monotonic()
    thread.start()
    time.sleep(seconds)
    done = frames
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    stop.set()
    thread.join()
    dash.stop()
    return {"frames": done, "seconds": round(wall, 2), "fps": round(done / wall, 2),
            "cpu_percent": round(100 * cpu / wall, 1),
            "ms_per_frame": round(1000 * cpu / max(done, 1), 2),
            "png_kb": round(len(dash.image.value) / 1024, 1)}


def main():
    obj = bpfnb.load(SOURCE)
    load = subprocess.Popen([sys.executable, "-c", LOAD])
    try:
        time.sleep(0.5)
        base = {"bench": "live", "views": 4}
        for case, fn, interval in (("blit", run_dashboard, INTERVAL),
                                   ("naive", run_naive, INTERVAL),
                                   ("max", run_dashboard, 0.001)):
            result = fn(obj, interval, SECONDS if case != "max" else SECONDS / 2)
            print(json.dumps({**base, "case": case, "interval_s": interval, **result}),
                  flush=True)
    finally:
        load.kill()
        load.wait(5)
        obj.destroy()


if __name__ == "__main__":
    main()
