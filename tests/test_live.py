"""Live dashboards over real programs: what is drawn is what the kernel counted.

The program counts the syscalls of one worker thread of the test (filtered by thread
id, so neither pytest nor the drawing add to the counts): getppid, getpgrp and getsid
by name, lseek offsets in a log2 histogram and as ring buffer events.
"""

import io
import os
import queue
import subprocess
import sys
import threading
import time

import matplotlib.image
from matplotlib.ticker import MaxNLocator
import numpy as np
import pytest

import bpfnb

PROGRAM = r"""
const volatile u32 target_tid = 0;
u64 total = 0;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, u32);       /* 1 getppid, 2 getpgrp, 3 getsid */
    __type(value, u64);
} calls SEC(".maps");

BPFNB_HIST(offsets, 24);    /* log2 of lseek offsets */

struct seek_event { u64 offset; u32 tid; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 64 * 1024); } seeks SEC(".maps");

static __always_inline int mine(void)
{
    return (u32)bpf_get_current_pid_tgid() == target_tid;
}

static __always_inline void count(u32 which)
{
    u64 one = 1, *v = bpf_map_lookup_elem(&calls, &which);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&calls, &which, &one, BPF_NOEXIST);
    __sync_fetch_and_add(&total, 1);
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx) { if (mine()) count(1); return 0; }

SEC("tracepoint/syscalls/sys_enter_getpgrp")
int on_getpgrp(void *ctx) { if (mine()) count(2); return 0; }

SEC("tracepoint/syscalls/sys_enter_getsid")
int on_getsid(void *ctx) { if (mine()) count(3); return 0; }

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    if (!mine())
        return 0;
    u64 offset = ctx->args[1];
    bpfnb_hist_log2(&offsets, offset);
    struct seek_event *e = bpfnb_ringbuf_reserve(&seeks, struct seek_event);
    if (e) {
        e->offset = offset;
        e->tid = target_tid;
        bpf_ringbuf_submit(e, 0);
    }
    return 0;
}
"""

CALLS = {1: os.getppid, 2: os.getpgrp, 3: lambda: os.getsid(0)}


class Worker:
    """A thread that makes the syscalls the program counts, on request."""

    def __init__(self):
        self.jobs = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="syscall-worker")
        self.thread.start()
        self.tid = self.thread.native_id

    def _run(self):
        while (job := self.jobs.get()) is not None:
            job()
            self.jobs.task_done()

    def cause(self, getppid=0, getpgrp=0, getsid=0, offsets=()):
        def job():
            for which, n in ((1, getppid), (2, getpgrp), (3, getsid)):
                for _ in range(n):
                    CALLS[which]()
            fd = os.open("/dev/null", os.O_RDONLY)
            try:
                for off in offsets:
                    os.lseek(fd, off, os.SEEK_SET)
            finally:
                os.close(fd)
        self.jobs.put(job)
        self.jobs.join()

    def stop(self):
        self.jobs.put(None)
        self.thread.join(5)


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.stop()


@pytest.fixture
def obj(no_leaks, worker):
    o = bpfnb.load(PROGRAM, rodata={"target_tid": worker.tid})
    yield o
    o.destroy()


