"""Running the labs (notebooks/) from scripts and tests: read one with its solutions
filled in, copy the notebooks somewhere to run them, run one on a Jupyter kernel (this
venv's, or one with every capability dropped), and measure a lab's recordings.

scripts/record_labs.py and tests/test_labs.py share these, so the recordings are made the
way the tests replay them.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

import nbformat

from bpfnb import exercise

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
RECORDINGS = "recordings"      # under notebooks/: recordings/NN/<object name>
LABS = sorted(f for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
MAX_RECORDING_BYTES = 1 << 20  # each lab's recordings together (issue 11: at most 1 MB)
CELL_TIMEOUT = 120
STARTUP_TIMEOUT = 60  # a cold kernel on a busy 2-core machine
NOCAPS_KERNEL = "bpfnb-nocaps"
# What a replayed run starts with: this process's capabilities, checked to be none.
CAPEFF_CELL = ('with open("/proc/self/status") as f:\n'
               '    capeff = next(l.split()[1] for l in f if l.startswith("CapEff:"))\n'
               'assert int(capeff, 16) == 0, f"this kernel holds capabilities: {capeff}"')


def lab_number(name: str) -> str:
    """"02-hello-tracepoint.ipynb" -> "02", the lab's directory under recordings/."""
    return name.split("-", 1)[0]


def read_lab(name: str, filled: bool = False, notebooks: str = NOTEBOOKS):
    """The lab as committed, or with each exercise stub replaced by its solution
    (bpfnb.exercise.fill: SolutionError when a stub has none)."""
    nb = nbformat.read(os.path.join(notebooks, name), as_version=4)
    if filled:
        exercise.fill(nb.cells)
    return nb


def copy_notebooks(dst: str, recordings: bool = True) -> str:
    """A copy of notebooks/ at ``dst`` (with its recordings, or without any), to run
    labs in without touching the committed files; returns ``dst``."""
    ignore = None if recordings else shutil.ignore_patterns(RECORDINGS)
    shutil.copytree(NOTEBOOKS, dst, ignore=ignore)
    return dst


def run_lab(nb, cwd: str, kernel_name: str = "python3", timeout: int = CELL_TIMEOUT):
    """Run ``nb`` top to bottom in ``cwd`` (its outputs fill in place); raises
    nbclient's CellExecutionError naming the cell that failed. The kernel is shut down
    either way."""
    from nbclient import NotebookClient
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=timeout,
                            startup_timeout=STARTUP_TIMEOUT,
                            resources={"metadata": {"path": cwd}})
    client.execute()


def nocaps_kernelspec(jupyter_dir: str) -> str:
    """Write, under ``jupyter_dir`` (a JUPYTER_PATH entry), the kernelspec of an
    ipykernel that starts with every capability dropped (effective, inheritable,
    ambient and bounding: it cannot get one back, even as root); returns its name."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise FileNotFoundError("setpriv (util-linux) is not installed: "
                                "apt-get install util-linux")
    path = os.path.join(jupyter_dir, "kernels", NOCAPS_KERNEL)
    os.makedirs(path, exist_ok=True)
    spec = {"argv": [setpriv, "--inh-caps=-all", "--ambient-caps=-all",
                     "--bounding-set=-all", "--", sys.executable, "-m",
                     "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (no capabilities)", "language": "python"}
    with open(os.path.join(path, "kernel.json"), "w") as f:
        json.dump(spec, f, indent=1)
    return NOCAPS_KERNEL


def recording_bytes(path: str) -> int:
    """The bytes of every file under ``path`` (a lab's recordings directory)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)
