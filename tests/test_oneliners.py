"""README's bpftrace one-liners, compiled from the README text, checked against events
the test causes; and each aggregation kind of bpfnb.h with exact values."""

import json
import os
import platform
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bpfnb

README = Path(__file__).resolve().parent.parent / "README.md"
SYSCALL_FRAME = re.compile(r"read_zero|vfs_read|ksys_read|do_syscall_64|entry_SYSCALL")
GETPPID = {"x86_64": 110, "aarch64": 173}.get(platform.machine())


def oneliners() -> dict[str, tuple[str, str]]:
    """{name: (bpftrace line, cell body)} from README's table of one-liners."""
    text = README.read_text()
    table = text[text.index("<!-- oneliners"):text.index("<!-- end oneliners -->")]
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 3 or not cells[0] or not cells[2].startswith("`"):
            continue
        body = "\n".join(part.strip().strip("`") for part in cells[2].split("<br>"))
        rows[cells[0]] = (cells[1].strip("`"), body)
    return rows


ONELINERS = oneliners()


def test_readme_has_the_classic_oneliners_in_five_lines():
    assert set(ONELINERS) == {
        "syscalls by process", "openat by filename", "read sizes", "run-queue latency",
        "kernel stacks at 99 Hz", "signals by sender and target",
        "syscall latency by syscall"}
    for name, (bt, body) in ONELINERS.items():
        assert bt and "@" in bt, name
        assert 1 <= len(body.splitlines()) <= 5, name


@pytest.fixture
def cell(no_leaks):
    """Load a README body; destroy it afterwards."""
    loaded = []

    def load(name, **kw):
        obj = bpfnb.load(ONELINERS[name][1], name=name.split()[0], **kw)
        loaded.append(obj)
        return obj
    yield load
    for obj in loaded:
        obj.destroy()


def _cc(tmp_path, name, source):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the child program")
    (tmp_path / f"{name}.c").write_text(source)
    subprocess.run([cc, "-O1", "-o", str(tmp_path / name), str(tmp_path / f"{name}.c")],
                   check=True, capture_output=True, timeout=60)
    return tmp_path / name


SYSCALLER = r"""
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Renames itself, makes N getppid calls and exits: its new name then has exactly
 * N + 1 system calls (the exit_group enters and never leaves). */
int main(int argc, char **argv)
{
    long n = atol(argv[2]);
    prctl(PR_SET_NAME, argv[1]);
    for (long i = 0; i < n; i++)
        syscall(SYS_getppid);
    syscall(SYS_exit_group, 0);
    return 1;
}
"""


def test_syscalls_by_process(cell, tmp_path):
    exe = _cc(tmp_path, "syscaller", SYSCALLER)
    obj = cell("syscalls by process")
    comm, n = f"bpfnb{os.getpid() % 100000}sc", 777
    subprocess.run([str(exe), comm, str(n)], check=True, timeout=30)
    df = obj.maps.syscalls.to_df()
    assert list(df.columns) == ["comm", "count"]
    assert df.loc[df["comm"] == comm, "count"].tolist() == [n + 1]
    assert json.loads(obj.maps.syscalls.to_bpftrace_json())["data"]["@syscalls"][comm] == n + 1


def test_openat_by_filename(cell, tmp_path):
    obj = cell("openat by filename")
    name, n = f"bpfnb-open-{os.getpid()}", 37
    (tmp_path / name).write_text("x")
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(n):
            os.close(os.open(name, os.O_RDONLY, dir_fd=dfd))  # openat(dfd, name)
    finally:
        os.close(dfd)
    df = obj.maps.opens.to_df()
    assert list(df.columns) == ["str", "count"]
    assert df.loc[df["str"] == name, "count"].tolist() == [n]


def test_read_sizes(cell):
    obj = cell("read sizes")
    n = 2000
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        for _ in range(n):
            assert len(os.read(fd, 100)) == 100
    finally:
        os.close(fd)
    h = obj.maps.bytes.hist()
    bucket = h[(h["low"] == 64) & (h["high"] == 128)]
    assert int(bucket["count"].iloc[0]) >= n  # other processes read too
    assert "[64, 128)" in repr(h)
    data = json.loads(obj.maps.bytes.to_bpftrace_json())  # read later: others kept reading
    entry = next(e for e in data["data"]["@bytes"] if e.get("min") == 64)
    assert entry["max"] == 127 and entry["count"] >= int(bucket["count"].iloc[0])


def test_runqueue_latency(cell):
    obj = cell("run-queue latency")
    for _ in range(20):  # each sleep ends in a wakeup, then a switch to us
        time.sleep(0.005)
    h = obj.maps.usecs.hist()
    assert h["count"].sum() >= 20
    assert (h["low"] >= 0).all() or (h.loc[h["low"] < 0, "count"] == 0).all()


