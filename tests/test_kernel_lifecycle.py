"""Object lifetime through a real Jupyter kernel (the venv's ipykernel): programs a
%%bpf cell loads are gone after the kernel shuts down, restarts, or is SIGKILLed."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bpfnb.libbpf import kernel_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STARTUP_TIMEOUT = 60  # seconds; a cold kernel on a busy 2-core machine
CELL_TIMEOUT = 60
GONE_TIMEOUT = 10  # the kernel frees programs shortly after their last fd closes

COUNTER = """%%bpf counter --set target_pid={os.getpid()}
const volatile u32 target_pid = 0;
u64 total = 0;

SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) == target_pid)
        __sync_fetch_and_add(&total, 1);
    return 0;
}
"""

BROKEN = """%%bpf counter
u64 total = 0;

int broken = ;
"""


@pytest.fixture
def kernel(no_leaks):
    from jupyter_client.manager import KernelManager
    km = KernelManager(kernel_name="python3")  # "python" in its argv: this venv's python
    km.start_kernel(cwd=ROOT)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
        yield km, kc
    finally:
        kc.stop_channels()
        if km.has_kernel:
            km.shutdown_kernel(now=True)


def execute(kc, code: str) -> tuple[str, str]:
    """(status, everything the cell printed or displayed, tracebacks included)"""
    out = []

    def hook(msg):
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            out.append(content["text"])
        elif kind in ("display_data", "execute_result"):
            out.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            out.append("\n".join(content["traceback"]))

    reply = kc.execute_interactive(code, timeout=CELL_TIMEOUT, output_hook=hook)
    return reply["content"]["status"], "".join(out)


def load_counter(kc) -> int:
    """Run the %%bpf cell in the Jupyter kernel; the id of its program."""
    status, out = execute(kc, "import os\n%load_ext bpfnb")
    assert status == "ok", out
    status, out = execute(kc, COUNTER)
    assert status == "ok", out
    status, out = execute(kc, "for _ in range(20): os.close(os.open('/etc/hostname', 0))\n"
                              "print(counter.bss.total, counter.progs.on_open.id)")
    assert status == "ok", out
    total, prog_id = map(int, out.split())
    assert total >= 20 and prog_id in kernel_ids()
    return prog_id


def wait_gone(prog_id: int) -> bool:
    deadline = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < deadline:
        if prog_id not in kernel_ids():
            return True
        time.sleep(0.05)
    return False


def test_the_kernel_runs_this_venv(kernel):
    _, kc = kernel
    status, out = execute(kc, "import sys, bpfnb; print(sys.executable); print(bpfnb.__file__)")
    assert status == "ok"
    executable, module = out.split()
    assert executable == sys.executable and module.startswith(ROOT)


def test_for_shows_a_progress_bar_in_a_kernel(kernel):
    _, kc = kernel
    status, out = execute(kc, "import os\n%load_ext bpfnb")
    assert status == "ok", out
    status, out = execute(kc, COUNTER.replace("--set", "--for 0.3 --set"))
    assert status == "ok", out
    assert "IntProgress" in out and "counter: detached after 0.3 s" in out
    status, out = execute(kc, "print(counter.state, len(counter.progs.on_open.links))")
    assert out.split() == ["loaded", "0"]


def test_shutdown_and_restart_free_the_programs(kernel):
    km, kc = kernel
    first = load_counter(kc)
    km.restart_kernel(now=False)  # a graceful shutdown, then a new kernel
    kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
    assert wait_gone(first)
    second = load_counter(kc)
    km.shutdown_kernel(now=False)
    assert wait_gone(second)


def test_sigkill_of_the_kernel_frees_the_programs(kernel):
    km, kc = kernel
    prog_id = load_counter(kc)
    os.kill(km.provisioner.pid, signal.SIGKILL)
    assert wait_gone(prog_id)


def test_a_failing_cell_fails_the_notebook_with_a_short_error(no_leaks):
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in
                                         ("import os\n%load_ext bpfnb", COUNTER, BROKEN)])
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            startup_timeout=STARTUP_TIMEOUT, resources={"metadata": {"path": ROOT}})
    with pytest.raises(CellExecutionError):
        client.execute()
    good = nb.cells[1].outputs
    assert good and "on_open" in good[0]["data"]["text/plain"]
    assert "<table>" in good[0]["data"]["text/html"]
    [error] = nb.cells[2].outputs
    assert error["output_type"] == "error" and error["ename"] == "BPFCellError"
    text = "\n".join(error["traceback"])
    assert "<cell>:4:" in text and "the previous counter keeps running" in text
    assert "Traceback" not in text and len(error["traceback"]) < 20


def test_objects_loaded_outside_the_magic_are_destroyed_at_exit(no_leaks):
    code = textwrap.dedent(f"""
        import sys, bpfnb
        obj = bpfnb.load({COUNTER.split(chr(10), 1)[1]!r})
        print(obj.progs.on_open.id, flush=True)
        sys.stdin.read()  # until the test closes stdin
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        prog_id = int(proc.stdout.readline())
        assert prog_id in kernel_ids()
        proc.stdin.close()
        assert proc.wait(timeout=CELL_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert wait_gone(prog_id)
