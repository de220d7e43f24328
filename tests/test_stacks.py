"""Stacks and symbols against the real kernel: sample a child we start, name its frames."""

import ctypes
import errno
import gc
import json
import os
import re
import shutil
import subprocess
import textwrap

import pandas as pd
import pytest

import bpfnb
from bpfnb.libbpf import kernel_ids
from bpfnb.symbols import (Symbolizer, folded, read_stacks, resolve_stacks,
                           stack_map_to_df)

CHILD = r"""
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

__attribute__((noinline)) void bpfnb_busy_spin_target(double seconds)
{
    volatile unsigned long x = 0;
    double end = now() + seconds;
    while (now() < end)
        for (int i = 0; i < 200000; i++)
            x += i;
}

__attribute__((noinline)) void bpfnb_read_zero(double seconds)
{
    static char buf[1 << 16];
    int fd = open("/dev/zero", O_RDONLY);
    double end = now() + seconds;
    while (fd >= 0 && now() < end)
        if (read(fd, buf, sizeof(buf)) < 0)
            break;
    close(fd);
}

int main(void)
{
    char go = 'r';
    /* Ready: libc is mapped, so the test's snapshot sees it. The test attaches, then
     * says go. */
    if (write(1, &go, 1) != 1 || read(0, &go, 1) != 1)
        return 1;
    bpfnb_busy_spin_target(1.5);
    bpfnb_read_zero(0.5);
    return 0;
}
"""

PROFILE = r"""
struct key_t {
    u32 pid;
    s32 kstack_id;
    s32 ustack_id;
    char comm[16];
};

struct {
    __uint(type, BPF_MAP_TYPE_STACK_TRACE);
    __uint(max_entries, 1024);
    __uint(key_size, sizeof(u32));
    __uint(value_size, 127 * sizeof(u64));
} stacks SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, struct key_t);
    __type(value, u64);
} counts SEC(".maps");

const volatile u32 target_tgid = 0;

SEC("perf_event")
int do_sample(struct bpf_perf_event_data *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)(id >> 32) != target_tgid)
        return 0;
    struct key_t key = {};
    key.pid = id >> 32;
    key.kstack_id = bpf_get_stackid(ctx, &stacks, 0);
    key.ustack_id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
    bpf_get_current_comm(&key.comm, sizeof(key.comm));
    u64 one = 1, *n = bpf_map_lookup_elem(&counts, &key);
    if (!n && bpf_map_update_elem(&counts, &key, &one, BPF_NOEXIST) == 0)
        return 0;
    if (!n)  /* another CPU created it first */
        n = bpf_map_lookup_elem(&counts, &key);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}
"""

SPIN = "bpfnb_busy_spin_target"
SYSCALL_FRAME = re.compile(r"sys_|entry_SYSCALL|do_syscall")


def _cc(tmp, name, source, *flags):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the target program")
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / name
    subprocess.run([cc, "-O0", "-g", "-fno-omit-frame-pointer", *flags, "-o", str(out),
                    str(src)], check=True, capture_output=True, timeout=60)
    return out


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    """Sample the child at 999 Hz while it spins 1.5 s, then reads /dev/zero 0.5 s."""
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root (or CAP_BPF + CAP_PERFMON)")
    exe = _cc(tmp_path_factory.mktemp("stacks"), "bpfnb_stacks", CHILD)
    child = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.read(1) == b"r"
        sym = Symbolizer().snapshot(child.pid)
        obj = bpfnb.load(PROFILE, rodata={"target_tgid": child.pid}, attach=False)
        try:
            obj.progs.do_sample.attach_perf_event(freq=999)
            prog_id = obj.progs.do_sample.id
            child.stdin.write(b"g")
            child.stdin.close()
            assert child.wait(timeout=20) == 0
            # The child has exited: only the snapshot can name its user frames now.
            counts = pd.DataFrame([{**k._asdict(), "count": v}
                                   for k, v in obj.maps.counts.items()])
            data = {
                "pid": child.pid, "sym": sym, "counts": counts,
                "resolved": resolve_stacks(counts, obj.maps.stacks, symbolizer=sym),
                "stacks": stack_map_to_df(obj.maps.stacks, pid=child.pid, symbolizer=sym),
                "raw": read_stacks(obj.maps.stacks),
                "folded": folded(counts, obj.maps.stacks, symbolizer=sym),
                # the counts map itself, through Map.to_df()
                "folded_map": folded(obj.maps.counts, obj.maps.stacks, symbolizer=sym),
            }
        finally:
            obj.destroy()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
    gc.collect()
    # Other tests may load programs meanwhile: check ours only. A link holds its
    # program, so the program's going means its links went too.
    assert prog_id not in kernel_ids("prog")
    return data


