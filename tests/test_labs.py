"""The labs (notebooks/) run top to bottom on a real Jupyter kernel (this venv's
ipykernel) against the real kernel, with every exercise stub filled in from the Solution
above it (bpfnb.exercise); their own `# Check` cells assert what they caused. After the
notebook's kernel shuts down, no program of the lab is left in the kernel and no network
namespace or link the lab names remains. Unfilled, a lab stops at its first exercise."""

import os
import re
import subprocess
import time

import nbformat
import pytest

from bpfnb import exercise
from bpfnb.libbpf import kernel_ids, kernel_prog_info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
LABS = sorted(f for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
CELL_TIMEOUT = 120
STARTUP_TIMEOUT = 60  # a cold kernel on a busy 2-core machine
GONE_TIMEOUT = 10     # the kernel frees programs shortly after their last fd closes

# The function right after a SEC("...") line: `int name(` or `int BPF_PROG(name, ...`.
_PROGRAM = re.compile(r'SEC\("[^"]*"\)\s*\n\s*int\s+(?:BPF_\w+\(\s*)?(\w+)')
_NAME_LEN = 16  # BPF_OBJ_NAME_LEN: the kernel keeps 15 characters of a program's name


def read_lab(name: str, filled: bool = False):
    """The lab as committed, or with each exercise stub replaced by its solution."""
    nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
    if filled:
        exercise.fill(nb.cells)
    return nb


def lab_programs(nb) -> set[str]:
    """Names of the BPF programs the lab's code cells define, as the kernel keeps them."""
    return {m[:_NAME_LEN - 1] for cell in nb.cells if cell.cell_type == "code"
            for m in _PROGRAM.findall(cell.source)}


def lab_programs_left(before: set[int], names: set[str]) -> dict[int, str]:
    """Programs loaded since ``before`` that bear a name of the lab, once the kernel
    had time to free them. Others were loaded by other processes meanwhile."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while True:
        left = {}
        for i in kernel_ids() - before:
            info = kernel_prog_info(i)
            if info is not None and info["name"] in names:
                left[i] = info["name"]
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
def test_lab_exercises_start_as_stubs_with_hidden_solutions(name):
    nb = read_lab(name)
    answers = exercise.solutions(nb.cells)  # SolutionError: a stub or Solution unpaired
    assert answers, "a lab has exercises"
    solutions = sum("<summary>Solution</summary>" in c.source for c in nb.cells
                    if c.cell_type == "markdown")
    assert solutions == len(answers), "every Solution sits right above its stub"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    for answer in answers.values():
        body = answer.split("\n", 1)[1] if answer.startswith("%%") else answer
        assert not any(body.strip() in c for c in code), f"an answer is pre-filled:\n{body}"
    assert not any("run it, or replace it" in c for c in code)


def run_lab(nb, **kw):
    from nbclient import NotebookClient
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, startup_timeout=STARTUP_TIMEOUT,
                            resources={"metadata": {"path": NOTEBOOKS}}, **kw)
    client.execute()  # raises CellExecutionError naming the failing cell; shuts down


def test_unfilled_lab_stops_at_its_first_exercise(need_root):
    from nbclient.exceptions import CellExecutionError
    name = "02-hello-tracepoint.ipynb"
    nb = read_lab(name)
    first = min(exercise.solutions(nb.cells))
    progs_before = kernel_ids()
    with pytest.raises(CellExecutionError):
        run_lab(nb, kernel_name="python3")
    ran = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.outputs]
    assert ran[-1] == first, "Run All stops at the first exercise"
    errors = [o for o in nb.cells[first].outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "NotAnswered"
    shown = "\n".join(errors[0].traceback)
    assert shown == ("Exercise 1 is not answered yet: write your program in this cell "
                     "(the Solution above shows one), then run it again."), shown
    assert "Traceback" not in shown
    left = lab_programs_left(progs_before, lab_programs(nb))
    assert not left, f"programs of {name} left in the kernel: {left}"


@pytest.mark.parametrize("name", LABS)
def test_lab_runs_top_to_bottom_and_leaves_nothing(name, need_root):
    nb = read_lab(name, filled=True)
    programs = lab_programs(nb)
    text = "\n".join(c.source for c in nb.cells)
    progs_before, net_before = kernel_ids(), net_names()

    try:
        run_lab(nb, kernel_name="python3")
    finally:
        made = {n for n in net_names() - net_before if re.search(rf"\b{re.escape(n)}\b", text)}
        remove_net(made)  # a lab that failed before its teardown must not leave them

    assert not made, f"{name} left network namespaces or links: {sorted(made)}"
    checks = [c for c in nb.cells if c.cell_type == "code" and c.source.startswith("# Check")]
    assert all("correct" in "".join(o.get("text", "") for o in c.outputs) for c in checks)
    left = lab_programs_left(progs_before, programs)
    assert not left, f"programs of {name} left in the kernel: {left}"
