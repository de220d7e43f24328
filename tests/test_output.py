"""Each object's own bpf_printk output (bpfnb.output), against the real kernel.

trace_pipe is one event for the whole machine and other processes print meanwhile:
every check here looks for lines that name this test's own objects and pid.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import bpfnb
from bpfnb import build, output, tracepipe
from bpfnb.libbpf import Object as RawObject
from bpfnb.libbpf import progstream

PROG = Path(__file__).parent / "progs" / "printk_counter.bpf.c"
N = 40


def getppid_n(n):
    for _ in range(n):
        os.getppid()


def wait_lines(obj, want, timeout=5.0):
    """obj.output() once it has ``want`` lines (or the timeout), then a little longer
    so that extra lines, if any, would show."""
    deadline = time.monotonic() + timeout
    while len(obj.output()) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(3 * output.DELIVER_EVERY)
    return obj.output()


def expected(obj_id, pid, n):
    lines = []
    for k in range(1, n + 1):
        lines += [f"obj {obj_id} pid {pid} n={k}", f"args {obj_id} {k} {2 * k} {3 * k} {4 * k}"]
    return lines


def load_counter(obj_id):
    return bpfnb.load(PROG, rodata={"target_pid": os.getpid(), "id": obj_id})


def plain_clang_object(tmp_path) -> Path:
    """The same program built by clang alone, as a tool outside bpfnb would: the
    system's bpf_helpers.h, so its formats carry no tag."""
    out = tmp_path / "printk_counter.o"
    subprocess.run([build.find_clang(), "-g", "-O2", "-target", "bpf", "-mcpu=v3",
                    f"-D__TARGET_ARCH_{build.target_arch()}",
                    "-I", str(build.vmlinux_h().parent), "-c", str(PROG), "-o", str(out)],
                   check=True, capture_output=True, timeout=120)
    return out


def test_two_objects_of_one_source_each_get_exactly_their_lines(no_leaks):
    a = load_counter(1)
    b = load_counter(2)  # the same cached .o: only the tags patched at open differ
    try:
        assert a.path == b.path
        assert a._output.tag != b._output.tag
        getppid_n(N)
        df_a, df_b = wait_lines(a, 2 * N), wait_lines(b, 2 * N)
        assert list(df_a.text) == expected(1, os.getpid(), N)
        assert list(df_b.text) == expected(2, os.getpid(), N)
        assert list(df_a.columns) == ["time", "pid", "comm", "cpu", "text"]
        assert set(df_a.pid) == {threading.get_native_id()}
        assert (df_a.cpu >= 0).all() and df_a.time.is_monotonic_increasing
        seconds = df_a.time.astype("int64") / 1e9  # wall clock, from the mono trace clock
        assert ((time.time() - 30 < seconds) & (seconds <= time.time())).all()
        assert df_a.attrs["dropped"] == 0
    finally:
        a.destroy()
        b.destroy()


def test_cell_text_and_more_than_three_arguments(no_leaks):
    src = r"""
const volatile u32 target_pid = 0;
u32 count = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != target_pid)
        return 0;
    u32 n = __sync_add_and_fetch(&count, 1);
    bpf_printk("six %d %d %d %d %d %d", n, n, n, n, n, pid);
    bpf_printk("none");
    return 0;
}
"""
    obj = bpfnb.load(src, rodata={"target_pid": os.getpid()})
    try:
        getppid_n(5)
        df = wait_lines(obj, 10)
        want = []
        for k in range(1, 6):
            want += [f"six {k} {k} {k} {k} {k} {os.getpid()}", "none"]
        assert list(df.text) == want
    finally:
        obj.destroy()


