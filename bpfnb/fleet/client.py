"""Fleet: a set of ipyparallel engines, and bounded remote calls with a status per host."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import engine

DEFAULT_TIMEOUT = 30.0     # seconds any one remote call may take
DEFAULT_LEASE = 10.0       # seconds an engine keeps an object after the last renewal
POLL = 0.1                 # seconds between looks at the controller's engines, waiting


@dataclass
class Reply:
    """One engine's answer to one call: its value, or the error that stood for it."""
    value: object = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def status(self) -> str:
        return "ok" if self.error is None else describe(self.error)


def describe(error: BaseException) -> str:
    """An engine's error as a person reads it: its type and message."""
    ename = getattr(error, "ename", None)  # a RemoteError: the engine's own exception
    if ename:
        return f"{ename}: {getattr(error, 'evalue', '')}"
    return f"{type(error).__name__}: {error}"


def host_labels(hostnames: dict) -> dict:
    """Engine id -> its host label: the hostname, with ``#id`` where several engines
    share one; ``engine<id>`` for an engine that did not say (hostname None)."""
    names = Counter(hostnames.values())
    return {eid: f"engine{eid}" if name is None else name if names[name] == 1
            else f"{name}#{eid}" for eid, name in hostnames.items()}


class EngineDied(RuntimeError):
    """The engine is gone: ipyparallel's controller unregistered it."""


def is_lost(error: BaseException) -> bool:
    """True when the engine itself is gone or unreachable (not just the call failed)."""
    return isinstance(error, (TimeoutError, EngineDied))


