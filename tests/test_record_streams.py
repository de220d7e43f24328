"""A recording's streams against the real kernel: records go from their bytes to the
file as to_df() shows them, through the spool file when the recording's memory is
spent (fixed and varying sizes, counted exactly), a stop that reports its conversion,
and a recording whose process is killed (bpfnb/record/streams.py)."""

import os
import re
import struct
import subprocess
import sys
import time

import pytest

import bpfnb
from bpfnb.record import STREAM_POLL
from bpfnb.replay import ReplayError
from test_record import ip  # noqa: F401 (a fixture: an IPython shell with bpfnb)
from test_record import PROGS, ROOT, manifest, marker, read, record_for_a_second


def test_numeric_records_are_written_straight_and_read_back_as_to_df(no_leaks, tmp_path):
    """Records of only numbers take the recorder's path from their bytes to Arrow
    (files.StreamColumns): the file still holds to_df()'s columns and values."""
    from bpfnb.record.files import StreamColumns
    n = 3000
    with bpfnb.load(PROGS / "seeks.bpf.c", rodata={"targ_pid": os.getpid()}) as o:
        events = o.maps.events.stream()
        assert StreamColumns(events).fields is not None
        rec = o.record(tmp_path / "rec", interval=0.05)
        fd = os.open("/dev/null", os.O_RDONLY)
        try:
            for i in range(n):
                try:
                    os.lseek(fd, -i, 0x5eec)  # no such whence: EINVAL, but traced
                except OSError:
                    pass
        finally:
            os.close(fd)
        live = events.to_df()
        rec.stop()
        events.close()
    recorded = read(tmp_path / "rec", "streams/events.parquet")
    assert len(live) == n and list(live["seq"]) == list(range(n))
    assert recorded.drop(columns="_time").equals(live)
    assert list(recorded["offset"]) == [-i for i in range(n)]


# --- floods and kills --------------------------------------------------------------

FLOOD = r"""
import os, sys, time
n, rate = int(sys.argv[1]), float(sys.argv[2])
fd = os.open("/dev/null", os.O_RDONLY)
sys.stdin.readline()
start = time.monotonic()
for i in range(n):
    try:
        os.lseek(fd, i, 0x5eec)  # no such whence: EINVAL, but traced
    except OSError:
        pass
    if i % 1000 == 999 and (ahead := start + (i + 1) / rate - time.monotonic()) > 0:
        time.sleep(ahead)
"""


def test_a_flood_through_a_recording_keeps_every_record_held_or_spooled(no_leaks, tmp_path,
                                                                        monkeypatch):
    """300k records at 200k/s (a 16 MiB ring takes them all: the machine keeps up with
    margin), with a recording holding 1 MiB in memory and never quiet: the rest goes
    through its spool file, converted at the stop. Every record the stream consumed is
    in the file, once, in order."""
    from bpfnb.record import streams as recordstreams
    monkeypatch.setattr(recordstreams, "SPOOL_MEMORY", 1 << 20)
    monkeypatch.setattr(recordstreams, "SPOOL_QUIET", 0)
    n, path = 300_000, tmp_path / "rec"
    spool, spooled = path / "streams" / ".events.spool", 0
    child = subprocess.Popen([sys.executable, "-c", FLOOD, str(n), "200000"],
                             stdin=subprocess.PIPE)
    try:
        with bpfnb.load(PROGS / "seeks.bpf.c", rodata={"targ_pid": child.pid},
                        maps={"events": 16 << 20}) as o:
            events = o.maps.events.stream(max_rows=n)
            rec = o.record(path, interval=0.2)
            child.stdin.write(b"go\n")
            child.stdin.close()
            deadline = time.monotonic() + 60
            while (child.poll() is None or len(events) < n) and time.monotonic() < deadline:
                spooled = max(spooled, spool.stat().st_size)
                time.sleep(0.01)
            rec.stop()
            live, lost = events.to_df(), events.lost
            events.close()
    finally:
        child.kill()
        child.wait()
    assert child.returncode == 0
    m = manifest(path)["streams"]["events"]
    recorded = read(path, "streams/events.parquet")
    assert len(live) == n and lost == 0
    assert m["rows"] == rec.rows["events"] == len(recorded) == n
    assert m["lost"] == 0 and m["dropped"] == 0
    assert spooled > 1 << 20, spooled  # past the memory: on disk
    assert list(recorded["seq"]) == list(range(n))
    assert recorded.drop(columns="_time").equals(live)
    assert recorded["_time"].is_monotonic_increasing
    assert not spool.exists() and "spool" not in m  # converted, then removed