def test_lines_of_untagged_programs_never_show(no_leaks, tmp_path):
    """An object built outside bpfnb (no tag), and one bpfnb compiled but another
    loader opened (placeholder unpatched, as another process's tag would be), print on
    the same events as a tagged one: the tagged one sees only its own lines."""
    untagged = bpfnb.load(plain_clang_object(tmp_path),
                          rodata={"target_pid": os.getpid(), "id": 7})
    unpatched = RawObject(build.compile(PROG))
    unpatched.rodata.target_pid = os.getpid()
    unpatched.rodata.id = 8
    unpatched.load()
    unpatched.attach()
    tagged = load_counter(3)
    foreign_before = output._hub.foreign
    try:
        getppid_n(N)
        df = wait_lines(tagged, 2 * N)
        assert list(df.text) == expected(3, os.getpid(), N)
        assert untagged.bss.count == N and unpatched.bss.count == N  # they did print
        assert untagged.output().empty
        assert "no bpfnb-tagged bpf_printk" in untagged.output().attrs["note"]
        # the unpatched placeholder passes the instance's filter; the reader drops it
        assert output._hub.foreign - foreign_before >= 2 * N
    finally:
        tagged.destroy()
        untagged.destroy()
        unpatched.destroy()


def test_kept_lines_are_bounded_and_drops_counted(no_leaks, monkeypatch):
    monkeypatch.setattr(output, "MAX_LINES", 10)
    obj = load_counter(4)
    try:
        getppid_n(15)  # 30 lines
        deadline = time.monotonic() + 5
        while obj._output.received < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.warns(RuntimeWarning, match="20 older lines were dropped"):
            df = obj.output()
        assert df.attrs["dropped"] == 20 and len(df) == 10
        assert list(df.text) == expected(4, os.getpid(), 15)[-10:]
    finally:
        obj.destroy()


def test_listeners_get_bounded_batches(no_leaks):
    obj = load_counter(5)
    batches = []
    unsubscribe = output.subscribe(obj, lambda texts, missed: batches.append(
        (time.monotonic(), len(texts), missed)))
    try:
        total = 600  # 1,200 lines in one burst
        getppid_n(total)
        deadline = time.monotonic() + 5
        while sum(n + m for _, n, m in batches) < 2 * total and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sum(n + m for _, n, m in batches) == 2 * total
        assert all(n <= output.DELIVER_MAX for _, n, _ in batches)
        gaps = [t1 - t0 for (t0, _, _), (t1, _, _) in zip(batches, batches[1:])]
        assert all(g >= output.DELIVER_EVERY * 0.9 for g in gaps), gaps
    finally:
        unsubscribe()
        obj.destroy()


def test_reader_thread_and_instance_go_with_the_last_object(no_leaks):
    for _ in range(2):  # and it starts again for the next object
        a, b = load_counter(6), load_counter(7)
        pipe = output._hub.pipe
        assert output.reader_thread() is not None and pipe is not None
        instance = pipe.instance
        assert instance is None or os.path.isdir(instance)
        a.destroy()
        assert output.reader_thread() is not None  # b still wants its lines
        t0 = time.monotonic()
        b.destroy()
        assert time.monotonic() - t0 < 1.0, "the reader must stop promptly"
        assert output.reader_thread() is None
        assert not [t for t in threading.enumerate() if t.name == "bpfnb-output"]
        assert instance is None or not os.path.exists(instance)


def test_without_an_instance_the_global_trace_pipe_is_read(no_leaks, monkeypatch):
    """Where no instance can be made (here: a prefix naming no directory), the global
    trace_pipe is read, with every other program's lines in it: still only ours."""
    monkeypatch.setattr(tracepipe, "INSTANCE_PREFIX", "no-such-directory/bpfnb-")
    obj = load_counter(10)
    try:
        assert output._hub.pipe.route == "global" and "global" in obj._output.route
        getppid_n(N)
        df = wait_lines(obj, 2 * N)
        assert list(df.text) == expected(10, os.getpid(), N)
        assert df.time.dtype == float  # trace-clock seconds: the global clock is not ours
        assert "kernel_lost" not in df.attrs  # other programs' lines count there too
    finally:
        obj.destroy()


def test_an_object_never_loaded_starts_no_reader(no_leaks):
    obj = bpfnb.open(PROG)
    try:
        assert obj._output.tag is not None and output.reader_thread() is None
    finally:
        obj.destroy()
    assert output.reader_thread() is None


