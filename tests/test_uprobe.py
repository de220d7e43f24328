"""Uprobes, uretprobes and USDT against the real kernel, on code the test builds and calls."""

import ctypes
import errno
import os
import shutil
import subprocess

import pytest

import bpfnb

N = 1000

LIBADD = "int bpfnb_add(int a, int b) { return a + b; }\n"

PROBES = r"""
u64 calls = 0, returns = 0;
s64 arg_sum = 0, ret_sum = 0;

SEC("%(entry)s")
int BPF_UPROBE(on_add, int a, int b)
{
    __sync_fetch_and_add(&calls, 1);
    __sync_fetch_and_add(&arg_sum, a + b);
    return 0;
}

SEC("%(exit)s")
int BPF_URETPROBE(on_add_ret, int ret)
{
    __sync_fetch_and_add(&returns, 1);
    __sync_fetch_and_add(&ret_sum, ret);
    return 0;
}
"""


@pytest.fixture(scope="module")
def libadd(tmp_path_factory):
    """A shared library with bpfnb_add, built here and loaded into this process."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the traced library")
    tmp = tmp_path_factory.mktemp("uprobe")
    (tmp / "add.c").write_text(LIBADD)
    path = tmp / "libbpfnb_add.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O0", "-o", str(path), str(tmp / "add.c")],
                   check=True, capture_output=True, timeout=60)
    lib = ctypes.CDLL(str(path))
    lib.bpfnb_add.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.bpfnb_add.restype = ctypes.c_int
    return str(path), lib


def call_n(lib, n=N):
    """Calls bpfnb_add(i, -7) n times; returns the sum of the results."""
    return sum(lib.bpfnb_add(i, -7) for i in range(n))


def test_explicit_uprobe_and_uretprobe_count_exactly(no_leaks, libadd):
    path, lib = libadd
    src = PROBES % {"entry": "uprobe", "exit": "uretprobe"}
    with bpfnb.load(src) as obj:  # bare uprobe sections wait for an explicit attach
        assert not obj.progs.on_add.links and not obj.progs.on_add_ret.links
        obj.progs.on_add.attach_uprobe(path, "bpfnb_add", pid=os.getpid())
        obj.progs.on_add_ret.attach_uprobe(path, "bpfnb_add", pid=os.getpid())
        expected = call_n(lib)
        assert obj.bss.calls == N and obj.bss.returns == N
        assert obj.bss.arg_sum == expected  # the arguments, read from registers
        assert obj.bss.ret_sum == expected  # the return values
        assert expected == N * (N - 1) // 2 - 7 * N


def test_section_names_the_target(no_leaks, libadd):
    path, lib = libadd
    src = PROBES % {"entry": f"uprobe/{path}:bpfnb_add",
                    "exit": f"uretprobe/{path}:bpfnb_add"}
    obj = bpfnb.load(src)  # Object.attach() attaches both from their sections
    try:
        assert obj.progs.on_add.links and obj.progs.on_add_ret.links
        expected = call_n(lib, 250)
        assert (obj.bss.calls, obj.bss.returns) == (250, 250)
        assert obj.bss.ret_sum == expected
    finally:
        obj.destroy()
    call_n(lib, 10)  # detached: nothing may fire, nothing may crash


def test_missing_function_is_a_clear_attach_error(no_leaks, libadd):
    path, _ = libadd
    with bpfnb.load(PROBES % {"entry": "uprobe", "exit": "uretprobe"}) as obj:
        with pytest.raises(bpfnb.AttachError) as info:
            obj.progs.on_add.attach_uprobe(path, "bpfnb_no_such_function")
        assert info.value.errno == errno.ENOENT
        text = str(info.value)
        assert "bpfnb_no_such_function" in text and "not found" in text
        assert not obj.progs.on_add.links


PYTHON_USDT = "/usr/bin/python3.11"

# Python 3.11 fires function__entry only while a profiler or tracer is set;
# gc__start(generation) fires on every collection.
USDT = r"""
#include <bpf/usdt.bpf.h>

u64 collections = 0, generations = 0;

SEC("usdt")
int BPF_USDT(on_gc_start, int generation)
{
    __sync_fetch_and_add(&collections, 1);
    __sync_fetch_and_add(&generations, generation);
    return 0;
}
"""

# gc.disable() and os._exit(): only these collections, none of the interpreter's own
# (automatic ones, and those of its shutdown).
TARGET = """
import gc, os, sys
gc.disable()
sys.stdout.write("r"); sys.stdout.flush()
sys.stdin.read(1)
for _ in range(%d):
    gc.collect(1)
os._exit(0)
"""

GC_RUNS = 200


def test_usdt_python_gc_start(no_leaks):
    if not os.path.exists(PYTHON_USDT):
        pytest.skip(f"{PYTHON_USDT} (a Python built with USDT probes) is not installed")
    child = subprocess.Popen([PYTHON_USDT, "-c", TARGET % GC_RUNS], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout.read(1) == b"r"
        with bpfnb.load(USDT, attach=False) as obj:
            obj.progs.on_gc_start.attach_usdt(PYTHON_USDT, "python", "gc__start",
                                              pid=child.pid)
            child.stdin.write(b"g")
            child.stdin.close()
            assert child.wait(timeout=30) == 0
            assert obj.bss.collections == GC_RUNS
            assert obj.bss.generations == GC_RUNS  # the argument: generation 1 each time
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()


# Typeless ksyms resolve through /proc/kallsyms, which on this kernel lists functions
# only (no CONFIG_KALLSYMS_ALL): look for a function.
KSYMS = r"""
extern const void do_syscall_64 __ksym __weak;
extern const void bpfnb_no_such_kernel_symbol __ksym __weak;
int present = -1, absent = -1;

SEC("tracepoint/syscalls/sys_enter_getppid")
int look(void *ctx)
{
    present = bpf_ksym_exists(&do_syscall_64);
    absent = bpf_ksym_exists(&bpfnb_no_such_kernel_symbol);
    return 0;
}
"""


def test_bpf_ksym_exists_from_bpfnb_h(no_leaks):
    with bpfnb.load(KSYMS) as obj:
        os.getppid()
        assert (obj.data.present, obj.data.absent) == (1, 0)
