"""bpfnb.libbpf.Object against the real kernel: load, attach, count what we cause."""

import os
import subprocess
import sys
import textwrap

import pytest

import bpfnb
from bpfnb.libbpf import kernel_ids

COUNTER = r"""
const volatile u32 target_pid = 0;
u64 total = 0;
u64 calls_seen = 0;

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 1024);
    __type(key, u32);
    __type(value, u64);
} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    __sync_fetch_and_add(&calls_seen, 1);
    if (target_pid && pid != target_pid)
        return 0;
    u64 one = 1, *v = bpf_map_lookup_elem(&counts, &pid);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&counts, &pid, &one, BPF_ANY);
    __sync_fetch_and_add(&total, 1);
    return 0;
}
"""


def open_n(n):
    for _ in range(n):
        os.close(os.open("/etc/hostname", os.O_RDONLY))


def test_pid_filtered_counter_counts_exactly(no_leaks):
    pid = os.getpid()
    with bpfnb.load(COUNTER, rodata={"target_pid": pid}) as obj:
        assert obj.rodata.target_pid == pid
        open_n(100)
        assert obj.maps.counts[pid] == 100
        assert obj.bss.total == 100
        assert dict(obj.maps.counts.items()) == {pid: 100}
        assert obj.maps.counts.keys() == [pid]
        assert pid in obj.maps.counts and len(obj.maps.counts) == 1


def test_globals_live_and_writable(no_leaks):
    with bpfnb.load(COUNTER, rodata={"target_pid": os.getpid()}) as obj:
        obj.bss.total = 1000
        open_n(5)
        assert obj.bss.total == 1005
        with pytest.raises(AttributeError, match="read-only once loaded"):
            obj.rodata.target_pid = 1
        with pytest.raises(AttributeError, match="no variable"):
            obj.bss.nope
        assert sorted(dir(obj.bss)) == ["calls_seen", "total"]
        assert "counts" in dir(obj.maps) and "on_open" in dir(obj.progs)


def test_open_load_attach_split(no_leaks):
    obj = bpfnb.open(COUNTER)
    assert obj.state == "opened"
    obj.rodata.target_pid = os.getpid()
    obj.maps.counts.max_entries = 64
    obj.load()
    assert obj.maps.counts.max_entries == 64
    with pytest.raises(bpfnb.BPFError, match="before load"):
        obj.maps.counts.max_entries = 128
    open_n(3)
    assert obj.bss.total == 0  # loaded, not attached
    obj.attach()
    open_n(3)
    assert obj.bss.total == 3
    obj.detach()
    open_n(3)
    assert obj.bss.total == 3
    obj.destroy()
    obj.destroy()  # idempotent
    with pytest.raises(bpfnb.ObjectClosedError):
        obj.bss.total
    with pytest.raises(bpfnb.ObjectClosedError):
        obj.maps.counts.lookup(1)


def test_autoload_off(no_leaks):
    obj = bpfnb.open(COUNTER)
    obj.progs.on_open.autoload = False
    obj.load().attach()
    assert obj.progs.on_open.links == []
    obj.destroy()


def test_destroy_frees_kernel_objects(need_root):
    before = kernel_ids("prog")
    obj = bpfnb.load(COUNTER)
    mine = kernel_ids("prog") - before
    assert obj.progs.on_open.id in mine
    obj.destroy()
    assert not (kernel_ids("prog") & mine)


def test_garbage_collection_destroys(need_root):
    import gc
    before = kernel_ids("prog")
    obj = bpfnb.load(COUNTER)
    pid = obj.progs.on_open.id
    del obj
    gc.collect()
    assert pid not in kernel_ids("prog") - before


def test_failed_load_leaves_nothing(no_leaks):
    src = COUNTER + r"""
SEC("tracepoint/syscalls/sys_enter_close")
int bad(void *ctx) { int *p = 0; return *p; }
"""
    with pytest.raises(bpfnb.VerifierError) as e:
        bpfnb.load(src)
    assert e.value.program == "bad"
    assert "invalid mem access" in e.value.log or "R1" in e.value.log
    assert "verifier rejected program 'bad'" in str(e.value)


def test_stats_and_repr(no_leaks):
    from bpfnb.libbpf import end_looks, look_stats
    assert look_stats()
    with bpfnb.load(COUNTER, rodata={"target_pid": os.getpid()}) as obj:
        open_n(10)
        st = obj.progs.on_open.stats
        end_looks()
        assert st["run_cnt"] >= 10 and st["run_time_ns"] > 0
        assert "tracepoint" in repr(obj.progs.on_open)
        shown = obj.maps.counts._repr_html_()  # the types, then the entries
        assert "hash" in shown and "u32" in shown
        assert repr(obj.maps.counts).startswith(f"@counts[{os.getpid()}]: ")


def test_object_from_bytes_and_path(no_leaks, tmp_path):
    path = bpfnb.compile(COUNTER)
    data = path.read_bytes()
    with bpfnb.load(data, rodata={"target_pid": os.getpid()}) as obj:
        open_n(7)
        assert obj.bss.total == 7
    with bpfnb.load(str(path), rodata={"target_pid": os.getpid()}) as obj:
        open_n(7)
        assert obj.bss.total == 7


@pytest.mark.parametrize("blob", [b"", b"\x7fELF", b"\x7fELF" + b"\x02\x01\x01" + b"\0" * 57,
                                  "truncated"])
