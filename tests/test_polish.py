"""What a newcomer sees: `make lab`'s first line, tables with true integers and empty
states, summaries that say what happened, and what each program costs, through a real
IPython InteractiveShell against the real kernel."""

import os
import pty
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from IPython.utils.capture import capture_output

from bpfnb.libbpf import stats
from bpfnb.registry import registry
from bpfnb.summary import summarize
from test_privilege import home  # noqa: F401  (a fixture: HOME for user nobody)

ROOT = Path(__file__).resolve().parent.parent

# Counts getppid calls of one process (the test's) in a map and a global; the program
# itself runs for every process's getppid, which is what the kernel's run count counts.
PPID = r"""%%bpf {name} {flags} --set target_pid={{os.getpid()}}
const volatile u32 target_pid = 0;
u64 calls = 0;

struct {{
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, u32);
    __type(value, u64);
}} counts SEC(".maps");

struct {{
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 16);
    __type(key, u32);
    __type(value, u64);
}} unused SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != target_pid)
        return 0;
    __sync_fetch_and_add(&calls, 1);
    u64 one = 1, *v = bpf_map_lookup_elem(&counts, &pid);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&counts, &pid, &one, BPF_ANY);
    return 0;
}}
"""


@pytest.fixture
def ip(shell, no_leaks):
    yield shell
    registry.stop_all()


def run_ok(ip, cell):
    with capture_output() as cap:
        result = ip.run_cell(cell)
    assert result.success, f"{result.error_in_exec or result.error_before_exec}\n{cap.stdout}"
    return result, cap


def load(ip, name="ppid", flags=""):
    run_ok(ip, PPID.format(name=name, flags=flags))
    return ip.user_ns[name]


# --- tables: integers, empty states ---------------------------------------------------

def test_small_map_renders_exactly(ip):
    obj = load(ip, flags="--no-attach")
    counts = obj.maps.counts
    counts[7] = 1000006
    counts[3] = 42
    counts[9] = 5
    assert repr(counts) == "@counts[7]: 1000006\n@counts[3]: 42\n@counts[9]: 5"
    page = counts._repr_html_()
    cells = re.findall(r"<td>([^<]*)</td>", page)
    assert cells == ["7", "1000006", "3", "42", "9", "5"]
    assert ".0<" not in page
    assert repr(obj.maps.unused) == "@unused: no entries"
    assert "@unused: no entries" in obj.maps.unused._repr_html_()

    _, cap = run_ok(ip, "%bpf show ppid")
    shown = [o.data["text/plain"] for o in cap.outputs]
    assert shown[0] == "counts"
    head, *rows = shown[1].splitlines()   # a DataFrame: in the hash map's order
    assert head.split() == ["key", "value"]
    assert sorted(tuple(r.split()[1:]) for r in rows) == [("3", "42"), ("7", "1000006"),
                                                          ("9", "5")]
    assert "unused: empty (no entries)" in shown


def test_list_says_nothing_is_loaded(ip):
    registry.stop_all()
    result, _ = run_ok(ip, "%bpf list")
    assert result.result.empty   # still a DataFrame (the labs check `.empty`)
    assert repr(result.result) == "no BPF objects loaded (a %%bpf NAME cell loads one)"
    assert result.result._repr_html_() == (
        "<i>no BPF objects loaded (a %%bpf NAME cell loads one)</i>")


def test_list_integers_stay_integers(ip):
    load(ip)
    for _ in range(30):
        os.getppid()
    df = ip.run_line_magic("bpf", "list")
    assert str(df["runs"].dtype) == "Int64" and str(df["ns_per_run"].dtype) == "Int64"
    text = df.to_string()
    assert not re.search(r"\b\d+\.0\b", df[["runs", "ns_per_run"]].to_string())
    assert "on_getppid" in text and "tracepoint/syscalls/sys_enter_getppid" in text


def test_summary_of_a_no_attach_cell(ip):
    _, cap = run_ok(ip, PPID.format(name="idle", flags="--no-attach"))
    summary = cap.outputs[0].data["text/plain"]
    head = summary.splitlines()[0]
    assert head.startswith("idle: loaded · ")
    assert "attached in" not in summary
    assert "not attached (--no-attach): idle.attach() attaches it" in head
    row = summary.splitlines()[2].split()
    assert row[:4] == ["on_getppid", "tracepoint", "tracepoint/syscalls/sys_enter_getppid",
                       "loaded"]


