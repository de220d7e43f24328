"""Record types of ring and perf buffers, found from the object (recordtypes.py, dwarf/).

The programs under tests/progs/ are written as real tools are: the event struct in a
header, reserved through a local pointer or built on the stack, CO-RE flavours
present. Each test starts processes or opens files itself and checks the decoded
columns against what it did.
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import bpfnb
from bpfnb import build, recordtypes
from bpfnb.summary import summarize

PROGS = Path(__file__).parent / "progs"
TRUE = "/bin/true"


def wait_for(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def run_true(n: int) -> list:
    """Start /bin/true n times; their pids."""
    pids = []
    for _ in range(n):
        p = subprocess.Popen([TRUE])
        p.wait()
        pids.append(p.pid)
    return pids


@pytest.fixture
def bootstrap(no_leaks):
    obj = bpfnb.load(PROGS / "bootstrap.bpf.c", rodata={"targ_ppid": os.getpid()})
    yield obj
    obj.destroy()


def check_bootstrap(obj, n=5):
    with obj.maps.rb.stream() as s:
        assert s.type == "struct event"
        pids = run_true(n)
        assert wait_for(lambda: len(s) >= 2 * n)
        df = s.to_df()
    assert list(df.columns) == ["pid", "ppid", "exit_code", "duration_ns", "comm",
                                "filename", "exit_event"]
    execs, exits = df[~df["exit_event"]], df[df["exit_event"]]
    assert execs["pid"].tolist() == pids and exits["pid"].tolist() == pids
    assert (df["ppid"] == os.getpid()).all()
    assert (df["comm"] == "true").all()
    assert (execs["filename"] == TRUE).all() and (exits["filename"] == "").all()
    assert (exits["exit_code"] == 0).all() and (exits["duration_ns"] > 0).all()
    return df


def test_bootstrap_reserved_through_a_local_pointer(bootstrap):
    check_bootstrap(bootstrap)
    rec = recordtypes.of(bootstrap)
    writes = rec.writes["rb"]
    assert [(w.program, w.helper, w.size, w.how) for w in writes] == [
        ("handle_exec", "bpf_ringbuf_reserve", 168, "reserved pointer"),
        ("handle_exit", "bpf_ringbuf_reserve", 168, "reserved pointer")]
    rows = {row[0]: row for row in summarize(bootstrap).maps}
    assert rows["rb"][3] == "struct event"


def test_a_type_only_dwarf_knows_works_by_name(bootstrap):
    assert "event" not in bootstrap.btf.struct_names()  # clang left it out of .BTF
    with bootstrap.maps.rb.stream("struct event") as s:
        assert s.type == "struct event"
        assert s.dtype.itemsize == 168
    with pytest.raises(ValueError, match="nor in its DWARF"):
        bootstrap.maps.rb.stream("struct nothing")


def test_execsnoop_perf_buffer_from_a_stack_variable(no_leaks):
    obj = bpfnb.load(PROGS / "execsnoop_perf.bpf.c", rodata={"targ_ppid": os.getpid()})
    try:
        with obj.maps.events.stream() as s:
            assert s.type == "struct event"
            pids = run_true(6)
            assert wait_for(lambda: len(s) >= 6)
            df = s.to_df()
        (write,) = recordtypes.of(obj).writes["events"]
        assert (write.helper, write.size, write.how) == ("bpf_perf_event_output", 32,
                                                          "stack variable")
    finally:
        obj.destroy()
    assert df["pid"].tolist() == pids
    assert (df["ppid"] == os.getpid()).all()
    assert (df["uid"] == os.getuid()).all() and (df["retval"] == 0).all()
    assert (df["comm"] == "true").all()


@pytest.fixture
def short_file():
    """A file whose path fits the 64-byte fname of opensnoop's event."""
    fd, path = tempfile.mkstemp(prefix="bpfnb-rec-", dir="/tmp")
    os.close(fd)
    yield Path(path)
    os.unlink(path)