class Fleet:
    """The engines of an ipyparallel cluster that BPF objects are loaded on.

    ``client`` is an ``ipyparallel.Client`` (default: ``ipyparallel.Client(profile=...)``),
    ``targets`` "all" or engine ids. ``timeout`` bounds every remote call, ``lease``
    is how long an engine keeps an object once the client stops renewing it.
    """

    def __init__(self, client=None, targets="all", *, profile: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, lease: float = DEFAULT_LEASE):
        import ipyparallel
        # A client the fleet made is the fleet's to close (its IO thread and sockets),
        # once none of its objects is left (see release).
        self._owns_client = client is None
        if client is None:
            client = ipyparallel.Client(profile=profile) if profile else ipyparallel.Client()
        self.client, self.timeout, self.lease = client, float(timeout), float(lease)
        self._objects: set[int] = set()
        try:
            self._connect(targets)
        except BaseException:
            self.close()
            raise

    def _connect(self, targets):
        client = self.client
        ids = list(client.ids)
        if targets != "all":
            targets = [targets] if isinstance(targets, int) else list(targets)
            missing = sorted(set(targets) - set(ids))
            if missing:
                raise ValueError(f"no engine {missing} in this cluster (engines: {ids}): "
                                 "start more engines, or pick targets among those")
            ids = targets
        if not ids:
            raise ValueError("the cluster has no engines: start some (ipcluster start -n 3, "
                             "or ipengine on each host) and try again")
        self.ids = ids
        self.hosts: dict[int, str] = {}
        # The lease renewals send from their own thread: one sender at a time.
        self._sending = threading.Lock()
        self.engines: dict[int, dict] = {}
        self.errors: dict[int, str] = {}   # engines that did not say who they are
        for eid, reply in self.each(engine.info).items():
            if reply.ok:
                self.engines[eid] = reply.value
            else:
                self.errors[eid] = reply.status
        if not self.engines:
            raise RuntimeError("no engine answers: " + "; ".join(
                f"engine {e}: {s}" for e, s in self.errors.items()))
        self.hosts = host_labels({e: self.engines.get(e, {}).get("hostname") for e in ids})

    def each(self, func, *args, ids=None, timeout: float | None = None) -> dict[int, Reply]:
        """``func(*args)`` on every engine in ``ids`` at once; a Reply per engine id.

        Never raises for an engine's failure: every call is bounded by ``timeout``, and an
        engine ipyparallel's controller unregisters (its nanny saw the process exit, or
        its heartbeat stopped) gets an EngineDied at once, not when the timeout ends.
        """
        ids = self.ids if ids is None else ids
        timeout = self.timeout if timeout is None else timeout
        pending, replies = {}, {}
        with self._sending:
            for eid in ids:
                if eid not in self.client.ids:
                    replies[eid] = Reply(error=self.died(eid))
                    continue
                try:
                    pending[eid] = self.client[eid].apply_async(func, *args)
                except Exception as e:
                    replies[eid] = Reply(error=e if eid in self.client.ids else self.died(eid))
        deadline = time.monotonic() + timeout
        for eid, ar in pending.items():
            # in slices, so that an unregistered engine ends its wait at once
            while not ar.ready() and eid in self.client.ids and time.monotonic() < deadline:
                ar.wait(min(POLL, max(0.0, deadline - time.monotonic())))
            replies[eid] = self._outcome(eid, ar, timeout)
        return {eid: replies[eid] for eid in ids}

    def _outcome(self, eid: int, ar, timeout: float) -> Reply:
        if not ar.ready():
            if eid not in self.client.ids:
                return Reply(error=self.died(eid))
            return Reply(error=TimeoutError(
                f"engine {eid} ({self.hosts.get(eid, 'starting')}) did not answer within "
                f"{timeout:g} s, and ipyparallel's controller has not unregistered it: it "
                f"hangs or is busy, or the controller itself is unreachable "
                f"(Fleet(timeout=...) sets the bound)"))
        try:
            return Reply(ar.get(0))
        except Exception as e:
            # the client turns the calls an unregistered engine held into EngineError
            if getattr(e, "ename", None) == "EngineError" or eid not in self.client.ids:
                return Reply(error=self.died(eid))
            return Reply(error=e)

    def died(self, eid: int) -> "EngineDied":
        """The error that stands for engine ``eid`` once the controller dropped it."""
        return EngineDied(
            f"engine {eid} ({self.hosts.get(eid, 'starting')}) died: ipyparallel's "
            "controller unregistered it (its process exited, or its heartbeat stopped: the "
            "host or the network went away); its BPF objects went with the process, or go "
            "when their lease runs out. Start the engine again and load again to include it")

    def load(self, source, *, name: str | None = None, cflags=(), lease: float | None = None,
             set: dict | None = None, **options):
        """Compile ``source`` here once, load it on every engine: a FleetObject.

        ``options`` are bpfnb.load's (rodata, data, maps, autoload, prefer, strict,
        attach); ``set`` gives .rodata/.data variables by name, as ``Object.set``.
        Engines that fail keep their error in ``status``; the others run.
        """
        from .. import loader
        from .object import FleetObject
        name = loader._default_name(source, name)
        compiled = loader._compile(source, name, cflags)
        image = compiled if isinstance(compiled, bytes) else Path(os.fspath(compiled)).read_bytes()
        for section, values in _by_section(image, set or {}).items():
            options[section] = {**values, **(options.get(section) or {})}
        try:
            obj = FleetObject(self, image, dict(options, name=name),
                              self.lease if lease is None else float(lease))
        except BaseException:
            if not self._objects:
                self.close()
            raise
        self._objects.add(id(obj))
        return obj

    def release(self, obj):
        """``obj`` was destroyed: a client the fleet made is closed with its last object."""
        self._objects.discard(id(obj))
        if not self._objects:
            self.close()

    def close(self):
        """Close the client if this fleet made it (a client given to it stays open)."""
        if self._owns_client:
            self.client.close()

    def __repr__(self):
        return f"<Fleet {len(self.ids)} engines: {', '.join(self.hosts.values())}>"


def _by_section(image: bytes, values: dict) -> dict:
    """``{var: value}`` -> ``{"rodata": {...}, "data": {...}}``, read from the object's
    own sections (opened here, never loaded: no privilege needed)."""
    if not values:
        return {}
    from .. import libbpf
    obj = libbpf.Object(image)
    try:
        sections = {var: section for section, g in obj.globals.items() for var in g}
    finally:
        obj.destroy()
    out: dict = {}
    for var, value in values.items():
        section = sections.get(var)
        if section not in ("rodata", "data"):
            where = f"is in .{section}" if section else "is not a global variable of it"
            raise ValueError(f"set {var}: {var} {where}; a fleet sets .rodata and .data "
                             f"variables at load (set .bss ones after: fo.bss.{var} = ...)")
        out.setdefault(section, {})[var] = value
    return out
