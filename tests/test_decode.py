"""Decoded columns against the real kernel: the test connects, opens, signals, execs
and stats, and the DataFrames must name exactly what it did.

tests/progs/semantic.bpf.c declares its fields with bpfnb.h's semantic types;
tcpconnect.bpf.c and execsnoop.bpf.c are libbpf-tools programs without them, decoded
by column with ``decode=``; taskfiles.bpf.c is an iterator over the test's own files.
"""

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import bpfnb
from bpfnb import build
from bpfnb.decode import cgroup2_mount
from bpfnb.registry import registry
from bpfnb.summary import summarize

PROGS = Path(__file__).parent / "progs"
MISSING = "/nonexistent-bpfnb-test/file"


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the events did not arrive in time"
        time.sleep(0.02)


@pytest.fixture
def semantic(no_leaks):
    obj = bpfnb.load(PROGS / "semantic.bpf.c",
                     rodata={"target_tgid": os.getpid(),
                             "target_tid": threading.get_native_id()})
    stream = obj.maps.events.stream()
    yield obj, stream
    stream.close()
    obj.destroy()


def rows(stream, hook, until):
    """The stream's rows of ``hook`` once ``until(rows)`` holds."""
    def get():
        df = stream.to_df()
        return df[df["hook"] == hook].reset_index(drop=True)
    wait_for(lambda: until(get()))
    return get()


def listening(family, host):
    srv = socket.socket(family, socket.SOCK_STREAM)
    srv.bind((host, 0))
    srv.listen()
    return srv


# --- bpfnb.h's semantic types -----------------------------------------------------------

def test_connect_addresses_and_ports_by_typedef(semantic):
    obj, stream = semantic
    with listening(socket.AF_INET, "127.0.0.1") as srv4, \
            listening(socket.AF_INET6, "::1") as srv6:
        port4, port6 = srv4.getsockname()[1], srv6.getsockname()[1]
        for family, addr in ((socket.AF_INET, ("127.0.0.1", port4)),
                             (socket.AF_INET6, ("::1", port6))):
            with socket.socket(family, socket.SOCK_STREAM) as c:
                c.connect(addr)
        df = rows(stream, "HOOK_CONNECT", lambda d: len(d) >= 2)
    assert len(df) == 2
    v4, v6 = df.iloc[0], df.iloc[1]
    assert (v4["family"], v4["daddr"], v4["dport"]) == (socket.AF_INET, "127.0.0.1", port4)
    assert v4["daddr_raw"] == int.from_bytes(socket.inet_aton("127.0.0.1"), "little")
    assert v4["dport_raw"] == int.from_bytes(port4.to_bytes(2, "big"), "little")
    assert (v6["family"], v6["daddr6"], v6["dport"]) == (socket.AF_INET6, "::1", port6)
    assert list(v6["daddr6_raw"]) == list(socket.inet_pton(socket.AF_INET6, "::1"))
    # the record's columns in place, then the raw twins in the same order
    assert list(df.columns) == ["ts", "cgroup", "ret", "pid", "hook", "sig", "family",
                                "dport", "daddr", "daddr6", "ts_raw", "cgroup_raw",
                                "ret_raw", "sig_raw", "dport_raw", "daddr_raw",
                                "daddr6_raw"]


def test_openat_return_values_as_errno_names(semantic):
    obj, stream = semantic
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            os.open(MISSING, os.O_RDONLY)
    fd = os.open("/etc/hostname", os.O_RDONLY)
    os.close(fd)
    df = rows(stream, "HOOK_OPENAT", lambda d: (d["ret_raw"] == fd).any())
    last = df.tail(4)
    assert last["ret"].tolist() == ["ENOENT", "ENOENT", "ENOENT", str(fd)]
    assert last["ret_raw"].tolist() == [-2, -2, -2, fd]


def test_signal_names(semantic):
    obj, stream = semantic
    child = subprocess.Popen(["sleep", "30"])
    try:
        os.kill(child.pid, signal.SIGUSR1)
    finally:
        child.wait()
    df = rows(stream, "HOOK_SIGNAL", lambda d: len(d) >= 1)
    assert df[["pid", "sig", "sig_raw"]].values.tolist() == [[child.pid, "SIGUSR1",
                                                             signal.SIGUSR1]]


