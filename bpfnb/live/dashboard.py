"""The Dashboard widget: views drawn by ``Panels`` into an ``ipywidgets.Image``, with
controls (pause, stop, interval) and a status line.

A daemon thread per dashboard refreshes it: it reads every view's source, and draws
and sends a frame only when what a view shows changed (only those views are drawn, and
only the changed bands of the PNG compressed again). It ends with its BPF objects:
right before the registry tears one down (re-run of its cell, ``%bpf stop``, exit),
or within WATCH_S of any other destruction (``obj.destroy()``, garbage collection). A
stopped dashboard keeps its last frame (the Image's PNG, the tables' HTML) and drops
the rest: figure, canvas, artists, sources. ``still()`` is that last frame as a mime bundle, which
the magic's display puts in place of the widgets once the dashboard stops, so a saved
notebook shows it. A dashboard made in a cell is closed when that cell runs again.

Only this module (live/dashboard.py) of bpfnb knows about ipywidgets.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import html
import threading
import time
import warnings
import weakref
from pathlib import Path

import ipywidgets as widgets

from .. import overhead
from ..follow import uncounted
from ..libbpf import ObjectClosedError
from ..registry import registry
from .draw import Panels, _pixels, _stack
from .png import FrameEncoder, png_bytes, png_pixels
from .pick import view_of

WATCH_S = 0.1      # how soon a waiting dashboard notices that its BPF object is gone
STATUS_S = 0.5     # the status line is rewritten at most this often while frames flow

# --- the dashboard -----------------------------------------------------------------

_running: "weakref.WeakSet[Dashboard]" = weakref.WeakSet()


class Dashboard(widgets.VBox):
    """A live dashboard: plots that refresh every ``interval`` seconds in a thread.

    Controls: pause/resume, stop, the interval, and a status line (refresh rate, rows,
    events lost). ``frames`` counts refreshes, ``sent`` those that sent a new image
    or table: a refresh that finds nothing changed sends nothing. It stops by itself
    when a BPF object it reads is destroyed; ``stop()`` ends its thread, keeping the
    last frame. ``snapshot(path)`` writes the current (or last) view as PNG;
    ``still()`` is the last frame as a mime bundle.
    """

    _stop: threading.Event | None = None   # set at the end of a successful __init__
    _finished = False

    def __init__(self, views, interval: float = 1.0, title: str | None = None,
                 start: bool = True):
        with uncounted():   # a dashboard's reads are none of the notebook's (bpfnb.follow)
            self.views = [view_of(v) for v in views]
        if not self.views:
            raise ValueError("a dashboard needs at least one view (a map, obj.bss, a stream...)")
        if interval <= 0:
            raise ValueError("interval must be > 0 seconds")
        self.panels: Panels | None = Panels(self.views)   # None once stopped
        self.title = title
        self._plots = bool(self.panels.plots)
        self.interval = float(interval)
        self.frames = 0   # refreshes: sources read, a frame sent if anything changed
        self.sent = 0     # refreshes that sent a new image or table
        self.fps = 0.0    # refreshes per second
        self.frame_ms = 0.0
        self.error: BaseException | None = None
        self.reason = ""
        self._draw_lock = threading.RLock()
        self._state_lock = threading.Lock()
        self._exited = False   # the thread is out of its loop
        self._late = False     # stop() gave up waiting: the thread finishes on its way out
        self._when_stopped: list = []
        self._cancels: list = []   # of the registry's teardown callbacks
        self._paused = False
        self._thread: threading.Thread | None = None
        self._last_frame = 0.0
        self._gap = 0.0
        self._sent_share = 0.0   # a moving average of the refreshes that sent a frame
        self._png = FrameEncoder()
        self._idle_shown = False   # the status says nothing changed since the last frame
        self._status_at = 0.0      # when the refresh thread last wrote the status line

        # Drawn at SCALE device pixels per CSS pixel, shown at its CSS width: crisp.
        css_width, _ = self.panels.css_size
        self.image = widgets.Image(format="png", width=str(css_width),
                                   layout=widgets.Layout(max_width="100%", height="auto"))
        self.pause_button = widgets.ToggleButton(description="Pause", icon="pause",
                                                 tooltip="pause / resume refreshing")
        self.stop_button = widgets.Button(description="Stop", icon="stop",
                                          tooltip="stop this dashboard for good")
        self.slider = widgets.FloatLogSlider(value=self.interval, base=10, min=-2, max=1,
                                             step=0.05, description="interval (s)",
                                             readout_format=".2f", continuous_update=False)
        self.status = widgets.HTML()
        self.pause_button.observe(self._on_pause, "value")
        self.stop_button.on_click(lambda _: self.stop("stopped"))
        self.slider.observe(self._on_interval, "value")
        header = [widgets.HTML(f"<b>{html.escape(title)}</b>")] if title else []
        controls = widgets.HBox([self.pause_button, self.stop_button, self.slider])
        shown = [self.image] if self.panels.plots else []
        self.tables = [widgets.HTML() for _ in self.panels.tables]
        super().__init__(header + [controls] + shown + self.tables + [self.status])
        self._stop = threading.Event()
        owners = {id(o): o for v in self.views if (o := v.owner) is not None}
        for obj in owners.values():
            if registry.owns(obj):
                try:
                    self._cancels.append(registry.on_teardown(obj, self._torn_down))
                except ValueError:   # torn down meanwhile: the thread will notice
                    pass
        registry.adopt(self)   # closed when the cell that made it runs again
        self._show_status("ready")
        if start:
            self.start()

    # --- lifecycle -------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> "Dashboard":
        if self._stop.is_set():
            raise RuntimeError("this dashboard was stopped; make a new one with bpfnb.live()")
        if not self.running:
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name=f"bpfnb-live-{id(self):x}")
            _running.add(self)
            self._thread.start()
        return self

    def stop(self, reason: str = "stopped", timeout: float = 5.0):
        """Stop refreshing and end the thread (waits for it up to ``timeout`` s); the
        last frame stays, the figure and the sources are let go."""
        if self._stop is None:   # __init__ failed (ipywidgets' __del__ still calls close)
            return
        with self._state_lock:
            if not self._stop.is_set():
                self.reason = reason
                self._stop.set()
            thread = self._thread
        here = thread is threading.current_thread()
        if thread is not None and not here:
            thread.join(timeout)
        with self._state_lock:
            # A thread still drawing (a slow source) finishes the job when it gets out.
            now = thread is None or here or self._exited
            self._late = not now
        if now:
            self._finish()
        _running.discard(self)

    def _torn_down(self, obj):
        self.stop(f"stopped: the BPF object {obj.name!r} was destroyed")

    def _finish(self):
        """Once, after the thread: keep the last frame, drop the rest, tell who asked."""
        with self._state_lock:
            if self._finished:
                return
            self._finished = True
            callbacks, self._when_stopped = self._when_stopped, []
        for cancel in self._cancels:
            cancel()
        self._cancels = []
        with self._draw_lock:
            for view in self.views:
                try:
                    view.close()
                except Exception as e:   # one view's stream must not keep the figure
                    warnings.warn(f"closing view {view.title!r}: {e!r}", RuntimeWarning)
                view.release()
            if self._plots and self.image.value:
                # The frame it keeps, compressed harder once (40% smaller than the
                # frames' level 1): a notebook holds it as long as the dashboard.
                self.image.value = png_bytes(_pixels(self.panels.figure), level=6)
            self.panels.close()
            self.panels = None
            self._png = None   # the previous frame's pixels and bands: the PNG stays
        _trim_heap()
        self.pause_button.disabled = self.stop_button.disabled = True
        self.slider.disabled = True
        self._show_status(self.reason)
        for callback in callbacks:
            try:
                callback(self)
            except Exception as e:
                warnings.warn(f"dashboard stop callback {callback!r}: {e!r}", RuntimeWarning)

    def when_stopped(self, callback):
        """Call ``callback(dashboard)`` once it has stopped (at once if it has): the
        magic's display puts ``still()`` in place of the widgets then."""
        with self._state_lock:
            if not self._finished:
                self._when_stopped.append(callback)
                return
        callback(self)

    def close(self):
        """Stop, and close the widgets (they disappear from the notebook), with their
        layout and style widgets: ipywidgets holds every widget until it is closed."""
        self.stop()
        boxes = [self] if self._stop is not None else []   # else __init__ failed early
        while boxes:
            w = boxes.pop()
            boxes.extend(getattr(w, "children", ()))
            for part in (getattr(w, "layout", None), getattr(w, "style", None)):
                if isinstance(part, widgets.Widget):
                    part.close()
            if w is not self:
                w.close()
        super().close()

    def pause(self):
        with self._draw_lock:   # a refresh under way finishes first: "paused" stays
            self._paused = True
            self._show_status("paused")
        self.pause_button.value = True

    def resume(self):
        self._paused = False
        self.pause_button.value = False

    def _on_pause(self, change):
        if change["new"] != self._paused:
            (self.pause if change["new"] else self.resume)()
        self.pause_button.description = "Resume" if change["new"] else "Pause"
        self.pause_button.icon = "play" if change["new"] else "pause"

    def _on_interval(self, change):
        self.interval = float(change["new"])

    def _run(self):
        try:
            self._loop()
        finally:
            with self._state_lock:
                self._exited = True
                late = self._late
            if late:
                self._finish()

    def _loop(self):
        deadline = time.monotonic()
        while not self._stop.is_set():
            try:
                for view in self.views:   # paused or not
                    view.check()
                if not self._paused:
                    self.refresh()
            except ObjectClosedError as e:
                self.stop(f"stopped: {e}")
                return
            except Exception as e:   # a view's source failed: show it, stop
                self.error = e
                self.stop(f"stopped on error: {type(e).__name__}: {e}")
                return
            deadline = max(deadline + self.interval, time.monotonic())   # no catching up
            self._wait(deadline)

    def _wait(self, deadline: float):
        """Sleep until ``deadline``; wake early on stop() or when a BPF object is gone."""
        while not self._stop.is_set() and all(v.alive() for v in self.views):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stop.wait(min(left, WATCH_S))

    # --- frames ----------------------------------------------------------------

    def refresh(self, now: float | None = None) -> bool:
        """Read every source; draw and send a frame of the views whose data changed.
        True if it sent one (the thread calls this; so may you). ``now`` is the time
        of the reading on the monotonic clock (default: now), which rates divide by."""
        with self._draw_lock:
            if self.panels is None:
                raise RuntimeError("this dashboard was stopped; make a new one with "
                                   "bpfnb.live()")
            start = time.monotonic()
            now = start if now is None else now
            with uncounted():   # also when the notebook's thread refreshes it
                self.panels.sample(now)
            pixels = self.panels.render(now)
            sent = pixels is not None
            if sent:
                self.image.value = self._png.encode(pixels)
            for widget, table in zip(self.tables, self.panels.tables):
                if widget.value != table.page:
                    widget.value = table.page
                    sent = True
            end = time.monotonic()
            if self._last_frame:   # a moving average of the gaps, not of 1/gap (biased)
                gap = end - self._last_frame
                self._gap = gap if self.frames < 2 else 0.8 * self._gap + 0.2 * gap
                self.fps = 1.0 / max(self._gap, 1e-6)
            self._last_frame = end
            self.frame_ms = (end - start) * 1000
            self.frames += 1
            self.sent += sent
            self._sent_share = sent if self.frames < 2 else \
                0.8 * self._sent_share + 0.2 * sent
            if self._paused or self._stop.is_set():
                return sent
            # The status line: at most STATUS_S apart while frames flow (it is for eyes).
            if sent and (self._idle_shown or end - self._status_at >= STATUS_S):
                self._idle_shown = False
                self._status_at = end
                self._show_status("running")
            elif not self._idle_shown:   # said once: an idle dashboard sends nothing
                self._idle_shown = True
                self._sent_share = 0.0
                self._show_status(f"running · no change since "
                                  f"{time.strftime('%H:%M:%S')}")
            return sent

    def _show_status(self, state: str):
        rows = sum(v.rows for v in self.views)
        losses = [v.lost for v in self.views]
        lost = None if None in losses else sum(losses)
        color = "#b00" if self.error else "#555"
        lost_html = ("lost: unknown" if lost is None else
                     f"<b style='color:#b00'>{lost:,} lost</b>" if lost else "0 lost")
        self.status.value = (f"<span style='font-size:11px;color:{color}'>{state} · "
                             f"{self.fps:.1f} refreshes/s · "
                             f"{self.fps * self._sent_share:.1f} frames/s sent · "
                             f"{self.frame_ms:.0f} ms/refresh · "
                             f"{rows:,} rows · {lost_html}{_overhead_text(self.views)}"
                             f"</span>")

    def snapshot(self, path: str | Path | None = None) -> bytes:
        """The current view (plots, then tables) as PNG bytes; written to ``path`` if
        given. A stopped dashboard gives its last frame."""
        with self._draw_lock:
            if self.panels is not None and not self.frames:
                self.refresh()
            frame = bytes(self.image.value)   # the last frame sent
            if self._plots and not frame:
                raise RuntimeError(f"this dashboard {self.reason or 'stopped'} before it "
                                   f"drew a frame: there is nothing to save")
            tables = [_pixels(v.figure()).copy() for v in self.views if v.html]
        data = (frame if not tables else
                png_bytes(_stack(([png_pixels(frame)] if self._plots else []) + tables)))
        if path is not None:
            Path(path).write_bytes(data)
        return data

    def still(self) -> dict:
        """The dashboard as it was last drawn, as a mime bundle: text/html (the title,
        the last frame, the tables, the status line), image/png (the frame alone) and
        text/plain. What the notebook keeps once the dashboard stopped."""
        png = base64.b64encode(self.image.value).decode() if self.image.value else ""
        parts = [f"<b>{html.escape(self.title)}</b>"] if self.title else []
        if png:
            width = self.image.width   # its CSS width: the PNG has SCALE times the pixels
            parts.append(f'<img src="data:image/png;base64,{png}" width="{width}" '
                         f'style="max-width:100%" alt="last frame"/>')
        parts += [t.value for t in self.tables] + [self.status.value]
        bundle = {"text/plain": repr(self),
                  "text/html": "<div>" + "<br/>".join(parts) + "</div>"}
        if png:
            bundle["image/png"] = png
        return bundle

    def _repr_mimebundle_(self, **kwargs):
        """The widget while it runs (with its last frame as image/png, for viewers of a
        notebook saved meanwhile that cannot show widgets); its still once it has
        stopped (its widgets may be closed)."""
        if self._finished:
            return self.still()
        bundle = super()._repr_mimebundle_(**kwargs)
        if self.image.value:
            bundle["image/png"] = base64.b64encode(self.image.value).decode()
        return bundle

    def __repr__(self):
        if self._stop is None:
            return "<bpfnb Dashboard: not made>"
        state = (self.reason if self._stop.is_set()
                 else "running" if self.running else "not started")
        return (f"<bpfnb Dashboard: {len(self.views)} views, {state}, {self.frames} refreshes, "
                f"{self.sent} frames sent>")


