"""A real ipyparallel cluster for the fleet tests and bench: 3 engines, each in its own
UTS and network namespace, one controller in this (root) namespace.

Why this layout: a process in a new network namespace cannot reach 127.0.0.1 of the
root one, so each namespace gets a veth whose root end has a TEST-NET-3 address
(203.0.113.0/24: eth0 here sits in TEST-NET-1 and tests/test_net.py uses TEST-NET-2),
and the controller listens on the first root-end address only. An engine reaches it
through its default route over its veth (the root namespace accepts packets for any
of its own addresses), and the test's UDP packets to an engine's namespace cross that
same veth, where the engine's XDP program counts them.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NET = "203.0.113"
PORT = 9999                   # where the test's UDP packets go
USER = "nobody"               # who an engine with capabilities only runs as


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


def controller_ip() -> str:
    return f"{NET}.1"


def engine_ip(i: int) -> str:
    return f"{NET}.{8 * i + 2}"


class Cluster:
    """``with Cluster(3) as c``: c.client, c.engines (Popen by index), c.hostnames."""

    def __init__(self, n: int = 3, tag: str | None = None, privileges: dict | None = None,
                 no_clang: tuple = ()):
        self.n, self.tag = n, tag or uuid.uuid4().hex[:5]
        self.privileges = dict(privileges or {})   # see start_engine
        self.no_clang = set(no_clang)   # engines whose PATH has no clang (nor any tool)
        self.nannies = []   # of engines killed: they exit by themselves, checked at close
        self.started: list[subprocess.Popen] = []   # every engine, replaced ones too
        self.namespaces = [f"bpfnb-fl{self.tag}{i}" for i in range(n)]
        self.links = [f"bfl{self.tag}{i}" for i in range(n)]
        self.hostnames = [f"fleet-{self.tag}-{i}" for i in range(n)]
        self.dir = Path(tempfile.mkdtemp(prefix="bpfnb-fleet-"))
        self.controller = None
        self.engines: list[subprocess.Popen] = []
        self.client = None

    def __enter__(self):
        try:
            self._network()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()

    def _network(self):
        for i, (ns, link) in enumerate(zip(self.namespaces, self.links)):
            ip("netns", "add", ns)
            ip("link", "add", link, "type", "veth", "peer", "name", f"{link}p")
            ip("link", "set", f"{link}p", "netns", ns)
            ip("-n", ns, "link", "set", f"{link}p", "name", "fleet0")
            ip("addr", "add", f"{NET}.{8 * i + 1}/29", "dev", link)
            ip("link", "set", link, "up")
            ip("-n", ns, "addr", "add", f"{engine_ip(i)}/29", "dev", "fleet0")
            ip("-n", ns, "link", "set", "fleet0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "route", "add", "default", "via", f"{NET}.{8 * i + 1}")

    @property
    def env(self) -> dict:
        # bpfnb, and this module (the functions below run on engines, shipped by name)
        return dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}",
                    IPYTHONDIR=str(self.dir / "ipython"))

    def _start(self):
        profile = self.dir / "ipython" / "profile_fleet"  # --profile fleet, with IPYTHONDIR
        self.controller = subprocess.Popen(
            [sys.executable, "-m", "ipyparallel.controller", f"--profile-dir={profile}",
             f"--ip={controller_ip()}", "--ping=500", "--log-level=WARN"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=open(self.dir / "controller.log", "w"),
            start_new_session=True)  # its schedulers are child processes: a group to kill
        self.url_file = profile / "security" / "ipcontroller-client.json"
        engine_file = profile / "security" / "ipcontroller-engine.json"
        deadline = time.monotonic() + 60
        while not (self.url_file.exists() and engine_file.exists()):
            if self.controller.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("ipcontroller did not start:\n" + self.log("controller"))
            time.sleep(0.1)
        time.sleep(0.2)  # the files are written whole before the controller listens
        self.engine_file = engine_file
        if any(self.privileges.values()):
            # an engine as USER reads its connection file and writes its IPython dir;
            # group root keeps them readable to the uid-0 engine without capabilities
            import pwd
            uid = pwd.getpwnam(USER).pw_uid
            os.chmod(self.dir, 0o711)
            for d, _, files in os.walk(self.dir / "ipython"):
                os.chown(d, uid, 0)
                os.chmod(d, 0o750)
                for f in files:
                    os.chown(os.path.join(d, f), uid, 0)
                    os.chmod(os.path.join(d, f), 0o640)
        for i in range(self.n):
            self.engines.append(self.start_engine(i))
        import ipyparallel
        self.client = ipyparallel.Client(str(self.url_file), timeout=30)
        self.client.wait_for_engines(self.n, timeout=float(os.environ.get("FLEET_WAIT", 90)))

    def start_engine(self, i: int) -> subprocess.Popen:
        """ipengine in namespace i with hostname i: unshare, nsenter and setpriv exec, so
        the Popen's pid is the engine's own; its nanny (ipyparallel's default, which
        tells the controller at once when the engine exits) is the engine's child.

        ``privileges[i]``: absent, root; ``()``, uid 0 holding no capability at all;
        capability names, the user ``nobody`` holding only those (ambient), started the
        way bpfnb's kernelspec starts a notebook kernel."""
        caps = self.privileges.get(i)
        if caps is None:
            drop = ""
        elif not caps:
            drop = "setpriv --inh-caps=-all --ambient-caps=-all --bounding-set=-all "
        else:
            from bpfnb.kernelspec import setpriv_argv
            drop = (f"env HOME={self.dir / 'ipython'} " +
                    " ".join(map(shlex.quote, setpriv_argv(USER, caps))) + " ")
        # USER may not be able to start this Python again (a venv whose interpreter lies
        # under /root, as here: setpriv execs it before the change of user takes hold),
        # and the nanny is a new Python: such an engine runs without one
        nanny = " --IPEngine.enable_nanny=False" if caps else ""
        if i in self.no_clang:
            drop = "env -u BPFNB_CLANG PATH=/nonexistent " + drop
        script = (f"hostname {self.hostnames[i]} && exec {drop}{sys.executable} -m "
                  f"ipyparallel.engine --file={self.engine_file} --log-level=WARN{nanny}")
        p = subprocess.Popen(
            ["unshare", "--uts", "nsenter", f"--net=/run/netns/{self.namespaces[i]}",
             "sh", "-c", script], env=self.env, stdout=subprocess.DEVNULL,
            stderr=open(self.dir / f"engine{i}.log", "w"))
        self.started.append(p)
        return p

    def nanny(self, i: int):
        """The nanny process of engine i (a psutil.Process), None when it has none."""
        import psutil
        try:
            children = psutil.Process(self.engines[i].pid).children()
        except psutil.NoSuchProcess:
            return None
        return next((c for c in children if "nanny" in " ".join(c.cmdline())), None)

    def engine_id(self, i: int, timeout: float = 60) -> int:
        """The ipyparallel id of the engine started i-th (by its hostname); waits for a
        restarted engine to register, and skips dead ones."""
        from bpfnb.fleet import engine
        deadline = time.monotonic() + timeout
        while True:
            for eid in self.client.ids:
                try:
                    info = self.client[eid].apply_async(engine.info).get(timeout=2)
                except Exception:
                    continue
                if info["hostname"] == self.hostnames[i]:
                    return eid
            if time.monotonic() > deadline:
                raise LookupError(f"no engine {self.hostnames[i]}:\n{self.log(f'engine{i}')}")
            time.sleep(0.2)

    def kill_engine(self, i: int, *, vanish: bool = False):
        """SIGKILL engine i; its nanny tells the controller. ``vanish``: the nanny is
        killed first, as when a host goes away, and only the heartbeat tells."""
        nanny = self.nanny(i)
        if vanish and nanny is not None:
            nanny.kill()  # a zombie until the engine's death hands it to init
        self.engines[i].send_signal(signal.SIGKILL)
        self.engines[i].wait(timeout=10)
        if nanny is not None:
            self.nannies.append(nanny)

    def log(self, name: str) -> str:
        try:
            return (self.dir / f"{name}.log").read_text()[-3000:]
        except OSError:
            return ""

    def controller_listens_on(self) -> set[str]:
        """Local addresses of every TCP socket the controller's processes listen on."""
        pids = set()
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if os.getpgid(int(entry)) == self.controller.pid:
                        pids.add(int(entry))
                except ProcessLookupError:
                    pass
        out = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True,
                             timeout=30).stdout
        return {line.split()[3].rpartition(":")[0] for line in out.splitlines()
                if any(f"pid={pid}," in line for pid in pids)}

    def group_alive(self) -> bool:
        try:
            os.killpg(self.controller.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def close(self):
        """Stop everything started, whatever state it is in."""
        if self.client is not None:
            self.client.close()
        for i in range(len(self.engines)):
            nanny = self.nanny(i)
            if nanny is not None:
                self.nannies.append(nanny)
        for p in self.started:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(timeout=10)
        for nanny in self.nannies:  # a nanny whose controller is gone lingers 3 s at most
            import psutil
            try:
                nanny.wait(timeout=10)
            except psutil.TimeoutExpired:
                nanny.kill()
        if self.controller is not None:
            try:
                os.killpg(self.controller.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.controller.wait(timeout=10)
            deadline = time.monotonic() + 10  # orphaned schedulers: until init reaps them
            while self.group_alive() and time.monotonic() < deadline:
                time.sleep(0.05)
        for link in self.links:
            ip("link", "del", link, check=False)
        for ns in self.namespaces:
            ip("netns", "del", ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def send_udp(i: int, count: int, port: int = PORT):
    """``count`` UDP datagrams from here to engine i's namespace."""
    import socket
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for n in range(count):
            s.sendto(json.dumps({"n": n}).encode(), (engine_ip(i), port))


def getppid_n(n: int) -> int:
    """On an engine: n getppid() calls through libc (where uprobes see them); its pid."""
    import ctypes
    libc = ctypes.CDLL("libc.so.6")
    for _ in range(n):
        libc.getppid()
    return os.getpid()

