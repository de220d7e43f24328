"""bpfnb: eBPF in Jupyter. ``%load_ext bpfnb``, then ``%%bpf NAME`` cells.

Everything the magic does is a plain call too: ``bpfnb.load(source)``.
"""

from .build import CompileError, compile
from .libbpf import (AttachError, BPFError, LoadError, ObjectClosedError,
                     PrivilegeError, Program, VerifierError)
from .loader import Map, Object, load, open

__all__ = ["load", "open", "compile", "CompileError", "Object", "Map", "Program",
           "BPFError", "LoadError", "VerifierError", "AttachError", "PrivilegeError",
           "ObjectClosedError"]


def load_ipython_extension(ipython):
    from .magics import load_ipython_extension as _load
    _load(ipython)


def unload_ipython_extension(ipython):
    from .magics import unload_ipython_extension as _unload
    _unload(ipython)