KILLED = r"""
import os, sys, time
import bpfnb
o = bpfnb.load(sys.argv[2], rodata={"targ_pid": os.getpid()})
rec = o.record(sys.argv[1], interval=0.05)
fd = os.open("/dev/null", os.O_RDONLY)
for i in range(1000):
    try:
        os.lseek(fd, i, 0x5eec)
    except OSError:
        pass
while rec.rows["events"] < 1000:
    time.sleep(0.01)
print(rec.rows["events"], flush=True)
time.sleep(60)
"""


def test_a_recording_whose_process_is_killed_says_what_is_lost(tmp_path):
    path = tmp_path / "rec"
    child = subprocess.Popen([sys.executable, "-c", KILLED, str(path),
                              str(PROGS / "seeks.bpf.c")], stdout=subprocess.PIPE,
                             text=True, env={**os.environ, "PYTHONPATH": ROOT})
    try:
        assert child.stdout.readline().strip() == "1000"
        with pytest.raises(ReplayError, match=rf"still being recorded \(by process "
                                              rf"{child.pid}\): stop"):
            bpfnb.replay(path)
    finally:
        child.kill()
        child.wait()
    m = manifest(path)  # as written at the start: what was being recorded
    assert m["state"] == "recording" and m["pid"] == child.pid
    assert m["streams"]["events"]["file"] == "streams/events.parquet"
    with pytest.raises(ReplayError, match=rf"unfinished recording: the process that "
                                          rf"recorded it \(pid {child.pid} on .*\) ended "
                                          rf"without stopping it \(killed.*are lost"):
        bpfnb.replay(path, follow="reads")


# --- records of varying size, and the stop's conversion -------------------------

def varlen_expected(i: int, pid: int) -> bytes:
    """Record ``i`` of varlen.bpf.c as it leaves the program: tail length i % 65."""
    n = i % 65
    return struct.pack("<QII", i, pid, n) + bytes((i + j) & 0xff for j in range(n))