def test_ktime_is_wall_clock_time(semantic):
    obj, stream = semantic
    with pytest.raises(FileNotFoundError):
        os.open(MISSING, os.O_RDONLY)
    now = pd.Timestamp.now(tz="UTC").tz_localize(None)
    df = rows(stream, "HOOK_OPENAT", lambda d: (d["ret"] == "ENOENT").any())
    ts = df[df["ret"] == "ENOENT"]["ts"].iloc[-1]
    assert df["ts"].dtype == "datetime64[ns]"
    assert abs((ts - now).total_seconds()) < 1.0
    assert df["ts_raw"].dtype.kind == "u"


def test_syscall_numbers_by_name(semantic):
    obj, _ = semantic
    before = obj.maps.syscalls.to_df().set_index("key")["value"]
    for _ in range(5):
        os.getpid()
    for _ in range(7):
        os.getppid()
    for _ in range(3):
        with pytest.raises(FileNotFoundError):
            os.open(MISSING, os.O_RDONLY)
    df = obj.maps.syscalls.to_df()
    after = df.set_index("key")["value"]
    made = after.sub(before, fill_value=0)
    assert (made["getpid"], made["getppid"]) == (5, 7)
    assert made["openat"] >= 3  # and whatever else opens files meanwhile
    raw = dict(zip(df["key"], df["key_raw"]))
    assert (raw["getpid"], raw["getppid"], raw["openat"]) == (39, 110, 257)  # x86-64


def _v2_cgroup_of_self() -> str:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError("no cgroup v2 line in /proc/self/cgroup")


def test_cgroup_ids_as_paths(semantic):
    """The test moves itself into a cgroup of its own and back, failing an openat in
    each: the events name both cgroups as /proc/self/cgroup does."""
    obj, stream = semantic
    mount = cgroup2_mount()
    if mount is None:
        pytest.skip("no cgroup2 hierarchy mounted")
    pid = str(os.getpid())
    start = _v2_cgroup_of_self()
    home = Path(mount) / start.lstrip("/")
    child = Path(mount) / f"bpfnb-test-{pid}"
    child.mkdir()
    moved = False
    try:
        child_id = child.stat().st_ino
        (child / "cgroup.procs").write_text(pid)
        moved = True
        inside = _v2_cgroup_of_self()
        with pytest.raises(FileNotFoundError):
            os.open(MISSING, os.O_RDONLY)
        (home / "cgroup.procs").write_text(pid)
        moved = False
        with pytest.raises(FileNotFoundError):
            os.open(MISSING, os.O_RDONLY)
        df = rows(stream, "HOOK_OPENAT", lambda d: (d["ret"] == "ENOENT").sum() >= 2)
    finally:
        if moved:
            (home / "cgroup.procs").write_text(pid)
        child.rmdir()
    assert inside == f"/{child.name}"
    failed = df[df["ret"] == "ENOENT"].tail(2)
    assert failed["cgroup"].tolist() == [inside, start]
    assert failed["cgroup_raw"].tolist() == [child_id, home.stat().st_ino]


# --- iterators: devices and kernel symbols --------------------------------------------------

def test_devices_and_kernel_functions_of_open_files(no_leaks, tmp_path):
    path = tmp_path / "f"
    path.write_text("x")
    kallsyms = {}
    for line in Path("/proc/kallsyms").read_text().splitlines():
        addr, _, name = line.split()[:3]
        kallsyms.setdefault(name, int(addr, 16))
    with open(path) as f, bpfnb.load(PROGS / "taskfiles.bpf.c", attach=False,
                                     rodata={"target_tgid": os.getpid()}) as obj:
        efd = os.eventfd(0)
        try:
            obj.progs.dump_files.read()
            df = obj.maps.files.to_df().set_index("key")
            stats = {fd: os.fstat(fd) for fd in (f.fileno(), efd)}
        finally:
            os.close(efd)
        for fd, st in stats.items():
            assert df.loc[fd, "dev"] == f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
            assert df.loc[fd, "ino"] == st.st_ino
        assert df.loc[efd, "read_iter"] == "eventfd_read"
        assert df.loc[efd, "read_iter_raw"] == kallsyms["eventfd_read"]
        name = df.loc[f.fileno(), "read_iter"]
        assert kallsyms[name] == df.loc[f.fileno(), "read_iter_raw"]


