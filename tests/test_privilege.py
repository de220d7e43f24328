"""The core checks as an ordinary user holding only the kernelspec's capabilities.

Each check runs in a child started with ``kernelspec.setpriv_argv("nobody")``, the very
argv the "bpfnb (BPF capabilities)" kernel uses: it loads programs and causes the events
it counts. With every capability dropped, loading names CAP_BPF.
"""

import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid

import pytest

from bpfnb import kernelspec
from bpfnb.libbpf import sysfs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGS = os.path.join(ROOT, "tests", "progs")
GETPPID = {"x86_64": 110, "aarch64": 173}
USER = "nobody"
CALLS = 100


@pytest.fixture(scope="module")
def home():
    """A private HOME and compile cache owned by the child's user (mode 0700)."""
    if os.geteuid() != 0:
        pytest.skip("starting a child as another user needs root")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    if not shutil.which(os.environ.get("BPFNB_CLANG", "clang")):
        pytest.skip("clang is not installed")
    pw = kernelspec._user(USER)
    d = tempfile.mkdtemp(prefix="bpfnb-priv-")
    os.chmod(d, 0o755)
    home = os.path.join(d, "home")
    os.mkdir(home, 0o700)
    os.chown(home, pw.pw_uid, pw.pw_gid)
    yield home
    shutil.rmtree(d, ignore_errors=True)


def as_user(home, code, caps=kernelspec.CAPS, prefix=(), timeout=120):
    env = dict(os.environ, HOME=home, BPFNB_CACHE=os.path.join(home, "cache"),
               PYTHONPATH=ROOT)
    argv = list(prefix) + kernelspec.setpriv_argv(USER, caps) + [
        sys.executable, "-c", textwrap.dedent(code)]
    r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                       cwd=home)
    if "No module named" in r.stderr or "Permission denied: '" + sys.executable in r.stderr:
        pytest.skip(f"user {USER} cannot run this Python or import bpfnb: {r.stderr[-300:]}")
    return r


def result(r) -> dict:
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


COUNT = """
import json, os, bpfnb
from bpfnb.libbpf import errors
names = ("count_tp_btf", "count_raw_tp", "count_tracepoint")
out = {"caps": f"{errors.effective_capabilities():x}", "uid": os.getuid()}
for name in names:
    try:
        with bpfnb.load(%(src)r, rodata={"targ_tgid": os.getpid(), "getppid_nr": %(nr)d},
                        autoload={n: n == name for n in names}) as obj:
            for _ in range(%(calls)d):
                os.getppid()
            out[name] = getattr(obj.bss.hits, name.removeprefix("count_"))
    except bpfnb.BPFError as e:
        out[name] = {"error": type(e).__name__, "text": str(e)}
print(json.dumps(out))
"""


def test_tracing_with_the_kernelspec_capabilities(home):
    nr = GETPPID.get(platform.machine())
    if nr is None:
        pytest.skip(f"getppid's number on {platform.machine()} is not in the test")
    out = result(as_user(home, COUNT % dict(src=os.path.join(PROGS, "privilege.bpf.c"),
                                            nr=nr, calls=CALLS)))
    assert out["uid"] == 65534 and out["caps"] == "c000001000"  # bpf, perfmon, net_admin
    assert out["count_tp_btf"] == CALLS and out["count_raw_tp"] == CALLS
    tp = out["count_tracepoint"]
    mode, _, gid = kernelspec.tracefs_state()
    group = kernelspec.tracefs_group()
    if group is not None and gid == group and mode & 0o050 == 0o050:
        assert tp == CALLS  # tracefs access arranged: the kernel runs in group bpfnb
    else:
        assert tp["error"] == "PrivilegeError", tp
        assert f"{sysfs.TRACEFS} is mode {mode:04o} owned by root" in tp["text"]
        assert "tp_btf/" in tp["text"] and "gid=bpfnb,mode=0750" in tp["text"]
        assert "lacks" not in tp["text"] and "setcap" not in tp["text"]