def _samples(df, mask):
    return int(df.loc[mask, "count"].sum())


def test_user_stacks_name_the_busy_function(profile):
    df = profile["resolved"]
    total = int(df["count"].sum())
    assert total >= 100, f"only {total} samples of a ~2 s CPU-bound child at 999 Hz"
    spinning = df["ustack"].map(lambda frames: SPIN in frames)
    assert _samples(df, spinning) > total / 2
    # innermost first: the spinning function comes before its caller, main
    frames = df.loc[spinning, "ustack"].iloc[0]
    assert "main" in frames and frames.index(SPIN) < frames.index("main")


def test_kernel_stacks_of_syscalls(profile):
    df = profile["resolved"]
    in_kernel = df["kstack"].map(bool)
    syscall = df["kstack"].map(lambda fs: any(SYSCALL_FRAME.search(f) for f in fs))
    assert _samples(df, syscall) >= 25
    assert _samples(df, syscall) > _samples(df, in_kernel) / 2
    reading = df["kstack"].map(lambda fs: any("read" in f for f in fs))  # vfs_read & co
    assert _samples(df, reading) >= 10


def test_user_mode_samples_have_no_kernel_stack(profile):
    df = profile["resolved"]
    user_only = df["kstack_id"] == -errno.EFAULT
    assert _samples(df, user_only) > 0
    assert df.loc[user_only, "kstack"].map(len).eq(0).all()


def test_stack_map_to_df_matches_the_map(profile):
    stacks, raw = profile["stacks"], profile["raw"]
    assert list(stacks.columns) == ["stack_id", "frames", "depth"]
    assert set(stacks["stack_id"]) == set(raw)
    assert (stacks["depth"] == stacks["frames"].map(len)).all()
    assert stacks["depth"].gt(0).all()
    used = set(profile["counts"]["ustack_id"]) | set(profile["counts"]["kstack_id"])
    assert {i for i in used if i >= 0} <= set(raw)
    assert stacks["frames"].map(lambda fs: SPIN in fs).any()


def test_exited_process_needs_a_snapshot(profile):
    ustacks = [raw for i, raw in profile["raw"].items()
               if i in set(profile["counts"]["ustack_id"])]
    named = [profile["sym"].frames(ips, profile["pid"]) for ips in ustacks]
    assert any(SPIN in fs for fs in named)
    unsnapshotted = Symbolizer()  # no snapshot and the process is gone: hex only
    for ips in ustacks:
        assert all(f.startswith("0x") for f in unsnapshotted.frames(ips, profile["pid"]))


def test_folded_output_is_flamegraph_input(profile):
    assert profile["folded_map"] == profile["folded"]
    lines = profile["folded"].splitlines()
    total = int(profile["counts"]["count"].sum())
    parsed = [line.rsplit(" ", 1) for line in lines]
    assert sum(int(n) for _, n in parsed) == total
    assert len({stack for stack, _ in parsed}) == len(parsed)  # aggregated
    spin = [stack.split(";") for stack, _ in parsed if SPIN in stack.split(";")]
    assert spin
    for frames in spin:
        assert frames[0] == "bpfnb_stacks"  # comm, the root
        if "main" in frames:  # root first: the caller precedes the callee
            assert frames.index("main") < frames.index(SPIN)
    kernel = [stack.split(";") for stack, _ in parsed if SYSCALL_FRAME.search(stack)]
    assert kernel
    for frames in kernel:  # user frames, then the kernel's, outermost first
        entry = min(i for i, f in enumerate(frames) if SYSCALL_FRAME.search(f))
        assert frames[0] == "bpfnb_stacks" and entry > 0
        if "main" in frames:
            assert frames.index("main") < entry


