"""What the magics show under a cell: maps and globals, --for progress, printk lines,
streams and dashboards that update in place."""

from __future__ import annotations

import collections
import html
import sys
import threading
import time
import weakref

from IPython import get_ipython
from IPython.display import display

from .. import output
from ..registry import registry

_PROGRESS_STEP = 0.1  # seconds between progress updates of --for


def _show_data(obj):
    """Every map as a DataFrame, then the .bss/.data variables, each under a heading."""
    import pandas as pd
    from ..fleet import FleetObject
    if isinstance(obj, FleetObject):
        for map_name, df in obj.to_dfs().items():
            _heading(map_name)
            display(df)
        for section in ("bss", "data"):
            g = getattr(obj, section)
            if list(g):
                _heading(f"{section} by host")
                display(pd.DataFrame({var: getattr(g, var) for var in g}))
        return
    for map_name, df in obj.to_dfs().items():
        if len(df):
            _heading(map_name)
            display(df)
        else:
            _heading(f"{map_name}: empty (no entries)")
    rows = [(section, var, value) for section, g in obj.globals.items()
            if section in ("bss", "data") for var, value in g._asdict().items()]
    if rows:
        _heading("globals")
        display(pd.DataFrame(rows, columns=["section", "variable", "value"]))


def _print_maps(name, obj):
    """Every non-empty map as bpftrace prints it at exit, then the .bss/.data variables."""
    import pandas as pd
    from .. import show
    printouts = show.object_printouts(obj)
    for p in printouts:
        display(p)
    if not printouts and any(show.printable(m) for m in obj.maps):
        _heading(f"{name}: every map is empty")
    rows = show.user_globals(obj)
    if rows:
        _heading("globals")
        display(pd.DataFrame(rows, columns=["section", "variable", "value"]))


def _print_before_stop(name):
    """What %bpf stop shows: detach (the counts stop moving), then print the maps."""
    from ..fleet import FleetObject
    obj = registry.get(name)
    if obj is None or obj.state != "loaded" or isinstance(obj, FleetObject):
        return
    try:
        obj.detach()
        _print_maps(name, obj)
    except Exception as e:  # printing must never keep an object from being torn down
        _heading(f"{name}: could not print its maps ({type(e).__name__}: {e})")


def _heading(text: str):
    display({"text/plain": text, "text/html": f"<b>{html.escape(text)}</b>"}, raw=True)


class _Progress:
    """An ipywidgets bar in a Jupyter kernel, a line of text elsewhere; after the run,
    the recording's conversion of the records it still held (``saving``)."""

    def __init__(self, shell, name, seconds):
        self.name, self.seconds = name, seconds
        self.bar = None
        self.width = 0  # of the last line written: a shorter one covers it with spaces
        self.shown = 0.0  # monotonic time of the last saving update shown
        if getattr(shell, "kernel", None) is not None:
            try:
                from ipywidgets import IntProgress
            except ImportError:
                pass
            else:
                self.bar = IntProgress(min=0, max=max(1, round(seconds / _PROGRESS_STEP)),
                                       description=f"{name} 0 s")
                display(self.bar)
        self.update(0.0)

    def update(self, elapsed, note=""):
        if self.bar is not None:
            self.bar.value = min(self.bar.max, round(elapsed / _PROGRESS_STEP))
            self.bar.description = f"{self.name} {elapsed:.0f} s"
            self.bar.tooltip = note
        else:
            self._line(f"{self.name}: {elapsed:.1f} / {self.seconds:g} s{note}")

    def saving(self, elapsed, note, stream, done, held):
        """``stream``'s records converted so far (rec.stop's progress): shown every
        _PROGRESS_STEP, and always its first and last."""
        now = time.monotonic()
        if 0 < done < held and now - self.shown < _PROGRESS_STEP:
            return
        self.shown = now
        text = f"saving {stream}: {done} of {held} rows"
        if self.bar is not None:
            self.bar.max, self.bar.value = max(1, held), done
            self.bar.description = f"{self.name} saving"
            self.bar.tooltip = text
        else:
            self._line(f"{self.name}: {elapsed:.1f} / {self.seconds:g} s{note}, {text}")

    def _line(self, text, end=""):
        sys.stdout.write(f"\r{text.ljust(self.width)}{end}")
        sys.stdout.flush()
        self.width = len(text)

    def close(self, elapsed, note=""):
        if self.bar is not None:
            self.bar.close()
        else:
            self._line(f"{self.name}: {elapsed:.1f} / {self.seconds:g} s{note}", "\n")


def _recording_note(rec) -> str:
    """", recorded 3 snapshots, events 120 rows" for the progress line."""
    if rec is None:
        return ""
    rows = "".join(f", {k} {v} rows" for k, v in rec.rows.items())
    return f", recorded {rec.snapshots} snapshots{rows}"


