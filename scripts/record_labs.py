"""Make the labs' recordings again (``make recordings``; as root, where BPF loads).

    sudo .venv/bin/python scripts/record_labs.py            # every lab
    sudo .venv/bin/python scripts/record_labs.py 02 08      # some

Each lab runs live, top to bottom, with its solutions filled in, in a copy of notebooks/
that has no recordings: every ``%%bpf NAME --recording recordings/NN/NAME`` cell records.
A lab whose run fails, or whose recordings take more than 1 MB, stops the script with
the reason and leaves the committed recordings as they were; a good one replaces
notebooks/recordings/NN.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts.labs import (LABS, MAX_RECORDING_BYTES, NOTEBOOKS, RECORDINGS,  # noqa: E402
                          copy_notebooks, lab_number, read_lab, recording_bytes, run_lab)


class RecordingError(RuntimeError):
    """A lab could not be recorded: says which and why."""


def record_lab(name: str, work: str) -> tuple[str, int]:
    """Run lab ``name`` live in a fresh copy of notebooks/ under ``work``; (the directory
    of its new recordings, their bytes)."""
    copy = copy_notebooks(os.path.join(work, lab_number(name)), recordings=False)
    nb = read_lab(name, filled=True, notebooks=copy)
    try:
        run_lab(nb, copy)
    except Exception as e:  # nbclient's CellExecutionError names the cell and its error
        raise RecordingError(f"{name} failed while recording:\n{e}") from None
    made = os.path.join(copy, RECORDINGS, lab_number(name))
    if not os.path.isdir(made):
        raise RecordingError(f"{name} ran but recorded nothing: its %%bpf cells need "
                             f"--recording {RECORDINGS}/{lab_number(name)}/NAME")
    size = recording_bytes(made)
    if size > MAX_RECORDING_BYTES:
        raise RecordingError(f"{name}: its recordings take {size:,} bytes, more than "
                             f"{MAX_RECORDING_BYTES:,}: record less (a larger snapshot "
                             f"interval, shorter runs, smaller maps)")
    return made, size


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labs", nargs="*", metavar="NN",
                        help="lab numbers (01..10); default: every lab")
    args = parser.parse_args(argv)
    names = [n for n in LABS if not args.labs or lab_number(n) in args.labs]
    unknown = set(args.labs) - {lab_number(n) for n in LABS}
    if unknown:
        parser.error(f"no lab {', '.join(sorted(unknown))}: the labs are "
                     f"{', '.join(lab_number(n) for n in LABS)}")
    if os.geteuid() != 0:
        parser.error("recording runs the labs live: run it as root (sudo)")
    with tempfile.TemporaryDirectory(prefix="bpfnb-record-") as work:
        for name in names:
            t0 = time.monotonic()
            try:
                made, size = record_lab(name, work)
            except RecordingError as e:
                print(f"record_labs: {e}", file=sys.stderr)
                return 1
            dst = os.path.join(NOTEBOOKS, RECORDINGS, lab_number(name))
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(made, dst)
            print(f"{name}: {size / 1024:.0f} KiB in {os.path.relpath(dst)} "
                  f"({time.monotonic() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
