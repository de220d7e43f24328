"""Histograms against the real kernel: the test picks the values (lseek offsets on its
own fd), a tracepoint program buckets them, and every bucket count is checked."""

import os

import pandas as pd
import pytest

import bpfnb
from bpfnb import hist

SOURCE = r"""
struct who { u32 whence; char comm[16]; };
struct hist { u32 slots[20]; };                  /* libbpf-tools' layout */
struct bcc_key { u32 whence; u64 slot; };        /* BCC's keyed histogram key */

BPFNB_HIST(log2h, 32);
BPFNB_LHIST(lin, 0, 100, 10);
BPFNB_LHIST(neg, -20, 20, 5);
BPFNB_HIST_KEYED(by_whence, u32, 64);
BPFNB_HIST_KEYED(by_who, struct who, 64);
BPFNB_LHIST_KEYED(lin_by_whence, u32, 64, 0, 30, 10);

struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
         __type(key, u32); __type(value, struct hist); } tools SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, struct bcc_key); __type(value, u64); } bcc SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 8);
         __type(key, u32); __type(value, u64); } plain SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8);
         __type(key, u64); __type(value, struct who); } not_hist SEC(".maps");

const volatile u32 target_pid = 0;
const volatile s32 target_fd = -1;

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid || (s32)ctx->args[0] != target_fd)
        return 0;
    s64 off = ctx->args[1];
    u32 whence = ctx->args[2];

    bpfnb_hist_log2(&log2h, off);
    bpfnb_lhist(&lin, off);
    bpfnb_lhist(&neg, off);
    bpfnb_hist_log2_keyed(&by_whence, whence, off);
    struct who w = { .whence = whence };
    bpf_get_current_comm(&w.comm, sizeof(w.comm));
    bpfnb_hist_log2_keyed(&by_who, w, off);
    bpfnb_lhist_keyed(&lin_by_whence, whence, off);

    u32 zero = 0, slot = bpfnb_log2(off);        /* libbpf-tools: floor(log2), clamped */
    struct hist *h = bpf_map_lookup_elem(&tools, &zero);
    if (h) {
        if (slot >= 20)
            slot = 19;
        __sync_fetch_and_add(&h->slots[slot], 1);
    }

    struct bcc_key bk = { .whence = whence, .slot = bpfnb_log2_slot(off) };
    u64 one = 1, *c = bpf_map_lookup_elem(&bcc, &bk);
    if (c)
        __sync_fetch_and_add(c, 1);
    else
        bpf_map_update_elem(&bcc, &bk, &one, BPF_NOEXIST);

    u32 idx = off;
    u64 *p = idx < 8 ? bpf_map_lookup_elem(&plain, &idx) : 0;
    if (p)
        *p += 1;
    return 0;
}
"""

VALUES = [0, 1, 1, 2, 3, 5, 8, 9, 15, 16, 100, 1000, 1023, 1024, 5000, 1 << 20]


@pytest.fixture
def seeker(no_leaks):
    """(obj, seek): seek(values, whence) lseeks the test's own fd to each value."""
    fd = os.open("/dev/null", os.O_RDONLY)
    obj = bpfnb.load(SOURCE, rodata={"target_pid": os.getpid(), "target_fd": fd})

    def seek(values, whence=os.SEEK_SET):
        for v in values:
            try:
                os.lseek(fd, v, whence)
            except OSError:  # a negative offset fails, after the tracepoint saw it
                pass
    yield obj, seek
    obj.destroy()
    os.close(fd)


def log2_slot(v: int) -> int:
    return v.bit_length() if v >= 0 else 64


def expected(slot_of, values, bounds, open_last=None):
    """{(low, high): count} over every slot between the lowest and highest hit."""
    counts = {}
    for v in values:
        counts[slot_of(v)] = counts.get(slot_of(v), 0) + 1
    out = {}
    for s in range(min(counts), max(counts) + 1):
        lo, hi = bounds(s)
        if open_last is not None and s == open_last:
            hi = float("inf")
        out[(lo, hi)] = counts.get(s, 0)
    return out


def log2_bounds(s):
    return (0 if s == 0 else 2 ** (s - 1)), 2 ** s


def as_dict(h, **key):
    rows = h
    for col, value in key.items():
        rows = rows[rows[col] == value]
    return {(lo, hi): c for lo, hi, c in zip(rows["low"], rows["high"], rows["count"])}