def test_kernel_stacks_sampled(cell):
    obj = cell("kernel stacks at 99 Hz")
    obj.progs.sample.attach_perf_event(freq=499)
    fd = os.open("/dev/zero", os.O_RDONLY)
    try:
        end = time.monotonic() + 0.6
        while time.monotonic() < end:  # time in the kernel, filling our buffer
            os.read(fd, 1 << 16)
    finally:
        os.close(fd)
    obj.progs.sample.detach()
    df = obj.maps.samples.to_df()
    assert list(df.columns) == ["kstack", "count"]
    assert df["count"].sum() > 50
    frames = {f for stack in df["kstack"] for f in stack}
    assert any(SYSCALL_FRAME.search(f) for f in frames), sorted(frames)[:20]
    assert not all(f.startswith("0x") for f in frames)
    assert ";" in obj.maps.samples.folded()


def test_signals_by_sender_and_target(cell):
    obj = cell("signals by sender and target")
    child = subprocess.Popen(["sleep", "30"])
    try:
        k = 9
        for _ in range(k):
            os.kill(child.pid, signal.SIGWINCH)  # ignored by default: sleep goes on
        df = obj.maps.signals.to_df()
    finally:
        child.kill()
        child.wait()
    assert list(df.columns) == ["sender", "target", "sig", "comm", "count"]
    mine = df[(df["sender"] == os.getpid()) & (df["target"] == child.pid)
              & (df["sig"] == signal.SIGWINCH)]
    assert mine["count"].tolist() == [k]
    assert mine["comm"].iloc[0] == Path(f"/proc/{os.getpid()}/comm").read_text().strip()


@pytest.mark.skipif(GETPPID is None, reason="getppid's number on this architecture unknown")
def test_syscall_latency_by_syscall(cell):
    obj = cell("syscall latency by syscall")
    n = 500
    for _ in range(n):
        os.getppid()
    h = obj.maps.usecs.hist()
    assert h.loc[h["key"] == GETPPID, "count"].sum() >= n
    assert (h["low"] >= 0).all()


# --- each aggregation, exact ----------------------------------------------------------

AGGREGATIONS = r"""
const volatile u32 target_pid = 0;
const volatile s32 target_fd = -1;

BPFNB_COUNT(writes, struct bpfnb_comm);
BPFNB_SUM(bytes, u32);
BPFNB_MIN(smallest, bpfnb_nokey);
BPFNB_MAX(largest, bpfnb_nokey);
BPFNB_AVG(mean, bpfnb_nokey);
BPFNB_STATS(sizes, struct bpfnb_comm);
BPFNB_HISTK(coarse, bpfnb_nokey, 0);
BPFNB_HISTK(fine, u32, 2);
BPFNB_LHIST(linear, 0, 1000, 100);
BPFNB_TSERIES(rate, 100000000, 32);
BPFNB_COUNT(by_cpu, u32);
struct tid_key { u32 tid; struct bpfnb_comm comm; };
BPFNB_COUNT(by_tid, struct tid_key);
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, u32);
    __type(value, u64);
} last_size SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_write")
int on_write(struct trace_event_raw_sys_enter *ctx)
{
    s64 n = ctx->args[2];

    if (bpfnb_pid() != target_pid || ctx->args[0] != target_fd)
        return 0;
    bpfnb_count(&writes, bpfnb_comm());
    bpfnb_sum(&bytes, bpfnb_pid(), n);
    bpfnb_min(&smallest, 0, n);
    bpfnb_max(&largest, 0, n);
    bpfnb_avg(&mean, 0, n);
    bpfnb_stats(&sizes, bpfnb_comm(), n);
    bpfnb_histk(&coarse, 0, n);
    bpfnb_histk(&fine, 7, n);
    bpfnb_lhist(&linear, n);
    bpfnb_tseries(&rate, 1);
    bpfnb_count(&by_cpu, bpfnb_cpu());
    bpfnb_count(&by_tid, ((struct tid_key){bpfnb_tid(), bpfnb_comm()}));
    u32 pid = bpfnb_pid();
    u64 last = n;
    bpf_map_update_elem(&last_size, &pid, &last, BPF_ANY);
    return 0;
}
"""

SIZES = [0, 1, 3, 7, 8, 9, 100, 100, 250, 999, 1000, 4096, 5000, 123456]


def bpftrace_bucket(v: int, k: int) -> tuple[float, float]:
    """[low, high) of bpftrace's hist(v, k) bucket for v, by its definition."""
    n = 1 << k
    if v < 0:
        return -np.inf, 0
    if v < 2 * n:
        return v, v + 1
    p = v.bit_length() - 1
    size = 1 << (p - k)
    low = v // size * size
    return low, low + size


