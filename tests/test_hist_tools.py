"""Histograms of programs written like libbpf-tools (tests/progs/): runqlat, cpudist,
hardirqs' name-keyed info, biolatency, a per-CPU array; child processes the test
spawns make the events, so each count is known or bounded below."""

import mmap
import os
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest

import bpfnb
from bpfnb.libbpf import _lib

PROGS = Path(__file__).parent / "progs"
SIZES = {"start": 1024, "hists": 256, "infos": 64, "calls": 64, "by_who": 64}

# A child that names itself, says it is ready, waits for a line, then does its work.
CHILD = """
import os, sys, time
with open("/proc/self/comm", "w") as f:
    f.write(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()
"""
SLEEPS = CHILD + "for _ in range(int(sys.argv[2])):\n    time.sleep(0.002)\n"
SEEKS = CHILD + """
fd = os.open("/dev/null", os.O_RDONLY)
for off in map(int, sys.argv[2:]):
    try:
        os.lseek(fd, off, 77)   # syslat's marker whence: fails, after the tracepoint
    except OSError:
        pass
"""


@contextmanager
def child(script, comm, *args):
    """A started child, ready and waiting; ``go(proc)`` lets it run to its end."""
    proc = subprocess.Popen([sys.executable, "-c", script, comm, *map(str, args)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdin.close()
        proc.stdout.close()


def go(proc):
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.wait(30) == 0


def log2l(v: int) -> int:
    """libbpf-tools' slot of v: floor(log2(v)), 0 for 0 and 1."""
    return max(v, 1).bit_length() - 1


def tools_bounds(slot: int, nslots: int) -> tuple[float, float]:
    low = 0 if slot == 0 else 2 ** slot
    return low, float("inf") if slot == nslots - 1 else 2 ** (slot + 1)


def as_dict(h):
    return {(lo, hi): c for lo, hi, c in zip(h["low"], h["high"], h["count"])}


def check_tools_buckets(h, nslots):
    """Every bucket is one of libbpf-tools' log2l slots, in order, none skipped."""
    for (lo, hi) in as_dict(h):
        slot = 0 if lo == 0 else int(lo).bit_length() - 1
        assert (lo, hi) == tools_bounds(slot, nslots)


def test_runqlat_one_histogram_per_process_labelled_by_comm(no_leaks):
    n = 30
    with child(SLEEPS, "rq-sleeper", n) as proc:
        with bpfnb.load(PROGS / "runqlat.bpf.c", maps=SIZES,
                        rodata={"targ_tgid": proc.pid, "targ_per_process": True}) as obj:
            go(proc)
            h = obj.maps.hists.hist()
            assert list(h.columns) == ["key", "comm", "low", "high", "count"]
            assert h.groups()[["key", "comm"]].values.tolist() == [[proc.pid, "rq-sleeper"]]
            mine = h.group(proc.pid)
            assert mine["count"].sum() >= n  # a wakeup after each sleep, maybe preemptions
            check_tools_buckets(mine, 26)
            assert mine.to_text().startswith(f"@hists[{proc.pid}, comm rq-sleeper]:\n")
            with pytest.raises(KeyError, match="no histogram with key=1"):
                h.group(1)


def test_cpudist_per_process_and_per_cpu_agree(no_leaks):
    n = 30
    ncpu = _lib.possible_cpus()
    with child(SLEEPS, "cpu-sleeper", n) as proc:
        with bpfnb.load(PROGS / "cpudist.bpf.c", maps=dict(SIZES, cpu_hists=ncpu),
                        rodata={"targ_tgid": proc.pid}) as obj:
            go(proc)
            per_pid = obj.maps.hists.hist()
            per_cpu = obj.maps.cpu_hists.hist()  # an array indexed by CPU
    total = per_pid.group(proc.pid)["count"].sum()
    assert total >= n  # switched out at each sleep
    assert set(per_cpu["key"]) <= set(range(ncpu))
    assert per_cpu["count"].sum() == total  # the same switches, counted by CPU
    assert set(per_cpu["comm"]) == {"cpu-sleeper"}
    check_tools_buckets(per_pid, 36)


def test_name_keyed_info_with_counts_beside_the_slots(no_leaks, tmp_path):
    opens = {"alpha": 7, "beta": 3}
    for name in opens:
        (tmp_path / name).touch()
    dirfd = os.open(tmp_path, os.O_RDONLY)
    try:
        with bpfnb.load(PROGS / "openlat.bpf.c", maps=SIZES,
                        rodata={"targ_tgid": os.getpid()}) as obj:
            for name, n in opens.items():
                for _ in range(n):
                    os.close(os.open(name, os.O_RDONLY, dir_fd=dirfd))
            h = obj.maps.infos.hist()
    finally:
        os.close(dirfd)
    # the value's count field is not the frame's count column
    assert list(h.columns) == ["name", "value.count", "total_time", "max_time",
                               "low", "high", "count"]
    for name, n in opens.items():
        mine = h.group(name=name)
        assert mine["count"].sum() == n and set(mine["value.count"]) == {n}
        assert mine["total_time"].iloc[0] >= mine["max_time"].iloc[0]
        assert mine.to_text().startswith(f"@infos[name {name}, value.count {n}, ")
    assert h.groups()["name"].tolist() == ["alpha", "beta"]


def test_biolatency_per_disk_and_flags(no_leaks, tmp_path):
    path = tmp_path / "blocks"
    n = 16
    with open(path, "wb") as f:
        f.write(os.urandom(n * 4096))
        os.fsync(f.fileno())
    st = os.stat(path)
    if not os.path.exists(f"/sys/dev/block/{os.major(st.st_dev)}:{os.minor(st.st_dev)}"):
        pytest.skip(f"{tmp_path} is not on a block device")
    dev = os.major(st.st_dev) << 20 | os.minor(st.st_dev)  # the kernel's MKDEV
    with bpfnb.load(PROGS / "biolatency.bpf.c", maps=SIZES,
                    rodata={"targ_per_disk": True, "targ_per_flag": True}) as obj:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
        buf = mmap.mmap(-1, 4096)  # page-aligned, as O_DIRECT wants
        try:
            for i in range(n):
                assert os.preadv(fd, [buf], i * 4096) == 4096
        finally:
            os.close(fd)
            buf.close()
        h = obj.maps.hists.hist()
    assert list(h.columns) == ["cmd_flags", "dev", "low", "high", "count"]
    groups = h.groups()
    reads = groups[(groups["dev"] == dev) & (groups["cmd_flags"] & 0xff == 0)]
    assert reads["total"].sum() >= n, groups  # other processes may read this disk too
    check_tools_buckets(h, 27)


OFFSETS = [0, 1, 2, 3, 3, 100, 4096, 5000, 1 << 31]


def test_syscall_latency_and_percpu_offsets_exact(no_leaks):
    with bpfnb.load(PROGS / "syslat.bpf.c", maps=SIZES) as obj:
        assert repr(obj.maps.hists.hist()) == "@hists: no counts yet (every slot is 0)"
        assert repr(obj.maps.offsets.hist()) == "@offsets: no counts yet (every slot is 0)"
        with child(SEEKS, "seeker", *OFFSETS) as proc:
            go(proc)
        lat = obj.maps.hists.hist()
        offsets = obj.maps.offsets.hist()  # per-CPU array of one u64-slot hist: summed
        calls = obj.maps.calls[proc.pid]
        who = obj.maps.by_who.to_df()
    assert lat.group(proc.pid)["count"].sum() == len(OFFSETS)
    assert set(lat.group(proc.pid)["comm"]) == {"seeker"}
    expected = {}
    for off in OFFSETS:
        slot = log2l(off)
        expected[slot] = expected.get(slot, 0) + 1
    want = {tools_bounds(s, 32): expected.get(s, 0)
            for s in range(min(expected), max(expected) + 1)}
    assert list(offsets.columns) == ["low", "high", "count"]
    assert as_dict(offsets) == want
    assert calls == len(OFFSETS)
    linear = dict(zip(offsets["low"], offsets["count"]))  # the same slots, read as asked
    with bpfnb.load(PROGS / "syslat.bpf.c", maps=SIZES) as obj:
        with child(SEEKS, "seeker", *OFFSETS) as again:
            go(again)
        lin = obj.maps.offsets.hist(kind="linear", min=100, step=10)
    assert lin["low"].tolist() == [100 + 10 * s for s in range(max(expected) + 1)]
    assert lin["high"].iloc[-1] == float("inf")  # slot 31 holds everything above
    assert lin["count"].tolist() == [linear.get(lo, 0) for lo in
                                     [0] + [2 ** s for s in range(1, max(expected) + 1)]]
    assert who.values.tolist() == [[proc.pid, "seeker", len(OFFSETS)]]


def test_not_a_histogram_says_why_in_one_line(no_leaks):
    with bpfnb.load(PROGS / "syslat.bpf.c", maps=SIZES) as obj:
        with child(SEEKS, "seeker", 1, 2) as proc:
            go(proc)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no numpy overflow warning on the way
            with pytest.raises(TypeError) as e:
                obj.maps.calls.hist()
            assert str(e.value) == (
                "map 'calls' holds u64 values keyed by u32: not a histogram (a "
                "histogram's value is a slot array, e.g. `u32 slots[26]`); if its keys "
                "are slot numbers, say so: .hist(kind='log2')")
            with pytest.raises(TypeError) as e:
                obj.maps.by_who.hist()
            assert str(e.value) == (
                "map 'by_who' holds u64 values keyed by struct who: not a histogram (a "
                "histogram's value is a slot array, e.g. `u32 slots[26]`)")
            with pytest.raises(TypeError) as e:  # pids are no log2 slots
                obj.maps.calls.hist(kind="log2")
            assert str(e.value) == (
                f"map 'calls': slot numbers up to {proc.pid} hold counts, beyond log2 "
                f"slots (0..64); for linear buckets, .hist(kind='linear', min=..., "
                f"step=...)")
        lin = obj.maps.calls.hist(kind="linear", min=0, step=1 << 22)  # what was asked
        assert lin["count"].sum() == 2
        obj.maps.calls[proc.pid + 2_000_000] = 1
        with pytest.raises(ValueError, match="buckets from the lowest slot"):
            obj.maps.calls.hist(kind="linear", min=0, step=1)


def test_a_one_entry_timestamp_array_is_no_histogram(no_leaks):
    # hardirqs and softirqs keep the entry time in a one-entry per-CPU array: drawing
    # it would be one bar of a nanosecond clock. The slot-indexed array beside it is.
    with bpfnb.load(PROGS / "stamps.bpf.c", rodata={"targ_tgid": os.getpid()}) as obj:
        for _ in range(25):
            os.getppid()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(TypeError) as e:
                obj.maps.start.hist()
        assert str(e.value) == (
            "map 'start' holds u64 values keyed by u32, one entry: not a histogram (a "
            "histogram's value is a slot array, e.g. `u32 slots[26]`)")
        h = obj.maps.slots.hist()
    assert h["count"].sum() == 25
    assert (h["low"] >= 0).all() and len(h) <= 64