def test_tracefs_arranged_for_a_group(home):
    """arrange_tracefs() for a group of the test's own: the tracepoint attaches and
    counts exactly; tracefs is given back as it was."""
    nr = GETPPID.get(platform.machine())
    if nr is None:
        pytest.skip(f"getppid's number on {platform.machine()} is not in the test")
    before = kernelspec.tracefs_state()
    if before[2] != 0:
        pytest.skip("tracefs is already arranged for a group: the test above covers it")
    group = f"bpfnbt{uuid.uuid4().hex[:6]}"
    subprocess.run(["groupadd", "--system", group], check=True, capture_output=True)
    try:
        gid = int(subprocess.run(["getent", "group", group], capture_output=True, text=True,
                                 check=True).stdout.split(":")[2])
        kernelspec.arrange_tracefs(gid)
        assert kernelspec.tracefs_state()[1:] == (0, gid)
        env = dict(os.environ, HOME=home, BPFNB_CACHE=os.path.join(home, "cache"),
                   PYTHONPATH=ROOT)
        argv = kernelspec.setpriv_argv(USER, groups=[65534, gid]) + [
            sys.executable, "-c", textwrap.dedent(COUNT % dict(
                src=os.path.join(PROGS, "privilege.bpf.c"), nr=nr, calls=CALLS))]
        r = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120,
                           cwd=home)
    finally:
        kernelspec._remount_tracefs(before[2], before[0])
        subprocess.run(["groupdel", group], capture_output=True)
    assert kernelspec.tracefs_state() == before
    assert result(r)["count_tracepoint"] == CALLS


XDP = """
import json, sys, bpfnb
with bpfnb.load(%(src)r, rodata={"targ_port": %(port)d}, attach=False) as obj:
    obj.progs.count_udp.attach_xdp(%(dev)r)
    print("attached", flush=True)
    sys.stdin.readline()  # the test sends its packets meanwhile
    print(json.dumps({"udp": obj.bss.udp_packets}))
"""


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


