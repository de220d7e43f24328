"""bpfnb.replay and %%bpf --replay / --recording, against recordings in the RECORDING.md
format written by tests/recording_fixture.py; the unprivileged case in a real child
process holding no capability at all."""

import json
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import bpfnb
import recording_fixture as fixture
from bpfnb.hist import Histogram
from bpfnb.registry import registry
from bpfnb.replay import ReadOnlyError, ReplayError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(ROOT, "tests")


@pytest.fixture
def rec(tmp_path):
    return fixture.write(str(tmp_path / "rec"))


def events_truth(truth, upto_ns=None):
    ev = truth.events if upto_ns is None else truth.events[truth.events._time <= upto_ns]
    return ev.drop(columns="_time").reset_index(drop=True)


def test_everything_visible_at_once(rec):
    obj = bpfnb.replay(rec.path)
    assert obj.state == "replay" and obj.name == "snoop"
    assert obj.clock == pytest.approx(2.5) and obj.finished
    pd.testing.assert_frame_equal(obj.maps.counts.to_df(), rec.counts[-1])
    pd.testing.assert_frame_equal(obj.maps.errors.to_df(), rec.errors[-1])
    events = obj.maps.events.stream().to_df()
    pd.testing.assert_frame_equal(events, events_truth(rec))
    assert isinstance(events.category.dtype, pd.CategoricalDtype)
    assert events.attrs == {"lost": 3, "dropped": 0}
    assert obj.bss.total == 30 and obj.bss.last_comm == "cmd2" and obj.rodata.targ_pid == 0
    assert obj.bss._asdict() == {"total": 30, "last_comm": "cmd2"}
    assert set(obj.globals) == {"bss", "rodata"}
    assert list(obj.to_dfs()) == ["counts", "errors", "lat"]
    assert obj.output().text.tolist() == ["hello 0", "hello 1"]
    (prog,) = obj.progs
    assert (prog.name, prog.hook, prog.attached, prog.links) == \
        ("handle_exec", "tp/sched/sched_process_exec", True, ())
    assert obj.maps.counts.type == "hash" and obj.maps.counts.value_type == "u64"
    assert "recorded 2026-12-01 on recorder-host" in repr(obj)


def test_hist_is_the_live_histogram_class(rec):
    h = bpfnb.replay(rec.path).maps.lat.hist()
    assert isinstance(h, Histogram) and h.log2 and h.title == "lat"
    pd.testing.assert_frame_equal(h.df, rec.hists[-1])
    assert h.to_text().splitlines() == [
        "@lat:",
        "[1]    3 |@@@@@@@@@@@@@                           |",
        "[2, 4) 6 |@@@@@@@@@@@@@@@@@@@@@@@@@@              |",
        "[4, 8) 9 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|"]
    assert h.plot().get_title() == "@lat"


@pytest.mark.parametrize("t, snap", [(0.0, 0), (0.5, 0), (1.0, 1), (1.9, 1), (2.0, 2),
                                     (2.5, 2), (99.0, 2)])
def test_seek_shows_the_snapshot_taken_by_then(rec, t, snap):
    obj = bpfnb.replay(rec.path).seek(t)
    now = fixture.T0 + round(min(t, 2.5) * 1e9)
    pd.testing.assert_frame_equal(obj.maps.counts.to_df(), rec.counts[snap])
    # errors is empty at snapshot 0: no rows, not the rows of a later snapshot
    assert len(obj.maps.errors.to_df()) == len(rec.errors[snap]) == (snap > 0)
    pd.testing.assert_frame_equal(obj.maps.lat.hist().df, rec.hists[snap])
    assert obj.bss.total == rec.totals[snap]
    stream = obj.maps.events.stream()
    pd.testing.assert_frame_equal(stream.to_df(), events_truth(rec, now))
    assert len(stream) == int(np.sum(rec.events._time <= now))
    pd.testing.assert_frame_equal(stream.tail(3), events_truth(rec, now).tail(3)
                                  .reset_index(drop=True))
    assert len(obj.output()) == (t >= 0.5) + (t >= 1.5)