def test_summary_of_a_program_that_needs_a_target(ip):
    _, cap = run_ok(ip, """%%bpf xdp_pass
SEC("xdp")
int pass_all(struct xdp_md *ctx)
{
    return XDP_PASS;
}
""")
    summary = cap.outputs[0].data["text/plain"]
    assert summary.startswith("xdp_pass: loaded · ") and "attached in" not in summary
    assert "needs a target: xdp_pass.progs.pass_all.attach_xdp(interface)" in summary


# --- a stream's display updates in place ---------------------------------------------

EVENTS = r"""%%bpf events --cflags "-I{progs}" --set target_pid={{os.getpid()}}
#include "ppid_events.h"

const volatile u32 target_pid = 0;
u32 seq = 0;

struct {{
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, 64 * 1024);
}} rb SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != target_pid)
        return 0;
    struct ppid_event *e = bpf_ringbuf_reserve(&rb, sizeof(*e), 0);
    if (!e)
        return 0;
    e->pid = pid;
    e->seq = __sync_fetch_and_add(&seq, 1);
    bpf_ringbuf_submit(e, 0);
    return 0;
}}
"""


def test_a_shown_stream_updates_in_place(ip, monkeypatch):
    from bpfnb import magics
    run_ok(ip, EVENTS.format(progs=ROOT / "tests" / "progs"))
    monkeypatch.setattr(ip, "kernel", object(), raising=False)   # as in a notebook
    with capture_output() as cap:
        ip.run_cell("s = events.maps.rb.stream()\ns")
        for _ in range(7):
            os.getppid()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(
                "7 rows" in o.data["text/plain"] for o in cap.outputs if o.update):
            time.sleep(0.05)
        ip.user_ns["s"].close()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and magics._stream_displays.thread is not None:
            time.sleep(0.05)
    first, *updates = cap.outputs
    assert not first.update and first.data["text/plain"].startswith(
        "<EventStream 'rb' of struct ppid_event, running: 0 rows, 0 lost>")
    assert updates and all(u.update for u in updates)
    texts = [u.data["text/plain"] for u in updates]
    assert "<EventStream 'rb' of struct ppid_event, running: 7 rows, 0 lost>" in texts
    assert texts[-1] == "<EventStream 'rb' of struct ppid_event, stopped: 7 rows, 0 lost>"
    shown = [first.data["text/plain"]] + texts   # only changes are sent
    assert all(a != b for a, b in zip(shown, shown[1:])), shown
    assert magics._stream_displays.thread is None   # no stream shown runs: it ended
    ip.user_ns.pop("s")


# --- overhead ---------------------------------------------------------------------

def holders_of_stats() -> list[int]:
    """Pids of processes holding a BPF stats fd (ours included)."""
    pids = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:bpf-stats":
                    pids.append(int(pid))
                    break
            except OSError:
                continue
    return pids


def sysctl_stats() -> str:
    return Path("/proc/sys/kernel/bpf_stats_enabled").read_text().strip()


def test_overhead_counts_the_runs_we_cause(ip, monkeypatch):
    monkeypatch.setattr(stats, "LOOK_S", 1.0)
    stats.end_looks()   # the earlier tests' tables are not looked at any more
    before = sysctl_stats()
    obj = load(ip)   # the summary is a first look: counting starts
    df = ip.run_line_magic("bpf", "list")
    runs0 = int(df.loc[0, "runs"])
    n = 2000
    for _ in range(n):
        os.getppid()
    df = ip.run_line_magic("bpf", "list")
    row = df.iloc[0]
    assert obj.bss.calls == n   # exact: the program's own count of our calls
    assert row["runs"] - runs0 >= n   # the kernel counted every run (ours and others')
    assert row["ns_per_run"] > 0 and row["events_per_s"] > 0 and row["cpu_pct"] > 0
    assert (row["program"], row["state"]) == ("on_getppid", "attached")

    text = repr(summarize(obj, "ppid")).splitlines()
    header, prog = text[1].split(), text[2].split()
    assert header[-4:] == ["runs", "events/s", "ns/run", "cpu"]
    assert int(prog[5].replace(",", "")) >= runs0 + n
    assert prog[7] != "-" and int(prog[7].replace(",", "")) > 0

    # the looks expire: the stats fd is closed and the counts stand still again
    deadline = time.monotonic() + 5
    while os.getpid() in holders_of_stats() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert os.getpid() not in holders_of_stats() and stats.stats_since() is None
    assert sysctl_stats() == before
    others = holders_of_stats()
    if sysctl_stats() == "0" and not others:   # nobody else counts runs meanwhile
        still = obj.progs.on_getppid.stats["run_cnt"]
        for _ in range(100):
            os.getppid()
        assert obj.progs.on_getppid.stats["run_cnt"] == still
    assert obj.bss.calls == n + (100 if sysctl_stats() == "0" and not others else 0)