def test_folded_from_frame_lists():
    df = pd.DataFrame({"comm": ["app", "app", "app", "kworker"],
                       "ustack": [["inner", "outer", "main"], ["inner", "outer", "main"],
                                  ["main"], []],
                       "kstack": [[], [], ["vfs_read", "ksys_read"], ["worker_thread"]],
                       "count": [2, 3, 1, 4]})
    assert folded(df) == ("app;main;ksys_read;vfs_read 1\n"  # sorted, summed, root first
                          "app;main;outer;inner 5\n"
                          "kworker;worker_thread 4\n")
    assert "ksys_read_[k];vfs_read_[k] 1" in folded(df, kernel_suffix="_[k]")
    renamed = df.rename(columns={"comm": "key.comm", "count": "value"})
    assert folded(renamed) == folded(df)  # struct-key columns and a value column
    events = df.drop(columns="count")  # one row per event
    assert "app;main;outer;inner 2\n" in folded(events)
    with pytest.raises(KeyError, match="stack map"):
        folded(df.drop(columns=["ustack", "kstack"]))


@pytest.fixture(scope="module")
def shared_lib(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("symlib")
    path = _cc(tmp, "libbpfnb_sym.so", textwrap.dedent("""
        int bpfnb_sym_first(int x) { return x + 1; }
        int bpfnb_sym_second(int x) { return x * 2; }
    """), "-shared", "-fPIC")
    return path, ctypes.CDLL(str(path))


def test_user_symbols_of_a_shared_library(shared_lib):
    path, lib = shared_lib
    sym, pid = Symbolizer(), os.getpid()
    for name in ("bpfnb_sym_first", "bpfnb_sym_second"):
        addr = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        assert sym.user(pid, addr) == f"{name} ({path.name})"
        assert sym.user(pid, addr + 3) == f"{name}+0x3 ({path.name})"
        assert sym.user(pid, addr + 3, offset=False, module=False) == name
    libc = ctypes.CDLL("libc.so.6")
    addr = ctypes.cast(libc.getpid, ctypes.c_void_p).value
    assert sym.user(pid, addr, module=False) == "getpid"
    assert sym.user(pid, 0x10) == "0x10"  # no mapping there


def test_kernel_symbols():
    if os.geteuid() != 0:
        pytest.skip("kernel addresses in /proc/kallsyms are hidden from non-root users")
    with open("/proc/kallsyms") as f:
        entry = next(line.split() for line in f
                     if line.split()[2:3] == ["do_syscall_64"])
    addr = int(entry[0], 16)
    sym = Symbolizer()
    assert sym.kernel(addr) == "do_syscall_64"
    assert sym.kernel(addr + 0x10) == "do_syscall_64+0x10"
    assert sym.kernel(0x1234) == "0x1234"  # a user-space address is not the kernel's
    assert sym.frames([addr + 1, 0, addr]) == ["do_syscall_64"]  # zero ends the stack


def test_snapshot_of_a_missing_process():
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessLookupError, match="while it runs"):
        Symbolizer().snapshot(child.pid)


def test_not_a_stack_map(no_leaks):
    src = """
    struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 4);
             __type(key, u32); __type(value, u64); } plain SEC(".maps");
    SEC("tracepoint/syscalls/sys_enter_getppid")
    int noop(void *ctx) { return 0; }
    """
    with bpfnb.load(src, attach=False) as obj:
        with pytest.raises(TypeError, match="not a stack_trace map"):
            stack_map_to_df(obj.maps.plain)


