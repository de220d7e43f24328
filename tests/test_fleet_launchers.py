"""Fleets on engines that ipyparallel's own launchers start, as the README says to:
``ipyparallel.Cluster`` with local engines (one as root, one as ``nobody`` holding only
CAP_BPF and CAP_PERFMON, started through setpriv the way bpfnb's kernelspec starts a
kernel), and the SSH engine launcher against an sshd the test runs on a loopback port
(its own config, host key and key-only root login in a tmp dir).

Each engine calls getppid() a known number of times; the tp_btf program counts the
calls by process, and each host's frame must hold that engine's own count exactly.
Afterwards no engine, nanny, controller or sshd of the test is left.
"""

import os
import platform
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ipp = pytest.importorskip("ipyparallel")
from traitlets.config import Config  # noqa: E402

import bpfnb  # noqa: E402
from bpfnb.kernelspec import setpriv_argv  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import fleet_cluster as fc  # noqa: E402

PROGS = Path(__file__).parent / "progs"
GETPPID = {"x86_64": 110, "aarch64": 173}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def needs():
    if os.geteuid() != 0:
        pytest.skip("needs root: engines as root, setpriv to another user")
    if platform.machine() not in GETPPID:
        pytest.skip(f"no getppid syscall number for {platform.machine()}")


@pytest.fixture
def engine_path(monkeypatch):
    """Engines import bpfnb from this tree, and fleet_cluster (shipped by name)."""
    monkeypatch.setenv("PYTHONPATH", f"{ROOT}:{ROOT / 'tests'}")


def processes_of(cluster: "ipp.Cluster", client) -> list:
    """psutil handles of the cluster's controller, engines and their nannies."""
    import psutil
    pids = [cluster.controller.pid]
    pids += client[:].apply_sync(os.getpid)
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        procs += [p, *p.children(recursive=True)]
    return procs


def wait_gone(procs, seconds: float = 15):
    """Every process in ``procs`` ends within ``seconds`` (a nanny whose controller
    went first lingers up to 3 s, as ipyparallel set it)."""
    import psutil
    gone, alive = psutil.wait_procs(procs, timeout=seconds)
    assert not alive, f"left running: {[p.cmdline() for p in alive]}"


EVERYTHING = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON", "CAP_SYS_ADMIN"]


def count_getppid_per_host(client, expected: list):
    """Load fleetppid on every engine, make engine k call getppid 10*(k+1) times, and
    check each host's own row. ``expected``: the engines' (uid, capabilities)."""
    fleet = bpfnb.Fleet(client, timeout=30)
    assert sorted((i["uid"], i["capabilities"]) for i in fleet.engines.values()) == expected
    fo = fleet.load(PROGS / "fleetppid.bpf.c", cflags=[f"-I{PROGS}"], maps={"calls": 1024},
                    set={"getppid_nr": GETPPID[platform.machine()]})
    try:
        assert list(fo.status) == ["ok"] * len(fleet.ids), fo.status.to_dict()
        calls = {e: 10 * (k + 1) for k, e in enumerate(fleet.ids)}
        pids = {e: client[e].apply_sync(fc.getppid_n, n) for e, n in calls.items()}
        df = fo.maps.calls.to_df()
        for e, pid in pids.items():
            mine = df[(df["host"] == fleet.hosts[e]) & (df["tgid"] == pid)]
            assert mine["value"].tolist() == [calls[e]], (fleet.hosts[e], df)
    finally:
        fo.destroy()


@pytest.fixture
def open_dir():
    """A directory nobody can enter (pytest's tmp_path is root's alone): its engine
    reads the cluster's profile dir; the connection comes in its environment."""
    d = tempfile.mkdtemp(prefix="bpfnb-fleet-")
    os.chmod(d, 0o755)
    yield Path(d)
    shutil.rmtree(d)


