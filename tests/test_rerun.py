"""Re-running %%bpf cells: a failure at any step keeps the old object; old programs stop
at once and their perf events are freed soon after (also at exit); errors as messages."""

import ctypes
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from IPython.utils.capture import capture_output

import bpfnb
from bpfnb.libbpf import kernel_ids, sysfs, teardown
from bpfnb.libbpf._lib import lib
from bpfnb.registry import registry
from conftest import held_bpf_ids

REPO = Path(__file__).resolve().parent.parent
SYSCALLS = "/sys/kernel/tracing/events/syscalls"

# Counts this process's openat calls in .bss and in hits[0]; the extra programs of
# many_links() count the other syscalls in hits[1] (readable through a dup of the map's
# fd after the object is gone).
COUNTER = r"""%%bpf counter {options} --set target_pid={{os.getpid()}}
const volatile u32 target_pid = 0;
u64 total = 0;

struct {{
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 2);
    __type(key, u32);
    __type(value, u64);
}} hits SEC(".maps");

static __always_inline int count(u32 slot)
{{
    u64 *n;

    if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
        return 0;
    if (slot == 0)
        __sync_fetch_and_add(&total, 1);
    n = bpf_map_lookup_elem(&hits, &slot);
    if (n)
        __sync_fetch_and_add(n, 1);
    return 0;
}}

SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx)
{{
    return count(0);
}}
{more}"""

FAILURES = {
    "attach": ('SEC("tracepoint/nosuchcat/nosuchevent")\n'
               "int nowhere(void *ctx) { return 0; }\n", "could not attach"),
    "compile": ("int broken = ;\n", "does not compile"),
    "verifier": ('SEC("tracepoint/syscalls/sys_enter_close")\n'
                 "int bad(void *ctx) { u64 *p = 0; return *p; }\n", "verifier rejected"),
}


def cell(options="", more=""):
    return COUNTER.format(options=options, more=more)


def many_links(n):
    """n - 1 more tracepoint programs (other syscalls), for an n-link cell."""
    sysfs.ensure_tracefs()
    names = sorted(e for e in os.listdir(SYSCALLS)
                   if e.startswith("sys_enter_") and e != "sys_enter_openat")[:n - 1]
    return "".join(f'SEC("tracepoint/syscalls/{e}")\nint p_{i}(void *ctx) '
                   f"{{ return count(1); }}\n" for i, e in enumerate(names))


def open_n(n):
    for _ in range(n):
        os.close(os.open("/etc/hostname", os.O_RDONLY))


def hits(map_fd):
    """Both hits counters, read through an fd of the map (valid after destroy)."""
    values = []
    for slot in (0, 1):
        value = ctypes.c_uint64()
        assert lib.bpf_map_lookup_elem(map_fd, ctypes.byref(ctypes.c_uint32(slot)),
                                       ctypes.byref(value)) == 0
        values.append(value.value)
    return values


def perf_event_fds():
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == "anon_inode:[perf_event]"
        except OSError:
            pass
    return count


@pytest.fixture
def ip(shell, no_leaks):
    yield shell
    registry.stop_all()
    assert teardown.wait(10)


def run(ip, text):
    with capture_output() as cap:
        result = ip.run_cell(text)
    return result, cap.stdout + cap.stderr


def assert_counting(ip, old):
    assert ip.user_ns["counter"] is old and registry.get("counter") is old
    assert old.state == "loaded" and old.progs.on_open.links
    before = old.bss.total
    open_n(30)
    assert old.bss.total - before == 30


@pytest.mark.parametrize("options, step", [
    ("", "attach"), ("", "compile"), ("", "verifier"),
    ("--no-attach", "compile"), ("--no-attach", "verifier"),  # loaded, so verified
    ("--no-load", "compile")])
def test_a_failed_rerun_keeps_the_old_object_running_and_bound(ip, options, step):
    assert run(ip, cell())[0].success
    old = ip.user_ns["counter"]
    held = held_bpf_ids()
    broken, says = FAILURES[step]
    result, out = run(ip, cell(options, broken))
    assert not result.success and says in out
    assert "the previous counter keeps running" in out, out
    assert "Traceback" not in out and "%bpf why" in out
    assert held_bpf_ids() == held  # nothing of the failed object is left
    assert_counting(ip, old)


def test_a_good_rerun_with_no_attach_replaces_the_old_one(ip):
    assert run(ip, cell())[0].success
    old = ip.user_ns["counter"]
    assert run(ip, cell("--no-attach"))[0].success
    new = ip.user_ns["counter"]
    assert old.state == "destroyed" and new.state == "loaded" and not new.progs.on_open.links