def test_log2_buckets_hold_exactly_the_values_sent(seeker):
    obj, seek = seeker
    seek(VALUES)
    h = obj.maps.log2h.hist()
    assert isinstance(h, hist.Histogram) and isinstance(h, pd.DataFrame)
    assert list(h.columns) == ["low", "high", "count"]
    assert as_dict(h) == expected(log2_slot, VALUES, log2_bounds)
    assert h["count"].sum() == len(VALUES)


def test_log2_values_past_the_last_slot_land_in_it(seeker):
    obj, seek = seeker
    seek([1 << 29, 1 << 40, -7])  # slots 30, 41 and 64: the last of 32 is 31
    rows = as_dict(obj.maps.log2h.hist())
    assert rows == {(2.0 ** 29, 2.0 ** 30): 1, (2.0 ** 30, float("inf")): 2}


def test_linear_buckets_with_tails(seeker):
    obj, seek = seeker
    values = [0, 5, 9, 10, 55, 99, 100, 250, -1]
    seek(values)

    def slot(v):  # bpftrace's lhist: below min, (max - min) / step buckets, >= max
        return 0 if v < 0 else 11 if v >= 100 else v // 10 + 1

    def bounds(s):
        return (float("-inf"), 0) if s == 0 else (10 * (s - 1), 10 * s)
    assert as_dict(obj.maps.lin.hist()) == expected(slot, values, bounds, open_last=11)

    def neg_slot(v):
        return 0 if v < -20 else 9 if v >= 20 else (v + 20) // 5 + 1

    def neg_bounds(s):
        return (float("-inf"), -20) if s == 0 else (-20 + 5 * (s - 1), -20 + 5 * s)
    neg = obj.maps.neg.hist()
    assert as_dict(neg) == expected(neg_slot, values, neg_bounds, open_last=9)
    assert neg["low"].iloc[0] == -5  # the slot of -1


def test_keyed_histograms_one_per_key(seeker):
    obj, seek = seeker
    sets = {os.SEEK_SET: [1, 2, 3, 100], os.SEEK_CUR: [7, 7, 8], os.SEEK_END: [0]}
    for whence, values in sets.items():
        seek(values, whence)
    h = obj.maps.by_whence.hist()
    assert list(h.columns) == ["key", "low", "high", "count"]
    assert h["key"].drop_duplicates().tolist() == [0, 1, 2]
    for whence, values in sets.items():
        assert as_dict(h, key=whence) == expected(log2_slot, values, log2_bounds)

    by_who = obj.maps.by_who.hist()
    assert list(by_who.columns) == ["whence", "comm", "low", "high", "count"]
    comm = by_who["comm"].iloc[0]
    assert comm and (by_who["comm"] == comm).all()
    for whence, values in sets.items():
        assert as_dict(by_who, whence=whence) == expected(log2_slot, values, log2_bounds)

    lin = obj.maps.lin_by_whence.hist()
    assert as_dict(lin, key=os.SEEK_SET) == {(0.0, 10.0): 3, (10.0, 20.0): 0,
                                             (20.0, 30.0): 0, (30.0, float("inf")): 1}
    assert as_dict(lin, key=os.SEEK_CUR) == {(0.0, 10.0): 3}
    assert as_dict(lin, key=os.SEEK_END) == {(0.0, 10.0): 1}


def test_libbpf_tools_and_bcc_layouts(seeker):
    obj, seek = seeker
    seek(VALUES)
    seek([3, 3], os.SEEK_CUR)

    def tools_slot(v):  # libbpf-tools: slot = floor(log2(v)), 0 and 1 both in slot 0
        return min(max(v, 1).bit_length() - 1, 19)

    def tools_bounds(s):
        return (0 if s == 0 else 2 ** s), 2 ** (s + 1)
    h = obj.maps.tools.hist()
    assert list(h.columns) == ["low", "high", "count"]  # a single-entry array: no key
    assert as_dict(h) == expected(tools_slot, VALUES + [3, 3], tools_bounds, open_last=19)

    bcc = obj.maps.bcc.hist()
    assert list(bcc.columns) == ["whence", "low", "high", "count"]
    assert as_dict(bcc, whence=0) == expected(log2_slot, VALUES, log2_bounds)
    assert as_dict(bcc, whence=1) == {(2.0, 4.0): 2}


