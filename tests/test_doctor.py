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
    for item in ("CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "BTF", "tracefs", "bpffs",
                 "clang", "libbpf"):
        assert checks[item].ok, item
    for item in ("python", "unprivileged_bpf_disabled", "perf_event_paranoid"):
        assert checks[item].ok is None, item
    assert "does not apply: CAP_BPF is held" in checks["unprivileged_bpf_disabled"].detail
    assert checks["tracefs"].detail.endswith("readable by uid 0")
    assert len(report.checks) == len({c.item for c in report.checks})  # one verdict each
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
    """As user nobody (setpriv), nothing is tried: exit status 1, each missing capability
    named once, the fixes name sudo and the kernelspec, never setcap."""
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
    assert "FAIL  CAP_BPF" in r.stdout and "bpfnb (BPF capabilities)" in r.stdout
    assert "sudo" in r.stdout and "setcap cap_" not in r.stdout  # the interpreter is shared
    assert "shared: never setcap it" in r.stdout
    assert "FAIL  tracepoint                 not tried: CAP_BPF, CAP_PERFMON missing" in r.stdout
    assert "ok    tracepoint" not in r.stdout and "FAIL  tracepoint" in r.stdout
    assert "No program type loads here" in r.stdout


def test_setcap_only_for_a_private_interpreter(need_root, tmp_path):
    """setcap is named only for an interpreter that is the user's own file, executable by
    nobody else (a copy in a venv of theirs), never for a shared one."""
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    base = tempfile.mkdtemp(prefix="bpfnb-pyown-")  # pytest's tmp_path is root-only
    try:
        os.chmod(base, 0o755)
        venv = os.path.join(base, "venv")
        subprocess.run([sys._base_executable, "-m", "venv", "--copies", "--without-pip", venv],
                       check=True, capture_output=True, timeout=60)
        python = os.path.join(venv, "bin", os.path.basename(os.path.realpath(
            sys._base_executable)))
        for d, dirs, files in os.walk(venv):
            for name in dirs + files:
                os.lchown(os.path.join(d, name), 65534, 65534)
        os.chown(venv, 65534, 65534)
        code = ("from bpfnb import doctor\n"
                "for c in doctor._privileges(): print(c.item, '|', c.detail, '|', c.fix)")
        site = [p for p in sys.path if p.endswith("site-packages")]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.getcwd(), *site]))
        nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                  "--inh-caps=-all"]
        runs = {}
        for mode in (0o755, 0o700):
            os.chmod(python, mode)
            r = subprocess.run(nobody + [python, "-c", code], capture_output=True, text=True,
                               env=env, timeout=60)
            if r.returncode and "No module named" in r.stderr:
                pytest.skip(f"a venv copy cannot import bpfnb here: {r.stderr[-300:]}")
            assert r.returncode == 0, r.stderr[-2000:]
            runs[mode] = r.stdout
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert "setcap" not in runs[0o755].replace("never setcap it", "")
    assert "(shared: never setcap it" in runs[0o755]
    assert f"sudo setcap cap_bpf,cap_perfmon,cap_net_admin+ep {python}" in runs[0o700]
    assert "(private to this user)" in runs[0o700]
