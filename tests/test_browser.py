"""A live dashboard in a real browser: JupyterLab on 127.0.0.1, headless Chromium.

The test writes a notebook that loads a counting program and shows
``bpfnb.live(...)``, runs it in JupyterLab (the kernel is this venv's Python), and
checks that the plot changes on its own between two screenshots. The screenshots are
kept in the test's tmp dir (printed).
"""

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

SETUP_CELL = r'''
import os, threading, time
import bpfnb

obj = bpfnb.load(r"""
const volatile u32 target_pid = 0;
u64 total = 0;
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, u32); __type(value, u64); } calls SEC(".maps");  /* by thread */

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((id >> 32) != target_pid)
        return 0;
    u32 tid = id;
    u64 one = 1;
    u64 *v = bpf_map_lookup_elem(&calls, &tid);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&calls, &tid, &one, BPF_NOEXIST);
    __sync_fetch_and_add(&total, 1);
    return 0;
}
""", rodata={"target_pid": os.getpid()})

stop = threading.Event()
def busy(rate):   # bounded: a minute at most
    end = time.monotonic() + 60
    while not stop.is_set() and time.monotonic() < end:
        for _ in range(rate):
            os.getppid()
        time.sleep(0.01)
for rate in (50, 200):
    threading.Thread(target=busy, args=(rate,), daemon=True).start()
'''

DASHBOARD_CELL = "dash = bpfnb.live(obj.maps.calls, obj.bss, interval=0.25)\ndash"
# Keeps the kernel busy while the screenshots are taken: the dashboard must go on.
# (Sent once the widget shows: JupyterLab asks the kernel about widgets it renders.)
BUSY_CODE = "import time; time.sleep(8)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(SETUP_CELL), nbformat.v4.new_code_cell(DASHBOARD_CELL)]
    nbformat.write(nb, path)


def write_config(config_dir, root, token):
    """Token auth, nothing fetched from the internet (news, updates, extension index)."""
    config_dir.mkdir()
    (config_dir / "jupyter_server_config.json").write_text(json.dumps({
        "ServerApp": {"ip": "127.0.0.1", "open_browser": False, "root_dir": str(root)},
        "IdentityProvider": {"token": token},
        "LabApp": {"news_url": None, "extension_manager": "readonly",
                   "check_for_updates_class":
                       "jupyterlab.handlers.announcements.NeverCheckForUpdate",
                   "expose_app_in_browser": True,
                   "workspaces_dir": str(config_dir / "workspaces")},
    }))


def wait_http(url, timeout):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.25)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


@pytest.fixture
def lab(tmp_path, need_root):
    """JupyterLab on a free loopback port with a token; shut down (bounded) at the end."""
    root = tmp_path / "notebooks"
    root.mkdir()
    token = secrets.token_hex(16)
    port = free_port()
    write_config(tmp_path / "jupyter-config", root, token)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))
    log = open(tmp_path / "jupyterlab.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.port={port}",
         "--ServerApp.port_retries=0", "--allow-root"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/api/status?token={token}", 90)
        yield {"base": base, "token": token, "root": root}
    finally:
        try:
            req = urllib.request.Request(f"{base}/api/shutdown", method="POST",
                                         headers={"Authorization": f"token {token}"})
            urllib.request.urlopen(req, timeout=5).close()
        except OSError:
            pass
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)   # the group we started: server, kernel
            server.wait(5)
        log.close()


@pytest.fixture
def playwright():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    return pytest.importorskip("playwright.sync_api", reason="pip install playwright")


# no_leaks first: its check runs after JupyterLab (and the kernel) stopped.
def test_dashboard_moves_in_jupyterlab(no_leaks, playwright, lab, tmp_path):
    write_notebook(lab["root"] / "live.ipynb")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots and JupyterLab log: {tmp_path}")

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 1400})
        try:
            page = browser.new_page()
            page.set_default_timeout(90_000)
            page.goto(f"{lab['base']}/lab/tree/live.ipynb?token={lab['token']}")
            page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')")
            page.wait_for_function("window.jupyterapp.shell.currentWidget?.sessionContext"
                                   "?.session?.kernel?.status === 'idle'")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")

            image = page.locator(".jp-OutputArea-output img").first
            image.wait_for(state="visible")
            page.wait_for_function(
                "document.querySelector('.jp-OutputArea-output img').naturalWidth > 0")
            status = page.locator(".jp-OutputArea-output .widget-html-content").last
            page.wait_for_function("[...document.querySelectorAll('.widget-html-content')]"
                                   ".some(e => /running ·/.test(e.textContent))")
            kernel = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"
            page.evaluate(f"{kernel}.requestExecute({{code: {json.dumps(BUSY_CODE)}}})")
            page.wait_for_function(f"{kernel}.status === 'busy'")
            time.sleep(1.0)
            first = image.screenshot(path=str(shots / "first.png"))
            time.sleep(3.0)
            second = image.screenshot(path=str(shots / "second.png"))
            busy = page.evaluate(f"{kernel}.status")
            page.screenshot(path=str(shots / "page.png"), full_page=True)
            text = status.text_content()
            errors = page.locator(".jp-OutputArea-output[data-mime-type="
                                  "'application/vnd.jupyter.stderr']").count()
        finally:
            browser.close()

    assert errors == 0, f"the notebook printed errors: see {shots / 'page.png'}"
    assert "frames/s" in text and "running" in text
    assert busy == "busy"   # the screenshots were taken while the kernel ran code
    assert len(first) > 5000 and first != second, "the plot did not change on its own"