# --- real tools, decoded by column ------------------------------------------------------------

def test_tcpconnect_flows_decoded_by_column(no_leaks):
    with bpfnb.load(PROGS / "tcpconnect.bpf.c", rodata={"filter_pid": os.getpid()}) as obj, \
            listening(socket.AF_INET, "127.0.0.1") as srv4, \
            listening(socket.AF_INET6, "::1") as srv6:
        port4, port6 = srv4.getsockname()[1], srv6.getsockname()[1]
        for _ in range(3):
            socket.create_connection(("127.0.0.1", port4)).close()
        for _ in range(2):
            socket.create_connection(("::1", port6)).close()
        plain = obj.maps.ipv4_count.to_df()
        v4 = obj.maps.ipv4_count.to_df(decode={"saddr": "ipv4", "daddr": "ipv4",
                                               "dport": "port"})
        v6 = obj.maps.ipv6_count.to_df(decode={"saddr": "ipv6", "daddr": "ipv6",
                                               "dport": "port"})
    assert list(plain.columns) == ["saddr", "daddr", "dport", "value"]
    assert list(v4.columns) == ["saddr", "daddr", "dport", "value", "saddr_raw",
                                "daddr_raw", "dport_raw"]
    assert v4[["saddr", "daddr", "dport", "value"]].values.tolist() == [
        ["127.0.0.1", "127.0.0.1", port4, 3]]
    assert v4["dport_raw"].tolist() == plain["dport"].tolist()
    assert v6[["saddr", "daddr", "dport", "value"]].values.tolist() == [
        ["::1", "::1", port6, 2]]


def test_execsnoop_args_are_the_argv_lists(no_leaks):
    argv = ["/bin/true", "one", "two words", "", "x" * 100]
    with bpfnb.load(PROGS / "execsnoop.bpf.c", rodata={"targ_ppid": os.getpid()}) as obj, \
            obj.maps.events.stream("struct event", decode={"retval": "errno"}) as s:
        subprocess.run(argv, check=True)
        with pytest.raises(FileNotFoundError):
            subprocess.run([MISSING, "a"])
        wait_for(lambda: len(s) >= 2)
        df = s.to_df()
        as_bytes = s.to_df(decode={"args": "bytes"})["args"].tolist()
        as_strings = s.to_df(decode={"args": "strings"})["args"].tolist()
    # args holds the file name, then argv[1:]
    assert df["args"].tolist() == [argv, [MISSING, "a"]]
    assert as_strings == df["args"].tolist()
    assert df["retval"].tolist() == ["0", "ENOENT"]
    assert df["retval_raw"].tolist() == [0, -2]
    assert df["comm"].tolist()[0] == "true"  # an ordinary char[16] stays a str
    assert as_bytes == [b"".join(a.encode() + b"\0" for a in argv), f"{MISSING}\0a\0".encode()]
    assert df["args_size"].tolist() == [len(b) for b in as_bytes]


def test_char_array_rules(no_leaks):
    """A length sibling bounds the strings, a count sibling numbers them, a char array
    alone is one string unless asked; a cut-off last string still counts."""
    data = b"one\0two\0\0four"  # an empty string, and no NUL after the last one
    fd = os.open("/dev/null", os.O_WRONLY)
    try:
        with bpfnb.load(PROGS / "writes.bpf.c", rodata={"target_tgid": os.getpid()}) as obj:
            os.pwrite(fd, data, 2)        # the offset is the count of strings
            os.pwrite(fd, b"x" * 80, 0)   # longer than the array: cut at 64 bytes
            m = obj.maps.writes
            df = m.to_df()
            asked = m.to_df(decode={"plain": "strings", "data": "bytes"})
            plain_bytes = m.to_df(decode={"plain": "bytes"})["plain"].tolist()
    finally:
        os.close(fd)
    assert df["data"].tolist() == [["one", "two", "", "four"], ["x" * 64]]
    assert df["data_len"].tolist() == [len(data), 64]
    assert df["words"].tolist() == [["one", "two"], []]
    assert df["plain"].tolist() == ["one", "x" * 64]
    assert asked["plain"].tolist() == [["one", "two", "", "four"], ["x" * 64]]
    assert asked["data"].tolist() == [data, b"x" * 64]
    assert plain_bytes == [data + b"\0", b"x" * 64]
    assert "data_raw" not in asked.columns  # "bytes" is the raw form


