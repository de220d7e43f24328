"""%%bpf and %bpf through a real IPython InteractiveShell, against the real kernel."""

import os
import threading
import time

import pytest
from IPython.utils.capture import capture_output

from bpfnb.libbpf import kernel_ids, teardown
from bpfnb.magics import BPFCellError
from bpfnb.registry import Registry, registry

COUNTER = r"""%%bpf {name} --set target_pid={{os.getpid()}}
const volatile u32 target_pid = 0;
u64 total = 0;

struct {{
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 64);
    __type(key, u32);
    __type(value, u64);
}} counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx)
{{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != target_pid)
        return 0;
    __sync_fetch_and_add(&total, 1);
    u64 one = 1, *v = bpf_map_lookup_elem(&counts, &pid);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&counts, &pid, &one, BPF_ANY);
    return 0;
}}
"""

# Line 4 of the cell as Jupyter numbers it (the %%bpf line is line 1).
COMPILE_ERROR = """%%bpf counter
u64 total = 0;

int broken = ;
"""

# The verifier rejects the NULL dereference on line 6 of the cell.
VERIFIER_ERROR = """%%bpf counter
SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx)
{
    u64 *p = 0;
    return *p;
}
"""


def open_n(n):
    for _ in range(n):
        os.close(os.open("/etc/hostname", os.O_RDONLY))


@pytest.fixture
def ip(shell, no_leaks):
    yield shell
    registry.stop_all()


def run(ip, text):
    """Run a cell; (result, captured stdout and stderr, rich outputs)."""
    with capture_output() as cap:
        result = ip.run_cell(text)
    return result, cap.stdout + cap.stderr, cap.outputs


def run_ok(ip, text):
    result, out, outputs = run(ip, text)
    assert result.success, out
    return out, outputs


def test_define_binds_attaches_and_counts(ip):
    out, outputs = run_ok(ip, COUNTER.format(name="counter"))
    obj = ip.user_ns["counter"]
    assert registry.get("counter") is obj
    assert obj.rodata.target_pid == os.getpid()  # {os.getpid()} was expanded
    assert obj.progs.on_open.id in kernel_ids()
    open_n(100)
    assert obj.bss.total == 100
    assert obj.maps.counts[os.getpid()] == 100
    # the summary: program and hook, map and its types, globals
    text = outputs[0].data["text/plain"]
    html = outputs[0].data["text/html"]
    for needle in ("on_open", "tracepoint/syscalls/sys_enter_openat", "attached",
                   "counts", "hash", "u32", "u64", "64", "target_pid", str(os.getpid())):
        assert needle in text and needle in html


def test_rerun_replaces_the_old_object(ip):
    run_ok(ip, COUNTER.format(name="counter"))
    old = ip.user_ns["counter"]
    old_id = old.progs.on_open.id
    run_ok(ip, COUNTER.format(name="counter").replace("u64 total = 0;", "u64 total = 7;"))
    new = ip.user_ns["counter"]
    assert new is not old and old.state == "destroyed"
    assert teardown.wait(10)  # a re-run lets the kernel free the old programs meanwhile
    ids = kernel_ids()
    assert old_id not in ids and new.progs.on_open.id in ids
    assert registry.names() == ["counter"]
    open_n(10)
    assert new.data.total == 17  # initialised globals live in .data


@pytest.mark.parametrize("broken, line, kind", [(COMPILE_ERROR, 4, "does not compile"),
                                                 (VERIFIER_ERROR, 6, "verifier rejected")])
def test_broken_rerun_keeps_the_old_one_counting(ip, broken, line, kind):
    run_ok(ip, COUNTER.format(name="counter"))
    old = ip.user_ns["counter"]
    result, out, _ = run(ip, broken)
    assert not result.success
    assert isinstance(result.error_in_exec, BPFCellError)
    assert kind in out and "the previous counter keeps running" in out
    assert f"<cell>:{line}" in out
    assert "Traceback" not in out and len(out.splitlines()) < 30
    assert ip.user_ns["counter"] is old and registry.get("counter") is old
    before = old.bss.total  # the failed run opened files in this process too
    open_n(30)
    assert old.bss.total - before == 30


def test_error_of_a_first_run_leaves_nothing(ip):
    result, out, _ = run(ip, COMPILE_ERROR.replace("counter", "fresh"))
    assert not result.success and "<cell>:4:" in out and "keeps running" not in out
    assert "fresh" not in ip.user_ns and registry.get("fresh") is None