def test_max_rows_keeps_the_newest(rec):
    stream = bpfnb.replay(rec.path).maps.events.stream(max_rows=100)
    df = stream.to_df()
    pd.testing.assert_frame_equal(df, events_truth(rec).tail(100).reset_index(drop=True))
    assert df.attrs == {"lost": 3 + 150, "dropped": 150}
    with pytest.raises(TypeError, match="unexpected options: colour"):
        bpfnb.replay(rec.path).maps.events.stream(colour=1)


def test_speed_paces_the_clock(rec):
    obj = bpfnb.replay(rec.path, speed=2.0)
    assert obj.clock < 0.5 and not obj.finished
    assert obj.maps.counts.to_df().equals(rec.counts[0])
    time.sleep(0.6)    # 1.2 s of the recording at 2x
    assert 1.0 <= obj.clock < 2.5
    assert obj.bss.total == 20
    stream = obj.maps.events.stream()
    before = obj.clock
    stream.clear()       # from the clock on (which moves meanwhile)
    after = obj.clock
    time.sleep(1.0)      # the clock reaches the end
    assert obj.clock == pytest.approx(2.5) and obj.finished and not stream.running
    df = stream.to_df()
    pd.testing.assert_frame_equal(df, events_truth(rec).tail(len(df)).reset_index(drop=True))
    received = rec.events._time - fixture.T0
    assert (received > after * 1e9).sum() <= len(df) <= (received > before * 1e9).sum()
    obj.seek(1.0)        # and goes on at 2x from there
    assert 1.0 <= obj.clock < 2.0
    with pytest.raises(ValueError, match="positive"):
        bpfnb.replay(rec.path, speed=0)


def test_writes_are_refused(rec):
    obj = bpfnb.replay(rec.path)
    for write in (lambda: setattr(obj.bss, "total", 1),
                  lambda: obj.maps.counts.__setitem__(1, 2),
                  lambda: obj.maps.counts.update(1, 2),
                  lambda: obj.maps.counts.clear(),
                  lambda: setattr(obj.maps.counts, "max_entries", 8),
                  lambda: obj.progs.handle_exec.attach_tracepoint("sched", "x"),
                  lambda: obj.attach(), lambda: obj.load(),
                  lambda: obj.set(total=1),
                  lambda: setattr(obj, "bss", None)):
        with pytest.raises(ReadOnlyError, match="read-only"):
            write()
    assert obj.bss.total == 30
    with pytest.raises(ReplayError, match="stream"):
        obj.maps.events.to_df()
    with pytest.raises(ReplayError, match="not recorded as a histogram"):
        obj.maps.counts.hist()
    with pytest.raises(AttributeError, match="there are: counts, errors, lat, events"):
        obj.maps.nope


def test_destroy_and_with(rec):
    with bpfnb.replay(rec.path) as obj:
        assert len(obj.maps.events.stream().to_df()) == len(rec.events)
    assert obj.state == "destroyed"
    obj.destroy()  # idempotent
    with pytest.raises(ReplayError, match="destroyed"):
        obj.maps.counts.to_df()