def test_malformed_object_is_a_clean_error(blob, tmp_path):
    """Run in a subprocess: a segfault there fails the test instead of killing pytest."""
    if blob == "truncated":
        blob = bpfnb.compile(COUNTER).read_bytes()
        blob = blob[: len(blob) // 2]
    f = tmp_path / "blob.o"
    f.write_bytes(blob)
    code = textwrap.dedent(f"""
        import bpfnb
        try:
            bpfnb.libbpf.Object(open({str(f)!r}, "rb").read())
        except bpfnb.BPFError as e:
            print("clean:", type(e).__name__, e)
        else:
            print("opened")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"crashed with {r.returncode}: {r.stderr[-2000:]}"
    assert "clean: OpenError" in r.stdout


def test_missing_tracepoint_says_what_to_do(no_leaks):
    src = """
SEC("tracepoint/syscalls/sys_enter_no_such_call")
int h(void *ctx) { return 0; }
"""
    with pytest.raises(bpfnb.AttachError, match="no tracepoint syscalls:sys_enter_no_such_call"):
        bpfnb.load(src)


def test_explicit_target_needed(no_leaks):
    src = """
SEC("xdp")
int pass(struct xdp_md *ctx) { return XDP_PASS; }
"""
    with bpfnb.load(src) as obj:  # attach() skips programs that need a target
        assert obj.progs["pass"].links == []
        with pytest.raises(bpfnb.AttachError, match="attach_xdp"):
            obj.progs["pass"].attach()


def test_fentry_refused_clearly(no_leaks):
    src = """
SEC("fentry/do_sys_openat2")
int BPF_PROG(h) { return 0; }
"""
    with pytest.raises(bpfnb.BPFError) as e:
        bpfnb.load(src)
    assert "fentry" in str(e.value)


def test_iterator_text(no_leaks):
    src = r"""
SEC("iter/task")
int dump_task(struct bpf_iter__task *ctx)
{
    struct task_struct *task = ctx->task;
    if (task && task->pid == task->tgid)
        BPF_SEQ_PRINTF(ctx->meta->seq, "%d %s\n", task->tgid, task->comm);
    return 0;
}
"""
    with bpfnb.load(src) as obj:
        text = obj.progs.dump_task.read()
    assert f"{os.getpid()} " in text


def test_missing_privileges_say_what_to_do(need_root):
    """As an unprivileged user (setpriv drops to nobody), loading names the fix."""
    import shutil
    import tempfile
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    home = tempfile.mkdtemp(prefix="bpfnb-nobody-")  # pytest's tmp_path is root-only
    os.chmod(home, 0o777)
    cache = os.path.join(home, "cache")
    code = textwrap.dedent(f"""
        import bpfnb
        try:
            bpfnb.load({COUNTER!r})
        except bpfnb.PrivilegeError as e:
            print("PrivilegeError:", e)
    """)
    env = dict(os.environ, BPFNB_CACHE=cache, HOME=home)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
              "--inh-caps=-all", sys.executable, "-c"]
    try:
        if subprocess.run(nobody + ["import bpfnb"], capture_output=True, env=env,
                          timeout=60).returncode:
            pytest.skip("user nobody cannot run this Python or import bpfnb from here")
        r = subprocess.run(nobody + [code], capture_output=True, text=True, timeout=120,
                           env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "PrivilegeError:" in r.stdout
    assert "CAP_BPF" in r.stdout and "sudo" in r.stdout


def test_static_only_globals_read_and_write(no_leaks):
    """A section of only static variables is not mmapable: it goes through the map."""
    src = r"""
static u64 hits = 0;
SEC("tracepoint/syscalls/sys_enter_getppid")
int h(void *ctx) { __sync_fetch_and_add(&hits, 1); return 0; }
"""
    with bpfnb.load(src) as obj:
        obj.bss.hits = 10
        for _ in range(5):
            os.getppid()
        assert obj.bss.hits >= 15


def test_perf_event_fd_of_our_own(no_leaks):
    """A perf event the caller opened (task clock of this thread at 1 kHz) drives a
    program; the link closes the perf fd with it."""
    import time
    from bpfnb.libbpf import perf_event_open
    src = r"""
u64 samples = 0;
SEC("perf_event")
int on_sample(struct bpf_perf_event_data *ctx) { __sync_fetch_and_add(&samples, 1); return 0; }
"""
    with bpfnb.load(src) as obj:
        pfd = perf_event_open("task-clock", cpu=-1, pid=0, freq=1000)
        link = obj.progs.on_sample.attach_perf_event_fd(pfd)
        deadline = time.process_time() + 0.3
        while time.process_time() < deadline:
            pass
        assert obj.bss.samples >= 100  # ~300 expected at 1 kHz of our CPU time
        link.destroy()
        with pytest.raises(OSError):
            os.fstat(pfd)


@pytest.mark.parametrize("section, body, hint", [
    ("tracepoint/syscalls/sys_enter_getppid",
     "u32 k = 0; u64 *v = bpf_map_lookup_elem(&counts, &k); *v += 1;", "NULL check"),
    ("tracepoint/syscalls/sys_enter_getppid",
     "u32 i = bpf_get_prandom_u32(); char buf[8] = {}; "
     "bpf_probe_read_kernel(&buf[i], 1, ctx);", "bound the index"),
    ("xdp", "struct xdp_md *x = ctx; return *(u8 *)(long)x->data;", "check bounds"),
])
def test_verifier_rejections_come_with_a_hint(no_leaks, section, body, hint):
    src = f"""
struct {{ __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8);
         __type(key, u32); __type(value, u64); }} counts SEC(".maps");
SEC("{section}")
int h(void *ctx) {{ {body} return 0; }}
"""
    with pytest.raises(bpfnb.VerifierError) as e:
        bpfnb.load(src)
    assert hint in str(e.value), e.value.log[-1500:]
