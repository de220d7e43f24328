"""bpfnb.load runs what this kernel can run: programs on missing hooks are turned off with
their reasons, the rest load, attach and count; strict=True names them all at once."""

import errno
import os
import time
from pathlib import Path

import pytest

import bpfnb
from bpfnb import hooks, libbpf
from bpfnb.summary import summarize

PROGS = Path(__file__).parent / "progs"
MIXED = PROGS / "opensnoop_mixed.bpf.c"
MISSING = PROGS / "missing_hooks.bpf.c"
NEWER = PROGS / "newer_libbpf.bpf.c"
HOOK_TRACEPOINT = 1


@pytest.fixture
def no_kprobes_no_fentry(need_root):
    """These tests describe this machine: kprobes not compiled in, fentry refused."""
    if hooks.kprobes_available() or hooks.trampoline_refusal() is None:
        pytest.skip("this kernel has kprobes or fentry: nothing to turn off")


def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def test_mixed_program_runs_its_tracepoint_and_says_why_not_the_rest(
        no_leaks, no_kprobes_no_fentry, tmp_path):
    target = tmp_path / "opened-by-the-test"
    target.write_text("x")
    n = 37
    with bpfnb.load(MIXED, rodata={"targ_tgid": os.getpid()}) as obj:
        assert set(obj.skipped) == {"kprobe_openat2", "fentry_openat2"}
        assert "kprobes are not in this kernel" in obj.skipped["kprobe_openat2"]
        assert "refuses fentry" in obj.skipped["fentry_openat2"]
        assert not obj.progs.kprobe_openat2.autoload and not obj.progs.fentry_openat2.autoload
        assert obj.progs.tracepoint_openat.links
        with obj.maps.events.stream("struct event") as s:
            for _ in range(n):
                os.close(os.open(target, os.O_RDONLY))
            assert wait_for(lambda: (s.to_df()["fname"] == str(target)).sum() >= n)
            time.sleep(0.1)  # nothing more may come
            df = s.to_df()
        mine = df[df["fname"] == str(target)]
        assert len(mine) == n
        assert (mine["hook"] == HOOK_TRACEPOINT).all() and (mine["pid"] == os.getpid()).all()
        assert obj.bss.opens >= n

        summary = summarize(obj, "snoop")
        assert "2 of 3 programs skipped" in summary.headline()
        states = {row[0]: row[3] for row in summary.programs}
        assert states == {"kprobe_openat2": "skipped", "fentry_openat2": "skipped",
                          "tracepoint_openat": "attached"}
        assert [row[:2] for row in summary.skipped] == [
            ("kprobe_openat2", "kprobe/do_sys_openat2"),
            ("fentry_openat2", "fentry/do_sys_openat2")]
        text = repr(summary)
        assert all(why in text for why in obj.skipped.values())
        assert "<table>" in summary._repr_html_() and "skipped" in summary._repr_html_()
        assert repr(obj.progs.kprobe_openat2).endswith(
            f"off: {obj.skipped['kprobe_openat2']}>")
        assert repr(obj.progs.tracepoint_openat).endswith(" attached>")


def test_strict_names_every_program_at_once(no_leaks, no_kprobes_no_fentry):
    with pytest.raises(hooks.UnavailableError) as e:
        bpfnb.load(MIXED, strict=True)
    text = str(e.value)
    assert "2 program(s) of 'opensnoop_mixed' cannot run on this kernel" in text
    assert 'kprobe_openat2 (SEC("kprobe/do_sys_openat2")): kprobes are not' in text
    assert 'fentry_openat2 (SEC("fentry/do_sys_openat2")): this kernel refuses' in text
    assert "autoload={'kprobe_openat2': False, 'fentry_openat2': False}" in text
    assert set(e.value.skipped) == {"kprobe_openat2", "fentry_openat2"}
    assert isinstance(e.value, bpfnb.LoadError) and e.value.errno == errno.EOPNOTSUPP


def test_hooks_that_exist_nowhere_are_skipped_with_reasons(no_leaks):
    n = 23
    with bpfnb.load(MISSING) as obj:
        assert set(obj.skipped) == {"no_tracepoint", "no_function", "no_binary",
                                    "no_raw_tracepoint"}
        assert obj.skipped["no_tracepoint"].startswith(
            "no tracepoint syscalls:sys_enter_no_such_syscall in this kernel")
        assert obj.skipped["no_function"] == (
            "no kernel function 'bpfnb_no_such_function' in this kernel's BTF")
        assert obj.skipped["no_binary"] == "no file /bpfnb/no/such/binary (uprobe target binary)"
        assert "btf_trace_bpfnb_no_such_event" in obj.skipped["no_raw_tracepoint"]
        before = obj.bss.getpids
        for _ in range(n):
            os.getpid()
        # other processes' getpid calls count too: at least ours
        assert obj.bss.getpids - before >= n