class _PrintkView:
    """The cell's bpf_printk lines, shown under it while its program runs: a display
    updated in place from bpfnb.output's reader thread (update_display_data goes by
    display id, so it lands under this cell whichever cell runs now). At most one
    update per output.DELIVER_EVERY s, of SHOWN lines of WIDTH characters (about 10
    KB as text and HTML): 5 messages and ~50 KB per second and cell, far below
    Jupyter's limits (1,000 messages/s, 1 MB/s)."""

    SHOWN = 20
    WIDTH = 240  # characters of a line shown (obj.output() keeps them whole)

    def __init__(self, name, obj):
        self.name = name
        self.tail = collections.deque(maxlen=self.SHOWN)
        self.total = self.missed = 0
        self.route = output.describe(obj)
        self.stopped = False
        self.lock = threading.Lock()  # lines come on the reader thread
        self.handle = None  # lines arriving before it exists show with the first display
        self.unsubscribe = output.subscribe(obj, self._on_lines)
        with self.lock:
            self.handle = display(self._bundle(), raw=True, display_id=True)
        if self.unsubscribe is not None:
            registry.on_teardown(obj, self._on_teardown)

    def _on_lines(self, texts, missed):
        with self.lock:
            self.tail.extend(t if len(t) <= self.WIDTH else t[:self.WIDTH] + "…"
                             for t in texts)
            self.total += len(texts) + missed
            self.missed += missed
            if self.handle is not None:
                self.handle.update(self._bundle(), raw=True)

    def _on_teardown(self, obj):
        self.unsubscribe()
        with self.lock:
            self.stopped = True
            self.handle.update(self._bundle(), raw=True)

    def _bundle(self):
        if self.unsubscribe is None:
            head = f"{self.name}: bpf_printk lines cannot be shown: {self.route}"
        elif not self.total:
            head = f"{self.name}: bpf_printk lines appear here ({self.route})"
        else:
            shown = f", last {len(self.tail)}" if self.total > len(self.tail) else ""
            skipped = f", {self.missed} not shown" if self.missed else ""
            head = (f"{self.name}: {self.total} bpf_printk lines{shown}{skipped} "
                    f"(see {self.name}.output())")
        if self.stopped:
            head += f" ({self.name} stopped)"
        text = "\n".join([head, *self.tail])
        return {"text/plain": text, "text/html": f"<pre>{html.escape(text)}</pre>"}


class _StreamDisplays:
    """Streams shown in a notebook update in place: the display of an EventStream
    (its row count, lost, running or stopped) is re-sent by display id while it runs.
    One thread for every shown stream, waking every EVERY s and sending only what
    changed, so at most MAX / EVERY = 64 messages/s in all (Jupyter drops above
    1,000/s); it ends when no shown stream runs any more. Outside a Jupyter kernel
    (a terminal) a stream shows once, as its repr."""

    EVERY = 0.5
    MAX = 32    # streams kept updating; an older display beyond that stays as it is

    def __init__(self):
        self.lock = threading.Lock()
        self.shown: list[list] = []   # [weakref to the stream, display handle, text]
        self.thread: threading.Thread | None = None

    def __call__(self, stream):
        """IPython's display of an EventStream (ipython_display_formatter)."""
        text = repr(stream)
        shell = get_ipython()
        if shell is None or getattr(shell, "kernel", None) is None or not stream.running:
            display(_plain(text), raw=True)
            return
        handle = display(_plain(text), raw=True, display_id=True)
        with self.lock:
            self.shown.append([weakref.ref(stream), handle, text])
            del self.shown[:-self.MAX]
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="bpfnb-stream-displays")
                self.thread.start()

    def _run(self):
        while True:
            time.sleep(self.EVERY)
            with self.lock:
                shown = list(self.shown)
            ended = []
            for item in shown:
                stream = item[0]()
                if stream is None:
                    ended.append(item)
                    continue
                running = stream.running   # before the text: a last update when it stops
                text = repr(stream)
                if text != item[2]:
                    item[1].update(_plain(text), raw=True)
                    item[2] = text
                if not running:
                    ended.append(item)
            with self.lock:
                self.shown = [i for i in self.shown if all(i is not e for e in ended)]
                if not self.shown:
                    self.thread = None
                    return


def _plain(text: str) -> dict:
    return {"text/plain": text, "text/html": f"<code>{html.escape(text)}</code>"}


_stream_displays = _StreamDisplays()


def _ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _cell_started(info):
    """The registry closes what the last run of this cell made (its dashboards)."""
    cell_id = getattr(info, "cell_id", None)  # Jupyter's; None in a terminal
    registry.cell_started(cell_id or ("text", hash(info.raw_cell)))


def _cell_finished(result):
    registry.cell_finished()


_DASHBOARD = ("bpfnb.live.dashboard", "Dashboard")


def _show_dashboard(shell, dash):
    """A dashboard is shown under a display id; once it stops, its still (the last
    frame, which a saved notebook keeps) takes the widgets' place, and they are closed
    to free them. Outside a Jupyter kernel there is no output to replace."""
    if getattr(shell, "kernel", None) is None:
        display(dash._repr_mimebundle_(), raw=True)
        dash.when_stopped(lambda d: d.close())
        return
    handle = display(dash._repr_mimebundle_(), raw=True, display_id=True)

    def stopped(d):
        handle.update(d.still(), raw=True)
        d.close()
    dash.when_stopped(stopped)
