"""Dashboards over a replay: the views take a replayed object's maps, globals and
streams as they take a live one's, plot the replay's values at its clock, and their
reads are never the notebook's (a replay following the reads answers them as recorded).

The recording is made here, from test_live's program: a worker thread makes the
syscalls it counts, the test's thread reads (with read marks) in between.
"""

import os
import threading
import time
import warnings

import numpy as np
import pytest

import bpfnb
from bpfnb.live import Histogram, Table, TimeSeries, TopN
from test_live import PROGRAM, Worker

FIRST = {"1": 30.0, "2": 20.0, "3": 10.0}    # calls after the first burst, by key
LAST = {"1": 35.0, "2": 50.0, "3": 10.0}     # and after the second
OFFSETS = [0, 1, 5, 6, 1000, 7]


@pytest.fixture
def recorded(tmp_path, no_leaks):
    """A recording with read marks: (its path, what the four reads answered live).

    A live dashboard over the object is refreshed from the recording thread and runs
    its own thread meanwhile: neither adds a read mark."""
    path = str(tmp_path / "rec")
    worker = Worker()
    obj = bpfnb.load(PROGRAM, rodata={"target_tid": worker.tid})
    try:
        rec = obj.record(path, interval=0.05, reads=True)
        dash = bpfnb.live(obj.maps.calls, obj.bss, obj.maps.offsets, interval=0.01)
        worker.cause(getppid=30, getpgrp=20, getsid=10, offsets=OFFSETS[:5])
        dash.refresh()
        got = [obj.bss.total]                           # read 1
        time.sleep(0.3)
        got.append(obj.maps.calls.to_df())              # read 2
        worker.cause(getppid=5, getpgrp=30, offsets=OFFSETS[5:])
        dash.refresh()
        time.sleep(0.3)
        got.append(obj.maps.offsets.hist())             # read 3
        got.append(obj.bss.total)                       # read 4
        assert wait_for(lambda: dash.frames >= 3), dash.status.value
        dash.stop()
        rec.stop()
    finally:
        obj.destroy()
        worker.stop()
    assert got[0] == 60 and got[3] == 95
    assert bpfnb.replay(path, follow="reads")._follower.recorded == 4
    return path, got


def wait_for(predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not predicate():
        time.sleep(0.02)
    return predicate()


def shown(top: TopN) -> dict:
    """What a top-N draws: {label: bar width}."""
    widths = [b.get_width() for b in top.bars if b.get_visible()]
    assert len(widths) == len(top.labels)
    return dict(zip(top.labels, widths))


def seek_to_total(r, total: float) -> float:
    """Move a clock replay to the middle of the time its .bss.total is ``total`` (the
    calls made, and the lseeks after them seen and their records received)."""
    times = [float(t) for t in np.arange(0.0, r.duration, 0.01)
             if r.seek(float(t)).bss.total == total]
    assert times, f"the recording never shows total == {total}"
    r.seek((times[0] + times[-1]) / 2)
    return r.clock


def test_views_plot_a_clock_replay_at_its_clock(recorded):
    path, _ = recorded
    # Running, at a pace slow enough that no snapshot passes while the test reads.
    r = bpfnb.replay(path, speed=1e-3)
    top, hist = TopN(r.maps.calls, n=5, rerank=0), Histogram(r.maps.offsets)
    series = TimeSeries(r.bss, ["total"], rate=False)
    rates = TimeSeries(r.bss, ["total"])
    dash = bpfnb.live(top, hist, series, rates, r.maps.seeks, r.bss, start=False)
    try:
        assert [type(v) for v in dash.views[4:]] == [Table, TimeSeries]
        dash.refresh(100.0)   # the first snapshot: taken before any call
        assert shown(top) == {} and series.history[-1][1] == {"total": 0.0}

        seek_to_total(r, 60)
        dash.refresh(101.0)
        df = r.maps.calls.to_df()
        assert shown(top) == FIRST == {str(k): v for k, v in zip(df["key"], df["value"])}
        assert top.labels == ["1", "2", "3"]
        assert hist.data["count"].tolist() == r.maps.offsets.hist()["count"].tolist()
        assert [b.get_height() for b in hist.bars] == hist.data["count"].tolist()
        assert sum(b.get_height() for b in hist.bars) == 5
        assert series.history[-1][1] == {"total": 60.0}
        assert rates.history[-1][1] == {"total": 60.0}   # 60 calls in the 1 s between
        assert dash.views[4].data["offset"].tolist() == OFFSETS[:5]

        r.seek(r.duration)    # the end: every call, the second burst in 2 s
        dash.refresh(103.0)
        assert shown(top) == LAST and top.labels == ["2", "1", "3"]
        assert sum(b.get_height() for b in hist.bars) == 6
        assert list(series.lines["total"].get_ydata()) == [0.0, 60.0, 95.0]
        assert rates.history[-1][1] == {"total": 17.5}
        assert dash.views[4].data["offset"].tolist() == OFFSETS
        assert dash.views[5].history[-1][1] == {"total": 17.5}
    finally:
        dash.stop()
    r.destroy()
    assert not top.alive()   # a dashboard stops with its replay, as with a live object


def test_a_dashboard_leaves_the_followed_reads_alone(recorded):
    path, live = recorded
    r = bpfnb.replay(path, follow="reads")
    top, hist = TopN(r.maps.calls, n=5, rerank=0), Histogram(r.maps.offsets)
    series = TimeSeries(r.bss, ["total"], rate=False)
    checked = bpfnb.live(top, hist, series, start=False)
    # Another one reads all along in its own thread, as a dashboard on screen does.
    running = bpfnb.live(r.bss, r.maps.calls, r.maps.offsets, interval=0.01)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)   # a read out of step warns
            checked.refresh(0.0)   # from the notebook's thread: still none of its reads
            assert r.bss.total == live[0] == 60
            # Between reads the dashboard shows the state just before the next read.
            checked.refresh(1.0)
            assert shown(top) == FIRST and series.history[-1][1] == {"total": 60.0}
            frames = running.frames
            assert wait_for(lambda: running.frames >= frames + 3), running.status.value
            assert r.maps.calls.to_df().equals(live[1])
            checked.refresh(2.0)
            assert shown(top) == LAST and series.history[-1][1] == {"total": 95.0}
            assert sum(b.get_height() for b in hist.bars) == 6
            h = r.maps.offsets.hist()
            assert h["count"].tolist() == live[2]["count"].tolist()
            assert r.bss.total == live[3] == 95
        assert r._follower.made == 4 and running.error is None
        assert threading.get_ident() == r._follower.thread
    finally:
        checked.stop()
        running.stop()
        r.destroy()


