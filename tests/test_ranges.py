"""Integers crossing into C are range-checked: errors name the thing and its range.

Each case of issue 13 (``maps={"m": 2**32+1}`` gave 1 entry, flags 2**70 became
BPF_ANY, ``--set small=300`` named nothing, attach_socket leaked an fd per failed call)
against the real kernel; the edge values themselves make a round trip through it.
"""

import ctypes
import os
import resource
import socket
from pathlib import Path

import numpy as np
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import bpfnb
from bpfnb.libbpf import AttachError, BPFError, RangeError
from bpfnb.libbpf._lib import lib
from bpfnb.registry import registry

PROG = Path(__file__).parent / "progs" / "ranges.bpf.c"
SIZES = {"seen": 4}
U32_MAX, S32_MIN, S32_MAX = 2**32 - 1, -2**31, 2**31 - 1


def open_n(n):
    for _ in range(n):
        os.close(os.open("/etc/hostname", os.O_RDONLY))


def fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture
def obj(no_leaks):
    with bpfnb.load(PROG, maps=SIZES, attach=False) as o:
        yield o


# --- map sizes ------------------------------------------------------------------

@pytest.mark.parametrize("size", [2**32 + 1, -1, 2**64])
def test_map_size_out_of_range_names_the_map(no_leaks, size):
    with pytest.raises(RangeError, match=rf"map 'seen' max_entries: {size} out of range "
                                         rf"for u32 \(0\.\.4294967295\)"):
        bpfnb.load(PROG, maps={"seen": size})


def test_map_size_edges_are_kept(no_leaks):
    with bpfnb.open(PROG, maps={"seen": U32_MAX}) as o:
        assert o.maps.seen.max_entries == U32_MAX
        with pytest.raises(TypeError, match="map 'seen' max_entries: expected an integer"):
            o.maps.seen.max_entries = 4.0
        o.maps.seen.max_entries = np.uint16(7)  # numpy integers are integers
        assert o.maps.seen.max_entries == 7
        with pytest.raises(RangeError, match="map 'seen' value_size"):
            o.maps.seen.set_value_size(2**32)


# --- flags, keys and values -------------------------------------------------------

@pytest.mark.parametrize("flags", [2**70, 2**64, -1])
def test_update_flags_out_of_range(obj, flags):
    counts = obj.maps.counts
    with pytest.raises(RangeError, match=rf"map 'counts' update flags: {flags} out of "
                                         rf"range for u64 \(0\.\.18446744073709551615\)"):
        counts.update(1, 1, flags=flags)
    assert len(counts) == 0  # nothing written under another flag
    counts.update(1, 1, flags=1)  # BPF_NOEXIST
    with pytest.raises(BPFError, match="EEXIST"):
        counts.update(1, 2, flags=1)
    assert counts[1] == 1


def test_keys_and_values_checked_and_edges_round_trip(obj):
    counts = obj.maps.counts
    with pytest.raises(RangeError, match=r"map 'counts' key: -1 out of range for u32 "
                                         r"\(0\.\.4294967295\)"):
        counts[-1] = 1
    with pytest.raises(RangeError, match=r"map 'counts' key: 4294967296 out of range"):
        counts.lookup(2**32)
    with pytest.raises(RangeError, match=r"map 'counts' value: 9223372036854775808 out of "
                                         r"range for s64 \(-9223372036854775808\.\."):
        counts[1] = 2**63
    with pytest.raises(TypeError, match="map 'counts' value: expected int"):
        counts[1] = 1.5
    edges = {0: -2**63, U32_MAX: 2**63 - 1, 7: True}
    for k, v in edges.items():
        counts[k] = v
    assert dict(counts.items()) == {0: -2**63, U32_MAX: 2**63 - 1, 7: 1}
    del counts[U32_MAX]
    assert U32_MAX not in counts and len(counts) == 2


