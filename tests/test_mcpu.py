"""bpfnb.load builds again with the other -mcpu only when a rejection is the -mcpu's."""

import os
import threading
import time

import pytest

import bpfnb
from bpfnb import build, mcpu
from bpfnb.libbpf import VerifierError
from bpfnb.summary import summarize

PROGRAM = os.path.join(os.path.dirname(__file__), "progs", "argpack.bpf.c")
FUNCSTACK = os.path.join(os.path.dirname(__file__), "progs", "funcstack.bpf.c")
WRITEHIST = os.path.join(os.path.dirname(__file__), "progs", "writehist.bpf.c")
TASK_COMM_LEN = 16

# Rejected at any -mcpu, for its own bug: a map value used before its NULL check.
UNCHECKED_LOOKUP = """
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int count_openat(void *ctx)
{
	__u32 key = bpf_get_current_pid_tgid() >> 32;
	__u64 *n = bpf_map_lookup_elem(&counts, &key);

	*n += 1;
	return 0;
}
"""

# Rejected at any -mcpu, for its own bug: an index nothing bounds.
UNBOUNDED_INDEX = """
__u64 slots[16] = {};

SEC("tracepoint/syscalls/sys_enter_openat")
int count_openat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 slot = ctx->args[2];

	slots[slot] += 1;
	return 0;
}
"""


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "the events did not arrive in time"
        time.sleep(0.02)


def ours_of(df, path):
    return df[[bytes(a).startswith(path.encode() + b"\0") for a in df["args"]]]


def test_v2_rejection_for_lost_bounds_loads_rebuilt_at_v3(no_leaks, tmp_path):
    path = str(tmp_path / "argpack-target")
    with open(path, "w"):
        pass
    with bpfnb.load(PROGRAM, cflags=["-mcpu=v2"], rodata={"targ_pid": os.getpid()}) as obj:
        assert len(obj.notes) == 1
        note = obj.notes[0]
        assert note.startswith("rebuilt with -mcpu=v3: at -mcpu=v2 the verifier lost the "
                               "bounds of R1 at insn ")
        assert "(R1 unbounded memory access)" in note and "<<= 32" in note
        assert note in summarize(obj).headline()
        with obj.maps.events.stream() as s:
            for _ in range(25):
                os.close(os.open(path, os.O_RDONLY))
            # other threads of this process open files too: wait for ours
            wait_for(lambda: len(ours_of(s.to_df(), path)) >= 25)
            ours = ours_of(s.to_df(), path)
    assert len(ours) == 25
    with open("/proc/self/comm", "rb") as f:
        comm = f.read().strip()
    start = len(path) + 1
    assert (ours["args_size"] == start + TASK_COMM_LEN).all()
    for args in ours["args"]:  # the comm was packed right after the file name
        assert bytes(args)[start:start + TASK_COMM_LEN].rstrip(b"\0") == comm
    assert (ours["pid"] == os.getpid()).all() and (ours["ppid"] == os.getppid()).all()


def test_v3_rejection_for_a_checked_copy_loads_rebuilt_at_v2(no_leaks, tmp_path):
    path = str(tmp_path / "funcstack-target")
    with open(path, "w"):
        pass
    tid = threading.get_native_id()
    # the default, v3; exit attached first, so no enter is left without its exit
    with bpfnb.load(FUNCSTACK, rodata={"targ_tid": tid}, attach=False) as obj:
        obj.progs.exit_openat.attach()
        obj.progs.enter_openat.attach()
        assert len(obj.notes) == 1
        note = obj.notes[0]
        assert note.startswith("rebuilt with -mcpu=v2: at -mcpu=v3 the verifier lost the "
                               "bounds of R3 at insn ")
        assert "with alu32, clang checked a 32-bit copy" in note and "&= 255" in note
        assert note in summarize(obj).headline()
        for _ in range(40):
            os.close(os.open(path, os.O_RDONLY))
        assert obj.bss.pushes == 40 and obj.bss.pops == 40
        assert obj.bss.nested == 0  # each open returned before the next
        assert obj.bss.parent == os.getppid()
    with bpfnb.load(FUNCSTACK, attach=False) as again:  # remembered: built at v2 at once
        assert again.notes == [note]