def test_local_cluster_engines_as_root_and_with_bpf_capabilities_only(open_dir, engine_path):
    profile = open_dir / "profile_fleet"
    cluster = ipp.Cluster(profile_dir=str(profile), controller_ip="127.0.0.1", n=1,
                          log_level=30)
    procs = []
    try:
        cluster.start_controller_sync()
        cluster.start_engines_sync(1)  # ipyparallel's own engine command: root here
        # nobody cannot start this venv's Python again (it lies under /root), which the
        # nanny would: this engine runs without one
        cluster.start_engines_sync(1, engine_cmd=[
            *setpriv_argv(fc.USER, ("bpf", "perfmon")), sys.executable, "-m",
            "ipyparallel.engine"], engine_args=["--IPEngine.enable_nanny=False"])
        client = cluster.connect_client_sync()
        client.wait_for_engines(2, timeout=60)
        procs = processes_of(cluster, client)
        nobody = pwd.getpwnam(fc.USER).pw_uid
        count_getppid_per_host(client, [(0, EVERYTHING), (nobody, ["CAP_BPF", "CAP_PERFMON"])])
        client.close()
    finally:
        cluster.stop_cluster_sync()
    wait_gone(procs)


SSHD_CONFIG = """\
Port {port}
ListenAddress 127.0.0.1
HostKey {dir}/host_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# the keys sit in pytest's tmp dir, under the world-writable /tmp
StrictModes no
# scp speaks SFTP since OpenSSH 9
Subsystem sftp internal-sftp
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sshd(tmp_path):
    """An sshd on a loopback port taking root's key only; yields (port, ssh options)."""
    binary = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(binary) or not shutil.which("ssh-keygen"):
        pytest.skip("openssh-server is not installed (scripts/setup.sh installs it for tests)")
    d = tmp_path / "ssh"
    d.mkdir(mode=0o700)
    for key in ("host_key", "id"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)],
                       check=True, timeout=30)
    (d / "id.pub").rename(d / "authorized_keys")
    port = free_port()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} " + (d / "host_key.pub").read_text())
    (d / "sshd_config").write_text(SSHD_CONFIG.format(port=port, dir=d))
    made_run = not os.path.isdir("/run/sshd")  # its privilege separation directory
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    server = subprocess.Popen([binary, "-D", "-e", "-f", str(d / "sshd_config")],
                              stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    options = ["-i", str(d / "id"), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
               "-o", f"UserKnownHostsFile={d / 'known_hosts'}",
               "-o", "StrictHostKeyChecking=yes"]
    try:
        deadline = time.monotonic() + 20
        while subprocess.run(["ssh", "-p", str(port), *options, "root@127.0.0.1", "true"],
                             capture_output=True, timeout=30).returncode != 0:
            assert server.poll() is None and time.monotonic() < deadline, \
                (d / "sshd.log").read_text()
            time.sleep(0.2)
        yield port, options
    finally:
        server.terminate()
        server.wait(timeout=10)
        if made_run:
            os.rmdir("/run/sshd")
    import psutil
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(d) in " ".join(p.info["cmdline"] or ())]


def test_ssh_launcher_engines_as_root(tmp_path, sshd, engine_path):
    port, options = sshd
    config = Config()  # what ipcluster_config.py says for `ipcluster start --engines=ssh`
    launcher = config.SSHEngineSetLauncher
    launcher.engines = {f"root@127.0.0.1:{port}": 2}
    launcher.ssh_args = options
    launcher.scp_args = options
    launcher.remote_python = sys.executable
    # a directory of its own: the connection files are copied there over SSH (scp)
    launcher.remote_profile_dir = str(tmp_path / "remote" / "profile_fleet")
    launcher.environment = {"PYTHONPATH": os.environ["PYTHONPATH"]}
    cluster = ipp.Cluster(engines="ssh", profile_dir=str(tmp_path / "profile_fleet"),
                          controller_ip="127.0.0.1", n=2, config=config, log_level=30)
    procs = []
    try:
        cluster.start_controller_sync()
        cluster.start_engines_sync()
        client = cluster.connect_client_sync()
        client.wait_for_engines(2, timeout=60)
        procs = processes_of(cluster, client)
        count_getppid_per_host(client, [(0, EVERYTHING), (0, EVERYTHING)])
        assert (tmp_path / "remote" / "profile_fleet" / "security").is_dir()
        client.close()
    finally:
        cluster.stop_cluster_sync()
    wait_gone(procs)
