"""How the magics show a failure: BPFCellError, the handler for bpfnb's exceptions raised
in ordinary cells, and the messages that say what keeps running."""

from __future__ import annotations

import re
import sys

from .. import build, lasterror
from ..lasterror import WHY, describe as _describe
from ..libbpf import BPFError, ObjectClosedError, RangeError, VerifierError
from ..registry import registry


class _Rejected(Exception):
    """A verifier rejection inside _open_and_load, before it decides on a rebuild."""

    def __init__(self, error: VerifierError):
        super().__init__(str(error))
        self.error = error


class BPFCellError(Exception):
    """A ``%%bpf`` cell failed. Shown as its message alone (no Python traceback), but
    still raised, so the cell counts as failed (run_cell, nbclient). ``error`` is the
    original exception."""

    def __init__(self, message: str, error: BaseException | None = None):
        super().__init__(message)
        self.error = error
        lasterror.record(self, error)

    def _render_traceback_(self):
        return str(self).splitlines() + [WHY]


def _set_range_message(e: RangeError, values: dict) -> str:
    """The --set error naming the variable: "--set small=300: `small` is a u8 (0..255)"
    (``e.what`` may be a field in it: cfg.port)."""
    word = re.match(r"\w+", e.what)
    var = word.group() if word else e.what
    article = "an" if e.type.startswith("enum") else "a"
    return (f"--set {var}={values.get(var)!r}: `{e.what}` is {article} {e.type} "
            f"({e.lo}..{e.hi})")


def _show_error(shell, etype, value, tb, tb_offset=None):
    """IPython's custom exception handler: bpfnb's errors as their message alone,
    others as IPython shows them."""
    if not (isinstance(value, BPFCellError) or lasterror.is_ours(value, tb)):
        shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return
    sys.last_type, sys.last_value, sys.last_traceback = etype, value, tb  # for %debug
    if isinstance(value, BPFCellError):
        lines = value._render_traceback_()
    else:
        lasterror.record(value, value)
        lines = f"{etype.__name__}: {_describe(value)}".splitlines() + [WHY]
    shell._showtraceback(etype, value, lines)


# What set_custom_exc catches: every bpfnb exception type and the built-in ones of
# USAGE_TYPES (which _show_error passes on to IPython unless bpfnb raised them).
_CAUGHT = (BPFCellError, BPFError, ObjectClosedError, build.CompileError,
           build.ClangNotFound) + lasterror.USAGE_TYPES


def _kept(name: str) -> str:
    """What a failed re-run leaves, for the error's first line."""
    from ..fleet import FleetObject
    old = registry.get(name)
    if old is None or old.state == "destroyed":
        return ""
    if isinstance(old, FleetObject):
        return f"; the previous {name} keeps running on its engines"
    running = any(p.links for p in old.progs)
    return f"; the previous {name} {'keeps running' if running else 'is kept'}"


def _live_names() -> str:
    names = registry.names()
    return f"; live: {', '.join(names)}" if names else "; none is live"