def test_bad_recordings_say_what_is_wrong(tmp_path, rec):
    with pytest.raises(ReplayError, match="no recording at"):
        bpfnb.replay(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ReplayError, match="no manifest.json"):
        bpfnb.replay(tmp_path / "empty")
    manifest = json.load(open(os.path.join(rec.path, "manifest.json")))
    with open(os.path.join(rec.path, "manifest.json"), "w") as f:
        json.dump({**manifest, "version": 2}, f)
    with pytest.raises(ReplayError, match="version 2; this bpfnb reads version 1"):
        bpfnb.replay(rec.path)
    with open(os.path.join(rec.path, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    os.remove(os.path.join(rec.path, "maps", "counts.parquet"))
    with pytest.raises(ReplayError, match="map 'counts' of recording .* is missing"):
        bpfnb.replay(rec.path)


def test_a_failed_recording_replays_what_was_written(tmp_path):
    truth = fixture.write(str(tmp_path / "rec"), state="failed")
    obj = bpfnb.replay(truth.path)
    assert "stopped early: No space left on device" in obj.describe()
    assert obj.bss.total == 30


def test_live_views_read_at_the_clock(rec):
    from bpfnb.replay import views
    obj = bpfnb.replay(rec.path).seek(1.0)
    got = {}
    for v in views.object_views(obj):
        v.sample(0.0)
        got[v.title] = v
    assert sorted(got) == [".bss", "counts", "errors", "lat"]
    assert got["lat"].data["count"].tolist() == [2, 4, 6]
    assert got["counts"].alive()
    table = views.view_of(obj.maps.events, n=5)
    table.sample(0.0)
    pd.testing.assert_frame_equal(table.data, events_truth(rec, fixture.T0 + 10**9).tail(5)
                                  .reset_index(drop=True))
    obj.destroy()
    assert not got["counts"].alive()   # a dashboard stops with its object
    board = bpfnb.replay(rec.path).live(interval=0.2)
    try:
        assert len(board.views) == 4
    finally:
        board.stop()


# --- the magic ------------------------------------------------------------------------

@pytest.fixture
def ip():
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "bpfnb")
    yield shell
    registry.stop_all()


def run(ip, text):
    with capture_output() as cap:
        result = ip.run_cell(text)
    return result, cap.stdout + cap.stderr, cap.outputs


def test_replay_magic_binds_and_lists(ip, rec):
    result, out, outputs = run(ip, f"%%bpf snoop --replay {rec.path}\n" + fixture.SOURCE)
    assert result.success, out
    obj = ip.user_ns["snoop"]
    assert registry.get("snoop") is obj and obj.bss.total == 30
    text = outputs[0].data["text/plain"]
    assert text.startswith(f"snoop: replaying recording {rec.path} (recorded 2026-12-01 "
                           f"on recorder-host)")
    assert "differs" not in text
    listed = ip.run_line_magic("bpf", "list")
    row = listed.set_index("name").loc["snoop"]
    assert (row.state, row.program, row.maps) == ("replay", "handle_exec",
                                                   "counts, errors, lat, events")
    with capture_output() as cap:
        ip.run_line_magic("bpf", "show snoop")
    assert [o.data["text/plain"] for o in cap.outputs][::2] == \
        ["counts", "errors", "lat", "globals"]
    result, out, outputs = run(ip, f"%%bpf snoop --replay {rec.path} --speed 2\n"
                                   "int changed;\n")
    assert result.success, out
    assert "differs from the recorded source" in outputs[0].data["text/plain"]
    assert obj.state == "destroyed" and ip.user_ns["snoop"].speed == 2.0
    result, out, _ = run(ip, f"%%bpf snoop --replay {rec.path} --set x=1\nint x;\n")
    assert not result.success and "--set" in out
    result, out, outputs = run(ip, f"%%bpf snoop --replay {rec.path} --for 1\nint x;\n")
    assert result.success, out
    assert [o.data["text/plain"] for o in outputs][1::2] == \
        ["counts", "errors", "lat", "globals"]
    with capture_output() as cap:
        ip.run_line_magic("bpf", "stop snoop")
    assert cap.stdout == "stopped snoop\n" and registry.get("snoop") is None


GETPPID_CELL = """\
u64 total = 0;
SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx) { __sync_fetch_and_add(&total, 1); return 0; }
"""


def test_recording_option_runs_live_where_bpf_loads(ip, rec, tmp_path, no_leaks):
    # A recording exists: run live and keep it.
    result, out, outputs = run(ip, f"%%bpf snoop --recording {rec.path}\n" + GETPPID_CELL)
    assert result.success, out
    obj = ip.user_ns["snoop"]
    assert obj.state == "loaded"
    assert f"recording {rec.path} kept" in outputs[0].data["text/plain"]
    before = obj.bss.total
    for _ in range(7):
        os.getppid()
    assert obj.bss.total >= before + 7   # other processes call getppid too
    # No recording yet: run live and record there (through obj.record, bpfnb.record's).
    path = tmp_path / "new"
    result, out, outputs = run(ip, f"%%bpf snoop --recording {path}\n" + GETPPID_CELL)
    assert result.success, out
    text = outputs[0].data["text/plain"]
    if hasattr(ip.user_ns["snoop"], "record"):
        assert f"recording to {path}" in text
        seen = [ip.user_ns["snoop"].bss.total for _ in range(2)]
        registry.stop_all()  # the teardown ends the recording
        assert bpfnb.replay(path).name == "snoop"
        # --recording marks the notebook's reads (not what the cell showed)
        followed = bpfnb.replay(path, follow="reads")
        assert followed._follower.recorded == 2
        assert [followed.bss.total for _ in range(2)] == seen
    else:
        assert f"not recorded to {path}: this bpfnb has no recorder" in text
    registry.stop_all()


CHILD = """
import json, os, sys, bpfnb
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output
out = {"caps": open("/proc/self/status").read().split("CapEff:")[1].split()[0]}
obj = bpfnb.replay(sys.argv[1])
out["counts"] = obj.maps.counts.to_df().to_dict("list")
out["events"] = len(obj.maps.events.stream().to_df())
out["libbpf_opened"] = "bpfnb.libbpf._lib" in sys.modules
ip = InteractiveShell.instance()
ip.run_line_magic("load_ext", "bpfnb")
with capture_output() as cap:
    ok = ip.run_cell("%%bpf snoop --recording " + sys.argv[1] + "\\nint x;\\n").success
out["magic"] = [ok, cap.outputs[0].data["text/plain"] if cap.outputs else cap.stdout]
out["total"] = ip.user_ns["snoop"].bss.total
out["hist"] = ip.user_ns["snoop"].maps.lat.hist().to_text().splitlines()[0]
with capture_output() as cap:
    ok = ip.run_cell("%%bpf other --recording /nonexistent/rec\\nint x;\\n").success
out["missing"] = [ok, cap.stdout + cap.stderr]
try:
    bpfnb.load('SEC("tracepoint/syscalls/sys_enter_getppid") int f(void *c) { return 0; }')
    out["load"] = "loaded"
except bpfnb.BPFError as e:
    out["load"] = type(e).__name__
print(json.dumps(out))
"""


def test_without_any_capability(rec):
    """A child with every capability dropped (effective, inheritable, bounding) replays,
    and the same child cannot load a program: PrivilegeError."""
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("dropping every capability of a child needs root and setpriv")
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{TESTS}")
    argv = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--",
            sys.executable, "-c", CHILD, rec.path]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert int(out["caps"], 16) == 0
    assert out["counts"] == rec.counts[-1].to_dict("list")
    assert out["events"] == len(rec.events)
    assert out["libbpf_opened"] is False
    ok, text = out["magic"]
    assert ok and text.startswith("snoop: replaying recording")
    assert "not live: this process holds no CAP_BPF" in text
    assert out["total"] == 30 and out["hist"] == "@lat:"
    ok, text = out["missing"]
    assert not ok and "no recording at '/nonexistent/rec'" in text
    assert "This process cannot run the cell live: this process holds no CAP_BPF" in text
    assert out["load"] == "PrivilegeError"