def test_batch_out_of_range_element_is_named_and_nothing_written(obj):
    counts = obj.maps.counts
    keys = np.arange(1000, dtype=np.int64)
    keys[637] = 2**32
    with pytest.raises(RangeError, match=r"map 'counts' update_batch keys\[637\]: "
                                         r"4294967296 out of range for u32"):
        counts.update_batch(keys, np.zeros(1000, np.int64))
    with pytest.raises(RangeError, match=r"update_batch keys\[1\]: -1 out of range"):
        counts.update_batch([5, -1], [1, 2])
    with pytest.raises(RangeError, match=r"update_batch values\[0\]: 9223372036854775808 "
                                         r"out of range for s64"):
        counts.update_batch(np.array([1], np.uint32), np.array([2**63], np.uint64))
    with pytest.raises(TypeError, match="update_batch values: expected integers for s64, "
                                        "got an array of float64"):
        counts.update_batch([1], np.array([1.5]))
    assert len(counts) == 0
    # Edges and types that widen safely pass; the kernel gives the same numbers back.
    keys = np.array([0, U32_MAX, 12], np.int64)
    values = np.array([-2**63, 2**63 - 1, -1], np.int64)
    counts.update_batch(keys, values)
    got_k, got_v = counts.lookup_batch()
    assert dict(zip(got_k.tolist(), got_v.tolist())) == dict(zip(keys.tolist(),
                                                                 values.tolist()))
    with pytest.raises(RangeError, match="lookup_batch chunk: 0 out of range"):
        counts.lookup_batch(chunk=0)


def test_per_cpu_values_are_checked_per_cpu(obj):
    per_cpu, ncpu = obj.maps.per_cpu, len(obj.maps.per_cpu[0])
    with pytest.raises(RangeError, match=r"map 'per_cpu' value: 4294967296 out of range"):
        per_cpu[1] = [0] * (ncpu - 1) + [2**32]
    values = np.zeros((2, ncpu), np.int64)
    values[1, ncpu - 1] = -1
    with pytest.raises(RangeError, match=rf"update_batch values\[1, {ncpu - 1}\]: -1 out"):
        per_cpu.update_batch([0, 1], values)
    assert per_cpu[1] == [0] * ncpu
    values[1, ncpu - 1] = U32_MAX
    per_cpu.update_batch([0, 1], values)
    assert per_cpu[1] == [0] * (ncpu - 1) + [U32_MAX]


def test_the_binding_itself_never_wraps(obj):
    """Under the named checks, every prototype's integer arguments are checked too."""
    counts = obj.maps.counts
    key, value = ctypes.c_uint32(3), ctypes.c_int64(9)
    with pytest.raises(ctypes.ArgumentError, match=r"bpf_map_update_elem\(\): "
                                                   r"18446744073709551616 out of range"):
        lib.bpf_map_update_elem(counts.fd, ctypes.byref(key), ctypes.byref(value), 2**64)
    with pytest.raises(ctypes.ArgumentError, match=r"bpf_map__set_max_entries\(\)"):
        lib.bpf_map__set_max_entries(counts._ptr, 2**32 + 1)
    assert len(counts) == 0 and counts.max_entries == 1024


# --- globals --------------------------------------------------------------------------