def test_dashboard_status_line_shows_the_overhead(ip):
    import bpfnb
    obj = load(ip, name="dash")
    dash = bpfnb.live(obj.maps.counts, start=False)
    try:
        dash.refresh()   # the first reading
        for _ in range(500):
            os.getppid()
        dash.refresh()
        status = re.sub(r"<[^>]+>", "", dash.status.value)
        m = re.search(r" · BPF: ([\d,.]+) runs/s, ([\d,]+) ns/run, ([\d.e-]+)% CPU$",
                      status)
        assert m, status
        assert float(m.group(1).replace(",", "")) > 0 and int(m.group(2).replace(",", "")) > 0
    finally:
        dash.stop()
    assert obj.bss.calls == 500


def test_without_cap_sys_admin_the_summary_says_counts_are_unknown(home):
    from test_privilege import as_user   # the kernelspec's capabilities, as user nobody
    r = as_user(home, """
        import bpfnb
        from bpfnb.summary import summarize
        obj = bpfnb.load('SEC("raw_tp/sys_enter") int on_enter(void *ctx) { return 0; }')
        print(repr(summarize(obj, "snoop")))
        obj.destroy()
    """)
    assert r.returncode == 0, r.stderr
    head, _, prog = r.stdout.splitlines()[:3]
    assert head.startswith("snoop: attached") and head.endswith(
        "run counts unknown: the kernel counts runs (BPF stats) only for a process with "
        "CAP_SYS_ADMIN (root)")
    runs, per_s, ns, cpu = prog.split()[-4:]
    # ns/run may be known: another process may have stats on (run time and count
    # are counted together), but not how many runs were made
    assert runs == per_s == cpu == "-" and (ns == "-" or int(ns.replace(",", "")) > 0)


# --- make lab ------------------------------------------------------------------------

def _venv() -> Path:
    return Path(sys.prefix)


@pytest.mark.skipif(os.geteuid() != 0, reason="setup.sh mounts tracefs/bpffs as root")
def test_make_lab_prints_its_url_first_and_stops_on_ctrl_c(tmp_path):
    venv = _venv()
    if not (venv / "bin" / "jupyter").exists() or not (venv / ".stamp").exists():
        pytest.skip("needs the .venv that scripts/setup.sh made (with its .stamp)")
    # A copy of the checkout's set-up, on the existing .venv (never pip-installed again:
    # pyproject.toml is older than the .stamp)
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "setup.sh", tmp_path / "scripts" / "setup.sh")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    os.utime(tmp_path / "pyproject.toml", (0, 0))
    (tmp_path / ".venv").symlink_to(venv)
    (tmp_path / "notebooks").mkdir()

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port0 = taken.getsockname()[1]
    master, slave = pty.openpty()   # a terminal on stdin, as `make lab` has
    env = {**os.environ, "SKIP_APT": "1", "PORT": str(port0)}
    env.pop("BPFNB_USER", None)
    proc = subprocess.Popen(["bash", str(tmp_path / "scripts" / "setup.sh"), "--lab"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True, text=True)
    os.close(slave)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len([x for x in lines if x.strip()]) < 2:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
        clear = [x for x in lines if x.strip()]
        assert clear, f"setup.sh printed nothing (exit {proc.poll()})"
        m = re.fullmatch(r"bpfnb lab: open (http://127\.0\.0\.1:(\d+)/lab\?token=(\w+))"
                         r" \(port (\d+) was taken\)", clear[0])
        assert m, clear
        url, port, token = m.group(1), int(m.group(2)), m.group(3)
        assert port > port0 and int(m.group(4)) == port0 and len(token) >= 32
        assert "notebooks/01-setup.ipynb" in clear[1] and "Ctrl-C" in clear[1]

        status = None
        while time.monotonic() < deadline and status is None:
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    status = r.status
            except OSError:
                assert proc.poll() is None, "JupyterLab exited"
                time.sleep(0.3)
        assert status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status?token={token}",
                                    timeout=5) as r:
            assert r.status == 200

        os.killpg(proc.pid, signal.SIGINT)   # what Ctrl-C in the terminal sends
        assert proc.wait(timeout=20) is not None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
        taken.close()
    left = [pid for pid in filter(str.isdigit, os.listdir("/proc"))
            if _session(pid) == proc.pid]
    assert not left, f"processes left by JupyterLab: {left}"
    with socket.socket() as s:   # nobody listens on the port any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))


def _session(pid: str) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[3])