def record_varlen(path, monkeypatch, n: int, progress=None):
    """``n`` varlen.bpf.c records (every tail length 0..64, so both a spool's frames:
    SIZED ones, and FIXED for the full-size records) recorded with 16 KiB of memory and
    never quiet: a first small batch is held in memory, the rest goes through the spool
    file, all converted at the stop in 8 KiB chunks. The live stream's frame, the most
    the spool file held, and the stop's progress calls."""
    from bpfnb.record import streams as recordstreams
    monkeypatch.setattr(recordstreams, "SPOOL_MEMORY", 16 << 10)
    monkeypatch.setattr(recordstreams, "SPOOL_QUIET", 0)
    monkeypatch.setattr(recordstreams, "SPOOL_CHUNK", 8 << 10)
    spooled, calls = 0, []
    with bpfnb.load(PROGS / "varlen.bpf.c", rodata={"targ_pid": os.getpid()},
                    maps={"events": 4 << 20}) as o:
        events = o.maps.events.stream()
        rec = o.record(path, interval=0.2)
        fd = os.open("/dev/null", os.O_RDONLY)
        try:
            start = 0
            for batch in [50] + [-(-(n - 50) // 10)] * 10:
                for i in range(start, min(start + batch, n)):
                    try:
                        os.lseek(fd, i % 65, 0x5eec)  # no such whence: EINVAL, but traced
                    except OSError:
                        pass
                start += batch
                time.sleep(2 * STREAM_POLL)  # a move in between: one frame per batch
                # the spool's bytes, with those its O_DIRECT stage holds (written to
                # the file 4 MiB at a time, so the file's size lags)
                spooled = max(spooled, rec._spooled.spools["events"].size)
        finally:
            os.close(fd)
        rec.stop(progress=None if progress is None else
                 lambda *p: calls.append(p))
        live = events.to_df()
        events.close()
    return rec, live, spooled, calls


def test_records_of_varying_size_come_back_exactly_through_the_spool_file(
        no_leaks, tmp_path, monkeypatch):
    n, path, pid = 6000, tmp_path / "rec", os.getpid()
    rec, live, spooled, _ = record_varlen(path, monkeypatch, n)
    assert spooled > 16 << 10, spooled  # past the memory: through the file
    m = manifest(path)["streams"]["events"]
    assert m["rows"] == rec.rows["events"] == n and m["lost"] == 0 and m["dropped"] == 0
    replayed = bpfnb.replay(path).maps.events.stream().to_df()
    recorded = read(path, "streams/events.parquet")
    assert len(live) == len(replayed) == n
    assert list(replayed["seq"]) == list(range(n))
    assert list(replayed["len"]) == [i % 65 for i in range(n)]
    assert (replayed["pid"] == pid).all()
    expected = [varlen_expected(i, pid) for i in range(n)]
    # records shorter than the struct keep their bytes in `raw`; full ones are the struct
    assert list(replayed["raw"]) == [b if i % 65 < 64 else None
                                     for i, b in enumerate(expected)]
    assert [bytes(t[:i % 65]) for i, t in enumerate(replayed["tail"])] == [
        b[16:] for b in expected]
    assert all(not any(t[i % 65:]) for i, t in enumerate(replayed["tail"]))  # zero-padded
    assert replayed.equals(live)
    assert recorded.drop(columns="_time").equals(live)
    assert not (path / "streams" / ".events.spool").exists()


def test_the_stop_reports_its_conversion_on_the_callers_thread(no_leaks, tmp_path,
                                                                monkeypatch, capsys):
    """rec.stop(progress=...) hears each chunk (rows converted of rows held, from 0 to
    all of them); a plain stop() says nothing."""
    n = 6000
    rec, live, _, calls = record_varlen(tmp_path / "rec", monkeypatch, n, progress=True)
    names, done, held = zip(*calls)
    assert set(names) == {"events"} and set(held) == {n}  # nothing converted before
    assert done[0] == 0 and done[-1] == n and len(done) > 10  # many 8 KiB chunks
    assert all(a < b for a, b in zip(done, done[1:]))
    assert rec.rows["events"] == n and len(live) == n
    record_varlen(tmp_path / "quiet", monkeypatch, 200)
    assert capsys.readouterr() == ("", "")


def test_record_magic_for_seconds_shows_the_conversion_until_it_ends(ip, tmp_path,
                                                                     monkeypatch):
    from bpfnb.record import streams as recordstreams
    monkeypatch.setattr(recordstreams, "SPOOL_QUIET", 0)  # all converted at the stop
    monkeypatch.setattr(recordstreams, "SPOOL_CHUNK", 8 << 10)
    name, n = marker(), 1000
    out = record_for_a_second(ip, tmp_path / "r", name, n)
    shown = [(int(d), int(h)) for d, h in
             re.findall(r"saving events: (\d+) of (\d+) rows", out)]
    rows = manifest(tmp_path / "r")["streams"]["events"]["rows"]
    assert (read(tmp_path / "r", "streams/events.parquet")["fname"] == name).sum() == n
    assert shown[0] == (0, rows) and shown[-1] == (rows, rows), out
    assert all(a[0] < b[0] for a, b in zip(shown, shown[1:]))
    # the last line: what was recorded, covering the longer saving line before it
    assert re.search(rf"recorder: 1\.\d / 1 s, recorded \d+ snapshots, events {rows} rows"
                     r" *\n$", out), out
