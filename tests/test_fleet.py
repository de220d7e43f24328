"""Fleets: one BPF object on three ipyparallel engines, each in its own UTS and network
namespace (see tests/fleet_cluster.py), against real packets.

Each engine's XDP program counts the UDP packets the test sends into its namespace
(10, 20, 30): the fleet frame must have exactly those counts per host. Then the
failures: an engine without capabilities, an engine SIGKILLed mid-run, a client
SIGKILLed (its lease runs out and every engine destroys the object).
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("ipyparallel")

import bpfnb  # noqa: E402
from bpfnb.fleet import FleetError, FleetObject, engine  # noqa: E402
from bpfnb.libbpf import kernel_ids, kernel_prog_info  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
import fleet_cluster as fc  # noqa: E402

PROG = Path(__file__).parent / "progs" / "fleetcount.bpf.c"
PROG_NAME = "fleet_count"           # the name checked in the kernel after teardown
OPTIONS = dict(rodata={"port_lo": fc.PORT, "port_hi": fc.PORT}, maps={"packets": 64})
SENT = (10, 20, 30)                 # packets into the namespace of engine 0, 1, 2


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("needs root: network namespaces, veths, XDP")
    for tool in ("ip", "unshare", "nsenter", "setpriv"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    # engine 3 holds no capability: a host where BPF is refused; engine 4 runs as
    # nobody with CAP_BPF and CAP_PERFMON only, the README's least-privileged engine
    # and engine 2 finds no clang: the client compiles, engines only load
    with fc.Cluster(5, privileges={3: (), 4: ("bpf", "perfmon")}, no_clang=(2,)) as c:
        yield c
    assert not c.group_alive()  # the controller and its schedulers are gone
    assert all(e.poll() is not None for e in c.started)
    assert c.nannies and not any(n.is_running() for n in c.nannies)
    assert not any(c.tag in line for line in fc.ip("netns", "list").stdout.splitlines())
    assert not any(link in fc.ip("link").stdout for link in c.links)


def ours() -> list[int]:
    """Ids of the programs named as this test's in the kernel (any process)."""
    out = []
    for pid in kernel_ids("prog"):
        info = kernel_prog_info(pid)
        if info is not None and info["name"] == PROG_NAME:
            out.append(pid)
    return out


def wait_gone(seconds: float) -> float:
    """Seconds until no program of ours is left in the kernel; fails after ``seconds``."""
    t0 = time.monotonic()
    while ours():
        assert time.monotonic() - t0 < seconds, f"programs left: {ours()}"
        time.sleep(0.1)
    return time.monotonic() - t0


def privileged_ids(c) -> list[int]:
    return [c.engine_id(i) for i in range(3)]


def send_and_wait(fo: FleetObject, sent=SENT):
    for i, n in enumerate(sent):
        fc.send_udp(i, n)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # packets cross the veth in softirq, not at once
        if sorted(fo.bss.udp_packets) >= sorted(sent):
            break
        time.sleep(0.05)


def loaded(c, ids, **fleet_options) -> FleetObject:
    fleet = bpfnb.Fleet(c.client, targets=ids, **fleet_options)
    fo = fleet.load(PROG, **OPTIONS)
    attached = fo.progs.fleet_count.attach_xdp("fleet0")
    assert attached.to_dict() == {fleet.hosts[e]: "ok" for e in fo.live_ids}
    return fo


def test_host_labels_add_the_engine_id_where_hostnames_repeat():
    from bpfnb.fleet.client import host_labels
    assert host_labels({0: "a", 1: "b", 2: "a", 3: None}) == \
        {0: "a#0", 1: "b", 2: "a#2", 3: "engine3"}


def test_controller_listens_on_the_test_address_only(cluster):
    if not shutil.which("ss"):
        pytest.skip("ss (iproute2) is not installed")
    # engines and clients: the TEST-NET address; its own schedulers talk over loopback
    assert fc.controller_ip() in cluster.controller_listens_on() <= {fc.controller_ip(),
                                                                     "127.0.0.1"}