def test_no_libbpf_needed(rec):
    """Where libbpf.so cannot be opened at all, import bpfnb and a replay still work."""
    code = ("import sys, bpfnb; o = bpfnb.replay(sys.argv[1]); "
            "print(len(o.maps.events.stream().to_df()), o.bss.total, o.maps.counts.to_df()"
            ".value.tolist())")
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{TESTS}", BPFNB_LIBBPF="/nonexistent/libbpf.so")
    r = subprocess.run([sys.executable, "-c", code, rec.path], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == [str(len(rec.events)), "30", "[30,", "31,", "32]"]


# --- stacks, lookups, a --no-load object: recorded live, replayed -------------------

PROGS = os.path.join(TESTS, "progs")
STACKS_CHILD = r"""
import json, sys
import bpfnb
from bpfnb.symbols import folded, resolve_stacks
with open("/proc/self/status") as f:
    caps = f.read().split("CapEff:")[1].split()[0]
r = bpfnb.replay(sys.argv[1], follow="reads")
df = r.maps.counts.to_df()                      # the recorded read
cols = dict(kernel_col="kern_stack_id", user_col="user_stack_id")
named = resolve_stacks(df, r.maps.stackmap, **cols)
full = resolve_stacks(df, r.maps.stackmap, **cols, offsets=True, modules=True)
print(json.dumps({
    "caps": caps, "reads": r._follower.made,
    "folded": folded(named, comm_col="name"),
    "full": [k + u for k, u in zip(full.kstack, full.ustack)],
    "lookups": [r.maps.counts[k] for k in r.maps.counts.keys()],
    "items": len(r.maps.counts.items()),
    "gone": resolve_stacks(r.maps.counts.to_df(), r.maps.stackmap, **cols).ustack.tolist(),
    "reads_after": r._follower.made,
}))
"""


def _steady(frames: list) -> list:
    """A stack (innermost first) without the frames inside other tools' BPF programs
    (their tracepoints run in the sampled syscalls): kallsyms names them only while
    they are loaded, and other tests load and unload programs meanwhile."""
    run = [i for i, f in enumerate(frames) if f.startswith("bpf_trace_run")]
    frames = frames[run[0]:] if run else frames
    return ["[bpf]" if f.startswith(("bpf_prog_", "bpf_dispatcher")) or f.endswith(" [bpf]")
            else f for f in frames]


def _steady_folded(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        stack, count = line.rsplit(" ", 1)
        key = ";".join(_steady(stack.split(";")[::-1])[::-1])
        out[key] = out.get(key, 0) + int(count)
    return out


def _nocaps(code, *args):
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("dropping every capability of a child needs root and setpriv")
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{TESTS}")
    argv = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--",
            sys.executable, "-c", code, *args]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    from test_stacks import CHILD, _cc
    return _cc(tmp_path_factory.mktemp("busy"), "bpfnb_busy", CHILD)


def test_stacks_replay_as_named_live_without_any_capability(tmp_path, busy, no_leaks):
    """profile.bpf.c (libbpf-tools) samples a child that exits before the stacks are
    read: the recording names its stacks (user frames through the snapshot of the
    child's memory map), and a child holding no capability resolves and folds them as
    live did."""
    from bpfnb.symbols import Symbolizer, folded, resolve_stacks
    child = subprocess.Popen([str(busy)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout.read(1) == b"r"
        sym = Symbolizer().snapshot(child.pid)
        obj = bpfnb.load(os.path.join(PROGS, "profile.bpf.c"),
                         rodata={"targ_pid": child.pid}, attach=False)
        with obj:
            assert obj.maps.stackmap.value_size == 127 * 8  # sized at load
            obj.progs.do_perf_event.attach_perf_event(freq=499)
            child.stdin.write(b"g")
            child.stdin.close()
            assert child.wait(timeout=20) == 0
            # Recorded once the child is gone: the recorder never sees it run, and
            # names its frames through the snapshot `sym` took (Symbolizer.adopt).
            rec = obj.record(str(tmp_path / "rec"), interval=60, reads=True)
            df = obj.maps.counts.to_df()
            cols = dict(kernel_col="kern_stack_id", user_col="user_stack_id",
                        symbolizer=sym)
            live = folded(resolve_stacks(df, obj.maps.stackmap, **cols), comm_col="name")
            full = resolve_stacks(df, obj.maps.stackmap, **cols, offsets=True, modules=True)
            obj.maps.stackmap.clear()  # the ids leave the map: recorded as gone
            gone = resolve_stacks(obj.maps.counts.to_df(), obj.maps.stackmap, **cols)
            rec.stop()
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
    assert "main;bpfnb_busy_spin_target" in live  # named through the exited child
    out = _nocaps(STACKS_CHILD, rec.path.as_posix())
    assert int(out["caps"], 16) == 0
    assert (out["reads"], out["reads_after"]) == (1, 2)
    assert out["gone"] == gone.ustack.tolist()
    bad = [(u, i) for u, i in zip(out["gone"], df.user_stack_id)
           if i >= 0 and u != [f"[stack {i} not in map]"]]
    assert not bad, (bad[:5], len(out["gone"]), len(df))
    assert _steady_folded(out["folded"]) == _steady_folded(live)
    assert ([_steady(f) for f in out["full"]]
            == [_steady(k + u) for k, u in zip(full.kstack, full.ustack)])
    assert out["lookups"] == df["value"].tolist() and out["items"] == len(df)
    # the format: a change log, each (stack id, pid) named once while it did not
    # change, and once more (null) when it left the map
    log = pd.read_parquet(tmp_path / "rec" / "stacks" / "stackmap.parquet")
    named, left = log[log.frames.notna()], log[log.frames.isna()]
    assert not named.duplicated(["stack_id", "pid"]).any()
    assert sorted(map(tuple, left[["stack_id", "pid"]].values.tolist())) == sorted(
        map(tuple, named[["stack_id", "pid"]].values.tolist()))
    assert {-1, child.pid} == set(log.pid)

    # A recording made before stack names were kept: the stack map's own rows answer
    # (kernel frames named, user frames hex), and offsets cannot be had.
    old = tmp_path / "old"
    shutil.copytree(tmp_path / "rec", old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["maps"]["stackmap"]["stacks_file"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    r = bpfnb.replay(old)
    held = pd.read_parquet(old / "maps" / "stackmap.parquet")  # a snapshot holding stacks
    r.seek((int(held._time.iloc[0]) - r.t0) / 1e9)
    first = r.maps.counts.to_df()
    named = resolve_stacks(first, r.maps.stackmap, kernel_col="kern_stack_id",
                           user_col="user_stack_id")
    user = [u for u in named.ustack if u and not u[0].startswith("[stack")]
    assert user and all(f.startswith("0x") for u in user for f in u)
    with pytest.raises(ReplayError, match="recorded before stack names"):
        resolve_stacks(first, r.maps.stackmap, kernel_col="kern_stack_id",
                       user_col="user_stack_id", offsets=True)


def test_lookups_answer_from_the_snapshot_and_count_no_read(rec):
    obj = bpfnb.replay(rec.path)
    counts = obj.maps.counts
    truth = rec.counts[-1]
    first = counts.keys()[0]
    assert first._fields == ("pid", "comm") and first == (100, "cmd0")
    assert counts[first] == truth.value[0] == counts[(100, "cmd0")]
    assert counts[{"pid": 101, "comm": "cmd1"}] == truth.value[1]
    assert (102, "cmd2") in counts and (102, "nope") not in counts
    assert counts.get((999, "x"), "absent") == "absent"
    with pytest.raises(KeyError):
        counts[(999, "x")]
    assert counts.values() == truth.value.tolist()
    assert dict(obj.maps.errors.items()) == {-2: int(rec.errors[-1].value[0])}
    obj.seek(0)
    assert list(counts) == [(100, "cmd0")] and counts[(100, "cmd0")] == 10
    assert obj.maps.errors.items() == []  # empty at snapshot 0


def test_lookups_follow_the_reads_without_counting(tmp_path, no_leaks):
    """Live and replayed alike, m[key] is no counted read: it answers from the
    snapshot of the notebook's last read."""
    pid = os.getpid()
    obj = bpfnb.load(os.path.join(PROGS, "recorded.bpf.c"), rodata={"targ_pid": pid})
    with obj:
        rec = obj.record(str(tmp_path / "rec"), interval=30, reads=True)
        for _ in range(4):
            open("/etc/hostname").close()
        first = obj.maps.counts.to_df()
        live_lookup = obj.maps.counts[pid]
        assert rec.reads == 1
        for _ in range(3):
            open("/etc/hostname").close()
        second = obj.maps.counts.to_df()
        rec.stop()
    r = bpfnb.replay(tmp_path / "rec", follow="reads")
    assert r.maps.counts.to_df().value.tolist() == first.value.tolist()
    assert r.maps.counts[pid] == first.value[0] == live_lookup
    assert pid in r.maps.counts and r._follower.made == 1
    assert r.maps.counts.to_df().value.tolist() == second.value.tolist()
    assert r.maps.counts.get(pid) == second.value[0] and r._follower.made == 2


def test_a_no_load_object_is_recorded_from_load(tmp_path, no_leaks):
    """%%bpf NAME --no-load --recording PATH (start_recording on an opened object):
    nothing is recorded until load(); replayed, the object stands opened, takes
    .rodata writes, and counts reads from load() on, as live."""
    from bpfnb.replay import start_recording
    path = tmp_path / "rec"
    pid = os.getpid()
    obj = bpfnb.open(os.path.join(PROGS, "recorded.bpf.c"))
    with obj:
        note = start_recording(obj, str(path))
        assert "from" in note and "load() on" in note and not path.exists()
        obj.rodata.targ_pid = pid
        obj.load()
        assert obj.recording.running and (path / "manifest.json").exists()
        for _ in range(5):
            open("/etc/hostname").close()
        before = obj.bss.total
        obj.attach()
        for _ in range(7):
            open("/etc/hostname").close()
        after = obj.bss.total
    assert (before, after) == (0, 7)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["state"] == "complete" and manifest["reads"]["count"] == 2
    r = bpfnb.replay(path, follow="reads").opened()
    assert r.state == "opened"
    r.rodata.targ_pid = 1               # configuring before load: accepted, ignored
    assert r.rodata.targ_pid == pid     # the recorded run's value; no counted read
    assert r._follower is None
    assert r.load() is r and r.state == "replay"
    assert r.bss.total == 0
    r.attach()
    assert r.bss.total == 7 and r._follower.made == 2
    with pytest.raises(ReadOnlyError):
        r.rodata.targ_pid = 2           # loaded: read-only again


def test_a_bpfnb_histk_map_replays_as_its_histogram(tmp_path, no_leaks):
    """bpfnb.h's BPFNB_HISTK maps are histograms live (Map.is_histogram): the recording
    keeps their hist() frames too, so a replay draws and answers them as histograms."""
    from bpfnb.live import Histogram as HistogramView, object_views
    obj = bpfnb.load(r"""
const volatile u32 target_tid = 0;
BPFNB_HISTK(flags_by_dfd, u32, 0);
SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(struct trace_event_raw_sys_enter *ctx)
{
    if ((u32)bpf_get_current_pid_tgid() != target_tid)  /* this thread's opens only */
        return 0;
    bpfnb_histk(&flags_by_dfd, (u32)ctx->args[2], 1000);
    return 0;
}
""", name="histk", rodata={"target_tid": threading.get_native_id()})
    with obj:
        rec = obj.record(tmp_path / "rec", interval=60)
        flags = os.O_RDONLY | os.O_NOCTTY | os.O_CLOEXEC  # a key of our 25 opens alone
        for _ in range(25):
            os.close(os.open("/etc/hostname", flags))
        live = obj.maps.flags_by_dfd.hist().df
        rec.stop()
        assert obj.maps.flags_by_dfd.is_histogram
        key = live.columns[0]
        assert live.loc[live[key] == flags, "count"].sum() == 25
    with bpfnb.replay(tmp_path / "rec") as r:
        m = r.maps.flags_by_dfd
        assert m.is_histogram
        replayed = m.hist().df
        assert replayed.loc[replayed[key] == flags, "count"].sum() == 25
        pd.testing.assert_frame_equal(replayed.reset_index(drop=True),
                                      live.reset_index(drop=True), check_dtype=False)
        assert [type(v) for v in object_views(r)] == [HistogramView]