def test_attach_failure_is_readable_and_leaves_nothing(ip):
    result, out, _ = run(ip, '%%bpf nowhere\nSEC("tracepoint/nosuchcat/nosuchevent")\n'
                             "int h(void *ctx) { return 0; }\n")
    assert not result.success and "could not attach" in out and "ENOENT" in out
    assert "Traceback" not in out
    assert registry.get("nowhere") is None


def test_set_literals_strings_and_expressions(ip):
    ip.user_ns["limit"] = 40
    run_ok(ip, "%%bpf cfg --set a={limit + 2} --set b=0x10 --set comm=python3 "
               "--set 'word=\"two words\"'\n"
               "const volatile u32 a = 0;\nconst volatile u64 b = 0;\n"
               "const volatile char comm[16] = {};\nconst volatile char word[16] = {};\n"
               'SEC("raw_tp/sys_enter")\nint h(void *ctx) { return a + b + comm[0] + word[0]; }\n')
    cfg = ip.user_ns["cfg"]
    assert (cfg.rodata.a, cfg.rodata.b) == (42, 16)
    assert (cfg.rodata.comm, cfg.rodata.word) == ("python3", "two words")
    result, out, _ = run(ip, "%%bpf cfg --set nope=1\nu64 x = 0;\n")
    assert not result.success and "no global variable 'nope'" in out
    assert ip.user_ns["cfg"] is cfg and cfg.state == "loaded"
    result, out, _ = run(ip, "%%bpf cfg --set a={undefined_name}\nu64 x = 0;\n")
    assert not result.success and "could not evaluate" in out


def test_defines_and_cflags(ip):
    run_ok(ip, "%%bpf defs -D ANSWER=42 -DEMPTY --cflags \"-DOTHER=3 -O2\"\n"
               "#ifndef EMPTY\n#error no EMPTY\n#endif\n"
               "u64 v = ANSWER + OTHER;\n"
               'SEC("raw_tp/sys_enter")\nint h(void *ctx) { return 0; }\n')
    assert ip.user_ns["defs"].data.v == 45


def test_no_load_and_no_attach(ip):
    run_ok(ip, COUNTER.format(name="later").replace("--set", "--no-load --set"))
    later = ip.user_ns["later"]
    assert later.state == "opened" and later.rodata.target_pid == os.getpid()
    later.load()
    later.attach()
    open_n(5)
    assert later.bss.total == 5
    run_ok(ip, COUNTER.format(name="idle").replace("--set", "--no-attach --set"))
    idle = ip.user_ns["idle"]
    assert idle.state == "loaded" and not idle.progs.on_open.links
    open_n(5)
    assert idle.bss.total == 0


def test_usage_errors(ip):
    for line in ("%%bpf 1abc", "%%bpf x --for 1 --no-attach", "%%bpf x --for 0",
                 "%%bpf x --set novalue", "%%bpf x --bogus"):
        result, out, _ = run(ip, line + "\nu64 v = 0;\n")
        assert not result.success and "UsageError" in out, line
    result, out, _ = run(ip, "%%bpf x\n\n")
    assert not result.success and "empty" in out


def test_for_attaches_waits_detaches_and_shows_maps(ip):
    """--for 1: a thread opens a file 50 times once the program is attached."""
    def worker():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            obj = registry.get("tally")
            if obj is not None and obj.progs.on_open.links:
                open_n(50)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=worker)
    thread.start()
    ip.user_ns["tid"] = thread.native_id
    cell = (COUNTER.format(name="tally")
            .replace("{os.getpid()}", "{tid} --for 1")
            .replace("u32 pid = bpf_get_current_pid_tgid() >> 32;",
                     "u32 pid = (u32)bpf_get_current_pid_tgid();"))
    t0 = time.monotonic()
    out, outputs = run_ok(ip, cell)
    thread.join(10)
    assert time.monotonic() - t0 >= 1.0
    tally = ip.user_ns["tally"]
    assert tally.state == "loaded" and not tally.progs.on_open.links  # detached, readable
    assert tally.maps.counts[thread.native_id] == 50 and tally.bss.total == 50
    assert "tally: 1.0 / 1 s" in out  # the text progress line outside a Jupyter kernel
    frames = [o.data["text/plain"] for o in outputs]
    assert frames[0].startswith("tally: detached after 1.")
    assert f"@counts[{thread.native_id}]: 50" in frames
    assert "total" in frames[frames.index("globals") + 1]
    open_n(5)
    assert tally.bss.total == 50


