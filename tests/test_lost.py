"""Lost records are counted honestly, against the real kernel.

tests/progs/getpidsnoop.bpf.c writes one 64-byte event per getpid() of one process,
with the plain helpers (no bpfnb.h), into small buffers: a 4 KiB ring holds 56 such
records (72 bytes with the header), a one-page perf buffer about 50. A child process
makes N getpid() calls in a burst; the program counts them (``seen``), and what the
stream received plus what it counts as lost must be N exactly.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import bpfnb
from bpfnb import build
from bpfnb.lost import NOT_COUNTED

from test_stream import our_threads, wait_for

PROGS = Path(__file__).resolve().parent / "progs"
SNOOP = PROGS / "getpidsnoop.bpf.c"
PROGRAMS = {"getpid_reserve": "rb_reserve", "getpid_output": "rb_output",
            "getpid_dynptr": "rb_dynptr", "getpid_perf": "perf_events"}
RING = 4096
FIT = RING // 72  # records of 64 bytes + 8 of header that fit an empty ring
N = 3000

# The child waits for a line on stdin (the test sets target_tgid meanwhile), then
# calls getpid() N times as fast as it can.
CHILD = "import os, sys; sys.stdin.readline(); [os.getpid() for _ in range({n})]"


@pytest.fixture
def clean(no_leaks):
    yield
    assert wait_for(lambda: not our_threads(), 2.0), f"threads left: {our_threads()}"


def load(source, program: str):
    """The object with only ``program`` loaded, its ring buffers 4 KiB."""
    return bpfnb.load(source, maps={m: RING for m in PROGRAMS.values() if m.startswith("rb_")},
                      autoload={p: p == program for p in PROGRAMS})


def burst(obj, n: int = N):
    """A child process calls getpid() n times; the program saw exactly n."""
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(n=n)],
                             stdin=subprocess.PIPE)
    try:
        obj.bss.target_tgid = child.pid
        child.stdin.write(b"go\n")
        child.stdin.close()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert obj.bss.seen == n, "the program did not see every getpid(): is it attached?"


def plain_clang(tmp_path) -> Path:
    """getpidsnoop.bpf.c built as another toolchain would: clang and libbpf's headers,
    without bpfnb's include path."""
    out = tmp_path / "getpidsnoop.o"
    cmd = [build.find_clang(), "-g", "-O2", "-target", "bpf",
           f"-D__TARGET_ARCH_{build.target_arch()}", "-I", str(build.vmlinux_h().parent),
           "-c", str(SNOOP), "-o", str(out)]
    if build.multiarch_include():
        cmd[1:1] = ["-idirafter", build.multiarch_include()]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out


@pytest.mark.parametrize("program", ["getpid_reserve", "getpid_output", "getpid_dynptr"])
def test_a_full_ring_counts_every_failed_write(clean, program):
    obj = load(SNOOP, program)
    try:
        burst(obj)  # before any stream: the ring fills, the rest is lost
        # recordtypes.py finds the type written by reserve and output, not through a dynptr
        kind = "struct event" if program == "getpid_dynptr" else None
        with getattr(obj.maps, PROGRAMS[program]).stream(kind) as s:
            df = s.to_df()
            assert s.kernel_lost == N - FIT and s.lost == N - FIT
            assert df.attrs["lost"] == N - FIT
            assert f"{N - FIT} lost" in repr(s)
        # the first records arrived, in order; every later one is counted as lost
        assert df["seq"].tolist() == list(range(FIT))
        assert (df["pid"] != os.getpid()).all() and (df["ppid"] == os.getpid()).all()
    finally:
        obj.destroy()


def test_losses_while_the_stream_reads_add_up(clean):
    obj = load(SNOOP, "getpid_reserve")
    affinity = os.sched_getaffinity(0)
    # the stream's thread and the child share one CPU: the child outruns the reader
    os.sched_setaffinity(0, {min(affinity)})
    try:
        with obj.maps.rb_reserve.stream() as s:
            burst(obj)
            df = s.to_df()  # reads what the ring still holds first
            assert s.lost > 0 and len(df) + s.lost == N
            seqs = df["seq"].to_numpy()
            assert (np.diff(seqs.astype(np.int64)) > 0).all()
    finally:
        os.sched_setaffinity(0, affinity)
        obj.destroy()


def test_a_cell_with_plain_helpers_counts_too(clean):
    # the same program as a cell: no includes, the prelude gives the headers
    header = (PROGS / "getpidsnoop.h").read_text()
    source = "\n".join(line if line != '#include "getpidsnoop.h"' else header
                       for line in SNOOP.read_text().splitlines()
                       if not line.startswith("#include <") and "vmlinux.h" not in line)
    assert build.wants_prelude(source)
    obj = load(source, "getpid_output")
    try:
        burst(obj)
        with obj.maps.rb_output.stream() as s:
            assert len(s.to_df()) == FIT and s.lost == N - FIT
    finally:
        obj.destroy()


def test_perf_buffer_losses_show_right_after_the_burst(clean):
    obj = load(SNOOP, "getpid_perf")
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        with obj.maps.perf_events.stream(page_cnt=1) as s:
            burst(obj)
            # no later sample: what the kernel could not write is counted already
            lost = s.lost
            df = s.to_df()
            assert lost > 0 and len(df) + lost == N
            assert df.attrs["lost"] == lost
            assert len(np.unique(df["seq"])) == len(df)
    finally:
        os.sched_setaffinity(0, affinity)
        obj.destroy()