# --- bpfnb.h stack aggregations, flame graphs --------------------------------------

AGG_PROFILE = r"""
const volatile u32 target_tgid = 0;
struct sample_key {
    struct bpfnb_ustack ustack;
    struct bpfnb_kstack kstack;
    struct bpfnb_comm comm;
};
BPFNB_STACKS(stacks);
BPFNB_COUNT(samples, struct sample_key);

SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx)
{
    if (bpfnb_pid() == target_tgid)
        bpfnb_count(&samples, ((struct sample_key){bpfnb_ustack(ctx, &stacks),
                                                   bpfnb_kstack(ctx, &stacks), bpfnb_comm()}));
    return 0;
}
"""


@pytest.fixture(scope="module")
def agg_profile(tmp_path_factory):
    """The child sampled at 999 Hz by a BPFNB_COUNT keyed by both stacks and comm."""
    if os.geteuid() != 0:
        pytest.skip("loading BPF programs needs root (or CAP_BPF + CAP_PERFMON)")
    from bpfnb import aggregate
    exe = _cc(tmp_path_factory.mktemp("aggstacks"), "bpfnb_aggst", CHILD)
    child = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.read(1) == b"r"
        sym = Symbolizer().snapshot(child.pid)
        with bpfnb.load(AGG_PROFILE, rodata={"target_tgid": child.pid}) as obj:
            obj.progs.on_sample.attach_perf_event(freq=999)
            child.stdin.write(b"g")
            child.stdin.close()
            assert child.wait(timeout=20) == 0
            samples = obj.maps.samples
            yield {"df": aggregate.to_df(samples, symbolizer=sym),
                   "folded": samples.folded(symbolizer=sym),
                   "flame": samples.flame(symbolizer=sym),
                   "json": samples.to_bpftrace_json(symbolizer=sym)}
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


def test_stack_keys_resolve_to_frames(agg_profile):
    df = agg_profile["df"]
    assert list(df.columns) == ["ustack", "ustack.pid", "kstack", "comm", "count"]
    assert set(df["comm"]) == {"bpfnb_aggst"}
    total = int(df["count"].sum())
    assert total >= 100
    spinning = df["ustack"].map(lambda frames: SPIN in frames)
    assert int(df.loc[spinning, "count"].sum()) > total / 2
    assert df["kstack"].map(lambda fs: any(SYSCALL_FRAME.search(f) for f in fs)).any()


def test_folded_and_flame_of_a_stack_count(agg_profile):
    lines = agg_profile["folded"].splitlines()
    total = sum(int(line.rsplit(" ", 1)[1]) for line in lines)
    assert total == agg_profile["df"]["count"].sum()
    assert all(line.startswith("bpfnb_aggst;") for line in lines)
    fig = agg_profile["flame"]
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert SPIN in texts and "main" in texts and "bpfnb_aggst" in texts
    data = json.loads(agg_profile["json"])["data"]["@samples"]
    assert any(SPIN in key for key in data)  # bpftrace's stack text in the key


def test_flame_labels_wide_frames_and_lists_narrow_ones():
    from matplotlib.figure import Figure

    from bpfnb.flame import flame
    text = ("app;main;a_rather_long_function_name_that_is_wide 900\n"
            "app;main;tiny_one 5\napp;main;tiny_two 3\napp;main;invisible 1\n")
    fig = flame(text, title="demo", min_share=0.002)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert {"app", "main", "a_rather_long_function_name_that_is_wide"} <= set(texts)
    assert ax.get_title() == "@demo: 909 samples"
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["1: tiny_one (5, 0.6%)", "2: tiny_two (3, 0.3%)"]  # by width
    assert not any("invisible" in t for t in texts + legend)  # under min_share
    assert len(ax.patches) == 5  # app, main, the wide one, the two tiny ones