def _trim_heap():
    """Give the freed pixel buffers of a stopped dashboard back to the system: glibc
    keeps freed blocks of a few MB in the arena of the thread that drew them (each
    dashboard's thread may have its own), so re-running dashboard cells would grow
    the process by their frames' size each time."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc():
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):   # not glibc: nothing to trim
        return None


_libc = _load_libc()


def _overhead_text(views) -> str:
    """The status line's overhead, " · BPF: 12,345 runs/s, 85 ns/run, 0.1% CPU", of the
    programs the views read (each object once); looking keeps the kernel's run
    counting on (bpfnb.overhead)."""
    objs = []
    for view in views:
        obj = view.owner
        if obj is not None and obj.state == "loaded" and all(o is not obj for o in objs):
            objs.append(obj)
    if not objs:
        return ""
    cost = overhead.total({str(i): overhead.total(c)
                           for i, c in enumerate(overhead.measure(objs))})
    ns = "-" if cost.ns_per_run is None else f"{cost.ns_per_run:,}"
    return (f" · BPF: {overhead.rate_text(cost.per_s)} runs/s, {ns} ns/run, "
            f"{overhead.cpu_text(cost.cpu_pct)} CPU")


def live(*views, interval: float = 1.0, title: str | None = None,
         start: bool = True) -> Dashboard:
    """A live dashboard of ``views`` (View objects, or maps, ``obj.bss``, streams,
    callables returning DataFrames), refreshed every ``interval`` seconds."""
    return Dashboard(views, interval=interval, title=title, start=start)


def stop_all():
    """Stop every running dashboard (kernel shutdown calls this)."""
    for dash in list(_running):
        dash.stop("stopped: shutting down", timeout=1.0)


atexit.register(stop_all)
