"""Labs 6-10 (notebooks/) run top to bottom on a real Jupyter kernel (this venv's
ipykernel) against the real kernel; their own cells assert what they caused. After the
notebook's kernel shuts down, no program of the lab is left in the kernel and no
network namespace or link the lab names remains. The helpers are those of labs 1-5."""

import re
import subprocess

import nbformat
import pytest
from test_labs_1to5 import (CELL_TIMEOUT, NOTEBOOKS, STARTUP_TIMEOUT, lab_programs,
                            lab_programs_left, net_names, read_lab)

from bpfnb.libbpf import kernel_ids

LABS = ["06-core.ipynb", "07-uprobes.ipynb", "08-networking.ipynb", "09-live.ipynb",
        "10-profiling.ipynb"]


def remove_net(names):
    """Delete network namespaces or links by name (a veth goes with its peer)."""
    for n in names:
        for args in (["netns", "del", n], ["link", "del", n]):
            subprocess.run(["ip", *args], capture_output=True, timeout=30)


@pytest.mark.parametrize("name", LABS)
def test_lab_is_committed_clean(name):
    nb = read_lab(name)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), \
        "commit notebooks without outputs"
    assert lab_programs(nb)
    assert "%bpf stop --all" in code[-1].source, "the last cell tears everything down"
    markdown = [c.source for c in nb.cells if c.cell_type == "markdown"]
    assert any("<summary>Solution</summary>" in text for text in markdown)
    assert any(text.startswith("## What you learned") for text in markdown)
    assert any(c.source.startswith("# Check") for c in code)


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
    try:
        client.execute()  # raises CellExecutionError naming the failing cell; shuts down
    finally:
        made = {n for n in net_names() - net_before if re.search(rf"\b{re.escape(n)}\b", text)}
        remove_net(made)  # a lab that failed before its teardown must not leave them

    assert not made, f"{name} left network namespaces or links: {sorted(made)}"
    checks = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Check")]
    assert all("correct" in "".join(o.get("text", "") for o in c.outputs) for c in checks)
    left = lab_programs_left(progs_before, programs)
    assert not left, f"programs of {name} left in the kernel: {left}"
