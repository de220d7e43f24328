"""Recordings against the real kernel: the test opens a marker file N times while an
object is recorded, then reads the Parquet files back and finds exactly N."""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
import warnings
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

import bpfnb
from bpfnb.registry import registry
from bpfnb.replay import ReadOnlyError, ReplayError

PROGS = Path(__file__).parent / "progs"
ROOT = str(Path(__file__).resolve().parent.parent)
MANIFEST_KEYS = {"format", "version", "state", "error", "name", "source", "source_path",
                 "cflags", "kernel_release", "machine", "hostname", "btf_sha256",
                 "libbpf_version", "bpfnb_version", "started", "stopped", "interval",
                 "snapshots", "programs", "maps", "streams", "globals", "output"}


@pytest.fixture
def obj(no_leaks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # markers are opened by short relative names
    o = bpfnb.load(PROGS / "recorded.bpf.c", rodata={"targ_pid": os.getpid()})
    yield o
    o.destroy()


def marker() -> str:
    name = f"m-{uuid.uuid4().hex[:12]}"
    os.mknod(name)  # not an openat
    return name


def open_n(name: str, n: int, seconds: float = 0.0):
    for _ in range(n):
        os.close(os.open(name, os.O_RDONLY))
        if seconds:
            time.sleep(seconds / n)


def manifest(path) -> dict:
    return json.loads(Path(path, "manifest.json").read_text())


def read(path, name):
    return pq.read_table(Path(path, name)).to_pandas()


def test_recording_holds_every_event_the_last_snapshot_and_the_globals(obj, tmp_path):
    n, name, path = 300, marker(), tmp_path / "rec"
    rec = obj.record(path, interval=0.25)
    assert rec.running and obj.recording is rec
    assert manifest(path)["state"] == "recording"
    open_n(name, n, seconds=1.2)
    obj.detach()  # the counts stop moving: the last snapshot is the map at stop
    rec.stop()
    assert not rec.running and rec.error is None
    m = manifest(path)
    assert MANIFEST_KEYS <= set(m) and m["state"] == "complete" and m["error"] is None
    assert m["format"] == "bpfnb-recording" and m["version"] == 1
    assert m["source_path"] == str(PROGS / "recorded.bpf.c") and "BPFNB_HIST" in m["source"]
    assert m["kernel_release"] == os.uname().release and len(m["btf_sha256"]) == 64
    assert m["libbpf_version"].startswith("1.") and m["started"] < m["stopped"]
    assert m["programs"] == [{"name": "trace_openat", "type": "tracepoint", "attached": True,
                              "section": "tracepoint/syscalls/sys_enter_openat"}]
    assert m["maps"]["name_len"]["histogram"] and not m["maps"]["counts"]["histogram"]

    events = read(path, "streams/events.parquet")
    assert (events["fname"] == name).sum() == n
    assert m["streams"]["events"] == {"file": "streams/events.parquet",
                                      "record_type": "struct event", "rows": len(events),
                                      "lost": 0, "dropped": 0}
    assert rec.rows == {"events": len(events)}
    assert list(events.columns) == [*obj.maps.events.stream().to_df().columns, "_time"]
    assert events["seq"].is_monotonic_increasing and events["_time"].is_monotonic_increasing

    counts = read(path, "maps/counts.parquet")
    snaps = read(path, "globals.parquet")
    assert m["snapshots"] == rec.snapshots == len(snaps) >= 5  # 1.2 s at 0.25 s, and stop
    assert list(snaps["_snapshot"]) == list(range(len(snaps)))
    last = counts[counts["_snapshot"] == counts["_snapshot"].max()]
    pid_count = int(last.loc[last["key"] == os.getpid(), "value"].iloc[0])
    assert pid_count >= n and pid_count == obj.maps.counts[os.getpid()]
    assert snaps["bss.total"].iloc[-1] == obj.bss.total == pid_count
    assert (snaps["rodata.targ_pid"] == os.getpid()).all()
    assert snaps["_time"].is_monotonic_increasing
    assert m["globals"]["variables"] == {"bss.total": "__u64",
                                         "rodata.targ_pid": "const volatile pid_t"}

    hist = read(path, "hists/name_len.parquet")
    final = hist[hist["_snapshot"] == hist["_snapshot"].max()].drop(columns=["_snapshot",
                                                                             "_time"])
    assert final.reset_index(drop=True).equals(obj.maps.name_len.hist().df)
    assert final["count"].sum() >= n
    assert "<Recording" in repr(rec) and "complete" in repr(rec) and "events" in repr(rec)


def test_seconds_limit_and_teardown_end_it(obj, tmp_path):
    rec = obj.record(tmp_path / "a", seconds=0.3, interval=0.1)
    assert rec.wait(5)
    assert manifest(tmp_path / "a")["state"] == "complete" and rec.snapshots >= 3
    name = marker()
    rec = obj.record(tmp_path / "b", interval=10)
    open_n(name, 20)
    time.sleep(0.2)
    obj.destroy()  # the teardown stops it, after its last snapshot
    assert not rec.running
    m = manifest(tmp_path / "b")
    assert m["state"] == "complete" and m["snapshots"] == 2
    assert (read(tmp_path / "b", "streams/events.parquet")["fname"] == name).sum() == 20


def test_an_existing_recording_is_kept_unless_overwrite(obj, tmp_path):
    path = tmp_path / "rec"
    obj.record(path, seconds=0.1).wait(5)
    with pytest.raises(FileExistsError, match=r"rec.*already holds a recording.*overwrite=True"):
        obj.record(path)
    rec = obj.record(path, overwrite=True, seconds=0.1)
    assert rec.wait(5) and manifest(path)["state"] == "complete"
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a recording"):
        obj.record(other, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A tmpfs of 96 KiB (the recording's fixed part, manifest and footers, takes half),
    unmounted after."""
    where = tmp_path / "small"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(where)],
                   check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=True)


def test_unwritable_path_fails_at_start(obj, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(ro)], check=True)
    try:
        with pytest.raises(PermissionError, match=r"cannot write into .*ro/rec.*Read-only"):
            obj.record(ro / "rec")
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError, match="cannot write into"):
        obj.record(tmp_path / "file" / "rec")
    assert not any(t.name.startswith("bpfnb-record") for t in threading.enumerate())


def test_a_full_disk_stops_the_recording_and_leaves_it_readable(obj, small_tmpfs):
    path = small_tmpfs / "rec"
    name = marker()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = obj.record(path, interval=0.05)
        deadline = time.monotonic() + 20
        while rec.running and time.monotonic() < deadline:
            open_n(name, 2000)
        rec.stop()
    assert rec.error is not None and "full" in rec.error, rec.error
    assert any("stopped" in str(w.message) and "full" in str(w.message) for w in caught)
    m = manifest(path)
    assert m["state"] == "failed" and m["error"] == rec.error
    events = read(path, "streams/events.parquet")  # closed properly: readable
    assert len(events) == m["streams"]["events"]["rows"] == rec.rows["events"] > 0
    assert (events["fname"] == name).sum() > 0
    for f in ("maps/counts.parquet", "hists/name_len.parquet", "globals.parquet"):
        read(path, f)
    assert repr(rec).startswith("<Recording") and "failed" in repr(rec)


# --- %%bpf --record ------------------------------------------------------------------

CELL = r"""%%bpf {name} --set target_pid={{os.getpid()}} --record {path} {more}
const volatile u32 target_pid = 0;
u64 total = 0;
struct event {{ u32 pid; char fname[32]; }};
struct {{ __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 1 << 16); }} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(struct trace_event_raw_sys_enter *ctx)
{{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != target_pid)
        return 0;
    __sync_fetch_and_add(&total, 1);
    struct event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
    if (!e)
        return 0;
    e->pid = pid;
    bpf_probe_read_user_str(e->fname, sizeof(e->fname), (const char *)ctx->args[1]);
    bpf_ringbuf_submit(e, 0);
    return 0;
}}
"""


@pytest.fixture
def ip(no_leaks, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "bpfnb")
    shell.run_cell("import os")
    yield shell
    registry.stop_all()


def run(ip, text):
    with capture_output() as cap:
        result = ip.run_cell(text)
    return result, cap.stdout + cap.stderr


def record_for_a_second(ip, path, name: str, n: int):
    """Run the cell as `recorder --record path --for 1` while another thread opens the
    marker file ``name`` n times over 0.3 s, once the cell has compiled, loaded and
    started recording (spread out: the cell's 64 KiB ring takes them all)."""
    def open_while_recorded():
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            obj = registry.get("recorder")
            if obj is not None and obj.recording is not None:
                return open_n(name, n, 0.3)
            time.sleep(0.005)

    opener = threading.Thread(target=open_while_recorded)
    opener.start()
    result, out = run(ip, CELL.format(name="recorder", path=path, more="--for 1"))
    opener.join()
    assert result.success, out
    return out


def test_record_magic_for_seconds(ip, tmp_path):
    name, n = marker(), 40
    out = record_for_a_second(ip, tmp_path / "r", name, n)
    # the progress line, its last state
    assert re.search(r"recorder: 1\.\d / 1 s, recorded \d+ snapshots, events \d+ rows\n", out)
    m = manifest(tmp_path / "r")
    assert m["state"] == "complete" and "--record" not in m["source"]
    assert "bpf_ringbuf_reserve" in m["source"] and m["snapshots"] >= 2
    events = read(tmp_path / "r", "streams/events.parquet")
    assert (events["fname"] == name).sum() == n
    assert read(tmp_path / "r", "globals.parquet")["bss.total"].iloc[-1] >= n


def test_record_magic_until_stop_and_its_errors(ip, tmp_path):
    result, out = run(ip, CELL.format(name="rec2", path=tmp_path / "r2", more=""))
    assert result.success, out
    obj = ip.user_ns["rec2"]
    assert obj.recording.running
    run(ip, "%bpf stop rec2")
    assert obj.state == "destroyed" and not obj.recording.running
    assert manifest(tmp_path / "r2")["state"] == "complete"
    result, out = run(ip, CELL.format(name="rec3", path=tmp_path / "r2", more=""))
    assert not result.success
    assert "cannot record, so nothing of rec3 is running" in out and "overwrite=True" in out
    assert registry.get("rec3") is None
    result, out = run(ip, CELL.format(name="rec4", path=tmp_path / "r4", more="--no-attach"))
    assert not result.success and "--record records a running object" in out


def test_streams_of_several_types_are_skipped_with_a_warning_not_a_failure(no_leaks, tmp_path):
    source = r"""
struct a { u32 x; }; struct b { u64 y; };
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } rb SEC(".maps");
SEC("tracepoint/syscalls/sys_enter_getppid")
int two(void *ctx)
{
    struct a *p = bpf_ringbuf_reserve(&rb, sizeof(*p), 0);
    if (p) { p->x = 1; bpf_ringbuf_submit(p, 0); }
    struct b *q = bpf_ringbuf_reserve(&rb, sizeof(*q), 0);
    if (q) { q->y = 2; bpf_ringbuf_submit(q, 0); }
    return 0;
}
"""
    obj = bpfnb.load(source)
    try:
        with pytest.warns(RuntimeWarning, match="stream 'rb' is not recorded.*2 record types"):
            rec = obj.record(tmp_path / "r", seconds=0.1)
        assert rec.wait(5)
        m = manifest(tmp_path / "r")
        assert m["state"] == "complete" and "rb" in m["skipped_streams"] and not m["streams"]
    finally:
        obj.destroy()


def test_one_recording_at_a_time(obj, tmp_path):
    rec = obj.record(tmp_path / "a")
    with pytest.raises(ValueError, match=r"already being recorded to .*a.*split its records"):
        obj.record(tmp_path / "b")
    rec.stop()
    assert obj.record(tmp_path / "b", seconds=0.1).wait(5)


def test_bad_arguments(obj, tmp_path):
    with pytest.raises(ValueError, match="interval must be a positive"):
        obj.record(tmp_path / "x", interval=0)
    with pytest.raises(ValueError, match="seconds must be positive"):
        obj.record(tmp_path / "x", seconds=-1)
    with pytest.raises(ValueError, match="types=: counts is no ring buffer"):
        obj.record(tmp_path / "x", types={"counts": "struct event"})
    assert not (tmp_path / "x").exists()


def test_printk_lines_are_recorded(no_leaks, tmp_path):
    n = 12
    obj = bpfnb.load(r"""
const volatile u32 target_pid = 0;
SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) == target_pid)
        bpf_printk("recorded open %d", 7);
    return 0;
}
""", name="printer", rodata={"target_pid": os.getpid()})
    try:
        rec = obj.record(tmp_path / "r")
        open_n("/etc/hostname", n)
        obj.detach()
        deadline = time.monotonic() + 10
        while len(obj.output()) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        rec.stop()
        m = manifest(tmp_path / "r")
        lines = read(tmp_path / "r", "output.parquet")
        assert m["output"] == {"file": "output.parquet", "rows": len(lines), "dropped": 0}
        assert list(lines["text"]) == list(obj.output()["text"])  # every line, at stop
        assert len(lines) >= n and (lines["text"] == "recorded open 7").all()
        assert lines["_time"].dtype == "int64" and (lines["_time"] > 0).all()
    finally:
        obj.destroy()


def test_a_perf_buffer_is_recorded(no_leaks, tmp_path):
    n = 5
    obj = bpfnb.load(PROGS / "execsnoop_perf.bpf.c")
    try:
        rec = obj.record(tmp_path / "r", interval=0.2)
        for _ in range(n):
            subprocess.run(["/bin/true"], check=True)
        rec.stop()
        m = manifest(tmp_path / "r")
        assert m["state"] == "complete" and m["streams"]["events"]["lost"] == 0
        events = read(tmp_path / "r", "streams/events.parquet")
        ours = events[(events["ppid"] == os.getpid()) & (events["comm"] == "true")]
        assert len(ours) == n and m["streams"]["events"]["rows"] == len(events)
    finally:
        obj.destroy()


# --- reads: a recording that a replay follows (bpfnb.follow) -----------------------

# A lab cell's reads, run live and then replayed: the same code must see the same
# numbers. `obj`, `events`, `name` (a marker file) and `open_n` are given.
READS = """
out = {}
pid = obj.rodata.targ_pid
before = obj.bss.total
open_n(name, 50)
out["counted"] = obj.bss.total - before
df = obj.maps.counts.to_df()
out["mine"] = int(df.loc[df.key == pid, "value"].sum())
rows = events.to_df()
out["seen"] = int((rows.fname == name).sum())
open_n(name, 30)
out["tail"] = events.tail(3)["seq"].tolist()
out["held"] = len(events)
out["hist"] = int(obj.maps.name_len.hist().df["count"].sum())
out["bss"] = repr(obj.bss)
out["entries"] = len(obj.maps.counts)
out["last"] = obj.bss.total
"""
READ_COUNT = 11  # the reads of READS: a line may read twice (before, counted)

# A dashboard on another thread reads the same parts all along: it never counts.
DASHBOARD = """
import threading, time
stop, dashboard_reads = threading.Event(), []
def dashboard():
    while not stop.is_set():
        obj.bss.total; obj.maps.counts.to_df(); events.to_df(); len(obj.maps.counts)
        dashboard_reads.append(1)
        time.sleep(0.002)
dash = threading.Thread(target=dashboard)
dash.start()
time.sleep(0.05)
"""

FOLLOWER = """
import json, os, sys, warnings, bpfnb
out = {"caps": open("/proc/self/status").read().split("CapEff:")[1].split()[0]}
path, name, reads, dashboard_code = sys.argv[1:5]
def open_n(name, n):
    for _ in range(n):
        os.close(os.open(name, os.O_RDONLY))
obj = bpfnb.replay(path, follow="reads")
events = obj.maps.events.stream()
exec(dashboard_code)
ns = dict(obj=obj, events=events, name=name, open_n=open_n)
exec(reads, ns)
stop.set(); dash.join()
out["reads"], out["made"] = ns["out"], obj._follower.made
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    out["extra"] = [obj.bss.total, len(obj.maps.counts.to_df()), obj.bss.total]
out["warnings"] = [str(w.message) for w in caught]
out["dashboard_reads"] = len(dashboard_reads)
print(json.dumps(out))
"""


def run_reads(ns):
    exec(DASHBOARD, ns)
    try:
        exec(READS, ns)
    finally:
        ns["stop"].set()
        ns["dash"].join()
    return ns["out"]


def test_a_replay_without_any_capability_sees_what_the_notebook_saw_live(obj, tmp_path):
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or not setpriv:
        pytest.skip("dropping every capability of a child needs root and setpriv")
    path, name = tmp_path / "rec", marker()
    rec = obj.record(path, interval=0.05, reads=True)
    events = obj.maps.events.stream()
    ns = dict(obj=obj, events=events, name=name, open_n=open_n)
    live = run_reads(ns)
    rec.stop()
    assert rec.error is None and ns["dashboard_reads"], "the dashboard thread read"
    assert rec.reads == READ_COUNT, "the dashboard's reads do not count"
    assert live["counted"] >= 50 and live["seen"] == 50 and live["mine"] >= live["counted"]
    assert live["hist"] >= 80 and live["held"] >= 80 and live["entries"] == 1
    assert manifest(path)["reads"] == {"file": "reads.parquet", "count": READ_COUNT,
                                       "thread": "MainThread"}
    env = dict(os.environ, PYTHONPATH=ROOT)
    argv = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--",
            sys.executable, "-c", FOLLOWER, str(path), name, READS, DASHBOARD]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert int(out["caps"], 16) == 0
    assert out["reads"] == live, "every read answered with the number seen live"
    assert out["made"] == READ_COUNT and out["dashboard_reads"] > 0
    # Past the recorded reads: the last one's answer, said once.
    assert out["extra"] == [live["last"], live["entries"], live["last"]]
    assert len(out["warnings"]) == 1
    assert "more reads than the 11 recorded" in out["warnings"][0]


def test_read_marks_hold_what_each_read_returned(obj, tmp_path):
    path, name = tmp_path / "rec", marker()
    rec = obj.record(path, interval=10, reads=True)  # one interval snapshot, at start
    events = obj.maps.events.stream()
    seen = []
    for n in (10, 20):
        open_n(name, n)
        seen.append((obj.bss.total, obj.maps.counts.to_df(), len(events.to_df())))
    rec.stop()
    reads = read(path, "reads.parquet")
    assert list(reads["_read"]) == list(range(6)) and reads["_time"].is_monotonic_increasing
    assert list(reads["target"]) == ["globals", "maps/counts", "streams/events"] * 2
    assert list(reads["call"]) == ["value", "to_df", "to_df"] * 2
    snaps = read(path, "globals.parquet").set_index("_snapshot")
    counts = read(path, "maps/counts.parquet")
    recorded = read(path, "streams/events.parquet")
    for (total, df, held), (_, g), (_, m), (_, s) in zip(
            seen, reads[0::3].iterrows(), reads[1::3].iterrows(), reads[2::3].iterrows()):
        assert snaps.loc[g["_snapshot"], "bss.total"] == total
        rows = counts[counts["_snapshot"] == m["_snapshot"]].drop(columns=["_snapshot",
                                                                           "_time"])
        assert rows.reset_index(drop=True).equals(df)
        assert s["_snapshot"] == -1 and s["end"] - s["first"] == held
        window = recorded.iloc[s["first"]:s["end"]]
        assert (window["fname"] == name).sum() == (10 if s["_read"] == 2 else 30)
    # Following reads, what changed the kernel live is accepted and does nothing.
    followed = bpfnb.replay(path, follow="reads")
    followed.load().attach().detach()
    assert followed.progs.trace_openat.attach_tracepoint() == ()
    followed.maps.counts.clear()
    assert [followed.bss.total, len(followed.maps.counts.to_df())] == [seen[0][0], 1]
    with pytest.raises(ReadOnlyError):
        bpfnb.replay(path).maps.counts.clear()  # ReadOnlyError is an AttributeError


def test_the_notebooks_stream_and_the_recording_both_get_every_record(obj, tmp_path):
    # A ring buffer has one consumer position: two readers would split its records.
    n, name, path = 200, marker(), tmp_path / "rec"
    rec = obj.record(path, interval=0.1)
    events = obj.maps.events.stream()
    open_n(name, n)
    mine = events.to_df()
    rec.stop()
    assert (mine["fname"] == name).sum() == n
    assert (read(path, "streams/events.parquet")["fname"] == name).sum() == n
    events.close()
    assert not events.running


def test_a_recording_without_read_marks_cannot_be_followed(obj, tmp_path):
    obj.record(tmp_path / "plain", interval=0.1).stop()
    assert manifest(tmp_path / "plain")["reads"] is None
    with pytest.raises(ReplayError, match="has no read marks"):
        bpfnb.replay(tmp_path / "plain", follow="reads")
    last = read(tmp_path / "plain", "globals.parquet")["bss.total"].iloc[-1]
    assert bpfnb.replay(tmp_path / "plain").bss.total == last