def test_a_program_that_needs_a_target_says_which_call(no_leaks):
    with bpfnb.load(MISSING) as obj:
        call = "obj.progs.sample.attach_perf_event(freq=99)"
        assert obj.progs.sample.attach_call == "attach_perf_event(freq=99)"
        assert repr(obj.progs.sample).endswith(f"loaded, needs a target: {call}>")
        rows = {row[0]: row[3] for row in summarize(obj, "obj").programs}
        assert rows["sample"] == f"needs a target: {call}"
        assert rows["count_getpid"] == "attached" and rows["no_function"] == "skipped"
        obj.progs.sample.attach_perf_event(freq=1, cpus=[0])
        assert repr(obj.progs.sample).endswith(" attached>")


def test_program_repr_states(no_leaks):
    obj = bpfnb.open(MISSING, autoload={"sample": False}, strict=False)
    try:
        assert repr(obj.progs.count_getpid).endswith(" opened>")
        assert repr(obj.progs.sample).endswith(" off>")
        obj.load()
        assert repr(obj.progs.count_getpid).endswith(" loaded>")
        assert repr(obj.progs.no_tracepoint).endswith(f"off: {obj.skipped['no_tracepoint']}>")
        obj.attach()
        assert repr(obj.progs.count_getpid).endswith(" attached>")
    finally:
        obj.destroy()
    assert repr(obj.progs.count_getpid) == "<Program 'count_getpid' (destroyed)>"


def test_nothing_left_fails_with_every_reason(no_leaks, no_kprobes_no_fentry):
    with pytest.raises(hooks.UnavailableError) as e:
        bpfnb.load(MIXED, autoload={"tracepoint_openat": False})
    text = str(e.value)
    assert "nothing of" in text and "every program was turned off" in text
    assert "kprobe_openat2" in text and "fentry_openat2" in text
    assert "%bpf doctor" in text


def test_attach_refusal_leaves_the_rest_running(no_leaks):
    """The binary exists, the function does not: only attach can tell."""
    src = """
SEC("uprobe//bin/true:bpfnb_no_such_function")
int BPF_UPROBE(missing_symbol) { return 0; }
__u64 getpids;
SEC("tracepoint/syscalls/sys_enter_getpid")
int count_getpid(void *ctx) { __sync_fetch_and_add(&getpids, 1); return 0; }
"""
    with bpfnb.load(src) as obj:
        assert obj.skipped["missing_symbol"].startswith("attach failed (ENOENT)")
        assert obj.progs.missing_symbol.links == []
        assert repr(obj.progs.missing_symbol).endswith(
            f"loaded, not attached: {obj.skipped['missing_symbol']}>")
        assert obj.progs.count_getpid.links
    with pytest.raises(bpfnb.AttachError):
        bpfnb.load(src, strict=True)


def test_load_refusal_reopens_without_the_program(no_leaks, monkeypatch):
    """When no fact predicts it, the kernel's refusal at load turns the program off
    and the object is opened and loaded again."""
    monkeypatch.setattr(hooks, "unavailable", lambda section: None)
    with bpfnb.load(MISSING, autoload={"no_tracepoint": False, "no_binary": False}) as obj:
        assert set(obj.skipped) == {"no_function", "no_raw_tracepoint"}
        assert obj.skipped["no_function"] == (
            "no kernel function 'bpfnb_no_such_function' in this kernel's BTF (libbpf: ESRCH)")
        assert obj.skipped["no_raw_tracepoint"] == (
            "no raw tracepoint 'bpfnb_no_such_event' in this kernel's BTF (libbpf: ESRCH)")
        assert obj.progs.count_getpid.links