# lseek calls of this process with the marker whence 77 (they fail, after the
# tracepoint saw them): a libbpf-tools style histogram of their offsets, counts by
# offset, a ring buffer written through bpfnb.h (so bpfnb_lost exists), an unused map.
PRINTED = r"""%%bpf {name} --set target_pid={{os.getpid()}} {options}
const volatile u32 target_pid = 0;
u64 total = 0;
struct hist {{ u32 slots[8]; }};
struct event {{ u64 off; }};

struct {{ __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
         __type(key, u32); __type(value, struct hist); }} sizes SEC(".maps");
struct {{ __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, u64); __type(value, u64); }} by_off SEC(".maps");
struct {{ __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, u32); __type(value, u64); }} unused SEC(".maps");
struct {{ __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); }} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid || (int)ctx->args[2] != 77)
        return 0;
    u64 off = ctx->args[1], one = 1, *c;
    u32 zero = 0, slot = bpfnb_log2(off);
    struct hist *h = bpf_map_lookup_elem(&sizes, &zero);
    if (h && slot < 8)
        __sync_fetch_and_add(&h->slots[slot], 1);
    c = bpf_map_lookup_elem(&by_off, &off);
    if (c)
        __sync_fetch_and_add(c, 1);
    else
        bpf_map_update_elem(&by_off, &off, &one, BPF_NOEXIST);
    __sync_fetch_and_add(&total, 1);
    struct event e = {{ .off = off }};
    bpfnb_ringbuf_output(&events, &e, sizeof(e));
    return 0;
}}
"""
SEEKS = [5, 9, 2, 9, 5, 9, 9, 5, 9, 9, 9]   # 9 seven times, 5 three times, 2 once
PRINTED_MAPS = [
    "@sizes:\n"
    "[2, 4)  1 |@@@@@                                   |\n"
    "[4, 8)  3 |@@@@@@@@@@@@@@@@@                       |\n"
    "[8, 16) 7 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|",
    "@by_off[9]: 7\n@by_off[5]: 3\n@by_off[2]: 1"]


def seek_marked(offsets):
    fd = os.open("/dev/null", os.O_RDONLY)
    try:
        for off in offsets:
            try:
                os.lseek(fd, off, 77)
            except OSError:
                pass
    finally:
        os.close(fd)


def printed(outputs):
    """The text of each rich output; maps are those starting with @."""
    return [o.data["text/plain"] for o in outputs]


def test_for_prints_histograms_as_bars_and_counters_largest_first(ip):
    def worker():
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            obj = registry.get("sizes_for")
            if obj is not None and obj.progs.on_lseek.links:
                seek_marked(SEEKS)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=worker)
    thread.start()
    out, outputs = run_ok(ip, PRINTED.format(name="sizes_for", options="--for 0.5"))
    thread.join(10)
    texts = printed(outputs)
    assert texts[0].startswith("sizes_for: detached after 0.")
    assert [t for t in texts if t.startswith("@")] == PRINTED_MAPS  # not unused, not events
    html = [o.data["text/html"] for o in outputs if o.data["text/plain"].startswith("@")]
    assert html[0].startswith("<pre>@sizes:\n[2, 4)  1 |@@@@@")
    assert "<table" in html[1] and html[1].index(">9<") < html[1].index(">5<")
    variables = texts[texts.index("globals") + 1]
    assert "total" in variables and "11" in variables and "bpfnb_lost" not in variables

    thread = threading.Thread(target=worker)
    thread.start()
    out, outputs = run_ok(ip, PRINTED.format(name="sizes_for", options="--for 0.3 -q"))
    thread.join(10)
    assert outputs == [] and ip.user_ns["sizes_for"].bss.total == 11


def test_stop_prints_every_non_empty_map_unless_quiet(ip):
    run_ok(ip, PRINTED.format(name="printed", options="-q"))
    seek_marked(SEEKS)
    obj = ip.user_ns["printed"]
    out, outputs = run_ok(ip, "%bpf stop printed")
    assert [t for t in printed(outputs) if t.startswith("@")] == PRINTED_MAPS
    assert "stopped printed" in out and obj.state == "destroyed"

    run_ok(ip, PRINTED.format(name="printed", options="-q"))
    seek_marked(SEEKS)
    out, outputs = run_ok(ip, "%bpf stop printed -q")
    assert outputs == [] and out.strip() == "stopped printed"

    run_ok(ip, PRINTED.format(name="untouched", options="-q"))
    out, outputs = run_ok(ip, "%bpf stop untouched")
    assert printed(outputs)[0] == "untouched: every map is empty"

    run_ok(ip, PRINTED.format(name="idle", options="-q"))
    run_ok(ip, PRINTED.format(name="busy", options="-q"))
    seek_marked(SEEKS)  # counted by both
    out, outputs = run_ok(ip, "%bpf stop --all")
    assert [t for t in printed(outputs) if t.startswith("@")] == PRINTED_MAPS * 2
    assert "stopped idle, busy" in out