def test_one_frame_three_hosts_counts_exact(cluster):
    assert not ours()
    fo = loaded(cluster, privileged_ids(cluster), timeout=20)
    try:
        assert list(fo.status) == ["ok"] * 3
        assert len(ours()) == 3
        assert cluster.client[fo.live_ids[2]].apply_sync(shutil.which, "clang") is None
        events = fo.maps.events.stream()
        assert set(events.opened.values()) == {"ok"}
        series = fo.maps.packets.view(rate=False)  # what fo.maps.packets.live() draws
        send_and_wait(fo)
        df = fo.maps.packets.to_df()
        assert list(df.columns[:1]) == ["host"]
        assert sorted(df["host"]) == sorted(cluster.hostnames[:3])
        counts = dict(zip(df["host"], df["value"]))
        assert counts == dict(zip(cluster.hostnames, SENT))
        assert set(df["dport"]) == {fc.PORT}
        assert df.attrs["status"] == {h: "ok" for h in cluster.hostnames[:3]}
        assert fo.bss.udp_packets.to_dict() == dict(zip(cluster.hostnames, SENT))
        # one histogram summed over hosts, or one per host
        assert fo.maps.sizes.hist()["count"].sum() == sum(SENT)
        by_host = fo.maps.sizes.hist(by_host=True)
        assert by_host.groupby("host", observed=True)["count"].sum().to_dict() == \
            dict(zip(cluster.hostnames, SENT))
        assert by_host.key_columns[0] == "host"
        # the events of every host in one frame
        ev = events.to_df()
        assert ev.groupby("host", observed=True).size().to_dict() == \
            dict(zip(cluster.hostnames, SENT))
        assert set(ev["dport"]) == {fc.PORT} and len(events) == sum(SENT)
        assert events.lost.to_dict() == dict.fromkeys(cluster.hostnames[:3], 0)
        events.close()
        series.sample(0.0)
        assert series.history[-1][1] == dict(zip(cluster.hostnames, SENT))
    finally:
        fo.destroy()
    assert fo.state == "destroyed"
    wait_gone(5)
    assert all(cluster.client[e].apply_sync(engine.held) == [] for e in fo.live_ids)


def test_engines_short_of_privileges_name_what_is_missing_others_run(cluster):
    ids = [*privileged_ids(cluster), cluster.engine_id(3), cluster.engine_id(4)]
    fleet = bpfnb.Fleet(cluster.client, targets=ids, timeout=20)
    fo = fleet.load(PROG, **OPTIONS)
    try:
        status = fo.status
        none, caps = cluster.hostnames[3], cluster.hostnames[4]
        assert fleet.engines[ids[4]]["capabilities"] == ["CAP_BPF", "CAP_PERFMON"]
        summary = fo.summary().set_index("host")
        assert summary.loc[caps, "capabilities"] == "bpf,perfmon"
        assert summary.loc[none, "capabilities"] == "" and summary.loc[caps, "uid"] == 65534
        # no capability at all: it says which ones BPF needs
        assert status[none].startswith("PrivilegeError"), status[none]
        assert "lacks CAP_BPF, CAP_PERFMON" in status[none], status[none]
        # CAP_BPF + CAP_PERFMON: an XDP program needs CAP_NET_ADMIN as well
        assert status[caps].startswith("PrivilegeError"), status[caps]
        assert "not CAP_NET_ADMIN" in status[caps], status[caps]
        assert (status.drop([none, caps]) == "ok").all()
        fo.progs.fleet_count.attach_xdp("fleet0")
        send_and_wait(fo)
        df = fo.maps.packets.to_df()
        assert dict(zip(df["host"], df["value"])) == dict(zip(cluster.hostnames, SENT))
        assert df.attrs["status"][none] == status[none]
        assert df.attrs["status"][caps] == status[caps]
    finally:
        fo.destroy()
    wait_gone(5)


UPROBE = r"""
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, u32);		/* tgid */
	__type(value, u64);
} calls SEC(".maps");

SEC("uprobe/%s:getppid")
int BPF_UPROBE(fleet_count)
{
	u32 tgid = bpf_get_current_pid_tgid() >> 32;
	u64 one = 1, *n = bpf_map_lookup_elem(&calls, &tgid);

	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&calls, &tgid, &one, BPF_NOEXIST);
	return 0;
}
"""


