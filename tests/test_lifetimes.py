"""Dashboards and streams end with their object, keep their last frame, and free the
rest: %%bpf cells re-run through a real IPython InteractiveShell (and one notebook run
by a real Jupyter kernel), the programs' events caused by the test."""

import base64
import gc
import json
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import ipywidgets.widgets.widget as widget_module
import nbformat
import pytest
from IPython.utils.capture import capture_output

import bpfnb
from bpfnb.registry import registry
from tests.test_hist_tools import CHILD, child, go
from tests.test_live import PROGRAM, Worker, wait_for

ROOT = Path(__file__).resolve().parent.parent
PROGS = ROOT / "tests" / "progs"
# BPF stats stay on for a while after a dashboard last looked (bpfnb.libbpf.stats), then
# go off by themselves: their timer is not a thread of the dashboard or the stream.
STATS_TIMER = "bpfnb-stats-off"


def threads_now() -> list:
    return [t for t in threading.enumerate() if t.name != STATS_TIMER]


HEAD = "%%bpf tool -q --set target_tid="   # IPython expands {...} in the magic's line
RERUNS = 100
# bench/bench_rerun_memory.py holds 1,000 re-runs to 10 MB; the code before this test
# grew 188 MB in 100 re-runs and left 81 threads. A tenth of the re-runs is held to the
# same 10 MB: the first hundred also fill the allocator's pools (seen: 2.5 to 7 MB on a
# quiet machine, noise of the allocator, not of a leak: later re-runs reuse them).
RERUN_RSS_BOUND = 10e6


@pytest.fixture
def worker():
    w = Worker()
    yield w
    w.stop()


@pytest.fixture
def ip(shell, no_leaks, worker):
    """The shell with `tool` loaded (its programs count the worker's calls)."""
    run(shell, f"{HEAD}{worker.tid}\n{PROGRAM}", "bpf")
    yield shell
    registry.stop_all()
    for name in ("tool", "dash", "events"):
        shell.user_ns.pop(name, None)


def run(ip, text, cell_id=None):
    with capture_output() as out:
        ip.run_cell(text, cell_id=cell_id).raise_error()
    return out


def view(dash, title):
    return next(v for v in dash.views if v.title == title)


def live_widgets(dash) -> int:
    """How many of the dashboard's widgets ipywidgets still holds (closed ones go)."""
    held = {id(w) for w in widget_module._instances.values()}
    count, boxes = 0, [dash]
    while boxes:
        w = boxes.pop()
        boxes.extend(getattr(w, "children", ()))
        count += sum(id(part) in held for part in (w, getattr(w, "layout", None),
                                                   getattr(w, "style", None)))
    return count


def test_stop_ends_dashboards_and_streams_at_once_keeping_what_they_had(ip, worker):
    threads = {t.ident for t in threads_now()}
    run(ip, "events = tool.maps.seeks.stream()\ndash = tool.live(interval=0.05)\ndash", "use")
    dash, events = ip.user_ns["dash"], ip.user_ns["events"]
    assert len(threads_now()) == len(threads) + 2
    worker.cause(getppid=7, offsets=[11, 22, 33])
    assert wait_for(lambda: view(dash, "calls").data["value"].tolist() == [7])
    drawn = dash.frames
    assert wait_for(lambda: dash.frames > drawn)   # a frame drawn after that read
    figure = weakref.ref(dash.panels.figure)

    run(ip, "%bpf stop tool -q")
    # No waiting: both threads ended before the object went.
    assert {t.ident for t in threads_now()} == threads
    assert not dash.running and not events.running
    assert "'tool' was destroyed" in dash.reason and "destroyed" in dash.status.value
    # The stream collected what was left in the ring buffer first; its rows stay.
    assert events.to_df()["offset"].tolist() == [11, 22, 33]
    # The last frame stays; the figure, the artists and the sources go.
    assert bytes(dash.image.value).startswith(b"\x89PNG")
    assert dash.panels is None and all(v.ax is None and v._source is None
                                       for v in dash.views)
    assert view(dash, "calls").data["value"].tolist() == [7]   # what it read stays readable
    gc.collect()
    assert figure() is None
    still = dash.still()
    assert base64.b64decode(still["image/png"]) == dash.image.value
    assert still["image/png"] in still["text/html"] and "destroyed" in still["text/html"]
    assert dash.snapshot() == dash.image.value   # the last frame, as PNG
    with pytest.raises(RuntimeError, match="stopped"):
        dash.refresh()
    # Shown (outside a Jupyter kernel: no output to replace), so its widgets are closed.
    assert live_widgets(dash) == 0


def test_rerunning_a_dashboard_cell_closes_the_dashboard_it_made(ip, worker):
    threads = len(threads_now())
    run(ip, "dash = tool.live(interval=0.05)\ndash", "dash")
    first = ip.user_ns["dash"]
    run(ip, "other = tool.maps.calls.live(interval=0.05)", "other")
    other = ip.user_ns.pop("other")
    assert wait_for(lambda: first.frames >= 1)
    assert live_widgets(first)

    run(ip, "dash = tool.live(interval=0.05)\ndash", "dash")   # the same cell again
    second = ip.user_ns["dash"]
    assert not first.running and first.reason == "stopped" and live_widgets(first) == 0
    assert first.panels is None
    assert second.running and other.running     # another cell's dashboard goes on
    worker.cause(getppid=3)
    assert wait_for(lambda: view(second, "calls").data["value"].tolist() == [3])
    assert len(threads_now()) == threads + 2

    # Without a cell id (a terminal), the same text is the same cell.
    run(ip, "dash = tool.live(interval=0.05)")
    third = ip.user_ns["dash"]
    run(ip, "dash = tool.live(interval=0.05)")
    assert not third.running and ip.user_ns["dash"].running
    assert second.running   # made by the cell with the id "dash", not by this text

    run(ip, "%bpf stop --all -q")
    assert not any(d.running for d in (second, other, ip.user_ns["dash"]))
    assert len(threads_now()) == threads