def test_decode_mistakes_fail_in_one_line(no_leaks):
    with bpfnb.load(PROGS / "tcpconnect.bpf.c") as obj:
        m = obj.maps.ipv4_count
        with pytest.raises(ValueError) as e:
            m.to_df(decode={"daddr": "ipv5"})
        assert "\n" not in str(e.value)
        assert "'ipv5'" in str(e.value) and "ipv4, ipv6, port, errno" in str(e.value)
        with pytest.raises(ValueError) as e:
            m.to_df(decode={"dst": "ipv4"})
        assert "'dst'" in str(e.value) and "saddr, daddr, dport, value" in str(e.value)
        with pytest.raises(TypeError, match="16 bytes per row, not 4"):
            m.to_df(decode={"daddr": "ipv6"})
        with pytest.raises(ValueError, match="no column 'dst'"):
            obj.maps.ipv4_count.to_df(decode={"dst": "ipv4"})
    with bpfnb.load(PROGS / "execsnoop.bpf.c") as obj:
        with pytest.raises(ValueError, match="no column 'ret'.*retval"):
            obj.maps.events.stream("struct event", decode={"ret": "errno"})


# --- names -----------------------------------------------------------------------------------

def test_objects_are_named_after_their_file(tmp_path, need_root):
    for src in sorted(PROGS.glob("*.bpf.c")):
        with bpfnb.open(src) as obj:
            assert obj.name == src.name.removesuffix(".bpf.c")
    shutil.copy(build.compile(PROGS / "tcpconnect.bpf.c"), tmp_path / "flows.bpf.o")
    shutil.copy(build.compile(PROGS / "tcpconnect.bpf.c"), tmp_path / "plain.o")
    with bpfnb.open(tmp_path / "flows.bpf.o") as a, bpfnb.open(str(tmp_path / "plain.o")) as b:
        assert (a.name, b.name) == ("flows", "plain")
    with bpfnb.open("u64 x;\n") as c:
        assert c.name == "cell"


def test_internal_names_are_never_listed(semantic):
    obj, stream = semantic
    # semantic.bpf.c counts lost records (bpfnb_lost) and has a bpf_printk (____fmt)
    assert "bpfnb_lost" in obj.bss and obj.bss.bpfnb_lost == 0 and stream.lost == 0
    text = repr(summarize(obj)) + summarize(obj)._repr_html_()
    for internal in ("bpfnb_lost", "____fmt", "__u32", "__u64"):
        assert internal not in text
    assert "target_tgid" in text and "syscall" in text
    for g in obj.globals.values():
        assert not [n for n in dir(g) if "bpfnb_" in n or "____" in n]
        assert "bpfnb_lost" not in repr(g) and "____fmt" not in repr(g)


SHOW_CELL = """%%bpf shown
BPFNB_HIST_KEYED(lat, u32, 64);
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } rb SEC(".maps");
struct rec { u32 pid; };
u64 calls = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    struct rec *r = bpfnb_ringbuf_reserve(&rb, struct rec);
    calls++;
    bpfnb_hist_log2_keyed(&lat, 1, calls);
    if (!r)
        return 0;
    r->pid = bpf_get_current_pid_tgid() >> 32;
    bpf_printk("getppid %d", r->pid);
    bpf_ringbuf_submit(r, 0);
    return 0;
}
"""


def test_bpf_show_and_the_cell_summary_hide_internals(no_leaks):
    ip = InteractiveShell.instance()
    ip.run_line_magic("load_ext", "bpfnb")
    try:
        with capture_output() as cell:
            assert ip.run_cell(SHOW_CELL).success
        with capture_output() as show:
            ip.run_line_magic("bpf", "show shown")
    finally:
        registry.stop_all()
        ip.run_line_magic("unload_ext", "bpfnb")
    summary = cell.outputs[0].data["text/plain"]
    assert "{u32 key, slot}" in summary and "histogram count" in summary
    shown = cell.stdout + "".join(o.data.get("text/plain", "") for o in
                                  cell.outputs + show.outputs)
    assert "calls" in shown
    for internal in ("bpfnb_lost", "____fmt", "bpfnb_hist_key__", "__u32"):
        assert internal not in shown