def test_co_re_flavours_are_never_the_record_type(no_leaks, short_file):
    obj = bpfnb.load(PROGS / "opensnoop.bpf.c", rodata={"targ_pid": os.getpid()})
    target = short_file
    try:
        names = obj.btf.struct_names()
        assert "task_struct___o" in names and "event" not in names
        with obj.maps.events.stream() as s:
            assert s.type == "struct event"
            for _ in range(25):
                os.close(os.open(target, os.O_RDONLY | os.O_CLOEXEC))
            assert wait_for(lambda: len(s) >= 25)
            time.sleep(0.05)
            df = s.to_df()
    finally:
        obj.destroy()
    mine = df[df["fname"] == str(target)]
    assert len(mine) == 25
    assert mine["seq"].tolist() == sorted(mine["seq"].tolist())
    assert (mine["pid"] == os.getpid()).all() and (mine["ppid"] == os.getppid()).all()
    assert (mine["has_parent"] == 1).all() and (mine["exiting"] == 0).all()
    assert (mine["flags"] == os.O_RDONLY | os.O_CLOEXEC).all()
    with open("/proc/self/comm") as f:
        assert (mine["comm"] == f.read().strip()).all()


def test_two_record_types_in_one_buffer_are_listed_and_either_can_be_picked(no_leaks):
    obj = bpfnb.load(PROGS / "procs.bpf.c", rodata={"targ_ppid": os.getpid()})
    try:
        with pytest.raises(ValueError, match=r"2 record types: struct exec_event, "
                                             r"struct exit_event.*on_exec.*on_exit"):
            obj.maps.procs.stream()
        rows = {row[0]: row for row in summarize(obj).maps}
        assert rows["procs"][3] == "struct exec_event | struct exit_event"
        with obj.maps.procs.stream("struct exit_event") as s:
            pids = run_true(4)
            assert wait_for(lambda: len(s) >= 8)
            df = s.to_df()
    finally:
        obj.destroy()
    exits = df[df["raw"].isna()]
    assert exits["pid"].tolist() == pids
    assert (exits["comm"] == "true").all() and (exits["exit_code"] == 0).all()
    assert (exits["lifetime_ns"] > 0).all()
    assert all(len(raw) == 24 for raw in df["raw"].dropna())  # the exec records


def clang_plain(out: Path, source: Path, *extra) -> Path:
    """``source`` built as outside bpfnb: clang -g -O2 -target bpf, vmlinux.h on -I."""
    cmd = [build.find_clang(), "-g", "-O2", "-target", "bpf",
           f"-D__TARGET_ARCH_{build.target_arch()}", "-I", str(build.vmlinux_h().parent),
           *extra, "-c", str(source), "-o", str(out)]
    multi = build.multiarch_include()
    if multi:
        cmd[1:1] = ["-idirafter", multi]
    subprocess.run(cmd, check=True, capture_output=True)
    return out


def test_an_object_built_by_plain_clang_decodes_the_same(no_leaks, tmp_path):
    path = clang_plain(tmp_path / "bootstrap.o", PROGS / "bootstrap.bpf.c")
    obj = bpfnb.load(path, rodata={"targ_ppid": os.getpid()})
    try:
        check_bootstrap(obj)
    finally:
        obj.destroy()
    # and from bytes
    obj = bpfnb.load(path.read_bytes(), rodata={"targ_ppid": os.getpid()})
    try:
        check_bootstrap(obj, n=2)
    finally:
        obj.destroy()


def test_dwarf_4_objects_are_read_too(no_leaks, tmp_path):
    path = clang_plain(tmp_path / "execsnoop4.o", PROGS / "execsnoop_perf.bpf.c", "-gdwarf-4")
    obj = bpfnb.load(path, rodata={"targ_ppid": os.getpid()})
    try:
        with obj.maps.events.stream() as s:
            assert s.type == "struct event"
            pids = run_true(3)
            assert wait_for(lambda: len(s) >= 3)
            assert s.to_df()["pid"].tolist() == pids
    finally:
        obj.destroy()


def strip_dwarf(src: Path, out: Path) -> Path:
    """The object without DWARF, as libbpf-bootstrap's Makefile leaves it."""
    if shutil.which("bpftool") or os.path.exists("/usr/sbin/bpftool"):
        tool = shutil.which("bpftool") or "/usr/sbin/bpftool"
        subprocess.run([tool, "gen", "object", str(out), str(src)], check=True,
                       capture_output=True)
        return out
    for strip in ("llvm-strip", "llvm-strip-14", "llvm-strip-16", "llvm-strip-19"):
        if shutil.which(strip):
            subprocess.run([strip, "--strip-debug", "-o", str(out), str(src)], check=True)
            return out
    pytest.skip("neither bpftool nor llvm-strip is installed")


