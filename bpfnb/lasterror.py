"""The last bpfnb error and its full text (what ``%bpf why`` shows), and which errors
are bpfnb's (shown in a notebook as their message alone: see bpfnb/magics/)."""

from __future__ import annotations

import linecache
import re
import shlex
import traceback
from pathlib import Path

from .libbpf import VerifierError

CELL_FILENAME = "<cell>"
WHY = "(%bpf why: the whole error, logs and traceback)"
# Built-in exception types bpfnb raises for API mistakes (a bad map name, an
# out-of-range value): shown as their message when a bpfnb function raised them.
USAGE_TYPES = (AttributeError, LookupError, ValueError, TypeError, OverflowError)
# The verifier quotes source lines as "... @ cell.c:12": name the cell as clang does.
_VERIFIER_SOURCE = re.compile(r"\bcell\.c:(\d+)")
_PROG_LOAD_LOG = re.compile(r"-- BEGIN PROG LOAD LOG --\n.*?-- END PROG LOAD LOG --", re.S)
_PACKAGE = str(Path(__file__).resolve().parent)

# (what was shown, the error behind it: the one the magic wrapped, or the same)
_last: tuple[BaseException | None, BaseException | None] = (None, None)


def record(shown: BaseException, error: BaseException | None):
    """Remember the error just shown, for ``why``."""
    global _last
    _last = (shown, error)


def describe(error: BaseException) -> str:
    """The error's text, naming the cell as the notebook does and pointing at %bpf why."""
    text = str(error)
    if isinstance(error, VerifierError):
        text = _VERIFIER_SOURCE.sub(lambda m: f"{CELL_FILENAME}:{m.group(1)}", text)
        text = text.replace("full text in .log", "the whole log: %bpf why")
    return text


def why() -> str:
    """The last bpfnb error in full: messages, the whole verifier log, the libbpf
    log, clang's command, the Python traceback (of the error the magic wrapped)."""
    error, inner = _last
    if error is None:
        return "no bpfnb error in this session yet"
    parts = []
    if inner is not error:  # the magic's first line; the rest is the inner error's text
        parts.append(str(error) if inner is None else str(error).splitlines()[0])
    if inner is not None:
        verifier = getattr(inner, "verifier_log", "")
        text = describe(inner)
        if verifier:  # its last lines are in the whole log below
            text = text.split("\nVerifier log (last lines", 1)[0]
            verifier = _VERIFIER_SOURCE.sub(lambda m: f"{CELL_FILENAME}:{m.group(1)}",
                                            verifier)
        parts.append(f"{type(inner).__module__}.{type(inner).__qualname__}: {text}")
        libbpf = getattr(inner, "libbpf_log", None)
        if libbpf is None and not verifier:
            libbpf = getattr(inner, "log", "")
        if verifier:
            parts.append(f"--- verifier log ({len(verifier.splitlines())} lines) ---\n"
                         + verifier.rstrip())
        if libbpf:
            libbpf = _PROG_LOAD_LOG.sub("-- (the verifier log above) --", libbpf)
            parts.append("--- libbpf log ---\n" + libbpf.rstrip())
        command = getattr(inner, "command", ())
        if command:
            parts.append("--- clang command ---\n" + shlex.join(command))
        frames = "".join(traceback.format_tb(inner.__traceback__))
        parts.append("--- Python traceback ---\nTraceback (most recent call last):\n"
                     f"{frames}{type(inner).__name__} (its message is at the top)")
    return "\n\n".join(parts)


def is_ours(value: BaseException, tb) -> bool:
    """A bpfnb exception, or a built-in one a bpfnb function raised on purpose (its
    innermost frame is in bpfnb, at a raise statement): not a bug's traceback."""
    if type(value).__module__.split(".")[0] == "bpfnb":
        return True
    if not isinstance(value, USAGE_TYPES) or tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    if not filename.startswith(_PACKAGE):
        return False
    return linecache.getline(filename, tb.tb_lineno).lstrip().startswith("raise")
