"""bpfnb in a real browser: JupyterLab on 127.0.0.1, headless Chromium.

One notebook loads a counting program and shows ``bpfnb.live(...)``: the plot must
change on its own between two screenshots while the kernel is busy. Another, as a user
writes one: its ``%%bpf`` cell must be highlighted as C (the bpfnb-highlight extension),
Run All must leave the dashboard's last frame after ``%bpf stop --all``, and a failing
cell must show its message without Python frames. The screenshots are kept in the
test's tmp dir (printed). JupyterLab and Chromium are stopped at the end of each test.
"""

import json
import os
import re
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
        "JupyterNotebookApp": {"expose_app_in_browser": True},
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
    raise TimeoutError(f"Jupyter did not answer {url} within {timeout} s")


def left_running(tmp_path, grace=5.0) -> list[str]:
    """Processes still running whose command line names the test's tmp dir: the kernel
    (its connection file) and Chromium (its profile), once JupyterLab and the browser
    were told to stop. Waits `grace` seconds for them to exit."""
    end = time.monotonic() + grace
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(tmp_path) in cmd and int(pid) != os.getpid():
                found.append(f"{pid}: {cmd[:200]}")
        if not found or time.monotonic() > end:
            return found
        time.sleep(0.2)


def jupyter_server(tmp_path, app):
    """`jupyter lab` or `jupyter notebook` (Notebook 7) on a free loopback port with a
    token; shut down (bounded) at the end, and nothing of it or of the browser left."""
    root = tmp_path / "notebooks"
    root.mkdir()
    token = secrets.token_hex(16)
    port = free_port()
    write_config(tmp_path / "jupyter-config", root, token)
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter-config"),
               JUPYTER_RUNTIME_DIR=str(tmp_path / "jupyter-runtime"))
    log = open(tmp_path / f"jupyter{app}.log", "wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", app, f"--ServerApp.port={port}",
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
    left = left_running(tmp_path)
    assert not left, "left running after the test:\n" + "\n".join(left)


@pytest.fixture
def lab(tmp_path, need_root):
    yield from jupyter_server(tmp_path, "lab")


@pytest.fixture
def notebook7(tmp_path, need_root):
    pytest.importorskip("notebook", reason="pip install notebook (Notebook 7)")
    yield from jupyter_server(tmp_path, "notebook")


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
            open_notebook(page, lab, "lab/tree/live.ipynb")
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


def test_extension_is_enabled():
    """The package installs the extension where JupyterLab finds prebuilt ones."""
    out = subprocess.run([sys.executable, "-m", "jupyter", "labextension", "list"],
                         capture_output=True, text=True, timeout=60)
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line)   # no colours
             for line in (out.stdout + out.stderr).splitlines()]
    ours = [line.split() for line in lines if "bpfnb-highlight" in line]
    assert ours, ("bpfnb-highlight is not installed in this environment "
                  "(scripts/setup.sh links it for an editable install):\n" + "\n".join(lines))
    assert ours[0][2:4] == ["enabled", "OK"], ours[0]


# The comment's apostrophe is what Python highlighting gets wrong: from it on the line
# is a string, and C's keywords (struct) are Python names.
C_BODY = r"""/* Counts getppid() calls by thread: that's the dashboard data. */
struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 256);
    __type(key, u32);    /* thread id */
    __type(value, u64);  /* calls */
} calls SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    u32 tid = bpf_get_current_pid_tgid();
    u64 one = 1, *v = bpf_map_lookup_elem(&calls, &tid);
    if (v)
        __sync_fetch_and_add(v, 1);
    else
        bpf_map_update_elem(&calls, &tid, &one, BPF_NOEXIST);
    return 0;
}
"""
USER_CELLS = [
    "%load_ext bpfnb\nimport os, threading, time",
    "%%bpf hl\n" + C_BODY,
    # the same text, not a %%bpf cell: highlighted as Python (the test's control)
    "%%writefile /dev/null\n" + C_BODY,
    # bounded: 20 s at most
    "def busy():\n"
    "    end = time.monotonic() + 20\n"
    "    while time.monotonic() < end:\n"
    "        for _ in range(100):\n"
    "            os.getppid()\n"
    "        time.sleep(0.01)\n"
    "threading.Thread(target=busy, daemon=True).start()\n"
    "dash = hl.maps.calls.live(interval=0.25)\n"
    "dash",
    "time.sleep(2)   # a user reading the plot",
    "%bpf stop --all",
    # a verifier rejection (a hash map's lookup may give NULL): Run All stops here
    "%%bpf bad\n"
    "struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1);\n"
    "         __type(key, u32); __type(value, u64); } one SEC(\".maps\");\n\n"
    "SEC(\"tracepoint/syscalls/sys_enter_getppid\")\n"
    "int no_null_check(void *ctx)\n"
    "{\n"
    "    u32 key = 0;\n"
    "    u64 *v = bpf_map_lookup_elem(&one, &key);\n"
    "    return *v;   /* the verifier: v may be NULL */\n"
    "}\n",
    # a compile error, run on its own afterwards
    "%%bpf broken\nSEC(\"tracepoint/syscalls/sys_enter_getppid\")\n"
    "int f(void *ctx) { return undeclared_thing; }\n",
]
BPF_CELL, CONTROL_CELL, DASH_CELL, REJECTED_CELL, BROKEN_CELL = 1, 2, 3, 6, 7