def test_uprobe_without_cap_sys_admin_names_it_on_that_host(cluster):
    libc = next((p for p in ("/lib/x86_64-linux-gnu/libc.so.6", "/lib/aarch64-linux-gnu/"
                             "libc.so.6", "/usr/lib/libc.so.6") if os.path.exists(p)), None)
    if libc is None:
        pytest.skip("libc.so.6 not found where the test looks")
    ids = [cluster.engine_id(0), cluster.engine_id(4)]
    fleet = bpfnb.Fleet(cluster.client, targets=ids, timeout=20)
    fo = fleet.load(UPROBE % libc, name="fleetup")
    try:
        caps = cluster.hostnames[4]
        assert fo.status[cluster.hostnames[0]] == "ok"
        assert "CAP_SYS_ADMIN" in fo.status[caps], fo.status[caps]
        assert "start this engine as root" in fo.status[caps], fo.status[caps]
        pid = cluster.client[ids[0]].apply_sync(fc.getppid_n, 25)
        df = fo.maps.calls.to_df()
        assert df.loc[df["key"] == pid, "value"].tolist() == [25]
        assert set(df["host"]) == {cluster.hostnames[0]}
    finally:
        fo.destroy()


REJECTED = r"""
SEC("xdp")
int fleet_count(struct xdp_md *ctx)
{
	/* no bounds check against data_end: every kernel's verifier refuses this */
	return *(int *)(long)ctx->data == 0 ? XDP_PASS : XDP_DROP;
}
"""


def test_program_every_kernel_rejects_names_each_host(cluster):
    fleet = bpfnb.Fleet(cluster.client, targets=privileged_ids(cluster), timeout=20)
    with pytest.raises(FleetError) as e:
        fleet.load(REJECTED)
    for host in cluster.hostnames[:3]:
        assert f"{host}: VerifierError" in str(e.value)
    assert not ours()


CLIENT = textwrap.dedent("""
    import sys, time
    import ipyparallel, bpfnb
    client = ipyparallel.Client(sys.argv[1])
    fleet = bpfnb.Fleet(client, targets=[int(e) for e in sys.argv[2].split(",")], lease=3)
    fo = fleet.load(sys.argv[3], rodata={"port_lo": 9999, "port_hi": 9999})
    fo.progs.fleet_count.attach_xdp("fleet0")
    print(fo.handle, list(fo.status), flush=True)
    time.sleep(600)
""")


def test_client_sigkilled_engines_destroy_within_lease(cluster, tmp_path):
    ids = privileged_ids(cluster)
    script = tmp_path / "client.py"
    script.write_text(CLIENT)
    client = subprocess.Popen([sys.executable, str(script), str(cluster.url_file),
                               ",".join(map(str, ids)), str(PROG)], env=cluster.env,
                              stdout=subprocess.PIPE, text=True)
    try:
        line = client.stdout.readline()
        assert line.endswith("['ok', 'ok', 'ok']\n"), line
        handle = line.split()[0]
        assert all(handle in cluster.client[e].apply_sync(engine.held) for e in ids)
        time.sleep(4)  # longer than the lease: renewals keep it alive
        assert len(ours()) == 3
        client.send_signal(signal.SIGKILL)
        client.wait(timeout=10)
        took = wait_gone(3 + 5)
        # the lease, plus the watchdog's check interval and slack for a loaded machine
        assert took <= 3 + 2, took
        assert all(handle not in cluster.client[e].apply_sync(engine.held) for e in ids)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()


@pytest.mark.parametrize("vanish", [False, True], ids=["nanny-reports", "heartbeat"])
def test_engine_killed_mid_run_says_it_died_others_keep_their_data(cluster, vanish):
    """A killed engine's nanny tells the controller at once; a host that vanishes (the
    nanny gone too) is noticed when its heartbeat stops (--ping=500: 10 misses, ~5 s).
    Either way no call waits for the timeout, and the status says the engine died."""
    fo = loaded(cluster, privileged_ids(cluster), timeout=30)
    try:
        send_and_wait(fo)
        eid, killed = fo.live_ids[1], cluster.hostnames[1]
        assert fo.fleet.hosts[eid] == killed
        # killed while a call is under way on it: the call ends when the controller
        # unregisters the engine, long before the call's own end or the timeout
        killer = threading.Timer(0.5, cluster.kill_engine, (1,), {"vanish": vanish})
        killer.start()
        t0 = time.monotonic()
        reply = fo.fleet.each(time.sleep, 25, ids=[eid])[eid]
        took = time.monotonic() - t0
        killer.join()
        assert took < (15 if vanish else 5), took
        assert reply.status.startswith(f"EngineDied: engine {eid} ({killed}) died"), reply
        t0 = time.monotonic()
        df = fo.maps.packets.to_df()
        assert time.monotonic() - t0 < 2
        assert dict(zip(df["host"], df["value"])) == {cluster.hostnames[0]: SENT[0],
                                                      cluster.hostnames[2]: SENT[2]}
        status = df.attrs["status"]
        assert status[killed].startswith(f"EngineDied: engine {eid} ({killed}) died"), status
        assert fo.status[killed] == status[killed]
        assert list(fo.status.drop(killed)) == ["ok", "ok"]
        # the dead engine is skipped afterwards, and so is it by a new fleet
        t0 = time.monotonic()
        assert fo.bss.udp_packets.to_dict() == {cluster.hostnames[0]: SENT[0],
                                                cluster.hostnames[2]: SENT[2]}
        assert time.monotonic() - t0 < 2
        assert eid not in cluster.client.ids
    finally:
        fo.destroy()
        cluster.engines[1] = cluster.start_engine(1)
    wait_gone(5)


