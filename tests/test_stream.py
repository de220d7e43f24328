"""Ring buffer and perf buffer streams against the real kernel.

Every program hooks the lseek syscall, filtered to this process and one fd of the
test's, so the events are exactly the os.lseek calls the test makes; the offset
argument carries the test's values into the records.
"""

import os
import threading
import time

import numpy as np
import pandas as pd
import pytest

import bpfnb
from bpfnb.stream import to_datetime

EVENTS = r"""
enum kind { KIND_SMALL = 1, KIND_BIG = 2 };
struct point { s32 x; s32 y; };
struct event {
    u64 seq;
    s64 offset;
    u64 ts;
    u64 boot_ts;
    u32 pid;
    enum kind kind;
    char comm[16];
    struct point p;
};

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4);
         __uint(value_size, 4); } perf_events SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4);
         __type(key, u32); __type(value, struct point); } points SEC(".maps");

const volatile u32 target_pid = 0;
const volatile u32 target_fd = 0;
u64 seq = 0;

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid || ctx->args[0] != target_fd)
        return 0;
    struct event e = {};
    e.seq = __sync_fetch_and_add(&seq, 1);
    e.offset = ctx->args[1];
    e.ts = bpf_ktime_get_ns();
    e.boot_ts = bpf_ktime_get_boot_ns();
    e.pid = target_pid;
    e.kind = e.offset > 1000 ? KIND_BIG : KIND_SMALL;
    bpf_get_current_comm(e.comm, sizeof(e.comm));
    e.p.x = e.offset;
    e.p.y = -e.offset;
    bpfnb_ringbuf_output(&events, &e, sizeof(e));
    bpfnb_perf_output(ctx, &perf_events, &e, sizeof(e));
    return 0;
}
"""

# SEEK_SET: 64 records into a one-page ring; SEEK_CUR: one record into an 8 KiB ring
# (40-byte records, 48 with the header: they straddle the ring's end); SEEK_END: 64
# samples into a perf buffer (one sample when the offset is not 0).
BURSTS = r"""
struct burst { u64 seq; u64 pad[7]; };
struct wrap { u64 seq; u64 square; u32 words[6]; };

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } tiny SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 8192); } ring8k SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4);
         __uint(value_size, 4); } perf_burst SEC(".maps");

const volatile u32 target_pid = 0;
const volatile u32 target_fd = 0;
u64 seq = 0;

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid || ctx->args[0] != target_fd)
        return 0;
    u64 whence = ctx->args[2];
    if (whence == 1) {
        struct wrap w = {};
        w.seq = __sync_fetch_and_add(&seq, 1);
        w.square = w.seq * w.seq;
        for (int i = 0; i < 6; i++)
            w.words[i] = w.seq * 7 + i;
        bpfnb_ringbuf_output(&ring8k, &w, sizeof(w));
        return 0;
    }
    for (int i = 0; i < 64; i++) {
        if (whence == 2 && ctx->args[1] && i)
            break;
        struct burst b = {};
        b.seq = __sync_fetch_and_add(&seq, 1);
        if (whence == 0)
            bpfnb_ringbuf_output(&tiny, &b, sizeof(b));
        else
            bpfnb_perf_output(ctx, &perf_burst, &b, sizeof(b));
    }
    return 0;
}
"""

# Offset % 3: 0 reserves a record and discards it, 1 writes a struct small, 2 writes
# a struct big (the small one and 16 more bytes).
SIZES = r"""
struct small { u64 value; };
struct big { u64 value; u64 extra[2]; };

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } mixed SEC(".maps");

const volatile u32 target_pid = 0;
const volatile u32 target_fd = 0;

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid || ctx->args[0] != target_fd)
        return 0;
    u64 v = ctx->args[1];
    if (v % 3 == 0) {
        struct small *s = bpfnb_ringbuf_reserve(&mixed, struct small);
        if (s)
            bpf_ringbuf_discard(s, 0);
    } else if (v % 3 == 1) {
        struct small s = { .value = v };
        bpfnb_ringbuf_output(&mixed, &s, sizeof(s));
    } else {
        struct big b = { .value = v, .extra = { v + 1, v + 2 } };
        bpfnb_ringbuf_output(&mixed, &b, sizeof(b));
    }
    return 0;
}
"""

# No struct at all: records stay bytes.
RAW = r"""
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 14); } words SEC(".maps");

const volatile u32 target_pid = 0;
const volatile u32 target_fd = 0;

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid || ctx->args[0] != target_fd)
        return 0;
    u64 v = ctx->args[1];
    bpf_ringbuf_output(&words, &v, sizeof(v), 0);
    return 0;
}
"""