CELL = "window.jupyterapp.shell.currentWidget.content.widgets"
# The colour CodeMirror gives the first text node of cell `i` that contains each of
# `words`, and the theme's keyword, comment and string colours, as computed rgb().
COLORS_JS = """([i, words]) => {
    const cell = %s[i];
    const resolve = name => {
        const probe = document.createElement('span');
        probe.style.color = `var(${name})`;
        document.body.appendChild(probe);
        const color = getComputedStyle(probe).color;
        probe.remove();
        return color;
    };
    const found = {};
    const walker = document.createTreeWalker(cell.node.querySelector('.cm-content'),
                                             NodeFilter.SHOW_TEXT);
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
        for (const w of words) {
            if (!(w in found) && node.nodeValue.includes(w)) {
                found[w] = getComputedStyle(node.parentElement).color;
            }
        }
    }
    return {mime: cell.model.mimeType, found,
            keyword: resolve('--jp-mirror-editor-keyword-color'),
            comment: resolve('--jp-mirror-editor-comment-color'),
            string: resolve('--jp-mirror-editor-string-color')};
}""" % CELL
# after the comment's apostrophe: on its line, on the next, at the end of the cell
WORDS = ["dashboard", "struct", "return"]


def write_user_notebook(path):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(c) for c in USER_CELLS]
    nbformat.write(nb, path)


def open_notebook(page, server, path):
    """`path`: lab/tree/NAME (JupyterLab) or notebooks/NAME (Notebook 7)."""
    page.goto(f"{server['base']}/{path}?token={server['token']}")
    page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')")
    # the kernel's language info sets every code cell back to Python: after it
    page.wait_for_function("window.jupyterapp.shell.currentWidget?.sessionContext"
                           "?.session?.kernel?.status === 'idle'")


def cell_colors(page, index):
    """The highlighting of cell `index` once it settled (languages load lazily)."""
    end = time.monotonic() + 20
    while True:
        colors = page.evaluate(COLORS_JS, [index, WORDS])
        if len(colors["found"]) == len(WORDS) or time.monotonic() > end:
            return colors
        time.sleep(0.2)


# The same text typed into a cell: it turns C when a %%bpf line is put first, and
# Python again when that line goes.
RETYPE_JS = """(() => {
    const model = %s[%d].model;
    const source = model.sharedModel.getSource();
    model.sharedModel.setSource(source.replace('%%%%writefile /dev/null', '%%%%bpf typed'));
    const typed = model.mimeType;
    model.sharedModel.setSource(source);
    return [typed, model.mimeType];
})()""" % (CELL, CONTROL_CELL)


def highlighting(page, shot):
    """The colours of the %%bpf cell, of its Python control, and the retyped control's
    languages, once the kernel's language info arrived."""
    time.sleep(1.0)   # let a late language reset show, if there is one
    bpf = cell_colors(page, BPF_CELL)
    control = cell_colors(page, CONTROL_CELL)
    page.screenshot(path=str(shot), full_page=True)
    return bpf, control, page.evaluate(RETYPE_JS)