def test_hints_name_the_cause_the_log_shows(no_leaks, no_kprobes_no_fentry):
    """A bare libbpf Object turns nothing off: its errors carry the right hint."""
    cases = {
        'SEC("fentry/bpfnb_no_such_function")\nint BPF_PROG(h) { return 0; }\n':
            "this kernel has no 'bpfnb_no_such_function' to attach to (not in its BTF)",
        'SEC("fentry/do_sys_openat2")\nint BPF_PROG(h) { return 0; }\n':
            "this kernel refuses fentry/fexit/lsm programs",
    }
    for src, hint in cases.items():
        obj = libbpf.Object(bpfnb.compile(src))
        try:
            with pytest.raises(bpfnb.LoadError) as e:
                obj.load()
        finally:
            obj.destroy()
        assert hint in str(e.value) and e.value.program == "h"
        assert "CO-RE needs kernel BTF" not in str(e.value)
    missing_kfunc = bpfnb.compile(
        "extern void bpfnb_no_such_kfunc(void) __ksym;\n"
        'SEC("tracepoint/syscalls/sys_enter_getpid")\n'
        "int h(void *ctx) { bpfnb_no_such_kfunc(); return 0; }\n")
    with pytest.raises(bpfnb.LoadError, match="this kernel has no kfunc 'bpfnb_no_such_kfunc'"
                       r": declare it __weak and test bpf_ksym_exists\(bpfnb_no_such_kfunc\)"):
        bpfnb.load(missing_kfunc)
    missing_field = bpfnb.compile(
        "struct task_struct___x { int bpfnb_no_such_field; } "
        "__attribute__((preserve_access_index));\n"
        "int seen;\n"
        'SEC("tracepoint/syscalls/sys_enter_getpid")\n'
        "int h(void *ctx)\n{\n"
        "    struct task_struct___x *t = (void *)bpf_get_current_task();\n"
        "    seen = BPF_CORE_READ(t, bpfnb_no_such_field);\n    return 0;\n}\n")
    with pytest.raises(bpfnb.VerifierError) as e:
        bpfnb.load(missing_field)
    assert e.value.hint.startswith("a CO-RE relocation failed: this kernel's BTF has no "
                                   "struct task_struct___x.bpfnb_no_such_field")
    obj = libbpf.Object(bpfnb.compile('SEC("kprobe/do_sys_openat2")\n'
                                      "int h(void *ctx) { return 0; }\n"))
    try:
        obj.load()  # a kprobe program loads; only attaching needs kprobes
        with pytest.raises(bpfnb.AttachError, match="kprobes are not in this kernel"):
            obj.attach()
    finally:
        obj.destroy()


def test_source_for_newer_libbpf_headers_compiles_and_runs(no_leaks):
    n = 11
    pid = os.getpid()
    with bpfnb.load(NEWER, rodata={"targ_tgid": pid}) as obj:
        for _ in range(n):
            os.getppid()
            os.getpid()
        assert obj.bss.loop_sum == 45 * n        # bpf_for(i, 0, 10)
        assert obj.data.has_task_from_pid == 1    # bpf_ksym_exists: a kfunc this kernel has
        assert obj.data.has_no_such_kfunc == 0    # ... and one it has not
        assert obj.bss.seen_tgid == pid          # bpf_core_cast
        assert obj.bss.getpid_calls == n         # BPF_UPROBE


KFUNC_CELL = """
const volatile int targ_tgid;
int found_tgid;
SEC("tracepoint/syscalls/sys_enter_getppid")
int find_self(void *ctx)
{
    struct task_struct *t;
    if (bpf_get_current_pid_tgid() >> 32 != targ_tgid)
        return 0;   /* other processes call getppid too (every bash at start) */
    t = bpf_task_from_pid(targ_tgid);
    if (!t)
        return 0;
    found_tgid = t->tgid;
    bpf_task_release(t);
    return 0;
}
"""


def test_cells_have_this_kernels_kfunc_prototypes(no_leaks):
    """As with bpftool's vmlinux.h; a cell declaring them itself still compiles."""
    own = ("extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;\n"
           "extern void bpf_task_release(struct task_struct *p) __ksym;\n")
    for src in (KFUNC_CELL, own + KFUNC_CELL):
        with bpfnb.load(src, rodata={"targ_tgid": os.getpid()}) as obj:
            os.getppid()
            assert obj.bss.found_tgid == os.getpid()
    with pytest.raises(bpfnb.CompileError, match="bpf_task_from_pid"):
        bpfnb.compile(KFUNC_CELL, cflags=["-DBPF_NO_KFUNC_PROTOTYPES", "-Werror"])


def test_a_leaked_ring_buffer_record_gets_its_hint(no_leaks):
    src = """
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } rb SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getpid")
int leak(void *ctx)
{
    u64 *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
    if (!e)
        return 0;
    *e = 1;
    return 0;   /* never submitted */
}
"""
    with pytest.raises(bpfnb.VerifierError) as e:
        bpfnb.load(src)
    assert "bpf_ringbuf_submit() or bpf_ringbuf_discard() before each return" in e.value.hint