@pytest.mark.parametrize("name, value, message", [
    ("small", 300, r"small: 300 out of range for u8 \(0\.\.255\)"),
    ("small", -1, r"small: -1 out of range for u8 \(0\.\.255\)"),
    ("ubig", 2**32, r"ubig: 4294967296 out of range for u32 \(0\.\.4294967295\)"),
    ("smin", -2**31 - 1, r"smin: -2147483649 out of range for s32 "
                         r"\(-2147483648\.\.2147483647\)"),
    ("big", 2**64, r"big: 18446744073709551616 out of range for u64"),
    ("enabled", 2, r"enabled: 2 out of range for bool \(0\.\.1\)"),
    ("small", "7", r"small: expected int for u8, got str '7'"),
    ("small", 7.0, r"small: expected int for u8, got float 7\.0"),
    ("comm", "x" * 16, r"comm: expected str of at most 15 chars \(UTF-8 bytes\) for "
                       r"const volatile char\[16\], got 16"),
])
def test_rodata_out_of_range_names_the_variable(no_leaks, name, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        bpfnb.load(PROG, maps=SIZES, rodata={name: value})


@pytest.mark.parametrize("value, error, message", [
    ({"mode": 8}, RangeError, r"opts\.mode: 8 out of range for bitfield u32:3 \(0\.\.7\)"),
    ({"delta": 8}, RangeError, r"opts\.delta: 8 out of range for bitfield s32:4 "
                               r"\(-8\.\.7\)"),
    ({"verbose": 2}, RangeError, r"opts\.verbose: 2 out of range for bitfield u32:1"),
    ({"level": "LEVEL_MID"}, ValueError, r"opts\.level: 'LEVEL_MID' is not an enumerator"),
    ({"level": 2**32}, RangeError, r"opts\.level: 4294967296 out of range for enum level"),
    ({"mode": 3.0}, TypeError, r"opts\.mode: expected int for bitfield"),
])
def test_bitfields_and_enums_are_checked(obj, value, error, message):
    before = obj.bss.opts
    with pytest.raises(error, match=message):
        obj.bss.opts = value  # after load: a write through the mmap
    assert obj.bss.opts == before


def seen_after_opens(**rodata):
    rodata = {"targ_pid": os.getpid(), "enabled": True, **rodata}
    with bpfnb.load(PROG, maps=SIZES, rodata=rodata) as o:
        opts = {"mode": 7, "verbose": 1, "delta": -8, "level": "LEVEL_HIGH"}
        o.bss.opts = opts
        open_n(3)
        assert o.bss.hits == 3
        return o.maps.seen[0]


LOW = dict(small=0, ubig=0, smin=S32_MIN, big=0, comm="")
HIGH = dict(small=255, ubig=U32_MAX, smin=S32_MAX, big=2**64 - 1, comm="x" * 15)


@pytest.mark.parametrize("edges", [LOW, HIGH], ids=["low", "high"])
def test_edge_values_round_trip_through_the_kernel(no_leaks, edges):
    seen = seen_after_opens(**edges)
    assert {k: getattr(seen, k) for k in edges} == edges
    assert (seen.opts.mode, seen.opts.verbose, seen.opts.delta) == (7, 1, -8)
    assert seen.opts.level == "LEVEL_HIGH"


# --- %%bpf --set ----------------------------------------------------------------------

SET_CELL = """%%bpf tiny --set small=VALUE
const volatile u8 small = 0;
SEC("raw_tp/sys_enter")
int h(void *ctx) { return small; }
"""


def test_set_names_the_variable_its_type_and_range(no_leaks):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "bpfnb")
    try:
        with capture_output() as cap:
            assert ip.run_cell(SET_CELL.replace("VALUE", "255")).success
        assert ip.user_ns["tiny"].rodata.small == 255
        with capture_output() as cap:
            result = ip.run_cell(SET_CELL.replace("VALUE", "300"))
        assert not result.success
        assert ("%%bpf tiny: --set small=300: `small` is a u8 (0..255); the previous tiny "
                "keeps running.") in cap.stdout + cap.stderr
        assert ip.user_ns["tiny"].rodata.small == 255
    finally:
        registry.stop_all()
        ip.run_line_magic("unload_ext", "bpfnb")


# --- attach arguments and fds ---------------------------------------------------------

def test_attach_socket_with_a_non_socket_fd_leaks_nothing(obj):
    prog = obj.progs.keep_all
    with open("/etc/hostname") as f:
        # an fd number no thread gets (a closed dup's number is soon reused elsewhere)
        closed = resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 1
        assert not os.path.exists(f"/proc/self/fd/{closed}")
        before = fds()
        for _ in range(100):
            with pytest.raises(AttachError, match=rf"fd {f.fileno()} is not a socket"):
                prog.attach_socket(f.fileno())
            with pytest.raises(AttachError, match=rf"fd {closed} is not open"):
                prog.attach_socket(closed)
            with pytest.raises(RangeError, match=r"attach_socket of 'keep_all': fd: -1 "
                                                 r"out of range"):
                prog.attach_socket(-1)
        assert fds() == before
    assert prog.links == []


