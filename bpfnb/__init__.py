"""bpfnb: eBPF in Jupyter. ``%load_ext bpfnb``, then ``%%bpf NAME`` cells.

Everything the magic does is a plain call too: ``bpfnb.load(source)``.
"""

from .build import CompileError, compile
from .libbpf import (AttachError, BPFError, LoadError, ObjectClosedError,
                     PrivilegeError, Program, VerifierError)
from .loader import Map, Object, load, open
# The functions shadow their modules as attributes of bpfnb: import from the modules
# by name (from bpfnb.probes import Arg), not as bpfnb.probes.
from .probes import probes
from .starter import starter

__all__ = ["load", "open", "compile", "probes", "starter", "CompileError", "Object", "Map",
           "Program", "BPFError", "LoadError", "VerifierError", "AttachError", "PrivilegeError",
           "ObjectClosedError"]


def load_ipython_extension(ipython):
    from .magics import load_ipython_extension as _load
    _load(ipython)


def unload_ipython_extension(ipython):
    from .magics import unload_ipython_extension as _unload
    _unload(ipython)


def __getattr__(name):
    # bpfnb.live(...) dashboards need ipywidgets and matplotlib: import them on first use.
    # The module is callable, and has the views: bpfnb.live.TopN, bpfnb.live.plot_maps.
    if name == "live":
        import importlib
        return importlib.import_module(".live", __name__)
    if name == "Fleet":  # ipyparallel is imported only by those who use a fleet
        from .fleet import Fleet
        return Fleet
    raise AttributeError(f"module 'bpfnb' has no attribute {name!r}")