def wait_for(predicate, timeout=5.0):
    """Poll ``predicate`` for at most ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def axes_pixels(png: bytes, ax) -> np.ndarray:
    """The pixels inside an Axes of the figure the PNG was drawn from (RGB, 0-255)."""
    img = (matplotlib.image.imread(io.BytesIO(png), format="png")[..., :3] * 255).round()
    x0, y0, x1, y1 = ax.bbox.extents
    h = img.shape[0]
    return img[int(h - y1) + 2:int(h - y0) - 2, int(x0) + 2:int(x1) - 2].astype(np.uint8)


def share_of(pixels: np.ndarray, color) -> float:
    rgb = (np.array(matplotlib.colors.to_rgb(color)) * 255).round()
    return float((np.abs(pixels.astype(int) - rgb).sum(axis=-1) < 30).mean())


def test_plotted_values_are_the_maps_values(obj, worker):
    live = bpfnb.live
    top = live.TopN(obj.maps.calls, n=5, rerank=0)
    hist = live.Histogram(obj.maps.offsets)
    rates = live.TimeSeries(obj.bss, ["total"], window=3.0)
    lines = live.KeyLines(obj.maps.calls, n=3, window=3.0)
    dash = bpfnb.live(top, hist, rates, lines, start=False)
    try:
        # The readings are stamped with times of our choosing, so the rates are exact
        # and no point leaves the 3 s windows however slowly a busy machine draws.
        t = time.monotonic()
        dash.refresh(t)                       # baseline for the rates
        worker.cause(getppid=30, getpgrp=20, getsid=10, offsets=[0, 1, 5, 6, 1000])
        dash.refresh(t + 1.0)
        worker.cause(getppid=5, getpgrp=30, offsets=[7])
        dash.refresh(t + 2.5)                 # lines that span half the window

        # Top-N: bar widths are the map's counts at this refresh, largest first.
        widths = [b.get_width() for b in top.bars if b.get_visible()]
        assert widths == [50, 35, 10]
        assert top.labels == ["2", "1", "3"]
        df = obj.maps.calls.to_df()
        counts = dict(zip(df["key"], df["value"]))
        assert widths == sorted(counts.values(), reverse=True)
        assert not any(b.get_visible() for b in top.bars[3:])

        # Histogram: one bar per bucket, heights = the map's counts.
        h = obj.maps.offsets.hist()
        assert [b.get_height() for b in hist.bars] == h["count"].tolist()
        assert sum(b.get_height() for b in hist.bars) == 6

        # Time series: rates per second between refreshes (60 calls in 1 s, 35 in 1.5 s).
        (t1, r1), (t2, r2) = rates.history
        assert (t1 - t, t2 - t) == pytest.approx((1.0, 2.5))
        assert r1["total"] == 60 and r2["total"] == pytest.approx(35 / 1.5)
        assert list(rates.lines["total"].get_ydata()) == [r1["total"], r2["total"]]

        # Per-key lines: the busiest keys, each line's last point its rate.
        assert set(lines.keys) == {"1", "2", "3"}
        by_key = dict(zip(lines.keys, lines.lines))
        (_, p1), (_, p2) = lines.history
        assert p1 == pytest.approx({"1": 30.0, "2": 20.0, "3": 10.0})
        assert p2 == pytest.approx({"1": 5 / 1.5, "2": 30 / 1.5, "3": 0.0})
        assert by_key["2"].get_ydata()[-1] == p2["2"]

        # The PNG shows it: bars in their colour inside their axes, lines drawn.
        png = dash.snapshot()
        assert png.startswith(b"\x89PNG") and dash.image.value == png
        assert share_of(axes_pixels(png, top.ax), "C0") > 0.05
        assert share_of(axes_pixels(png, hist.ax), "C2") > 0.02
        # the rate line spans 1.5 s of the 3 s window: a thin line, but drawn (none: 0)
        assert share_of(axes_pixels(png, rates.ax), "C0") > 0.001
        for ax in (top.ax, hist.ax, rates.ax, lines.ax):
            assert (axes_pixels(png, ax) < 200).any(axis=-1).mean() > 0.002
    finally:
        dash.stop()


def assert_drawn_whole(panels):
    """What blitting drew is what drawing the whole figure afresh (same layout) draws."""
    canvas = panels.figure.canvas
    blitted = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    canvas.draw()
    for view in panels.plots:
        for artist in view.animated():
            if artist.get_visible():
                view.ax.draw_artist(artist)
    whole = np.asarray(canvas.buffer_rgba())[..., :3]
    rows = np.flatnonzero((blitted != whole).any(axis=(1, 2)))
    assert not len(rows), f"rows {rows[0]}..{rows[-1]} differ from a whole drawing"


def test_blitting_redraws_only_what_changed(obj, worker):
    top = bpfnb.live.TopN(obj.maps.calls, rerank=0)
    held = bpfnb.live.TopN(obj.maps.calls, n=2, rerank=1.5)
    dash = bpfnb.live(top, held, start=False)
    panels = dash.panels
    try:
        worker.cause(getppid=10, getpgrp=5)
        dash.refresh()                         # the first frame: drawn whole
        worker.cause(getppid=1)                # same order, same scale: artists only
        dash.refresh()
        assert (panels.full_draws, panels.cell_draws) == (1, 0)
        worker.cause(getpgrp=10)               # 2 overtakes 1: the labels alone redrawn
        dash.refresh()
        assert top.labels == ["2", "1"] and panels.label_draws == 1
        assert (panels.full_draws, panels.cell_draws) == (1, 0)
        assert_drawn_whole(panels)
        worker.cause(getsid=200)               # a new label and a new scale: one cell
        dash.refresh()
        assert (panels.full_draws, panels.cell_draws) == (1, 1)
        assert [b.get_width() for b in top.bars[:3]] == [200, 15, 11]
        assert top.labels == ["3", "2", "1"]
        assert held.labels == ["1", "2"]       # ranked again only after 1.5 s
        assert_drawn_whole(panels)
        time.sleep(1.5)
        dash.refresh()
        assert held.labels == ["3", "2"]
        assert [b.get_width() for b in held.bars] == [200, 15]
    finally:
        dash.stop()


def test_nothing_changed_nothing_sent_and_only_changed_views_drawn(obj, worker):
    top = bpfnb.live.TopN(obj.maps.calls, rerank=0)
    hist = bpfnb.live.Histogram(obj.maps.offsets)
    dash = bpfnb.live(top, hist, start=False)
    panels = dash.panels
    try:
        worker.cause(getppid=2, offsets=[3])
        assert dash.refresh() is True
        frame, blits = dash.image.value, panels.blits
        for _ in range(3):                     # nothing happened: nothing drawn or sent
            assert dash.refresh() is False
        assert dash.image.value is frame and panels.blits == blits
        assert (dash.frames, dash.sent) == (4, 1)
        assert "no change since" in dash.status.value

        before = np.asarray(panels.figure.canvas.buffer_rgba()).copy()
        worker.cause(getppid=1)                # only the top-N view's map changed
        assert dash.refresh() is True and dash.image.value != frame
        assert panels.blits == blits + 1 and [b.get_width() for b in top.bars[:1]] == [3]
        after = np.asarray(panels.figure.canvas.buffer_rgba())
        changed = (after != before).any(axis=(0, 2))   # columns drawn: the left cell
        width = after.shape[1]
        assert changed[:width // 2].any() and not changed[width // 2:].any()
        assert "running" in dash.status.value and "no change" not in dash.status.value

        worker.cause(offsets=[2])              # the histogram alone (a bucket it has)
        assert dash.refresh() is True and panels.blits == blits + 2
        assert [b.get_height() for b in hist.bars] == obj.maps.offsets.hist()["count"].tolist()
    finally:
        dash.stop()

    # Its thread: refreshes go on, frames are sent only when the map changes.
    dash = bpfnb.live(obj.maps.calls, interval=0.02)
    try:
        assert wait_for(lambda: dash.frames >= 10)
        assert dash.sent == 1
        worker.cause(getppid=1)
        assert wait_for(lambda: dash.sent == 2)
        frames = dash.frames
        assert wait_for(lambda: dash.frames >= frames + 10) and dash.sent == 2
    finally:
        dash.stop()


def test_refreshes_on_its_own_and_stops_with_its_object(no_leaks, worker):
    before_threads = threading.active_count()
    obj = bpfnb.load(PROGRAM, rodata={"target_tid": worker.tid})
    events = obj.maps.seeks.live(n=5, interval=0.05)   # owns its event stream
    dash = bpfnb.live(obj.maps.calls, obj.bss, interval=0.05)
    try:
        assert threading.active_count() == before_threads + 3
        worker.cause(getppid=3, offsets=[11, 22, 33])
        assert wait_for(lambda: dash.frames >= 3 and events.frames >= 3)
        assert wait_for(lambda: events.views[0].rows == 3)
        assert events.views[0].data["offset"].tolist() == [11, 22, 33]
        assert "33" in events.tables[0].value

        dash.pause()
        time.sleep(0.1)
        frozen = dash.frames
        time.sleep(0.3)
        assert dash.frames == frozen and "paused" in dash.status.value
        dash.resume()
        assert wait_for(lambda: dash.frames > frozen)

        obj.destroy()
        assert wait_for(lambda: not dash.running and not events.running)
        assert "destroyed" in dash.reason and "destroyed" in events.reason
        assert wait_for(lambda: threading.active_count() == before_threads)
    finally:
        obj.destroy()
        dash.stop()
        events.stop()
    with pytest.raises(RuntimeError, match="stopped"):
        dash.start()
    assert dash.snapshot().startswith(b"\x89PNG")   # the last frame stays


def test_destroying_while_it_reads_is_safe(no_leaks, worker):
    """Re-running a cell: destroy, load again at once, while dashboards read flat out."""
    before = threading.active_count()
    dashes = []
    obj = bpfnb.load(PROGRAM, rodata={"target_tid": worker.tid})
    try:
        for _ in range(8):
            dashes.append(bpfnb.live(obj.maps.calls, obj.maps.offsets, obj.bss,
                                     interval=0.001))
            worker.cause(getppid=50, offsets=range(50))
            time.sleep(0.05)
            obj.destroy()
            obj = bpfnb.load(PROGRAM, rodata={"target_tid": worker.tid})
        assert wait_for(lambda: not any(d.running for d in dashes))
        assert all("destroyed" in d.reason and d.error is None for d in dashes)
        assert all(d.frames > 0 for d in dashes)
    finally:
        obj.destroy()
        for d in dashes:
            d.stop()
    assert threading.active_count() == before


def test_object_and_stream_shortcuts(obj, worker):
    stream = obj.maps.seeks.stream()
    whole = obj.live(interval=0.05)
    events = bpfnb.live(stream, interval=0.05)
    try:
        shown = [(type(v).__name__, v.title) for v in whole.views]
        assert shown == [("Histogram", "offsets"), ("TopN", "calls"), ("TimeSeries", ".bss")]
        worker.cause(offsets=[5, 6])
        assert wait_for(lambda: events.views[0].rows == 2)
        assert wait_for(lambda: whole.frames >= 2 and whole.views[2].rows == 1)  # total only
    finally:
        whole.stop()
        events.stop()
    assert stream.running   # a stream the user opened stays open
    stream.close()


def test_stop_button_and_interval_slider(obj):
    before = threading.active_count()
    one = bpfnb.live(obj.maps.calls, interval=0.05)
    two = bpfnb.live(bpfnb.live.TimeSeries(lambda: {"t": time.monotonic()}), interval=0.2)
    try:
        assert wait_for(lambda: one.frames >= 2 and two.frames >= 2)
        one.slider.value = 0.5
        assert one.interval == 0.5
        one.stop_button.click()
        assert not one.running and one.pause_button.disabled
        assert two.running
        # A time series of the monotonic clock rises by one second per second.
        assert wait_for(lambda: len(two.views[0].history) >= 2)
        assert two.views[0].history[-1][1]["t"] == pytest.approx(1.0, rel=0.1)
    finally:
        one.stop()
        two.stop()
    assert threading.active_count() == before


def test_a_failing_source_stops_with_the_error_shown():
    def broken():
        raise ValueError("no such column 'pid'")
    dash = bpfnb.live(bpfnb.live.TopN(broken), interval=0.05)
    try:
        assert wait_for(lambda: not dash.running)
        assert isinstance(dash.error, ValueError)
        assert "no such column" in dash.status.value and "error" in dash.reason
    finally:
        dash.stop()


def test_snapshot_and_plot_maps_write_pngs(obj, worker, tmp_path):
    worker.cause(getppid=4, getpgrp=2, offsets=[3, 300])
    plot = bpfnb.live.plot_maps(obj)
    plot.save(tmp_path / "maps.png")
    img = matplotlib.image.imread(tmp_path / "maps.png")
    # HiDPI: twice the pixels of its CSS size, which IPython is told to show it at.
    assert img.shape[1] == bpfnb.live.WIDTH_IN * bpfnb.live.DPI * 2 == 1440
    assert (img[..., :3] < 0.9).any(axis=-1).mean() > 0.01
    data, shown = plot._repr_png_()
    assert data.startswith(b"\x89PNG") and shown["width"] == 720
    assert shown["height"] * 2 == img.shape[0]
    shown = [(type(v).__name__, v.title) for v in plot.views]
    assert shown == [("Histogram", "offsets"), ("TopN", "calls"),
                     ("TopN", "global variables")]         # not the ring buffer
    assert [b.get_width() for b in plot.views[1].bars[:2]] == [4, 2]

    table = bpfnb.live.Table(lambda: obj.maps.calls.to_df(), n=3)
    dash = bpfnb.live(obj.maps.calls, table, start=False)
    try:
        path = tmp_path / "dash.png"
        data = dash.snapshot(path)
        assert path.read_bytes() == data
        shot = matplotlib.image.imread(path)
        # The plot on top, the table below it.
        assert shot.shape[0] > dash.panels.figure.bbox.height
        assert "<table" in table.page
    finally:
        dash.stop()


def test_the_process_exits_with_dashboards_running(need_root):
    """Kernel shutdown: the interpreter exits at once, dashboards stopped, no traceback."""
    code = ("import time, bpfnb, tests.test_live as t\n"
            "obj = bpfnb.load(t.PROGRAM, rodata={'target_tid': 1})\n"
            "dash = bpfnb.live(obj.maps.calls, obj.bss, interval=0.01)\n"
            "other = bpfnb.live(bpfnb.live.TimeSeries(time.monotonic), interval=0.01)\n"
            "end = time.monotonic() + 20\n"
            "while (dash.frames < 5 or other.frames < 5) and time.monotonic() < end:\n"
            "    time.sleep(0.01)\n"
            "assert dash.running and other.running\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, cwd=os.path.dirname(os.path.dirname(__file__)))
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr


def test_importing_bpfnb_leaves_widgets_alone():
    code = ("import sys, bpfnb\n"
            "assert 'ipywidgets' not in sys.modules and 'matplotlib' not in sys.modules\n"
            "assert callable(bpfnb.live) and bpfnb.live.plot_maps\n"
            "assert 'ipywidgets' in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_views_say_what_they_accept(obj):
    with pytest.raises(ValueError, match="unknown view kind"):
        obj.maps.calls.live(kind="pie")
    with pytest.raises(TypeError, match="Histogram reads a map or a callable"):
        bpfnb.live.Histogram(obj.bss)
    with pytest.raises(ValueError, match="at least one view"):
        bpfnb.live()


def shown_texts(figure):
    """Every text a dashboard figure shows: tick labels, titles, axis labels, legends."""
    texts = []
    for ax in figure.axes:
        texts += [t for t in ax.get_xticklabels() + ax.get_yticklabels()]
        texts += [ax.title, ax._left_title, ax.xaxis.label, ax.yaxis.label]
        legend = ax.get_legend()
        if legend is not None:
            texts += legend.get_texts()
    return [t for t in texts if t.get_visible() and t.get_text()]


def check_labels(dash):
    figure = dash.panels.figure
    renderer = figure.canvas.get_renderer()
    w, h = figure.canvas.get_width_height()
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            labels = [t.get_text() for t in axis.get_ticklabels() if t.get_visible()]
            labels = [x for x in labels if x]
            assert len(labels) == len(set(labels)), labels          # distinct
            if isinstance(axis.get_major_locator(), MaxNLocator):   # a value axis
                assert all(len(x) <= 4 for x in labels), labels     # "52M", "1.5k"
    texts = shown_texts(figure)
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    for text, box in boxes:   # inside the image
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= w and box.y1 <= h, text
    for i, (a, box_a) in enumerate(boxes):
        for b, box_b in boxes[i + 1:]:
            assert not box_a.overlaps(box_b), f"{a!r} is drawn over {b!r}"
    return texts


def test_axis_labels_are_short_distinct_and_never_drawn_over(obj, worker):
    # 24 histogram buckets (0, 1, then every power of two up to 2^23), large counts.
    worker.cause(getppid=3, getpgrp=2, getsid=1, offsets=[0] + [1 << i for i in range(24)])
    calls = obj.maps.calls
    for key, extra in ((1, 52_000_000), (2, 1_500), (3, 987_654)):
        calls.update(key, calls[key] + extra)
    obj.bss.total = 52_000_006

    def long_names():
        df = calls.to_df()
        return df.assign(key="the rather long name of syscall " + df["key"].astype(str))

    live = bpfnb.live
    top = live.TopN(calls)
    hist = live.Histogram(obj.maps.offsets)
    dash = bpfnb.live(top, hist, live.TimeSeries(obj.bss, rate=False),
                      live.KeyLines(calls, rate=False), live.TopN(long_names, key="key"),
                      start=False)
    try:
        dash.refresh()
        dash.refresh()
        texts = [t.get_text() for t in check_labels(dash)]
        assert len(hist.buckets) == 24 and hist.buckets[-2:] == ["2M-4M", ">=4M"], hist.buckets
        shown = [t.get_text() for t in hist.ax.get_xticklabels() if t.get_visible()]
        assert shown[0] == "0" and 5 <= len(shown) < 24   # thinned, every k-th
        ticks = [t.get_text() for t in top.ax.get_xticklabels() if t.get_visible()]
        assert ticks == ["0", "20M", "40M", "60M", "80M", "100M"]   # 52M bars: room to grow
        # cut in the middle to 24 characters: the ends tell keys apart
        assert {"the rather lo… syscall 1", "the rather lo… syscall 2"} <= set(texts)
        # The values grow 20x: new limits, new labels, still clear of each other.
        for key in (1, 2, 3):
            calls.update(key, calls[key] * 20)
        obj.bss.total = 1_040_000_000
        full_draws = dash.panels.full_draws
        dash.refresh()
        check_labels(dash)
        assert "1G" in [t.get_text() for t in top.ax.get_xticklabels()]
        # New limits: the cells drawn again, their neighbours' labels left whole.
        assert dash.panels.full_draws == full_draws and dash.panels.cell_draws >= 2
        assert_drawn_whole(dash.panels)
    finally:
        dash.stop()