def test_attach_socket_by_fd_filters_and_detaches_cleanly(obj):
    prog = obj.progs.keep_all
    recv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        recv.bind(("127.0.0.1", 0))
        recv.settimeout(5)
        before = fds()
        for _ in range(20):  # the link's duplicate fd goes with each detach
            prog.attach_socket(recv.fileno())
            send.sendto(b"ping", recv.getsockname())
            assert recv.recv(16) == b"ping"  # the filter keeps the whole packet
            prog.detach()
        assert fds() == before
    finally:
        recv.close()
        send.close()


@pytest.mark.parametrize("call, message", [
    (lambda p: p.attach_perf_event(freq=2**64), r"freq: 18446744073709551616 out of range"),
    (lambda p: p.attach_perf_event(freq=0), r"freq: 0 out of range for u64 \(1\.\."),
    (lambda p: p.attach_perf_event(period=-5), r"period: -5 out of range"),
    (lambda p: p.attach_perf_event(cpus=[0, 2**40]), r"cpu: 1099511627776 out of range"),
    (lambda p: p.attach_perf_event(pid=2**31), r"pid: 2147483648 out of range for s32 "
                                               r"\(-1\.\.2147483647\)"),
    (lambda p: p.attach_uprobe("/bin/true", "main", pid=-2), r"pid: -2 out of range"),
    (lambda p: p.attach_uprobe("/bin/true", offset=2**64), r"offset: 18446744073709551616"),
    (lambda p: p.attach_usdt("/bin/true", "p", "n", pid=2**32), r"pid: 4294967296"),
    (lambda p: p.attach_xdp(2**32 + 1), r"interface index: 4294967297 out of range"),
    (lambda p: p.attach_xdp(0), r"interface index: 0 out of range for s32 \(1\.\."),
    (lambda p: p.attach_tc("lo", priority=70000), r"priority: 70000 out of range for u16 "
                                                  r"\(0\.\.65535\)"),
    (lambda p: p.attach_perf_event_fd(2**32), r"pfd: 4294967296 out of range"),
])
def test_attach_arguments_are_checked_before_any_syscall(obj, call, message):
    prog = obj.progs.keep_all
    before = fds()
    with pytest.raises(RangeError, match=message):
        call(prog)
    assert fds() == before and prog.links == []


def test_attach_cgroup_with_a_bad_path_is_an_attach_error(obj):
    with pytest.raises(AttachError, match=r"cannot open cgroup /nonexistent/cg"):
        obj.progs.keep_all.attach_cgroup("/nonexistent/cg")


def test_failed_attaches_leave_no_fd(obj):
    """Each failure path closes what it opened: the perf event fds opened per CPU, the
    cgroup directory, the uprobe's binary. (A socket filter attaches to none of these.)"""
    prog = obj.progs.keep_all
    before = fds()
    for _ in range(20):
        with pytest.raises(AttachError):
            prog.attach_perf_event(freq=1)  # perf fds open, then the attach is refused
        with pytest.raises(AttachError):
            prog.attach_cgroup("/etc")  # a directory, not a cgroup
        with pytest.raises(AttachError):
            prog.attach_uprobe("/nonexistent/binary", "main")
        with pytest.raises(AttachError):
            prog.attach_xdp(2**31 - 1)  # no such interface
    assert fds() == before and prog.links == []


def test_kernel_prog_info_checks_the_id(obj):
    assert bpfnb.libbpf.kernel_prog_info(obj.progs.keep_all.id)["name"] == "keep_all"
    with pytest.raises(RangeError, match=r"kernel_prog_info: prog_id: -1 out of range"):
        bpfnb.libbpf.kernel_prog_info(-1)