def test_interpreter_exit_removes_the_instance(need_root):
    code = ("import os, bpfnb\n"
            f"obj = bpfnb.load({str(PROG)!r}, rodata={{'target_pid': os.getpid()}})\n"
            "print(bpfnb.output._hub.pipe.instance, flush=True)\n")  # exits with obj live
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    instance = done.stdout.strip()
    assert os.path.basename(instance).startswith(tracepipe.INSTANCE_PREFIX)
    assert not os.path.exists(instance)


def test_stale_instances_of_dead_processes_are_removed(need_root):
    child = subprocess.Popen(["true"])
    child.wait()
    root = tracepipe._tracefs_roots()[0]
    name = tracepipe.instance_name(child.pid)
    stale = os.path.join(root, "instances", name)
    other_ns = os.path.join(root, "instances", f"{tracepipe.INSTANCE_PREFIX}1-{child.pid}")
    os.mkdir(stale)
    os.mkdir(other_ns)  # another pid namespace's: its pids are not ours to judge
    try:
        assert tracepipe.remove_stale_instances(root) == [name]
        assert not os.path.exists(stale) and os.path.exists(other_ns)
    finally:
        for d in (stale, other_ns):
            if os.path.exists(d):
                os.rmdir(d)


def test_streams_probe_gives_a_verdict(need_root):
    v = output.streams_verdict()
    assert output.streams_verdict() is v  # once per process
    assert isinstance(v.working, bool) and v.reason
    kfunc = output._stream_kfunc()
    assert v.kfunc == kfunc
    if kfunc is None:
        assert not v.working and "no stream printk kfunc" in v.reason
    if not v.working:
        assert output.cflags("bpf_printk") == []
        obj = load_counter(9)
        try:
            assert obj._output.route.startswith("trace_pipe")
        finally:
            obj.destroy()
    assert output.cflags("no printk here") == []


def test_printk_compiled_for_streams_loads_and_its_stream_reads(no_leaks):
    """The streams variant of bpf_printk (what cflags() asks for where the probe
    passes) is accepted by the verifier, and reading its stdout gives what the kfunc
    wrote: its line where streams work, nothing where (as on 6.18 here) it fails."""
    v = output.streams_verdict()
    if v.kfunc is None:
        pytest.skip("this kernel has no BPF streams")
    src = r"""
int ret = 1;
SEC("syscall")
int say(void *ctx)
{
    ret = bpf_printk("streamed %d", 7);
    return 0;
}
"""
    obj = bpfnb.load(src, cflags=[f"-DBPFNB_PRINTK_STREAM={v.kfunc}"], attach=False)
    try:
        progstream.run_once(obj.progs.say.fd)
        got = progstream.read_stream(obj.progs.say.fd, progstream.BPF_STDOUT)
        if v.working:
            assert obj.data.ret == 0 and b"streamed 7" in got
        else:
            assert obj.data.ret < 0 and got == b""
        with pytest.raises(OSError):
            progstream.read_stream(obj.progs.say.fd, 99)
    finally:
        obj.destroy()


def test_streams_route_plumbing_reads_real_streams_and_closes(no_leaks, monkeypatch):
    """With the verdict taken as working (it is not here), an object compiled for
    streams gets the streams route: the reader reads each program's real stdout and
    stderr (empty on this kernel, where the kfunc fails), and destroy closes its fds
    and stops the reader."""
    kfunc = output._stream_kfunc()
    if kfunc is None:
        pytest.skip("this kernel has no BPF streams")
    monkeypatch.setattr(output, "_verdict", output.StreamsVerdict(True, "taken as working",
                                                                  kfunc))
    src = 'int ret = 1;\nSEC("syscall")\nint say(void *ctx)\n{\n    ret = bpf_printk("hi");\n' \
          '    return 0;\n}\n'
    obj = bpfnb.load(src, attach=False)  # cflags() now asks for the streams variant
    try:
        assert obj._output.route == "streams" and obj._output.tag is None
        assert [name for name, _ in obj._output.prog_fds] == ["say"]
        assert output.reader_thread() is not None
        progstream.run_once(obj.progs.say.fd)
        time.sleep(3 * output._POLL)
        df = obj.output()
        assert list(df.columns) == ["time", "program", "stream", "text"]
        want = [] if obj.data.ret < 0 else [("say", "stdout", "hi")]
        assert [tuple(r) for r in df[["program", "stream", "text"]].itertuples(index=False)] == want
    finally:
        obj.destroy()
    assert output.reader_thread() is None  # and no_leaks: no dup of a program fd is left