def test_destroyed_or_collected_objects_stop_their_dashboards(no_leaks, worker):
    """Objects the registry does not own: the thread notices within WATCH_S."""
    threads = len(threads_now())
    obj = bpfnb.load(PROGRAM, rodata={"target_tid": worker.tid})
    by_hand = bpfnb.live(obj.maps.calls, interval=0.05)
    stream = obj.maps.seeks.stream()
    worker.cause(getppid=2, offsets=[5])
    assert wait_for(lambda: by_hand.frames >= 2)
    obj.destroy()
    assert wait_for(lambda: not by_hand.running and not stream.running, timeout=1.0)
    assert by_hand.panels is None and bytes(by_hand.image.value).startswith(b"\x89PNG")
    assert stream.to_df()["offset"].tolist() == [5]

    obj = bpfnb.load(PROGRAM, rodata={"target_tid": worker.tid})
    collected = bpfnb.live(obj.maps.calls, obj.bss, interval=0.05)
    assert wait_for(lambda: collected.frames >= 1)
    del obj   # no destroy(): garbage collection ends it
    gc.collect()
    assert wait_for(lambda: not collected.running, timeout=1.0)
    assert collected.panels is None and "destroyed" in collected.reason
    by_hand.close()
    collected.close()
    stream.close()
    assert len(threads_now()) == threads


def test_a_libbpf_tools_info_struct_with_slots_is_drawn_as_a_histogram(no_leaks, tmp_path):
    """hardirqs' shape: a name key, `struct info { count...; u32 slots[N]; }`. A child
    opens the files once it is told to: its opens are all the program counts."""
    opens = {"alpha": 6, "beta": 2}
    paths = [str(tmp_path / name) for name, n in opens.items() for _ in range(n)]
    for name in opens:
        (tmp_path / name).touch()
    script = CHILD + "for path in sys.argv[2:]:\n    os.close(os.open(path, os.O_RDONLY))\n"
    with child(script, "opener", *paths) as proc, \
            bpfnb.load(PROGS / "openlat.bpf.c", maps={"start": 1024, "infos": 64},
                       rodata={"targ_tgid": proc.pid}) as obj:
        dash = obj.live(interval=10)
        try:
            kinds = {v.title: type(v).__name__ for v in dash.views}
            assert kinds == {"infos": "Histogram", "start": "TopN"}
            go(proc)
            dash.refresh()
            hist = next(v for v in dash.views if v.title == "infos")
            # Summed over the names: the bars are the latency buckets of all 8 opens.
            assert sum(b.get_height() for b in hist.bars) == len(paths)
            by_bucket = obj.maps.infos.hist().groupby(["low", "high"])["count"].sum()
            assert [b.get_height() for b in hist.bars] == by_bucket.tolist()
        finally:
            dash.stop()


def test_rerunning_cells_100_times_leaves_no_thread_and_little_memory(need_root):
    """The bench's loop (bench/bench_rerun_memory.py), smaller, in its own process."""
    code = ("import json, sys\nsys.path.insert(0, 'bench')\n"
            "import bench_rerun_memory as b\n"
            f"print(json.dumps(b.rerun_loop({RERUNS}, True)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["threads_left"] == []
    assert got["rss_growth"] <= RERUN_RSS_BOUND, got


NOTEBOOK = [
    "%load_ext bpfnb\nimport os, threading, time\nimport bpfnb\n"
    "from tests.test_live import PROGRAM, Worker\nworker = Worker()",
    HEAD + "{worker.tid}\n" + PROGRAM,
    "dash = tool.live(interval=0.05)\ndash",
    "loose = bpfnb.load(PROGRAM, rodata={'target_tid': worker.tid})\n"
    "by_hand = bpfnb.live(loose.maps.calls, interval=0.05)\nby_hand",
    "worker.cause(getppid=4, offsets=[1, 2])\n"
    "end = time.monotonic() + 20\n"
    "while (dash.views[1].rows < 1 or by_hand.views[0].rows < 1) and time.monotonic() < end:\n"
    "    time.sleep(0.05)\n"
    "loose.destroy()   # the dashboard's own thread notices, and replaces its output\n"
    "while by_hand.running and time.monotonic() < end:\n"
    "    time.sleep(0.05)\n"
    "time.sleep(0.2)",
    "%bpf stop --all\nworker.stop()",
]


def test_a_notebook_run_to_the_end_keeps_the_dashboards_last_frames(need_root, tmp_path):
    """Run All, then save: each dashboard's output is its last frame, not a widget
    whose state the notebook lacks."""
    from nbclient import NotebookClient
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(text) for text in NOTEBOOK]
    NotebookClient(nb, kernel_name="python3", timeout=120, startup_timeout=60,
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    path = tmp_path / "run.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)
    for cell in (saved.cells[2], saved.cells[3]):
        (output,) = [o for o in cell.outputs if o.output_type == "display_data"]
        data = output["data"]
        assert "application/vnd.jupyter.widget-view+json" not in data
        png = base64.b64decode(data["image/png"])
        assert png.startswith(b"\x89PNG") and len(png) > 2000
        assert "<img" in data["text/html"] and "destroyed" in data["text/html"]