def test_without_dwarf_records_stay_bytes_and_the_error_says_why(no_leaks, tmp_path):
    built = clang_plain(tmp_path / "bootstrap.o", PROGS / "bootstrap.bpf.c")
    path = strip_dwarf(built, tmp_path / "bootstrap.linked.o")
    obj = bpfnb.load(path, rodata={"targ_ppid": os.getpid()})
    try:
        assert recordtypes.of(obj) is None
        assert "no DWARF debug info (built without -g)" in recordtypes.why_not(obj)
        with pytest.raises(ValueError, match=r"no DWARF debug info \(built without -g\)"):
            obj.maps.rb.stream("struct event")
        with obj.maps.rb.stream() as s:
            assert s.type is None
            run_true(2)
            assert wait_for(lambda: len(s) >= 4)
            raw = s.to_df()["raw"].tolist()
        assert all(len(r) == 168 for r in raw)
    finally:
        obj.destroy()


CELL = r"""
struct lseek_rec { u32 pid; u32 n; s64 offset; char comm[16]; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); } samples SEC(".maps");
const volatile u32 target_pid = 0;
u32 n = 0;

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
        return 0;
    struct lseek_rec *s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
    if (!s)
        return 0;
    s->pid = target_pid;
    s->n = __sync_fetch_and_add(&n, 1);
    s->offset = ctx->args[1];
    bpf_get_current_comm(s->comm, sizeof(s->comm));
    bpf_ringbuf_submit(s, 0);
    return 0;
}
"""


def test_a_cell_with_the_plain_libbpf_pattern(no_leaks):
    obj = bpfnb.load(CELL, rodata={"target_pid": os.getpid()})
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        with obj.maps.samples.stream() as s:
            assert s.type == "struct lseek_rec"
            for i in range(40):
                os.lseek(fd, i * 3, os.SEEK_SET)
            assert wait_for(lambda: len(s) >= 40)
            df = s.to_df()
    finally:
        os.close(fd)
        obj.destroy()
    assert df["n"].tolist() == list(range(40))
    assert df["offset"].tolist() == [i * 3 for i in range(40)]
    assert (df["pid"] == os.getpid()).all()


# libbpf-tools' execsnoop: the event lives in a map ("heap") and goes out with a size
# computed at run time
HEAP = r"""
struct big_event { u32 pid; u32 args_count; u32 args_size; char comm[16]; char args[7 * 128]; };
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024); __type(key, u32); __type(value, struct big_event); } execs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY); __uint(key_size, 4); __uint(value_size, 4); } events SEC(".maps");
static const struct big_event empty_event = {};

SEC("tracepoint/syscalls/sys_enter_execve")
int enter(struct trace_event_raw_sys_enter *ctx)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (bpf_map_update_elem(&execs, &pid, &empty_event, BPF_NOEXIST))
        return 0;
    struct big_event *e = bpf_map_lookup_elem(&execs, &pid);
    if (!e)
        return 0;
    e->pid = pid;
    bpf_get_current_comm(&e->comm, sizeof(e->comm));
    return 0;
}

SEC("tracepoint/syscalls/sys_exit_execve")
int leave(struct trace_event_raw_sys_exit *ctx)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    struct big_event *e = bpf_map_lookup_elem(&execs, &pid);
    if (!e)
        return 0;
    size_t len = sizeof(*e) - sizeof(e->args) + e->args_size;
    if (len <= sizeof(*e))
        bpf_perf_event_output(ctx, &events, BPF_F_CURRENT_CPU, e, len);
    bpf_map_delete_elem(&execs, &pid);
    return 0;
}
"""


def test_a_record_sent_from_a_map_value_with_a_run_time_size():
    from bpfnb.libbpf import BTF

    image = build.compile(HEAP).read_bytes()
    rec = recordtypes.Records(image, BTF.from_elf(image))
    (write,) = rec.writes["events"]
    assert (write.program, write.helper, write.size, write.how) == (
        "leave", "bpf_perf_event_output", None, "pointer")
    (rt,) = rec.types("events")
    btf, tid = rec.typed(rt.die)
    assert btf.c_name(tid) == "struct big_event" and btf.size(tid) == 28 + 7 * 128


