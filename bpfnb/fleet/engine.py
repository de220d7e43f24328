"""The engine side of a fleet: what each ipyparallel engine runs, and its lease watchdog.

These are module-level functions so that ipyparallel ships them by reference to this
module (the engine imports bpfnb.fleet.engine): an engine needs libbpf and bpfnb, no
clang. Each object the fleet loads is held here under a handle the client chose,
with a lease: the client renews it every few seconds; when the client dies and the
lease runs out, the watchdog thread destroys the object, so no program outlives the
notebook that loaded it by more than the lease.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time

_lock = threading.Lock()
_held: dict = {}            # handle -> [Object, lease seconds, expiry (monotonic), streams]
_watching = False          # a watchdog thread runs (set and cleared under _lock)


def info() -> dict:
    """Who this engine is: its hostname, process id, uid, and which of the capabilities
    BPF cares about it holds."""
    from bpfnb.libbpf.errors import CAPABILITY_BITS, missing_capabilities
    missing = missing_capabilities(tuple(CAPABILITY_BITS))
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "uid": os.geteuid(),
            "capabilities": sorted(c for c in CAPABILITY_BITS if c not in missing)}


def load(handle: str, image: bytes, lease: float, options: dict) -> dict:
    """Load (and attach) the compiled object ``image``; hold it under ``handle``.

    Returns what the client needs to build its namespaces: map, program and global
    variable names, and the programs skipped on this kernel.
    """
    import bpfnb
    from bpfnb import frames
    with _engine_remedy():
        obj = bpfnb.load(bytes(image), **options)
    with _lock:
        _held[handle] = [obj, float(lease), time.monotonic() + float(lease), {}]
    _ensure_watchdog()
    return {"maps": [m.name for m in obj.maps], "progs": [p.name for p in obj.progs],
            "tabular": [m.name for m in obj.maps if frames.is_tabular(m)],
            "globals": {s: list(g) for s, g in obj.globals.items()},
            "skipped": dict(obj.skipped)}


# What to do about a missing privilege is not the notebook's remedy on an engine.
ENGINE_FIX = ("start this engine as root, or as a user holding the capabilities it lacks "
              "as ambient ones (README: Many hosts)")


@contextlib.contextmanager
def _engine_remedy():
    """An error raised here for lack of privilege says how to start the engine, not the
    notebook (a load's PrivilegeError, an attach's hint such as a uprobe's)."""
    from bpfnb.libbpf.errors import PRIVILEGE_FIX, BPFError
    try:
        yield
    except BPFError as e:
        e.hint = e.hint.replace(PRIVILEGE_FIX, ENGINE_FIX).replace(
            "run the notebook kernel as root (sudo)", "start this engine as root")
        raise


def renew(handles: list) -> list:
    """Extend the lease of ``handles``; return those no longer held (expired, gone)."""
    now, lost = time.monotonic(), []
    with _lock:
        for handle in handles:
            entry = _held.get(handle)
            if entry is None:
                lost.append(handle)
            else:
                entry[2] = now + entry[1]
    return lost


def held() -> list:
    """Handles of the objects this engine holds."""
    with _lock:
        return list(_held)


def _entry(handle: str) -> list:
    with _lock:
        entry = _held.get(handle)
    if entry is None:
        raise LookupError(f"no fleet object {handle} on this engine: it was destroyed, or "
                          "its lease ran out (the client stopped renewing it)")
    return entry


def _object(handle: str):
    return _entry(handle)[0]


def call(handle: str, kind: str, name: str, method: str, args: tuple = (),
         kwargs: dict | None = None):
    """``obj.<kind>.<name>.<method>(*args, **kwargs)`` on the held object.

    Links and other live handles stay here: what comes back is their repr.
    """
    target = getattr(getattr(_object(handle), kind), name)
    with _engine_remedy():
        result = getattr(target, method)(*args, **(kwargs or {}))
    if method.startswith("attach") or result is target:
        return repr(result)
    return result


def get_global(handle: str, section: str, name: str):
    return getattr(getattr(_object(handle), section), name)


def set_global(handle: str, section: str, name: str, value):
    setattr(getattr(_object(handle), section), name, value)


def stream_open(handle: str, map_name: str, sid: str, type: str | None, options: dict):
    """Start collecting the events of a ring or perf buffer here, under ``sid``."""
    entry = _entry(handle)
    entry[3][sid] = getattr(entry[0].maps, map_name).stream(type, **options)


def stream_call(handle: str, sid: str, method: str, args: tuple = (), kwargs: dict | None = None):
    """``stream.<method>(*args, **kwargs)``, or the attribute ``method`` without args."""
    stream = _entry(handle)[3][sid]
    if method in ("lost", "dropped", "kernel_lost", "running"):
        return getattr(stream, method)
    if method == "len":
        return len(stream)
    result = getattr(stream, method)(*args, **(kwargs or {}))
    if method == "close":
        del _entry(handle)[3][sid]
    return result


def detach(handle: str):
    _object(handle).detach()


def destroy(handle: str) -> bool:
    """Destroy the object held under ``handle``; False if none was."""
    with _lock:
        entry = _held.pop(handle, None)
    if entry is None:
        return False
    for stream in entry[3].values():
        stream.close()
    entry[0].destroy()
    return True


def _ensure_watchdog():
    global _watching
    with _lock:
        if _watching:
            return
        _watching = True
    threading.Thread(target=_watch, name="bpfnb-fleet-lease", daemon=True).start()


def _watch():
    """Destroy objects whose lease ran out; exit once nothing is held."""
    global _watching
    while True:
        with _lock:
            if not _held:
                _watching = False
                return
            now = time.monotonic()
            expired = [h for h, e in _held.items() if e[2] <= now]
            shortest = min(e[1] for e in _held.values())
        for handle in expired:
            try:
                destroy(handle)
            except Exception as e:  # the watchdog must outlive one failed teardown
                print(f"bpfnb fleet: destroying {handle} failed: {e!r}", file=sys.stderr)
        # Check a few times per lease, so an object outlives its lease by a quarter at most.
        time.sleep(min(0.5, shortest / 4))
