"""Live dashboard: CPU of four views at 10 frames/s, against the naive loops, in one run.

The program counts the system calls of one load process (filtered by its pid): by
thread (top-N bars), by syscall number (per-key lines), a log2 histogram of the numbers
and a total (time series). The load's four threads make bursts of cheap calls, so a
few keys of each map change at every tick, as a counter map's do.

Cases, in one run over the same program:
  replot     each tick: every axes cleared, re-plotted, the figure saved as PNG
  always     each tick: every view blitted and the whole PNG encoded (the loop before
             change detection), at 1x and at 2x (HiDPI) pixels
  changing   bpfnb.live: only views whose data changed drawn, only changed PNG bands
             compressed; at 1x and 2x (the HiDPI cost)
  unchanged  bpfnb.live once the load has stopped: the maps no longer change

CPU is this whole process's (time.process_time: every thread) over a bounded window,
in percent of one core; the load is a child process, so its syscalls (and the BPF
program they run) are not counted. Target: "changing" at 2x <= 7 % of a core at 10
frames/s; "unchanged" sends no frame.

Prints JSON lines: {"bench": "live", "metric": ..., "value": ..., "unit": ...,
"baseline": ..., ...}, each figure beside the naive loop's from the same run.
"""

import io
import json
import subprocess
import sys
import threading
import time
import zlib

import numpy as np

import bpfnb
from bpfnb.live import dashboard as live_dashboard, draw as live_draw, png as live_png

SECONDS = 3.5
INTERVAL = 0.1
WARMUP = 5   # refreshes before measuring
SOURCE = r"""
const volatile u32 target_tgid = 0;
u64 total = 0;
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4096);
         __type(key, u32); __type(value, u64); } by_thread SEC(".maps");
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
    u64 id = bpf_get_current_pid_tgid();
    if (id >> 32 != target_tgid)
        return 0;
    add(&by_thread, (u32)id);
    add(&by_syscall, (u32)ctx->id);
    bpfnb_hist_log2(&ids, ctx->id);
    __sync_fetch_and_add(&total, 1);
    return 0;
}
"""

# Four threads, bursts of cheap syscalls of different sizes with short sleeps: busy,
# but leaves the dashboard a core. It runs until its stdin closes.
LOAD = """
import os, sys, threading, time
def burst(n):
    while True:
        for _ in range(n):
            os.getppid()
        os.stat("/")
        time.sleep(0.005)
for n in (50, 200, 500, 1000):
    threading.Thread(target=burst, args=(n,), daemon=True).start()
sys.stdin.read()
"""


def views(obj):
    live = bpfnb.live
    return [live.TopN(obj.maps.by_thread, n=10), live.Histogram(obj.maps.ids),
            live.TimeSeries(obj.bss), live.KeyLines(obj.maps.by_syscall, n=5)]


class _WholePng:
    """The encoder before band caching: the whole frame compressed every time, by
    the standard library's zlib."""
    bands_encoded = 0

    @staticmethod
    def encode(pixels):
        h, w = pixels.shape[:2]
        return live_png._png(w, h, zlib.compress(live_png._rows(pixels), 1))


class AlwaysDashboard(live_dashboard.Dashboard):
    """The loop before change detection: every view read, blitted and sent each tick."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._png = _WholePng()

    def refresh(self):
        for view in self.views:
            view._shown = None                            # compare with nothing
            view._cache = bpfnb.live.sources.MapCache()   # and read a DataFrame
        return super().refresh()


def measure(dash, seconds):
    """Run ``dash`` for ``seconds``: process CPU and what it drew meanwhile."""
    panels = dash.panels
    counters = ("full_draws", "cell_draws", "blits")
    before = [getattr(panels, c) for c in counters] + [dash.frames, dash.sent]
    cpu, wall = time.process_time(), time.monotonic()
    dash.start()
    time.sleep(seconds)
    after = [getattr(panels, c) for c in counters] + [dash.frames, dash.sent]
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    dash.stop()
    assert dash.error is None, dash.error
    drawn = dict(zip(counters + ("frames", "sent"), (a - b for a, b in zip(after, before))))
    return {"cpu_percent": round(100 * cpu / wall, 1),
            "refreshes_per_s": round(drawn.pop("frames") / wall, 2),
            "frames_sent_per_s": round(drawn.pop("sent") / wall, 2),
            "ms_per_refresh": round(1000 * cpu / max(after[3] - before[3], 1), 2),
            **drawn, "png_kb": round(len(dash.image.value) / 1024, 1)}


def run(obj, kind, scale, seconds):
    live_draw.SCALE = scale   # Panels reads it when it makes the figure
    try:
        cls = AlwaysDashboard if kind == "always" else live_dashboard.Dashboard
        dash = cls(views(obj), interval=INTERVAL, start=False)
    finally:
        live_draw.SCALE = bpfnb.live.SCALE
    for _ in range(WARMUP):   # the first frames (laid out whole, rate views' first
        dash.refresh()        # points, legends) are not what a tick costs
        time.sleep(INTERVAL)
    return measure(dash, seconds)


def replot_frame(panels, now):
    """Clear every axes, plot the views' data afresh, save the whole figure as PNG."""
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


def run_replot(obj, seconds):
    dash = bpfnb.live(*views(obj), interval=INTERVAL, start=False)
    panels = dash.panels
    frames, stop = 0, threading.Event()

    def loop():
        nonlocal frames
        deadline = time.monotonic()
        while not stop.is_set():
            dash.image.value = replot_frame(panels, time.monotonic())
            frames += 1
            deadline = max(deadline + INTERVAL, time.monotonic())
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
    return {"cpu_percent": round(100 * cpu / wall, 1), "refreshes_per_s": round(done / wall, 2),
            "frames_sent_per_s": round(done / wall, 2),
            "ms_per_refresh": round(1000 * cpu / max(done, 1), 2)}


def emit(metric, result, baseline, unit="% of a core", **extra):
    print(json.dumps({"bench": "live", "metric": metric, "value": result["cpu_percent"],
                      "unit": unit, "baseline": baseline["cpu_percent"], "views": 4,
                      "interval_s": INTERVAL, **extra, **result}), flush=True)


def main():
    load = subprocess.Popen([sys.executable, "-c", LOAD], stdin=subprocess.PIPE)
    obj = bpfnb.load(SOURCE, rodata={"target_tgid": load.pid})
    try:
        time.sleep(0.5)
        replot = run_replot(obj, SECONDS * 0.75)
        always1 = run(obj, "always", 1, SECONDS)
        always2 = run(obj, "always", 2, SECONDS)
        changing1 = run(obj, "changing", 1, SECONDS)
        changing2 = run(obj, "changing", 2, SECONDS)
        load.stdin.close()
        load.wait(5)
        time.sleep(0.2)   # the maps are still from here on
        unchanged = run(obj, "changing", 2, SECONDS * 0.75)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait(5)
        obj.destroy()
    emit("replot_cpu", replot, always1, baseline_is="always 1x", scale=1)
    emit("always_1x_cpu", always1, replot, baseline_is="replot", scale=1)
    emit("always_2x_cpu", always2, always1, baseline_is="always 1x", scale=2)
    emit("changing_1x_cpu", changing1, always1, baseline_is="always 1x", scale=1)
    emit("changing_2x_cpu", changing2, always2, baseline_is="always 2x", scale=2,
         target="<= 7")
    emit("hidpi_cost_cpu", changing2, changing1, baseline_is="changing 1x", scale=2)
    emit("unchanged_2x_cpu", unchanged, always2, baseline_is="always 2x", scale=2,
         target="0 frames sent")


if __name__ == "__main__":
    main()