def test_v3_rejection_for_a_half_checked_index_loads_rebuilt_at_v2(no_leaks):
    sizes = {100: 3, 450: 5, 10000: 2}  # slots 0, 2 and the last (50 clamped to 25)
    with bpfnb.load(WRITEHIST, rodata={"targ_tid": threading.get_native_id()}) as obj:
        assert len(obj.notes) == 1
        note = obj.notes[0]
        assert note.startswith("rebuilt with -mcpu=v2: at -mcpu=v3 the verifier lost the "
                               "bounds at insn ")
        assert "bounds-checked only the low 32 bits" in note and "/= 200" in note
        fd = os.open(os.devnull, os.O_WRONLY)
        try:
            for size, times in sizes.items():
                for _ in range(times):
                    os.write(fd, b"x" * size)
        finally:
            os.close(fd)
        slots = list(obj.bss.syswide["slots"])
        assert obj.bss.parent == os.getppid()
        df = obj.maps.hists.to_df()
    expected = [0] * 26
    expected[0], expected[2], expected[25] = 3, 5, 2
    assert slots == expected
    with open("/proc/self/comm") as f:
        assert df["comm"].tolist() == [f.read().strip()]


def test_the_default_build_loads_as_it_is(no_leaks):
    assert mcpu.of() == build.DEFAULT_MCPU == mcpu.ALU32
    with bpfnb.load(PROGRAM, attach=False) as obj:
        assert obj.notes == []
        assert "rebuilt" not in summarize(obj).headline()


def test_an_object_file_is_not_rebuilt_and_the_rule_needs_no_alu32(no_leaks):
    compiled = build.compile(PROGRAM, cflags=["-mcpu=v2"])
    with pytest.raises(VerifierError) as info:
        bpfnb.load(compiled, attach=False)
    log = info.value.verifier_log
    assert "R1 unbounded memory access" in log
    assert "rebuilt" not in info.value.hint
    assert mcpu.rule(log, "v2").startswith("at -mcpu=v2 the verifier lost the bounds of R1")
    assert mcpu.rule(log, "v1") is not None
    assert mcpu.rule(log, "v3") is None and mcpu.rule(log, "v4") is None
    compiled = build.compile(FUNCSTACK)
    with pytest.raises(VerifierError) as info:
        bpfnb.load(compiled, attach=False)
    log = info.value.verifier_log
    assert mcpu.rule(log, "v3").startswith("at -mcpu=v3 the verifier lost the bounds of R3")
    assert mcpu.rule(log, "v4") is not None and mcpu.rule(log, "v2") is None
    with pytest.raises(VerifierError) as info:
        bpfnb.load(build.compile(WRITEHIST), attach=False)
    log = info.value.verifier_log
    assert "math between map_value pointer and register with unbounded min" in log
    assert "low 32 bits" in mcpu.rule(log, "v3") and mcpu.rule(log, "v2") is None


@pytest.mark.parametrize("level", ["v2", "v3"])
def test_a_rejection_of_the_programs_own_is_not_rebuilt(no_leaks, level):
    for source, words in ((UNCHECKED_LOOKUP, "invalid mem access 'map_value_or_null'"),
                          (UNBOUNDED_INDEX, "R2 unbounded memory access")):
        with pytest.raises(VerifierError) as info:
            bpfnb.load(source, cflags=[f"-mcpu={level}"], attach=False)
        assert words in info.value.verifier_log
        assert mcpu.rule(info.value.verifier_log, level) is None
        assert "rebuilt" not in info.value.hint


def test_the_last_mcpu_given_is_the_build_s():
    assert mcpu.of(["-mcpu=v2"]) == "v2"
    assert mcpu.of(["-mcpu=v2", "-O2", "-mcpu=v1"]) == "v1"


def test_a_cell_rejected_at_v3_is_rebuilt_by_the_magic_too(no_leaks, tmp_path):
    from IPython.core.interactiveshell import InteractiveShell
    ip = InteractiveShell.instance()  # the one the other magic tests use
    ip.run_line_magic("load_ext", "bpfnb")
    path = str(tmp_path / "funcstack-cell")
    with open(path, "w"):
        pass
    tid = threading.get_native_id()
    try:
        # the cell is the program itself; its #include keeps the cell short
        ip.run_cell_magic("bpf", f"fs --no-attach -q --set targ_tid={tid}",
                          f'#include "{os.path.abspath(FUNCSTACK)}"\n')
        fs = ip.user_ns["fs"]
        fs.progs.exit_openat.attach()
        fs.progs.enter_openat.attach()
        for _ in range(40):
            os.close(os.open(path, os.O_RDONLY))
        assert fs.bss.pushes == 40 and fs.bss.pops == 40
    finally:
        ip.run_line_magic("bpf", "stop --all -q")
        ip.run_line_magic("unload_ext", "bpfnb")