def test_for_with_plot_ends_with_a_picture(ip):
    out, outputs = run_ok(ip, COUNTER.format(name="plotted").replace(
        "{os.getpid()}", "{os.getpid()} --for 0.3 --plot"))
    assert ip.user_ns["plotted"].state == "loaded"
    assert any("image/png" in o.data for o in outputs), [list(o.data) for o in outputs]
    result, out, _ = run(ip, "%%bpf x --plot\nu64 v = 0;\n")
    assert not result.success and "--plot" in out


def test_list_show_stop(ip):
    run_ok(ip, COUNTER.format(name="first"))
    run_ok(ip, COUNTER.format(name="second"))
    open_n(25)
    df = ip.run_line_magic("bpf", "list")
    assert list(df["name"]) == ["first", "second"]
    row = df.set_index("name").loc["first"]
    assert row["state"] == "attached" and row["program"] == "on_open"
    assert row["hook"] == "tracepoint/syscalls/sys_enter_openat" and row["maps"] == "counts"
    assert row["runs"] >= 25 and row["age_s"] >= 0

    out, outputs = run_ok(ip, "%bpf show first")
    frames = [o.data["text/plain"] for o in outputs]
    assert "counts" in frames and str(os.getpid()) in frames[frames.index("counts") + 1]

    first_id = ip.user_ns["first"].progs.on_open.id
    out, _ = run_ok(ip, "%bpf stop first")
    assert "stopped first" in out and ip.user_ns["first"].state == "destroyed"
    assert first_id not in kernel_ids()
    assert list(ip.run_line_magic("bpf", "list")["name"]) == ["second"]

    for bad in ("%bpf stop first", "%bpf show nosuch", "%bpf stop", "%bpf frobnicate"):
        result, out, _ = run(ip, bad)
        assert not result.success and "UsageError" in out, bad
    out, _ = run_ok(ip, "%bpf stop --all")
    assert "stopped second" in out and ip.user_ns["second"].state == "destroyed"
    assert ip.run_line_magic("bpf", "list").empty


def test_doctor_and_vmlinux_lines(ip):
    report = ip.run_line_magic("bpf", "doctor")
    assert report.program_types["tracepoint"] is True
    assert "<table>" in report._repr_html_()
    path = ip.run_line_magic("bpf", "vmlinux")
    assert path.endswith("vmlinux.h") and os.path.getsize(path) > 100_000


def test_help_shows_the_options(ip):
    out, _ = run_ok(ip, "%%bpf?")
    assert "%%bpf [" in out and "%%%bpf" not in out
    assert "--set" in out and "--for" in out and "--no-load" in out
    out, _ = run_ok(ip, "%bpf?")
    assert "%bpf [" in out and "doctor" in out and "--all" in out


def test_teardown_callbacks_run_before_destroy(ip):
    seen = []
    run_ok(ip, COUNTER.format(name="watched"))
    obj = ip.user_ns["watched"]
    registry.on_teardown(obj, lambda o: seen.append(o.state))
    assert registry.owns(obj)
    run_ok(ip, COUNTER.format(name="watched"))
    assert seen == ["loaded"] and obj.state == "destroyed" and not registry.owns(obj)
    with pytest.raises(ValueError, match="not owned"):
        registry.on_teardown(obj, print)


def test_a_failing_callback_still_destroys(ip):
    run_ok(ip, COUNTER.format(name="watched"))
    obj = ip.user_ns["watched"]
    reg = Registry()
    reg.install("w", obj)
    reg.on_teardown(obj, lambda o: 1 / 0)
    with pytest.warns(RuntimeWarning, match="ZeroDivisionError"):
        assert reg.stop("w")
    assert obj.state == "destroyed" and not reg.stop("w")
    assert registry.names() == []  # the default registry forgets destroyed objects


def test_unload_extension_stops_everything(ip):
    run_ok(ip, COUNTER.format(name="counter"))
    obj = ip.user_ns["counter"]
    ip.run_line_magic("unload_ext", "bpfnb")
    try:
        assert obj.state == "destroyed" and registry.names() == []
        result, out, _ = run(ip, "%bpf list")
        assert not result.success  # the magics are gone
    finally:
        ip.run_line_magic("load_ext", "bpfnb")