@pytest.fixture
def writes(no_leaks):
    """AGGREGATIONS loaded, SIZES written to /dev/null, half on each of two CPUs."""
    fd = os.open("/dev/null", os.O_WRONLY)
    obj = bpfnb.load(AGGREGATIONS, name="aggs",
                     rodata={"target_pid": os.getpid(), "target_fd": fd})
    cpus = sorted(os.sched_getaffinity(0))
    try:
        for i, size in enumerate(SIZES):
            os.sched_setaffinity(0, {cpus[i * len(cpus) // len(SIZES)]})
            os.write(fd, b"x" * size)
            if i == len(SIZES) // 2:
                time.sleep(0.25)  # the time series gets two intervals at least
        os.sched_setaffinity(0, cpus)
        yield obj
    finally:
        os.sched_setaffinity(0, cpus)
        os.close(fd)
        obj.destroy()


def test_cpu_and_struct_keys(writes):
    cpus = sorted(os.sched_getaffinity(0))
    expected = {}
    for i in range(len(SIZES)):  # the CPUs the fixture pinned each write to
        cpu = cpus[i * len(cpus) // len(SIZES)]
        expected[cpu] = expected.get(cpu, 0) + 1
    df = writes.maps.by_cpu.to_df()
    assert dict(zip(df["key"], df["count"])) == expected
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert writes.maps.by_tid.to_df().to_dict("list") == {
        "tid": [threading.get_native_id()], "comm": [comm], "count": [len(SIZES)]}
    with pytest.raises(TypeError, match="no stack in its key"):
        writes.maps.by_tid.flame()


def test_plain_map_as_bpftrace_json(writes):
    assert _json(writes.maps.last_size) == ("map", {str(os.getpid()): SIZES[-1]})


def _json(m):
    doc = json.loads(m.to_bpftrace_json())
    assert set(doc) == {"type", "data"} and list(doc["data"]) == [f"@{m.name}"]
    return doc["type"], doc["data"][f"@{m.name}"]


def test_count_sum_min_max_avg_stats(writes):
    m = writes.maps
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert m.writes.to_df().to_dict("list") == {"comm": [comm], "count": [len(SIZES)]}
    assert m.bytes.to_df().to_dict("list") == {"key": [os.getpid()], "sum": [sum(SIZES)]}
    assert m.smallest.to_df().to_dict("list") == {"min": [0]}
    assert m.largest.to_df().to_dict("list") == {"max": [max(SIZES)]}
    assert m.mean.to_df()["avg"].tolist() == [pytest.approx(sum(SIZES) / len(SIZES))]
    stats = m.sizes.to_df()
    assert list(stats.columns) == ["comm", "count", "sum", "min", "max", "avg"]
    assert stats.iloc[0][["count", "sum", "min", "max"]].tolist() == [
        len(SIZES), sum(SIZES), 0, max(SIZES)]
    assert _json(m.writes) == ("map", {comm: len(SIZES)})
    assert _json(m.bytes) == ("map", {str(os.getpid()): sum(SIZES)})
    assert _json(m.smallest) == ("map", 0)
    assert _json(m.mean) == ("stats", sum(SIZES) // len(SIZES))
    assert _json(m.sizes) == ("stats", {comm: {"count": len(SIZES),
                                               "average": sum(SIZES) // len(SIZES),
                                               "total": sum(SIZES)}})


@pytest.mark.parametrize("name,k", [("coarse", 0), ("fine", 2)])
def test_hist_k_buckets_are_bpftraces(writes, name, k):
    m = writes.maps[name]
    h = m.hist()
    expected = {}
    for v in SIZES:
        b = bpftrace_bucket(v, k)
        expected[b] = expected.get(b, 0) + 1
    got = {(lo, hi): c for lo, hi, c in zip(h["low"], h["high"], h["count"]) if c}
    assert got == expected
    # Buckets are contiguous: each ends where the next begins.
    assert (h["high"].to_numpy()[:-1] == h["low"].to_numpy()[1:]).all()
    kind, data = _json(m)
    assert kind == "hist"
    buckets = data if k == 0 else data["7"]
    assert [b["count"] for b in buckets] == h["count"].tolist()
    assert all(b["max"] == b["min"] + (hi - lo) - 1
               for b, lo, hi in zip(buckets, h["low"], h["high"]))
    if k == 2:
        assert list(h.key_columns) == ["key"] and set(h["key"]) == {7}
        assert "[96, 112)" in repr(h) and "[8, 10)" in repr(h)


def test_lhist_and_tseries(writes):
    h = writes.maps.linear.hist()
    got = {(lo, hi): c for lo, hi, c in zip(h["low"], h["high"], h["count"]) if c}
    assert got == {(0, 100): 6, (100, 200): 2, (200, 300): 1, (900, 1000): 1,
                   (1000, np.inf): 4}
    kind, data = _json(writes.maps.linear)
    assert kind == "hist" and data[-1] == {"min": 1000, "count": 4}
    ts = writes.maps.rate.to_df()
    assert list(ts.columns) == ["time", "value"]
    assert ts["value"].sum() == len(SIZES)
    assert (ts["value"] > 0).sum() >= 2
    steps = np.diff(ts["time"].to_numpy()).astype("timedelta64[ms]").astype(int)
    assert set(steps) == {100}
    with pytest.raises(TypeError, match="time series"):
        writes.maps.rate.to_bpftrace_json()