def test_parse_trace_pipe_lines():
    text = ("    my prog-x-12  [001] d..31  100.000001: bpf_trace_printk: bpfnb:abcdefgh hi\n"
            "  python3-7 (      7) [000] ..... 100.5: bpf_trace_printk: two\n"
            "second line of two\n"
            "\n"
            "   <...>-99 [003] 101.25: sched_switch: prev_comm=a\n"
            "continuation of another event\n")
    lines = tracepipe.parse(text)
    assert [(x.comm, x.pid, x.cpu, x.ts, x.msg) for x in lines] == [
        ("my prog-x", 12, 1, 100.000001, "bpfnb:abcdefgh hi"),
        ("python3", 7, 0, 100.5, "two\nsecond line of two")]


CELL = r"""%%bpf printer --set target_pid={os.getpid()}
const volatile u32 target_pid = 0;
u32 count = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != target_pid)
        return 0;
    u32 n = __sync_add_and_fetch(&count, 1);
    bpf_printk("cell pid %d n=%d", pid, n);
    return 0;
}
"""


@pytest.fixture
def shell(no_leaks):
    from IPython.core.interactiveshell import InteractiveShell
    from bpfnb.registry import registry
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "bpfnb")
    ip.run_cell("import os")
    yield ip
    registry.stop_all()
    ip.run_line_magic("unload_ext", "bpfnb")


def _views(outputs):
    """The printk views among captured outputs: display id -> its texts, in order."""
    views = {}
    for o in outputs:
        text = o.data.get("text/plain", "")
        if "bpf_printk lines" in text:
            views.setdefault(o.transient["display_id"], []).append((o.update, text))
    return views


def _wait_shown(cap, want, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        views = _views(cap.outputs)
        if views and list(views.values())[-1][-1][1].splitlines()[1:] == want:
            return
        time.sleep(0.05)


def test_magic_shows_the_lines_under_the_cell(shell):
    from IPython.utils.capture import capture_output
    pid = os.getpid()
    first_want = [f"cell pid {pid} n={k}" for k in range(1, 6)]
    second_want = [f"cell pid {pid} n={k}" for k in range(1, 4)]
    with capture_output() as cap:
        assert shell.run_cell(CELL).success, cap.stdout + cap.stderr
        getppid_n(5)
        _wait_shown(cap, first_want)
        assert shell.run_cell(CELL).success  # re-run: a new object, a new view
        getppid_n(3)
        _wait_shown(cap, second_want)
        shell.run_line_magic("bpf", "stop printer")
    first, second = _views(cap.outputs).values()
    # each view: one display, then updates of that same display in place
    for view in (first, second):
        assert not view[0][0] and all(update for update, _ in view[1:])
        assert "printer: bpf_printk lines appear here (trace_pipe" in view[0][1]
    assert first[-2][1].splitlines() == ["printer: 5 bpf_printk lines (see printer.output())",
                                         *first_want]
    assert first[-1][1].splitlines()[0].endswith("(printer stopped)")  # by the re-run
    assert first[-1][1].splitlines()[1:] == first_want
    assert second[-2][1].splitlines() == ["printer: 3 bpf_printk lines (see printer.output())",
                                          *second_want]
    assert second[-1][1].splitlines()[0].endswith("(printer stopped)")  # by %bpf stop
    assert output.reader_thread() is None