def test_rerun_of_30_links_stops_the_old_programs_at_once(ip):
    assert run(ip, cell(more=many_links(30)))[0].success
    old = ip.user_ns["counter"]
    assert sum(len(p.links) for p in old.progs) == 30
    assert all(link.perf_fds for p in old.progs for link in p.links)
    old_ids = {p.id for p in old.progs}
    map_fd = os.dup(old.maps.hits.fd)
    perf_before = perf_event_fds()
    try:
        before = hits(map_fd)
        open_n(10)
        now = hits(map_fd)
        assert now[0] - before[0] == 10 and now[1] - before[1] >= 10  # and 10 close()
        t0 = time.perf_counter()
        result, out = run(ip, cell(more=many_links(30).replace("p_", "q_")))
        seconds = time.perf_counter() - t0
        assert result.success, out
        frozen = hits(map_fd)
        new = ip.user_ns["counter"]
        counted = new.bss.total
        open_n(100)  # events go on: only the new object sees them
        assert hits(map_fd) == frozen and new.bss.total - counted == 100
        assert teardown.wait(10)  # the kernel's waits end soon after
        assert not old_ids & kernel_ids() and teardown.pending() == 0
        assert perf_event_fds() == perf_before
    finally:
        os.close(map_fd)
    # One by one, destroying 30 tracepoint links took ~2.2 s here.
    assert seconds < 1.5, f"re-run of a 30-link cell took {seconds:.2f} s"


def test_destroy_of_30_links_returns_with_the_programs_gone(no_leaks):
    obj = bpfnb.load(cell(more=many_links(30)).split("\n", 1)[1], rodata={"target_pid": 1})
    ids = {p.id for p in obj.progs}
    t0 = time.perf_counter()
    obj.destroy()
    seconds = time.perf_counter() - t0
    assert not ids & kernel_ids()  # gone when destroy() returns, not only stopped
    assert teardown.wait(10) and teardown.pending() == 0
    # Their kernel waits overlap: one by one they took ~2.2 s here.
    assert seconds < 1.0, f"destroying 30 tracepoint links took {seconds:.2f} s"


EXIT_CHILD = """
import atexit, json, os, sys
atexit.register(lambda: print(json.dumps({"pending_at_end": teardown.pending()}), flush=True))
import bpfnb
from bpfnb.libbpf import teardown
obj = bpfnb.load(sys.stdin.read())
ids = [p.id for p in obj.progs]
obj.destroy()
print(json.dumps({"ids": ids, "pending": teardown.pending()}), flush=True)
"""


def test_pending_closes_finish_at_exit(need_root):
    src = cell(more=many_links(30)).split("\n", 1)[1].replace("target_pid = 0", "target_pid = 1")
    t0 = time.monotonic()
    child = subprocess.run([sys.executable, "-c", EXIT_CHILD], input=src, text=True,
                           capture_output=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.monotonic() - t0
    assert child.returncode == 0, child.stderr
    first, last = (json.loads(line) for line in child.stdout.splitlines())
    assert len(first["ids"]) == 30 and first["pending"] > 0  # closes were pending
    assert last["pending_at_end"] == 0  # all done before the interpreter ended
    assert not set(first["ids"]) & kernel_ids()
    assert seconds < teardown.EXIT_WAIT + 20


def test_errors_show_as_messages_and_why_shows_everything(ip):
    assert run(ip, cell())[0].success
    for code, says in [("counter.maps.nosuch", "AttributeError: no map named 'nosuch'"),
                       ("counter.rodata.target_pid = 1", "read-only once loaded"),
                       ("bpfnb.load('int broken = ;\\n')", "CompileError: clang could not"),
                       ("counter.progs.on_open.attach_xdp('nosuchif0')",
                        "AttachError: no network interface named 'nosuchif0'")]:
        result, out = run(ip, code)
        assert not result.success and says in out, (code, out)
        assert "Traceback" not in out and 'File "' not in out and "%bpf why" in out, out
        assert len(out.splitlines()) < 12, out
    result, out = run(ip, "%bpf why")
    assert "--- Python traceback ---" in out and "program.py" in out  # the full traceback
    # Errors that are not bpfnb's keep IPython's traceback.
    result, out = run(ip, "def f(): return {}['x']\nf()")
    assert not result.success and "Traceback" in out and "%bpf why" not in out

    result, out = run(ip, FAILURES_CELL)
    error = result.error_in_exec.error
    assert "the whole log: %bpf why" in out and "full text in .log" not in out
    result, out = run(ip, "%bpf why")
    # the whole verifier log, not its tail, with the cell's line numbers
    assert error.verifier_log.strip().replace("cell.c:", "<cell>:") in out
    assert len(error.verifier_log.splitlines()) > 15
    assert "--- libbpf log ---" in out and "libbpf: prog 'bad'" in out
    assert "Traceback (most recent call last)" in out and "object.py" in out
    out = run(ip, "%bpf --help")[1]
    assert "why" in out and "verifier log" in out


# The verifier rejects the unchecked lookup after the unrolled loop: a log of more lines
# than the message's tail shows.
FAILURES_CELL = textwrap.dedent("""\
    %%bpf loud
    u64 sum = 0;
    struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1);
             __type(key, u32); __type(value, u64); } vals SEC(".maps");
    SEC("tracepoint/syscalls/sys_enter_close")
    int bad(void *ctx)
    {
        u32 zero = 0;
        #pragma unroll
        for (int i = 0; i < 8; i++)
            sum += i * bpf_get_prandom_u32();
        u64 *v = bpf_map_lookup_elem(&vals, &zero);
        return *v;
    }
    """)