@pytest.fixture
def two_netns():
    """(sender netns, receiver netns, receiver's veth): 10.99.0.1 -> 10.99.0.2."""
    if not shutil.which("ip"):
        pytest.skip("iproute2 (ip) is not installed")
    tag = uuid.uuid4().hex[:6]
    a, b = f"bpfnbpa{tag}", f"bpfnbpb{tag}"
    ip("netns", "add", a)
    ip("netns", "add", b)
    try:
        ip("-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
        ip("-n", a, "addr", "add", "10.99.0.1/24", "dev", "va")
        ip("-n", b, "addr", "add", "10.99.0.2/24", "dev", "vb")
        ip("-n", a, "link", "set", "va", "up")
        ip("-n", b, "link", "set", "vb", "up")
        yield a, b, "vb"
    finally:
        ip("netns", "del", a, check=False)
        ip("netns", "del", b, check=False)
    assert a not in ip("netns", "list").stdout and b not in ip("netns", "list").stdout


def test_xdp_on_a_veth_with_net_admin(home, two_netns):
    sender, receiver, dev = two_netns
    port, n = 9999, 50
    env = dict(os.environ, HOME=home, BPFNB_CACHE=os.path.join(home, "cache"),
               PYTHONPATH=ROOT)
    argv = ["ip", "netns", "exec", receiver] + kernelspec.setpriv_argv(USER) + [
        sys.executable, "-c", textwrap.dedent(XDP % dict(
            src=os.path.join(PROGS, "udpcount.bpf.c"), port=port, dev=dev))]
    child = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env, cwd=home)
    try:
        line = child.stdout.readline()
        assert line.strip() == "attached", line + child.stderr.read()[-3000:]
        # the neighbour is resolved first, so every datagram reaches the wire
        subprocess.run(["ip", "netns", "exec", sender, "ping", "-c", "1", "-W", "2",
                        "10.99.0.2"], check=True, capture_output=True, timeout=30)
        send = (f"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                f"for _ in range({n}): s.sendto(b'x', ('10.99.0.2', {port}))")
        subprocess.run(["ip", "netns", "exec", sender, sys.executable, "-c", send],
                       check=True, capture_output=True, timeout=30)
        out, err = child.communicate("done\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err[-3000:]
    assert json.loads(out.strip().splitlines()[-1]) == {"udp": n}


def test_doctor_names_what_is_missing(home):
    r = as_user(home, "import bpfnb.__main__ as m; raise SystemExit(m.main(['doctor']))",
                caps=("bpf", "perfmon"))
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]  # raw_tp and tp_btf load
    items = [ln.split()[1] for ln in r.stdout.splitlines()
             if ln.startswith(("  ok", "  FAIL", "  --"))]
    assert len(items) == len(set(items))  # one verdict per item
    lines = {ln.split()[1]: ln for ln in r.stdout.splitlines()
             if ln.startswith(("  ok", "  FAIL", "  --"))}
    assert lines["CAP_BPF"].startswith("  ok") and lines["CAP_PERFMON"].startswith("  ok")
    assert lines["CAP_NET_ADMIN"].startswith("  FAIL")
    assert "does not apply" in lines["unprivileged_bpf_disabled"]
    assert "does not apply" in lines["perf_event_paranoid"]
    for kind in ("raw_tp", "tp_btf", "perf_event", "iter"):
        assert lines[kind].startswith("  ok"), lines[kind]
    for kind in ("xdp", "tc", "cgroup_skb"):
        assert lines[kind].startswith("  FAIL  ") and "CAP_NET_ADMIN missing" in lines[kind]
    mode, _, gid = kernelspec.tracefs_state()
    if gid == 0:
        assert lines["tracefs"].startswith("  FAIL") and f"mode {mode:04o}" in lines["tracefs"]
        assert lines["tracepoint"].startswith("  FAIL")
    assert "shared: never setcap it" in lines["python"]
    assert "setcap cap_" not in r.stdout and "privileges above are missing" not in r.stdout


def test_without_capabilities_the_error_names_cap_bpf(home):
    r = as_user(home, """
        import bpfnb
        try:
            bpfnb.load('SEC("tp_btf/sys_enter")\\n'
                       'int BPF_PROG(h, struct pt_regs *regs, long id) { return 0; }\\n')
        except bpfnb.PrivilegeError as e:
            print("PrivilegeError:", e)
        """, caps=())
    assert r.returncode == 0, r.stderr[-2000:]
    assert "PrivilegeError: cannot load BPF object" in r.stdout
    assert "lacks CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN" in r.stdout
    assert "bpfnb (BPF capabilities)" in r.stdout and "setcap" not in r.stdout


def test_kernelspec_installs_lists_and_is_removed(tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) is not installed")
    prefix = str(tmp_path / "prefix")
    r = subprocess.run([sys.executable, "-m", "bpfnb", "kernelspec", "--user", USER,
                        "--prefix", prefix, "--no-tracefs"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0, r.stderr
    path = os.path.join(prefix, "share", "jupyter", "kernels", kernelspec.NAME)
    with open(os.path.join(path, "kernel.json")) as f:
        spec = json.load(f)
    assert spec["display_name"] == "bpfnb (BPF capabilities)"
    assert spec["argv"][:3] == [sys.executable, "-I", os.path.abspath(kernelspec.__file__)]
    assert "{connection_file}" in spec["argv"] and spec["metadata"]["bpfnb"]["user"] == USER
    jupyter = os.path.join(os.path.dirname(sys.executable), "jupyter")
    env = dict(os.environ, JUPYTER_PATH=os.path.join(prefix, "share", "jupyter"))
    listed = subprocess.run([jupyter, "kernelspec", "list", "--json"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert listed.returncode == 0, listed.stderr
    specs = json.loads(listed.stdout)["kernelspecs"]
    assert specs[kernelspec.NAME]["spec"]["display_name"] == "bpfnb (BPF capabilities)"
    assert specs[kernelspec.NAME]["resource_dir"] == path

    r = subprocess.run([sys.executable, "-m", "bpfnb", "kernelspec", "--remove", "--prefix",
                        prefix, "--no-tracefs"], capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    assert r.returncode == 0 and "removed bpfnb-caps" in r.stdout, r.stderr
    assert not os.path.exists(path)
    assert kernelspec.NAME not in subprocess.run(
        [jupyter, "kernelspec", "list"], capture_output=True, text=True, env=env).stdout


def test_kernelspec_refuses_root():
    with pytest.raises(kernelspec.KernelSpecError, match="not to be root"):
        kernelspec.install("root", prefix="/nonexistent", tracefs=False)


def test_a_notebook_runs_in_the_kernel(home, tmp_path):
    """nbclient starts the kernelspec as Jupyter does (a root server): the cells run as
    nobody with the three capabilities, and a tp_btf program counts exactly."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nr = GETPPID.get(platform.machine())
    if nr is None:
        pytest.skip(f"getppid's number on {platform.machine()} is not in the test")
    prefix = str(tmp_path / "prefix")
    kernelspec.install(USER, prefix=prefix, tracefs=False)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import os\nfrom bpfnb.libbpf import errors\n"
                                  "print(os.getuid(), f'{errors.effective_capabilities():x}')"),
        nbformat.v4.new_code_cell("%load_ext bpfnb\nimport threading"),
        nbformat.v4.new_code_cell(
            "%%bpf counter --set tid={threading.get_native_id()} --set nr=" + str(nr) + "\n"
            "const volatile u32 tid = 0;\nconst volatile long nr = 0;\nu64 calls = 0;\n"
            'SEC("tp_btf/sys_enter")\n'
            "int BPF_PROG(count, struct pt_regs *regs, long id)\n{\n"
            "    if ((u32)bpf_get_current_pid_tgid() == tid && id == nr)\n"
            "        __sync_fetch_and_add(&calls, 1);\n    return 0;\n}\n"),
        nbformat.v4.new_code_cell("for _ in range(100): os.getppid()\nprint(counter.bss.calls)"),
    ]
    env = dict(JUPYTER_PATH=os.path.join(prefix, "share", "jupyter"),
               BPFNB_CACHE=os.path.join(home, "cache"), PYTHONPATH=ROOT)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(nb, kernel_name=kernelspec.NAME, timeout=120)
        client.execute(cwd=home)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = lambda cell: "".join(o.get("text", "") for o in cell.outputs)  # noqa: E731
    assert text(nb.cells[0]).split() == ["65534", "c000001000"]
    assert text(nb.cells[3]).strip() == "100", nb.cells[2].outputs


def test_the_launcher_needs_a_root_server(home):
    """Started by a non-root Jupyter, the kernel says what to do instead of failing later."""
    r = as_user(home, "from bpfnb import kernelspec\n"
                      "raise SystemExit(kernelspec.main(['--user', 'nobody', '-f', 'x.json']))")
    assert r.returncode == 1
    assert "started by a root Jupyter server" in r.stderr and "BPFNB_USER" in r.stderr


def test_interrupt_reaches_the_kernel(home, tmp_path):
    """Jupyter interrupts with SIGINT to the kernel's process group: it must get through
    the change of user (a root server signals nobody's process)."""
    from jupyter_client.manager import start_new_kernel
    prefix = str(tmp_path / "prefix")
    kernelspec.install(USER, prefix=prefix, tracefs=False)
    env = dict(JUPYTER_PATH=os.path.join(prefix, "share", "jupyter"), PYTHONPATH=ROOT)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        km, kc = start_new_kernel(kernel_name=kernelspec.NAME, startup_timeout=60)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        msg_id = kc.execute("import time\nprint('asleep', flush=True)\ntime.sleep(60)")
        while True:  # until the cell is in its sleep
            msg = kc.get_iopub_msg(timeout=30)
            if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
                break
        km.interrupt_kernel()
        reply = kc.get_shell_msg(timeout=30)
        while reply["parent_header"].get("msg_id") != msg_id:  # start-up's kernel_info
            reply = kc.get_shell_msg(timeout=30)
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert kc.execute_interactive("print(1 + 1)", timeout=30)["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert not km.is_alive()
