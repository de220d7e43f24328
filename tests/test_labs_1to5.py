"""Labs 1-5 (notebooks/) run top to bottom on a real Jupyter kernel (this venv's
ipykernel) against the real kernel; their own cells assert what they caused. After the
notebook's kernel shuts down, no program of the lab is left in the kernel and no
network namespace or link the lab names remains."""

import ctypes
import os
import re
import subprocess
import time

import nbformat
import pytest

from bpfnb.libbpf import kernel_ids
from bpfnb.libbpf._lib import lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
LABS = ["01-setup.ipynb", "02-hello-tracepoint.ipynb", "03-maps-and-dataframes.ipynb",
        "04-event-streams.ipynb", "05-histograms.ipynb"]
CELL_TIMEOUT = 120
STARTUP_TIMEOUT = 60  # a cold kernel on a busy 2-core machine
GONE_TIMEOUT = 10     # the kernel frees programs shortly after their last fd closes

# The function right after a SEC("...") line: `int name(` or `int BPF_PROG(name, ...`.
_PROGRAM = re.compile(r'SEC\("[^"]*"\)\s*\n\s*int\s+(?:BPF_\w+\(\s*)?(\w+)')
# struct bpf_prog_info (uapi): char name[BPF_OBJ_NAME_LEN] at offset 64.
_PROG_INFO_SIZE, _NAME_OFFSET, _NAME_LEN = 232, 64, 16


def read_lab(name: str):
    return nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)


def lab_programs(nb) -> set[str]:
    """Names of the BPF programs the lab's code cells define, as the kernel keeps them
    (cut to 15 characters)."""
    return {m[:_NAME_LEN - 1] for cell in nb.cells if cell.cell_type == "code"
            for m in _PROGRAM.findall(cell.source)}


def program_name(prog_id: int) -> str | None:
    """The kernel's name of a program, None when it went away meanwhile."""
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        return None
    try:
        buf = ctypes.create_string_buffer(_PROG_INFO_SIZE)
        size = ctypes.c_uint32(_PROG_INFO_SIZE)
        if lib.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size)) < 0:
            return None
        return buf.raw[_NAME_OFFSET:_NAME_OFFSET + _NAME_LEN].split(b"\0")[0].decode()
    finally:
        os.close(fd)


def lab_programs_left(before: set[int], names: set[str]) -> dict[int, str]:
    """Programs loaded since ``before`` that bear a name of the lab, once the kernel
    had time to free them. Others were loaded by other processes meanwhile."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while True:
        left = {i: n for i in kernel_ids() - before if (n := program_name(i)) in names}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def net_names() -> set[str]:
    """Network namespaces and links (of this namespace) by name."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                           check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=True).stdout
    names = {line.split()[0] for line in netns.splitlines() if line.strip()}
    names |= {line.split(":")[1].strip().split("@")[0] for line in links.splitlines()
              if line.strip()}
    return names


@pytest.mark.parametrize("name", LABS)
def test_lab_is_committed_clean(name):
    nb = read_lab(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), \
        "commit notebooks without outputs"
    assert lab_programs(nb)
    assert "%bpf stop --all" in code[-1].source, "the last cell tears everything down"
    assert any("<summary>Solution</summary>" in c.source for c in nb.cells
               if c.cell_type == "markdown")


@pytest.mark.parametrize("name", LABS)
def test_lab_runs_top_to_bottom_and_leaves_nothing(name, need_root):
    from nbclient import NotebookClient
    nb = read_lab(name)
    programs = lab_programs(nb)
    text = "\n".join(c.source for c in nb.cells)
    progs_before, net_before = kernel_ids(), net_names()

    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            startup_timeout=STARTUP_TIMEOUT,
                            resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()  # raises CellExecutionError naming the failing cell; shuts down

    left = lab_programs_left(progs_before, programs)
    assert not left, f"programs of {name} left in the kernel: {left}"
    made = {n for n in net_names() - net_before if re.search(rf"\b{re.escape(n)}\b", text)}
    assert not made, f"{name} left network namespaces or links: {sorted(made)}"
