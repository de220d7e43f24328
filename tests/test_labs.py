"""The labs (notebooks/) run top to bottom on a real Jupyter kernel (this venv's
ipykernel), with every exercise stub filled in from the Solution above it
(bpfnb.exercise), both ways: live as root against the real kernel, and replayed from
their committed recordings on a kernel holding no capability at all. Their own `# Check`
cells assert what they caused (live) or what the recordings hold (replayed). Afterwards
no program of the lab is left in the kernel, no network namespace or link the lab names
remains, and the committed recordings are as they were. Unfilled, a lab stops at its
first exercise with one line."""

import hashlib
import os
import re
import subprocess
import time

import nbformat
import pytest

from bpfnb import exercise
from bpfnb.libbpf import kernel_ids, kernel_prog_info
from scripts.labs import (CAPEFF_CELL, LABS, MAX_RECORDING_BYTES, NOTEBOOKS, RECORDINGS,
                          copy_notebooks, lab_number, nocaps_kernelspec, read_lab,
                          recording_bytes, run_lab)

GONE_TIMEOUT = 10     # the kernel frees programs shortly after their last fd closes
_RECORDING = re.compile(r"^%%bpf \w+.*--recording (\S+)", re.M)
# Checks that cannot run replayed (they need a program loaded by hand, in plain
# Python), by lab: they print "not checked when replayed".
REPLAY_UNCHECKED = {"01-setup.ipynb": 1}

# The function right after a SEC("...") line: `int name(` or `int BPF_PROG(name, ...`.
_PROGRAM = re.compile(r'SEC\("[^"]*"\)\s*\n\s*int\s+(?:BPF_\w+\(\s*)?(\w+)')
_NAME_LEN = 16  # BPF_OBJ_NAME_LEN: the kernel keeps 15 characters of a program's name


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


def test_unfilled_lab_stops_at_its_first_exercise(need_root, lab_copy):
    from nbclient.exceptions import CellExecutionError
    name = "02-hello-tracepoint.ipynb"
    nb = read_lab(name)
    first = min(exercise.solutions(nb.cells))
    progs_before = kernel_ids()
    with pytest.raises(CellExecutionError):
        run_lab(nb, lab_copy)
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


def recordings_of(nb) -> list[str]:
    """The --recording paths of the lab's %%bpf cells (relative to notebooks/)."""
    return sorted({m for c in nb.cells if c.cell_type == "code"
                   for m in _RECORDING.findall(c.source)})


def digest(path: str) -> dict[str, str]:
    """sha256 of every file under ``path``, by relative name."""
    out = {}
    for d, _, files in os.walk(path):
        for f in files:
            full = os.path.join(d, f)
            with open(full, "rb") as fh:
                out[os.path.relpath(full, path)] = hashlib.sha256(fh.read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def lab_copy(tmp_path_factory):
    """notebooks/ with its recordings, copied: the labs run there, never in the repo."""
    return copy_notebooks(str(tmp_path_factory.mktemp("labs") / "notebooks"))


@pytest.fixture(scope="module")
def nocaps_kernel(tmp_path_factory):
    """A kernelspec (in a JUPYTER_PATH of its own) whose kernel holds no capability."""
    jupyter = str(tmp_path_factory.mktemp("jupyter"))
    name = nocaps_kernelspec(jupyter)
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join(filter(None, [jupyter, old]))
    yield name
    if old is None:
        os.environ.pop("JUPYTER_PATH")
    else:
        os.environ["JUPYTER_PATH"] = old


@pytest.mark.parametrize("name", LABS)
def test_lab_recordings_are_committed_and_small(name):
    nb = read_lab(name, filled=True)
    paths = recordings_of(nb)
    assert paths, "every %%bpf cell has --recording recordings/NN/NAME"
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    bpf = [c for c in code if c.startswith("%%bpf")]
    assert all("--recording" in c.split("\n")[0] or "--no-load" in c.split("\n")[0]
               for c in bpf), "a %%bpf cell without --recording"
    for path in paths:
        assert path.startswith(f"{RECORDINGS}/{lab_number(name)}/"), path
        assert os.path.isfile(os.path.join(NOTEBOOKS, path, "manifest.json")), \
            f"{path} is not recorded: run make recordings"
    size = recording_bytes(os.path.join(NOTEBOOKS, RECORDINGS, lab_number(name)))
    assert size <= MAX_RECORDING_BYTES, f"{name}'s recordings take {size:,} bytes"


def check_run(name, nb, run, lab_copy, unchecked=0):
    """Run ``nb`` with ``run``; then its checks said correct (all but ``unchecked``,
    which said they did not check), and it left nothing: no program of the lab, no
    network namespace or link it names, the recordings as they were."""
    programs = lab_programs(nb)
    text = "\n".join(c.source for c in nb.cells)
    recordings = os.path.join(lab_copy, RECORDINGS, lab_number(name))
    before = digest(recordings)
    progs_before, net_before = kernel_ids(), net_names()
    try:
        run()
    finally:
        made = {n for n in net_names() - net_before if re.search(rf"\b{re.escape(n)}\b", text)}
        remove_net(made)  # a lab that failed before its teardown must not leave them

    assert not made, f"{name} left network namespaces or links: {sorted(made)}"
    said = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells
            if c.cell_type == "code" and c.source.startswith("# Check")]
    skipped = [s for s in said if "not checked when replayed" in s]
    assert said and len(skipped) == unchecked, said
    assert all("correct" in s for s in said if s not in skipped), said
    left = lab_programs_left(progs_before, programs)
    assert not left, f"programs of {name} left in the kernel: {left}"
    assert digest(recordings) == before, "the run changed the lab's recordings"


@pytest.mark.parametrize("name", LABS)
def test_lab_runs_live_and_leaves_nothing(name, need_root, lab_copy):
    nb = read_lab(name, filled=True, notebooks=lab_copy)
    check_run(name, nb, lambda: run_lab(nb, lab_copy), lab_copy)


@pytest.mark.parametrize("name", LABS)
def test_lab_replays_without_any_capability(name, need_root, lab_copy, nocaps_kernel):
    nb = read_lab(name, filled=True, notebooks=lab_copy)
    nb.cells.insert(0, nbformat.v4.new_code_cell(CAPEFF_CELL))
    check_run(name, nb, lambda: run_lab(nb, lab_copy, kernel_name=nocaps_kernel), lab_copy,
              unchecked=REPLAY_UNCHECKED.get(name, 0))
    summaries = "\n".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                           for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "replaying recording" in summaries, "the %%bpf cells replayed"
    # bpfnb.replay warns when the n-th read is not the recorded n-th (the lab reads
    # differently replayed) or there are more reads than recorded.
    assert "RuntimeWarning" not in summaries, "the replay did not follow the lab's reads"


def test_record_labs_refuses_recordings_over_the_limit(need_root, tmp_path, monkeypatch):
    from scripts import record_labs
    made, size = record_labs.record_lab("01-setup.ipynb", str(tmp_path / "ok"))
    assert os.path.isfile(os.path.join(made, "hello", "manifest.json"))
    assert 0 < size == recording_bytes(made) <= MAX_RECORDING_BYTES
    monkeypatch.setattr(record_labs, "MAX_RECORDING_BYTES", size // 2)
    with pytest.raises(record_labs.RecordingError, match=r"01-setup.ipynb: its recordings "
                                                          r"take [\d,]+ bytes, more than"):
        record_labs.record_lab("01-setup.ipynb", str(tmp_path / "big"))