def test_a_prebuilt_object_says_its_ring_losses_are_unknown(clean, tmp_path):
    obj = load(plain_clang(tmp_path), "getpid_reserve")
    try:
        assert "bpfnb_lost" not in obj.bss
        burst(obj)
        with obj.maps.rb_reserve.stream() as s:
            df = s.to_df()
            assert len(df) == FIT
            assert s.lost is None and s.kernel_lost is None
            assert s.lost_reason == NOT_COUNTED
            assert f"lost: unknown ({NOT_COUNTED})" in repr(s)
            assert df.attrs["lost"] is None and df.attrs["lost_reason"] == NOT_COUNTED
    finally:
        obj.destroy()


def test_a_prebuilt_perf_buffer_counts_its_own_losses(clean, tmp_path):
    obj = load(plain_clang(tmp_path), "getpid_perf")
    affinity = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(affinity)})
    try:
        with obj.maps.perf_events.stream(page_cnt=1) as s:
            assert s.lost_reason is None
            burst(obj)
            lost = s.lost  # the perf events' own count, read now
            df = s.to_df()
            assert lost > 0 and len(df) + lost == N
    finally:
        os.sched_setaffinity(0, affinity)
        obj.destroy()


# libbpf-tools' compat.bpf.h writes through helpers chosen at load time, and code may
# take a helper's address or call it through parentheses: all of it still compiles.
UNUSUAL = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct event { __u64 seq; __u64 pad[7]; };

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, struct event);
} heap SEC(".maps");

pid_t target_tgid = 0;
u64 seen = 0;

static long (*const output_fn)(void *, void *, __u64, __u64) = &bpf_ringbuf_output;

static __always_inline void *reserve_buf(__u64 size)
{
	static const int zero;

	if (bpf_core_type_exists(struct bpf_ringbuf))
		return bpf_ringbuf_reserve(&events, size, 0);
	return bpf_map_lookup_elem(&heap, &zero);
}

static __always_inline long submit_buf(void *ctx, void *buf, __u64 size)
{
	if (bpf_core_type_exists(struct bpf_ringbuf)) {
		bpf_ringbuf_submit(buf, 0);
		return 0;
	}
	return bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, buf, size);
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int getpid_compat(void *ctx)
{
	struct event *e;

	if (!target_tgid || (bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	__u64 seq = __sync_fetch_and_add(&seen, 1);
	e = reserve_buf(sizeof(*e));
	if (!e)
		return 0;
	e->seq = seq;
	return submit_buf(ctx, e, sizeof(*e));
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int getppid_parens(void *ctx)
{
	struct event e = {};

	if (output_fn == 0)
		return 0;
	return (bpf_ringbuf_output)(&events, &e, sizeof(e), 0);
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_libbpf_tools_compat_writers_compile_and_count(clean, tmp_path):
    source = tmp_path / "compat.bpf.c"
    source.write_text(UNUSUAL)
    obj = bpfnb.load(source)
    try:
        burst(obj)
        with obj.maps.events.stream() as s:
            assert len(s.to_df()) == RING // 72 and s.lost == N - RING // 72
    finally:
        obj.destroy()


TWO_RINGS = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "getpidsnoop.h"

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } small SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 20); } big SEC(".maps");

pid_t target_tgid = 0;
u64 seen = 0;

SEC("tracepoint/syscalls/sys_enter_getpid")
int getpid_both(void *ctx)
{
	struct event e = {};

	if (!target_tgid || (bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	e.seq = __sync_fetch_and_add(&seen, 1);
	bpf_ringbuf_output(&small, &e, sizeof(e), 0);
	bpf_ringbuf_output(&big, &e, sizeof(e), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_each_ring_buffer_has_its_own_count(clean, tmp_path):
    source = tmp_path / "two_rings.bpf.c"
    source.write_text(TWO_RINGS)
    obj = bpfnb.load(source, cflags=["-I", str(PROGS)])  # for getpidsnoop.h
    try:
        burst(obj)
        with obj.maps.small.stream() as small, obj.maps.big.stream() as big:
            assert len(small.to_df()) == FIT and small.lost == N - FIT
            assert len(big.to_df()) == N and big.lost == 0
        assert obj.bss.bpfnb_lost == N - FIT  # the object's total
    finally:
        obj.destroy()


EITHER_RING = r"""
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "getpidsnoop.h"

struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } odd SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } even SEC(".maps");

pid_t target_tgid = 0;
u64 seen = 0;

SEC("tracepoint/syscalls/sys_enter_getpid")
int getpid_either(void *ctx)
{
	struct event e = {};
	void *ring;

	if (!target_tgid || (bpf_get_current_pid_tgid() >> 32) != target_tgid)
		return 0;
	e.seq = __sync_fetch_and_add(&seen, 1);
	ring = e.seq & 1 ? (void *)&odd : (void *)&even;
	bpf_ringbuf_output(ring, &e, sizeof(e), 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
"""


def test_a_write_through_a_pointer_counts_towards_every_map(clean, tmp_path):
    # The call site names no map (`ring`), so neither count can leave its losses out:
    # each ring's lost is the object's total, more than its own share, never less.
    source = tmp_path / "either_ring.bpf.c"
    source.write_text(EITHER_RING)
    obj = bpfnb.load(source, cflags=["-I", str(PROGS)])
    try:
        burst(obj)
        with obj.maps.odd.stream() as odd, obj.maps.even.stream() as even:
            assert len(odd.to_df()) == len(even.to_df()) == FIT
            assert odd.lost == even.lost == obj.bss.bpfnb_lost == N - 2 * FIT
            assert odd.lost >= N // 2 - FIT
    finally:
        obj.destroy()