def test_engine_that_hangs_times_out_then_its_lease_ends_its_programs(cluster):
    """A stopped (not dead) engine: the call ends at the fleet's timeout with a status
    that says so; the engine is out of the object, renewals skip it, and once it runs
    again its own watchdog destroys the object within the lease."""
    fo = loaded(cluster, privileged_ids(cluster), timeout=1.5, lease=3)
    try:
        eid, hung = fo.live_ids[0], cluster.hostnames[0]
        os.kill(cluster.engines[0].pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            values = fo.bss.udp_packets
            took = time.monotonic() - t0
        finally:
            os.kill(cluster.engines[0].pid, signal.SIGCONT)
        assert took < 3, took
        assert sorted(values.index) == sorted(cluster.hostnames[1:3])
        status = fo.status[hung]
        assert status.startswith(f"TimeoutError: engine {eid} ({hung}) did not answer "
                                 "within 1.5 s"), status
        assert "has not unregistered it" in status
        deadline = time.monotonic() + 3 + 3
        while fo.handle in cluster.client[eid].apply_sync(engine.held):
            assert time.monotonic() < deadline, "the hung engine kept the object"
            time.sleep(0.2)
        assert eid in cluster.client.ids and len(ours()) == 2
    finally:
        fo.destroy()
    wait_gone(5)


def test_magic_engines_rerun_stop_and_unload_tear_down_everywhere(cluster, monkeypatch):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output
    from bpfnb.registry import registry
    ids = privileged_ids(cluster)
    shell = InteractiveShell.instance()  # before IPYTHONDIR moves: its history stays put
    monkeypatch.setenv("IPYTHONDIR", cluster.env["IPYTHONDIR"])  # where profile "fleet" is
    shell.run_line_magic("load_ext", "bpfnb")
    cell = PROG.read_text()
    line = (f"counter --engines {','.join(map(str, ids))} --profile fleet "
            f"--cflags -I{PROG.parent} "
            f"--set port_lo={fc.PORT} --set port_hi={fc.PORT} --no-attach")
    try:
        with capture_output() as cap:
            shell.run_cell_magic("bpf", line, cell)
        first = shell.user_ns["counter"]
        assert isinstance(first, FleetObject) and registry.get("counter") is first
        assert list(first.status) == ["ok"] * 3, cap.stdout
        assert cap.outputs and "status" in cap.outputs[0].data["text/plain"]
        assert len(ours()) == 3
        # a re-run replaces the object on every engine
        with capture_output():
            shell.run_cell_magic("bpf", line, cell)
        second = shell.user_ns["counter"]
        assert second is not first and first.state == "destroyed"
        second.progs.fleet_count.attach_xdp("fleet0")
        send_and_wait(second)
        assert second.bss.udp_packets.to_dict() == dict(zip(cluster.hostnames, SENT))
        assert len(ours()) == 3
        assert "counter" in shell.run_line_magic("bpf", "list")["name"].tolist()
        with capture_output() as cap:
            shell.run_line_magic("bpf", "show counter")
        shown = [o.data["text/plain"] for o in cap.outputs]
        assert "bss by host" in shown
        assert all(re.search(rf"^{h}\s+{n}$", shown[-1], re.M)
                   for h, n in zip(cluster.hostnames, SENT)), shown[-1]
        with capture_output():
            shell.run_line_magic("bpf", "stop counter")
        assert second.state == "destroyed"
        wait_gone(5)
        # kernel shutdown (the extension unloading, the registry at exit) tears down too
        with capture_output():
            shell.run_cell_magic("bpf", line, cell)
        third = shell.user_ns["counter"]
        assert len(ours()) == 3
    finally:
        shell.run_line_magic("unload_ext", "bpfnb")
    assert third.state == "destroyed"
    wait_gone(5)
