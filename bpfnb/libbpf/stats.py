"""BPF run-time statistics (run counts and run time of programs), on only while looked at.

BPF_ENABLE_STATS turns the accounting on for every program in the kernel for as long
as its fd is open, and costs every program run two clock reads: so bpfnb holds it
only while somebody looks. ``look_stats()`` keeps it on for LOOK_S more seconds (a
table just shown, a dashboard's every frame); after the last look it is closed. The
sysctl /proc/sys/kernel/bpf_stats_enabled is never written: closing the fd leaves
the kernel as it was (it counts each holder, ours and others').
"""

from __future__ import annotations

import os
import threading
import time

from ._lib import lib

LOOK_S = 120.0  # how long a look keeps the counts running


class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.fd = -1
        self.until = 0.0                  # monotonic deadline of the last look
        self.since: float | None = None   # when our fd was opened
        self.timer: threading.Timer | None = None


_stats = _Stats()


def look_stats(seconds: float | None = None) -> bool:
    """Count runs for ``seconds`` (LOOK_S) from now, then stop unless looked at
    again; False when the kernel refuses (it needs CAP_SYS_ADMIN)."""
    with _stats.lock:
        if _stats.fd < 0:
            fd = lib.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
            if fd < 0:
                return False
            _stats.fd, _stats.since = fd, time.monotonic()
        _stats.until = max(_stats.until, time.monotonic() + (LOOK_S if seconds is None
                                                              else seconds))
        if _stats.timer is None:
            _arm_timer_locked()
        return True


def end_looks():
    """Forget every look (unloading the extension, or nothing left to look at):
    counting stops now, and the timer thread with it."""
    with _stats.lock:
        _stats.until = 0.0
        _off_if_unseen_locked()
        timer, _stats.timer = _stats.timer, None
    if timer is not None:
        timer.cancel()
        if timer is not threading.current_thread():
            timer.join(1.0)


def stats_since() -> float | None:
    """Monotonic time since which this process has kept run counting on, without a
    gap (None: not now). A rate between two readings is true only after it."""
    with _stats.lock:
        return _stats.since


def _off_if_unseen_locked():
    if _stats.fd >= 0 and time.monotonic() >= _stats.until:
        os.close(_stats.fd)
        _stats.fd, _stats.since = -1, None


def _arm_timer_locked():
    # at most a second: a look ended early (end_looks) is not waited for long
    left = min(max(0.0, _stats.until - time.monotonic()), 1.0)
    timer = threading.Timer(left, _on_timer)
    timer.daemon = True
    timer.name = "bpfnb-stats-off"
    _stats.timer = timer
    timer.start()


def _on_timer():
    with _stats.lock:
        _stats.timer = None
        if _stats.fd >= 0 and time.monotonic() < _stats.until:  # looked at meanwhile
            _arm_timer_locked()
            return
        _off_if_unseen_locked()