# No variable holds the reservation: the type is found by its size among the cell's
# own structs (kernel types and CO-RE flavours of that size are not candidates); a
# typedef'd record keeps its typedef name.
BY_SIZE = r"""
struct pair { u64 a; u64 b; };                       /* 16 bytes, the cell's own */
struct list_head___x { void *next, *prev; } __attribute__((preserve_access_index));
struct pair *last_pair;           /* struct list_head (vmlinux.h) is 16 bytes too */
struct list_head *last_list;
typedef struct { u32 pid; u32 cpu; } sample_t;
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } anon SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } typed SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpid")
int go(void *ctx)
{
    if (bpf_core_field_exists(((struct list_head___x *)ctx)->next))
        bpf_ringbuf_submit(bpf_ringbuf_reserve(&anon, 16, 0), 0);
    sample_t *s = bpf_ringbuf_reserve(&typed, sizeof(*s), 0);
    if (s) {
        s->pid = bpf_get_current_pid_tgid() >> 32;
        s->cpu = bpf_get_smp_processor_id();
        bpf_ringbuf_submit(s, 0);
    }
    return 0;
}
"""


def test_without_a_variable_the_size_picks_among_the_programs_own_types():
    from bpfnb.libbpf import BTF

    image = build.compile(BY_SIZE).read_bytes()
    rec = recordtypes.Records(image, BTF.from_elf(image))
    (anon,) = rec.writes["anon"]
    assert (anon.how, anon.size, rec.c_name(anon.type)) == ("size", 16, "struct pair")
    (typed,) = rec.types("typed")
    assert typed.name == "sample_t" and typed.writes[0].how == "reserved pointer"
    btf, tid = rec.typed(typed.die)
    assert btf.c_name(tid) == "sample_t" and [f[0] for f in btf.fields(tid)] == ["pid", "cpu"]


# --- one type interface, two sources -------------------------------------------------

SHAPES = r"""
enum sign { NEG = -2, ZERO = 0, POS = 3 };
enum wide { SMALL = 1, HUGE = 0x1234567890ULL };
typedef unsigned int flags_t;
struct inner { short a; unsigned char tag[3]; };
union either { u64 word; struct inner in; double d; };
struct shapes {
    char name[12];
    unsigned char bytes[4];
    signed char sc;
    bool ok;
    int m[2][3];
    struct inner pairs[2];
    enum sign s;
    enum wide w;
    flags_t f;
    unsigned int lo : 3, mid : 9;
    int neg : 5;
    u64 spread : 40;
    union { u32 as_u32; float as_f32; };
    struct { u16 x, y; } pos;
    const volatile u64 cv;
    union either e;
    int (*fn)(int, void *);
    struct task_struct *task;
    float fl;
    u32 tail[];
};
struct shapes shapes_global;  /* so that clang's .BTF has it too */

SEC("tracepoint/syscalls/sys_enter_getpid")
int noop(void *ctx) { return shapes_global.m[1][2]; }
"""


def test_dwarf_types_read_like_the_btf_of_the_same_struct():
    import numpy as np
    from bpfnb.dwarf import Dwarf
    from bpfnb.dwarf import DwarfTypes
    from bpfnb.libbpf import BTF

    image = build.compile(SHAPES).read_bytes()
    btf = BTF.from_elf(image)
    alone = DwarfTypes(Dwarf.from_elf(image), None)  # no base: all of it from DWARF
    ours, theirs = alone.find("struct shapes"), btf.find("struct shapes")
    dbtf = alone.btf
    assert dbtf.c_decl(ours) == btf.c_decl(theirs)
    # clang 14 writes enums unsigned into .BTF; DWARF knows `enum sign` is signed
    mine, clangs = dbtf.dtype(ours), btf.dtype(theirs)
    assert mine.fields["s"][0] == np.dtype("<i4") and mine.itemsize == clangs.itemsize
    assert {n: f for n, f in mine.fields.items() if n != "s"} == \
        {n: f for n, f in clangs.fields.items() if n != "s"}
    assert [f[::2] for f in dbtf.fields(ours)] == [f[::2] for f in btf.fields(theirs)]
    assert [f[3] for f in dbtf.fields(ours)] == [f[3] for f in btf.fields(theirs)]
    assert dbtf.bitfields(ours) == btf.bitfields(theirs)
    rng = np.random.default_rng(7)
    for _ in range(20):
        raw = rng.integers(0, 256, btf.size(theirs), dtype=np.uint8).tobytes()
        a, b = dbtf.decode(ours, raw)._asdict(), btf.decode(theirs, raw)._asdict()
        assert int(a.pop("s")) & 0xFFFFFFFF == int(b.pop("s"))
        assert a == b
    # and the 64-bit enum keeps its values (clang 14's .BTF cuts them to 32 bits)
    raw = dbtf.encode(ours, {"s": "NEG", "w": "HUGE", "neg": -3})
    assert raw[64:72] == (0x1234567890).to_bytes(8, "little")
    e = dbtf.decode(ours, raw)
    assert (e.s, e.w, e.neg, int(e.s)) == ("NEG", "HUGE", -3, -2)