def our_threads():
    return [t for t in threading.enumerate() if t.name.startswith("bpfnb-stream")]


def wait_for(condition, timeout=5.0):
    """Poll ``condition`` until true or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.005)
    return condition()


def open_fds() -> set:
    """(fd, what it is) of this process; listdir's own fd is closed by the readlink."""
    fds = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.add((fd, os.readlink(f"/proc/self/fd/{fd}")))
        except FileNotFoundError:
            pass
    return fds


@pytest.fixture
def clean(no_leaks):
    """No stream thread nor file descriptor of the test survives it."""
    fds = open_fds()
    yield
    assert wait_for(lambda: not our_threads(), 2.0), f"threads left: {our_threads()}"
    # perf events of tracepoint links are closed in the background (libbpf/teardown.py)
    assert wait_for(lambda: open_fds() - fds == set(), 10.0), \
        f"file descriptors left: {sorted(open_fds() - fds)}"


@pytest.fixture
def devnull(clean):
    fd = os.open("/dev/null", os.O_RDONLY)
    yield fd
    os.close(fd)


def load(source, fd):
    return bpfnb.load(source, rodata={"target_pid": os.getpid(), "target_fd": fd})


@pytest.fixture
def events(devnull):
    obj = load(EVENTS, devnull)
    yield obj, devnull
    obj.destroy()


def seek_all(fd, offsets, whence=os.SEEK_SET):
    for off in offsets:
        os.lseek(fd, int(off), whence)


@pytest.mark.parametrize("map_name", ["events", "perf_events"])
def test_each_lseek_is_one_row_with_its_values(events, map_name):
    obj, fd = events
    offsets = [i * 7 for i in range(500)]
    with getattr(obj.maps, map_name).stream() as s:
        assert s.type == "struct event"
        seek_all(fd, offsets)
        assert wait_for(lambda: len(s) >= len(offsets))
        df = s.to_df()
        assert s.lost == 0
    assert len(df) == len(offsets)
    assert df["seq"].tolist() == list(range(len(offsets)))
    assert df["offset"].tolist() == offsets
    assert (df["pid"] == os.getpid()).all()
    with open("/proc/self/comm") as f:
        assert (df["comm"] == f.read().strip()).all()
    expected = ["KIND_BIG" if o > 1000 else "KIND_SMALL" for o in offsets]
    assert df["kind"].astype(str).tolist() == expected
    assert df["p.x"].tolist() == offsets
    assert df["p.y"].tolist() == [-o for o in offsets]


def test_tail_and_the_bounded_buffer(events):
    obj, fd = events
    with obj.maps.events.stream(max_rows=10) as s:
        seek_all(fd, range(100))
        assert wait_for(lambda: s.dropped == 90)
        assert len(s) == 10
        assert s.to_df()["offset"].tolist() == list(range(90, 100))
        assert s.tail(3)["offset"].tolist() == [97, 98, 99]
        assert s.lost == 90 and s.kernel_lost == 0
        s.clear()
        assert len(s) == 0 and s.lost == 0 and s.to_df().empty
        seek_all(fd, [5, 6])
        assert wait_for(lambda: len(s) == 2)
        assert s.to_df()["offset"].tolist() == [5, 6]


def test_the_record_type_by_name_and_its_errors(events):
    obj, _ = events
    with obj.maps.events.stream("event") as s:
        assert s.type == "struct event"
    with pytest.raises(ValueError, match="nor in its DWARF"):
        obj.maps.events.stream("struct nothing")
    with pytest.raises(ValueError, match="struct or union"):
        obj.maps.events.stream("u64")
    with pytest.raises(TypeError, match="to_df"):
        obj.maps.points.stream()


def test_ktime_columns_turn_into_wall_clock_datetimes(events):
    obj, fd = events
    with obj.maps.events.stream() as s:
        before = pd.Timestamp.now(tz="UTC").tz_localize(None)
        seek_all(fd, range(20))
        after = pd.Timestamp.now(tz="UTC").tz_localize(None)
        assert wait_for(lambda: len(s) == 20)
        df = s.to_df()
    slack = pd.Timedelta(milliseconds=5)
    for column, clock in (("ts", "monotonic"), ("boot_ts", "boottime")):
        when = to_datetime(df[column], clock=clock)
        assert isinstance(when, pd.Series) and when.index.equals(df.index)
        assert when.min() >= before - slack and when.max() <= after + slack
        first = to_datetime(int(df[column].iloc[0]), clock=clock)
        assert first == when.iloc[0]
    local = to_datetime(df["ts"], tz="Europe/Paris")
    assert (local.dt.tz_convert("UTC").dt.tz_localize(None) == to_datetime(df["ts"])).all()