STRUCT_KEYS = r"""
struct key_t { u32 tid; u16 nr; };           /* a struct key: two columns */
struct val_t { u64 calls; u64 last_ns; };    /* and a struct value: two more */
const volatile u32 target_tid = 0;
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, struct key_t);
    __type(value, struct val_t);
} by_call SEC(".maps");

static int count(u16 nr)
{
    if ((u32)bpf_get_current_pid_tgid() != target_tid)
        return 0;
    struct key_t k = {.tid = target_tid, .nr = nr};
    struct val_t zero = {}, *v = bpf_map_lookup_elem(&by_call, &k);
    if (!v) {
        bpf_map_update_elem(&by_call, &k, &zero, BPF_NOEXIST);
        v = bpf_map_lookup_elem(&by_call, &k);
        if (!v)
            return 0;
    }
    __sync_fetch_and_add(&v->calls, 1);
    v->last_ns = bpf_ktime_get_ns();
    return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx) { return count(110); }

SEC("tracepoint/syscalls/sys_enter_getpgrp")
int on_getpgrp(void *ctx) { return count(111); }
"""


def test_struct_key_labels_are_the_same_live_and_replayed(tmp_path, no_leaks):
    """A replayed map labels its rows by its key columns as the live map does (the
    recording keeps how many leading columns the key makes), not by every column but
    the value, which would put the value struct's other fields into the labels; and a
    struct key looks up its struct value."""
    from bpfnb.live.sources import labels_values
    path = tmp_path / "rec"
    with bpfnb.load(STRUCT_KEYS, rodata={"target_tid": threading.get_native_id()}) as obj:
        rec = obj.record(path, interval=60)
        for _ in range(7):
            os.getppid()
        for _ in range(3):
            os.getpgrp()
        live = labels_values(obj.maps.by_call, value="calls")
        rec.stop()
    tid = threading.get_native_id()
    assert sorted(zip(*live)) == [(f"{tid} 110", 7.0), (f"{tid} 111", 3.0)]
    with bpfnb.replay(path) as r:
        assert r.maps.by_call.key_columns == 2
        replayed = labels_values(r.maps.by_call, value="calls")
        assert replayed[0] == live[0] and list(replayed[1]) == list(live[1])
        # and a lookup by a struct key answers with the struct value
        got = r.maps.by_call[(tid, 110)]
        assert set(got) == {"calls", "last_ns"} and got["calls"] == 7
        assert {k.nr: v["calls"] for k, v in r.maps.by_call.items()} == {110: 7, 111: 3}