def test_split_over_the_object_btf_keeps_its_ids():
    from bpfnb.dwarf import Dwarf
    from bpfnb.dwarf import DwarfTypes
    from bpfnb.libbpf import BTF

    image = build.compile(PROGS / "bootstrap.bpf.c").read_bytes()
    base = BTF.from_elf(image)
    types = DwarfTypes(Dwarf.from_elf(image), base)
    tid = types.find("struct event")
    split = types.btf
    assert tid >= len(base)  # new: clang left it out of .BTF
    assert types.find("pid_t") < len(base)  # reused from the base
    for t in base.types():
        assert split.c_name(t.id) == base.c_name(t.id)
    assert split.c_name(split.fields(tid)[0][1]) == "int"


def test_malformed_dwarf_is_an_error_never_a_crash():
    import numpy as np
    from bpfnb.dwarf import Elf
    from bpfnb.libbpf import BTF

    image = build.compile(PROGS / "execsnoop_perf.bpf.c").read_bytes()
    base = BTF.from_elf(image)
    h = Elf(image).headers[Elf(image).by_name[".debug_info"]]
    rng = np.random.default_rng(1)
    for i in range(150):
        bad = bytearray(image)
        for pos in rng.integers(h[4], h[4] + min(h[5], 4096), 1 + i % 8):
            bad[pos] = int(rng.integers(0, 256))
        if i % 10 == 9:
            bad = bad[:h[4] + int(rng.integers(0, h[5]))]
        try:
            rec = recordtypes.Records(bytes(bad), base)
            for name in rec.writes:
                for rt in rec.types(name):
                    btf, tid = rec.typed(rt.die)
                    btf.dtype(tid)
        except ValueError:  # DwarfError, or a layout BTF refuses: a message, not a crash
            pass


def test_a_tool_calling_kfuncs_from_vmlinux_h_with_uapi_typedefs(no_leaks):
    # Two bugs of real programs (libbpf-bootstrap's bootstrap, sockfilter): a kfunc
    # that only vmlinux.h declares must compile and load; libbpf's "dummy_ksym"
    # string must not shift the names of DWARF types; __be32 over the BTF's __u32
    # is a complete type; clang's second printk format (on_getppid.____fmt.1) is not
    # listed.
    import socket
    obj = bpfnb.load(PROGS / "kfuncsnoop.bpf.c", rodata={"targ_tgid": os.getpid()})
    try:
        with obj.maps.events.stream() as s:
            assert s.type == "struct event"
            for _ in range(4):
                os.getppid()
            assert wait_for(lambda: len(s) >= 4)
            df = s.to_df()
        names = [row[1] for row in summarize(obj).globals]
        for fmt in ("on_getppid.____fmt", "on_getppid.____fmt.1"):
            assert "kfuncsnoop: " in getattr(obj.rodata, fmt)
        assert names == ["targ_tgid"]  # the printk formats are internal
    finally:
        obj.destroy()
    assert list(df.columns) == ["pid", "seq", "addr", "port", "comm"]
    assert df["seq"].tolist() == [1, 2, 3, 4]
    assert (df["pid"] == os.getpid()).all()
    assert (df["addr"] == int.from_bytes(socket.inet_aton("127.0.0.1"), "little")).all()
    assert (df["port"] == int.from_bytes((8080).to_bytes(2, "big"), "little")).all()
    assert (df["comm"] == Path("/proc/self/comm").read_text().strip()).all()