def test_plain_count_arrays_log2_or_linear(seeker):
    obj, seek = seeker
    seek([0, 1, 1, 2, 2, 2, 7])
    plain = obj.maps.plain  # per-CPU u64 counts indexed by the offset itself
    assert as_dict(plain.hist()) == {(0.0, 1.0): 1, (1.0, 2.0): 2, (2.0, 4.0): 3,
                                     (4.0, 8.0): 0, (8.0, 16.0): 0, (16.0, 32.0): 0,
                                     (32.0, 64.0): 0, (64.0, 128.0): 1}
    lin = hist.histogram(plain, kind="linear", min=100, step=5)
    assert as_dict(lin) == {(100.0, 105.0): 1, (105.0, 110.0): 2, (110.0, 115.0): 3,
                            (115.0, 120.0): 0, (120.0, 125.0): 0, (125.0, 130.0): 0,
                            (130.0, 135.0): 0, (135.0, 140.0): 1}
    with pytest.raises(ValueError, match="step"):
        hist.histogram(plain, kind="linear")
    with pytest.raises(TypeError, match="not a histogram"):
        obj.maps.not_hist.hist()


def test_text_repr_is_ascii_bars(seeker):
    obj, seek = seeker
    seek([0, 2, 3, 3, 1500, 1500, 1500, 1500])
    h = obj.maps.log2h.hist()
    assert repr(h) == "\n".join([
        "@log2h:",
        "[0]        1 |@@@@@@@@@@                              |",
        "[1]        0 |                                        |",
        "[2, 4)     3 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@          |",
        "[4, 8)     0 |                                        |",
        "[8, 16)    0 |                                        |",
        "[16, 32)   0 |                                        |",
        "[32, 64)   0 |                                        |",
        "[64, 128)  0 |                                        |",
        "[128, 256) 0 |                                        |",
        "[256, 512) 0 |                                        |",
        "[512, 1K)  0 |                                        |",
        "[1K, 2K)   4 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|"])
    assert h._repr_html_().startswith("<pre>@log2h:")
    seek([5, 5], os.SEEK_CUR)
    keyed = repr(obj.maps.lin_by_whence.hist())
    assert keyed.splitlines()[0] == "@lin_by_whence[0]:"
    assert "(..., 0)" not in keyed
    assert "[30, ...) 4 |" + "@" * 40 + "|" in keyed
    assert "@lin_by_whence[1]:\n[0, 10)   2 |" in keyed
    seek([-100, -100])  # half as many as the fullest bucket of neg: [0, 5) and [20, ...)
    assert repr(obj.maps.neg.hist()).splitlines()[1] == (
        "(..., -20) 2 |@@@@@@@@@@@@@@@@@@@@                    |")


def test_histogram_stays_a_dataframe(seeker):
    obj, seek = seeker
    seek(VALUES)
    h = obj.maps.log2h.hist()
    big = h[h["count"] > 1]
    assert isinstance(big, hist.Histogram) and big.title == "log2h"
    assert repr(big).startswith("@log2h:")
    assert "low" in repr(h[["low"]]) and "@" not in repr(h[["low"]])
    assert type(h.df) is pd.DataFrame and list(h.df.columns) == ["low", "high", "count"]


def test_empty_histogram(seeker):
    obj, _ = seeker
    h = obj.maps.by_whence.hist()
    assert len(h) == 0 and list(h.columns) == ["key", "low", "high", "count"]
    assert repr(h) == "@by_whence: no counts yet (every slot is 0)"
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    ax = h.plot()
    assert ax.get_title() == "@by_whence" and not ax.patches
    matplotlib.pyplot.close(ax.figure)


def test_plot_draws_one_bar_per_bucket(seeker):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    obj, seek = seeker
    seek(VALUES)
    h = obj.maps.log2h.hist()
    ax = h.plot()
    heights = [p.get_height() for p in ax.patches]
    assert heights == h["count"].tolist()
    assert [t.get_text() for t in ax.get_xticklabels()][:3] == ["[0]", "[1]", "[2, 4)"]
    plt.close(ax.figure)
    ax = h.plot(kind="line", x="low", y="count")  # pandas' own plots stay reachable
    assert len(ax.get_lines()) == 1
    plt.close(ax.figure)
    seek([7, 7], os.SEEK_CUR)
    ax = obj.maps.by_whence.hist().plot()
    assert len(ax.get_legend().get_texts()) == 2
    assert sum(p.get_height() for p in ax.patches) == len(VALUES) + 2
    plt.close(ax.figure)


def test_keyed_log2_reaches_the_top_slot(seeker):
    obj, seek = seeker
    seek([1 << 62, -7])  # -7 is 2^64 - 7 for the u64 the program histograms
    assert as_dict(obj.maps.by_whence.hist(), key=0) == {
        (2.0 ** 62, 2.0 ** 63): 1, (2.0 ** 63, float("inf")): 1}