def assert_highlighted_as_c(bpf, control, retyped):
    """%%bpf is C: the comment stays a comment past its apostrophe, keywords are
    keywords; the same text as Python (what the test sees without the extension) has a
    string there and no keyword `struct`."""
    assert bpf["mime"] == "text/x-bpfnb-c", (
        f"the %%bpf cell has {bpf['mime']}: is bpfnb-highlight enabled (jupyter "
        f"labextension list)? {bpf}")
    assert len({bpf["keyword"], bpf["comment"], bpf["string"]}) == 3, bpf
    assert bpf["found"] == {"dashboard": bpf["comment"], "struct": bpf["keyword"],
                            "return": bpf["keyword"]}, bpf
    assert control["mime"] == "text/x-ipython", control
    assert control["found"]["dashboard"] == control["string"], control
    assert control["found"]["struct"] != control["keyword"], control
    assert retyped == ["text/x-bpfnb-c", "text/x-ipython"]


def output_text(page, index):
    return page.evaluate(f"{CELL}[{index}].outputArea.node.innerText")


def test_notebook_as_written_in_jupyterlab(no_leaks, playwright, lab, tmp_path):
    write_user_notebook(lab["root"] / "user.ipynb")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    print(f"\nscreenshots and JupyterLab log: {tmp_path}")
    kernel = "window.jupyterapp.shell.currentWidget.sessionContext.session.kernel"

    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 2400})
        page = None
        try:
            page = browser.new_page()
            page.set_default_timeout(90_000)
            open_notebook(page, lab, "lab/tree/user.ipynb")
            colors = highlighting(page, shots / "highlighting.png")

            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            # Run All ends at the rejected cell: its error is the last thing it shows
            page.wait_for_function(f"{CELL}[{REJECTED_CELL}].outputArea.node"
                                   ".querySelector('[data-mime-type*=\"error\"], "
                                   "[data-mime-type*=\"stderr\"]')")
            page.wait_for_function(f"{kernel}.status === 'idle'")
            ran = page.evaluate(f"{CELL}.map(c => c.model.executionCount ?? null)")
            frame = page.evaluate(f"""(() => {{
                const img = {CELL}[{DASH_CELL}].outputArea.node.querySelector('img');
                return img && {{width: img.naturalWidth, height: img.naturalHeight}};
            }})()""")
            dash_text = output_text(page, DASH_CELL)
            rejected = output_text(page, REJECTED_CELL)

            page.evaluate(f"{CELL.rsplit('.', 1)[0]}.activeCellIndex = {BROKEN_CELL}")
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-cell')")
            page.wait_for_function(f"{CELL}[{BROKEN_CELL}].outputArea.node.innerText"
                                   ".trim().length > 0")
            broken = output_text(page, BROKEN_CELL)
        finally:
            if page is not None:   # what the page showed last, also when a wait timed out
                page.screenshot(path=str(shots / "after-run-all.png"), full_page=True)
            browser.close()

    # (a) %%bpf cells are C
    assert_highlighted_as_c(*colors)

    # (b) Run All ran up to the rejected cell; the stopped dashboard kept its last frame
    assert ran[:REJECTED_CELL + 1] == list(range(1, REJECTED_CELL + 2)), ran
    assert frame and frame["width"] > 100 and frame["height"] > 100, (frame, dash_text)
    assert "stopped" in dash_text, dash_text

    # (c) errors read as messages: the verifier's and clang's words, no Python frames
    for text, words in ((rejected, "invalid mem access"), (broken, "undeclared_thing")):
        assert words in text, text
        assert "Traceback" not in text and not re.search(r"File \"|bpfnb/|\.py\b", text), text


def test_bpf_cells_highlighted_in_notebook7(playwright, notebook7, tmp_path):
    """Notebook 7 runs the same extension: the same cells, the same colours."""
    write_user_notebook(notebook7["root"] / "user.ipynb")
    print(f"\nscreenshot and Notebook 7 log: {tmp_path}")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1280, "height": 2400})
        try:
            page = browser.new_page()
            page.set_default_timeout(90_000)
            open_notebook(page, notebook7, "notebooks/user.ipynb")
            colors = highlighting(page, tmp_path / "highlighting.png")
        finally:
            browser.close()
    assert_highlighted_as_c(*colors)
