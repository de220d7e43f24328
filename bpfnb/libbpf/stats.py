"""BPF run-time statistics (run counts and run time of programs), on only while looked at.

BPF_ENABLE_STATS turns the accounting on for every program in the kernel for as long
as its fd is open, and costs every program run two clock reads: so it is held only
while somebody looks. ``hold_stats()``/``release_stats()`` count holders (a running
dashboard); ``look_stats(s)`` keeps it on for ``s`` more seconds (a table just shown).
The last to go closes the fd, and /proc/sys/kernel/bpf_stats_enabled reads what it
read before (the kernel counts every holder).
"""

from __future__ import annotations

import os
import threading
import time

from ._lib import lib

LOOK_S = 120.0  # how long a shown table keeps the counts running after it was shown


class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.fd = -1
        self.holders = 0
        self.until = 0.0             # monotonic deadline of the last look
        self.since: float | None = None   # when our fd was opened
        self.timer: threading.Timer | None = None


_stats = _Stats()


def _stats_on_locked() -> bool:
    if _stats.fd < 0:
        fd = lib.bpf_enable_stats(0)  # BPF_STATS_RUN_TIME
        if fd < 0:
            return False
        _stats.fd, _stats.since = fd, time.monotonic()
    return True


def _stats_maybe_off_locked():
    if _stats.holders or time.monotonic() < _stats.until or _stats.fd < 0:
        return
    os.close(_stats.fd)
    _stats.fd, _stats.since = -1, None


def hold_stats() -> bool:
    """Count runs from now until the matching ``release_stats()``; False when the
    kernel refuses (no CAP_SYS_ADMIN) and nothing is held."""
    with _stats.lock:
        if not _stats_on_locked():
            return False
        _stats.holders += 1
        return True


def release_stats():
    with _stats.lock:
        _stats.holders = max(0, _stats.holders - 1)
        _stats_maybe_off_locked()


def look_stats(seconds: float | None = None) -> bool:
    """Count runs for ``seconds`` (LOOK_S) from now, then stop unless held or looked
    at again; False when the kernel refuses."""
    with _stats.lock:
        if not _stats_on_locked():
            return False
        _stats.until = max(_stats.until, time.monotonic() + (LOOK_S if seconds is None
                                                              else seconds))
        if _stats.timer is None:
            _arm_stats_timer_locked()
        return True


def end_looks():
    """Forget every look (what unloading the extension does): counting stops now
    unless a holder remains."""
    with _stats.lock:
        _stats.until = 0.0
        _stats_maybe_off_locked()


def _arm_stats_timer_locked():
    # at most a second: a look ended early (end_looks) is not waited for long
    left = min(max(0.0, _stats.until - time.monotonic()), 1.0)
    timer = threading.Timer(left, _stats_timer)
    timer.daemon = True
    timer.name = "bpfnb-stats-off"
    _stats.timer = timer
    timer.start()


def _stats_timer():
    with _stats.lock:
        _stats.timer = None
        if time.monotonic() < _stats.until:  # looked at again meanwhile
            _arm_stats_timer_locked()
            return
        _stats_maybe_off_locked()


def stats_since() -> float | None:
    """Monotonic time since which this process has held run counting on, without a
    gap (None: not held now). Rates between two readings are true only after it."""
    with _stats.lock:
        return _stats.since