def test_a_burst_into_a_tiny_ring_is_rows_plus_lost(devnull):
    obj = load(BURSTS, devnull)
    try:
        s = obj.maps.tiny.stream("struct burst")
        calls = 100
        seek_all(devnull, range(calls), os.SEEK_SET)
        s.close()  # collects what is still in the ring
        seqs = s.to_df()["seq"].to_numpy()
        assert s.kernel_lost > 0  # 64 records of 72 bytes per call, 56 fit the ring
        assert len(seqs) + s.lost == calls * 64
        assert (np.diff(seqs) > 0).all()
    finally:
        obj.destroy()


def test_perf_buffer_counts_lost_samples_at_once(devnull):
    obj = load(BURSTS, devnull)
    # One CPU, one page: most of each call's 64 samples find the ring full. The kernel
    # would report them only with that CPU's next sample that fits; the stream counts
    # them as soon as it is asked, with no later sample.
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        with obj.maps.perf_burst.stream("struct burst", page_cnt=1) as s:
            calls = 100
            seek_all(devnull, [0] * calls, os.SEEK_END)
            lost, seqs = s.lost, s.to_df()["seq"].to_numpy()
            assert s.kernel_lost > 0
            assert len(seqs) + lost == calls * 64
            assert len(np.unique(seqs)) == len(seqs)
    finally:
        os.sched_setaffinity(0, affinity)
        obj.destroy()


def test_wrap_around_keeps_records_whole_and_in_order(devnull):
    obj = load(BURSTS, devnull)
    try:
        with obj.maps.ring8k.stream("struct wrap") as s:
            rounds, per_round = 15, 150  # 150 * 48 bytes = 88% of the ring per round
            for r in range(rounds):
                seek_all(devnull, range(per_round), os.SEEK_CUR)
                assert wait_for(lambda: len(s) == (r + 1) * per_round), f"round {r}"
            df = s.to_df()
            assert s.lost == 0
        total = rounds * per_round
        assert total * 48 > 10 * 8192
        seq = np.arange(total, dtype=np.uint64)
        assert (df["seq"].to_numpy() == seq).all()
        assert (df["square"].to_numpy() == seq * seq).all()
        words = np.stack(df["words"].to_numpy())
        assert (words == (seq * 7)[:, None] + np.arange(6)).all()
    finally:
        obj.destroy()


def test_records_of_another_size_and_discarded_ones(devnull):
    obj = load(SIZES, devnull)
    try:
        with pytest.raises(ValueError, match="struct big, struct small"):
            obj.maps.mixed.stream()
        with obj.maps.mixed.stream("struct small") as s:
            values = list(range(1, 61))
            seek_all(devnull, values)
            kept = [v for v in values if v % 3]
            assert wait_for(lambda: len(s) == len(kept))
            df = s.to_df()
    finally:
        obj.destroy()
    assert df["value"].tolist() == kept
    for v, raw in zip(kept, df["raw"]):
        if v % 3 == 1:
            assert raw is None
        else:
            assert raw == np.array([v, v + 1, v + 2], dtype="<u8").tobytes()


def test_without_a_struct_records_stay_bytes(devnull):
    obj = load(RAW, devnull)
    try:
        with obj.maps.words.stream() as s:
            assert s.type is None
            seek_all(devnull, [3, 1 << 40, 7])
            assert wait_for(lambda: len(s) == 3)
            raw = s.to_df()["raw"].tolist()
    finally:
        obj.destroy()
    assert raw == [v.to_bytes(8, "little") for v in (3, 1 << 40, 7)]


def test_close_stops_the_thread_and_keeps_the_rows(events):
    obj, fd = events
    s = obj.maps.events.stream()
    perf = obj.maps.perf_events.stream()
    assert s.running and len(our_threads()) == 2
    seek_all(fd, range(30))
    s.close()
    perf.close()
    assert not s.running and not our_threads()
    assert len(s) == 30 and len(s.to_df()) == 30
    s.close()  # twice is fine


def test_destroying_the_object_stops_the_stream(devnull):
    obj = load(EVENTS, devnull)
    s = obj.maps.events.stream()
    seek_all(devnull, range(50))
    started = time.monotonic()
    obj.destroy()
    assert time.monotonic() - started < 1.0
    assert wait_for(lambda: not s.running, 2.0)
    assert s.to_df()["offset"].tolist() == list(range(50))
    assert s.lost == 0
    s.close()


def test_a_dropped_stream_stops_its_thread(events):
    obj, fd = events
    s = obj.maps.events.stream()
    assert our_threads()
    del s
    assert wait_for(lambda: not our_threads(), 2.0)
