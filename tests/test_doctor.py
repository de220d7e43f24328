"""The doctor on this machine: tracepoints work, fentry is refused, nothing is left."""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from bpfnb import doctor


def lo_state() -> tuple[str, str]:
    """(qdiscs of lo, lo's link line): an XDP program or a clsact qdisc would show."""
    qdisc = subprocess.run(["tc", "qdisc", "show", "dev", "lo"], capture_output=True,
                           text=True).stdout
    link = subprocess.run(["ip", "link", "show", "lo"], capture_output=True, text=True).stdout
    return qdisc, link


@pytest.fixture
def lo_untouched():
    if not (shutil.which("tc") and shutil.which("ip")):
        pytest.skip("iproute2 (tc, ip) is not installed")
    before = lo_state()
    yield
    assert lo_state() == before


def test_report_on_this_machine(no_leaks, lo_untouched):
    report = doctor.run()
    types = report.program_types
    assert set(types) == set(doctor.PROGRAM_TYPES)
    for kind in ("tracepoint", "raw_tp", "tp_btf", "uprobe", "perf_event", "xdp", "tc",
                 "cgroup_skb", "iter"):
        assert types[kind], kind
    assert types["fentry"] is False and types["kprobe"] is False
    checks = {c.item: c for c in report.checks}
    assert "EPERM" in checks["fentry"].detail and "tp_btf" in checks["fentry"].fix
    assert "tracepoint" in checks["kprobe"].fix
    assert checks["iter"].detail.startswith("loads and attaches (read ")
    for item in ("CAP_BPF", "CAP_PERFMON", "BTF", "tracefs", "bpffs", "clang", "libbpf"):
        assert checks[item].ok, item
    assert "libbpf.so" in checks["libbpf"].detail and "clang" in checks["clang"].detail
    assert report.can_load

    text = str(report)
    assert "FAIL  fentry" in text and "fix: this kernel refuses fentry" in text
    assert text.splitlines()[-1].startswith("9 of 11 program types")
    df = report.to_df()
    assert list(df.columns) == ["group", "item", "ok", "detail", "fix"]
    assert df.set_index("item").loc["tracepoint", "ok"] == True  # noqa: E712 (numpy bool)
    html = report._repr_html_()
    assert "<table>" in html and "fentry" in html and "color:red" in html


def test_capabilities_from_proc():
    caps = doctor.effective_capabilities()
    assert bool(caps >> doctor.CAPABILITIES["CAP_BPF"] & 1) == (os.geteuid() == 0)


def test_cli(need_root):
    r = subprocess.run([sys.executable, "-m", "bpfnb", "doctor"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ok    tracepoint" in r.stdout and "FAIL  fentry" in r.stdout
    r = subprocess.run([sys.executable, "-m", "bpfnb", "vmlinux"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("vmlinux.h")
    assert os.path.getsize(r.stdout.strip()) > 100_000
    r = subprocess.run([sys.executable, "-m", "bpfnb"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "doctor" in r.stderr


def test_without_privileges_nothing_loads_and_the_fix_is_named(need_root):
    """As user nobody (setpriv), every probe fails: exit status 1, fixes name sudo."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    home = tempfile.mkdtemp(prefix="bpfnb-nobody-")  # pytest's tmp_path is root-only
    try:
        cache = os.path.join(home, "cache")
        shutil.copytree(os.environ["BPFNB_CACHE"], cache)  # vmlinux.h, built once
        for d, _, files in os.walk(home):  # nobody's own: a cache others can write is refused
            os.chown(d, 65534, 65534)
            for f in files:
                os.chown(os.path.join(d, f), 65534, 65534)
        env = dict(os.environ, BPFNB_CACHE=cache, HOME=home)
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  "--inh-caps=-all", sys.executable]
        if subprocess.run(nobody + ["-c", "import bpfnb"], capture_output=True, env=env,
                          timeout=60).returncode:
            pytest.skip("user nobody cannot run this Python or import bpfnb from here")
        r = subprocess.run(nobody + ["-m", "bpfnb", "doctor"], capture_output=True,
                           text=True, timeout=120, env=env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "FAIL  CAP_BPF" in r.stdout and "setcap" in r.stdout
    assert "ok    tracepoint" not in r.stdout and "FAIL  tracepoint" in r.stdout
    assert "No program type loads here" in r.stdout
