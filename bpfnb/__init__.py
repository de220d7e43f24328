"""bpfnb: eBPF in Jupyter. ``%load_ext bpfnb``, then ``%%bpf NAME`` cells.

Everything the magic does is a plain call too: ``bpfnb.load(source)``;
``bpfnb.replay(path)`` shows a recording without any BPF privilege.

Importing bpfnb opens nothing: libbpf.so, clang and the rest load with the first name
that needs them, so ``bpfnb.replay`` works where libbpf is not installed.
"""

import importlib
import importlib.util
import sys
import types


__all__ = ["load", "open", "compile", "probes", "starter", "replay", "CompileError", "Object",
           "Map", "Program", "BPFError", "LoadError", "VerifierError", "AttachError",
           "PrivilegeError", "ObjectClosedError"]

# name -> the module that defines it, imported on first use.
_LAZY = {"load": ".loader", "open": ".loader", "Object": ".loader", "Map": ".loader",
         "compile": ".build", "CompileError": ".build",
         **{name: ".libbpf" for name in ("AttachError", "BPFError", "LoadError",
                                         "ObjectClosedError", "PrivilegeError", "Program",
                                         "VerifierError")}}


def load_ipython_extension(ipython):
    from .magics import load_ipython_extension as _load
    _load(ipython)


def unload_ipython_extension(ipython):
    from .magics import unload_ipython_extension as _unload
    _unload(ipython)


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    # bpfnb.live(...) dashboards need ipywidgets and matplotlib: import them on first use.
    # The module is callable, and has the views: bpfnb.live.TopN, bpfnb.live.plot_maps.
    if name == "live":
        return importlib.import_module(".live", __name__)
    if name == "Fleet":  # ipyparallel is imported only by those who use a fleet
        from .fleet import Fleet
        return Fleet
    # Submodules as attributes (bpfnb.libbpf.Object, bpfnb.frames...), imported when asked.
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'bpfnb' has no attribute {name!r}")


class _Function:
    """A function that shadows its module as an attribute of bpfnb (bpfnb.probes is the
    function; import from the module by name: from bpfnb.probes import Arg). A data
    descriptor, so importing the module (which sets the attribute) changes nothing."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __get__(self, package, owner=None):
        return getattr(importlib.import_module(self.module, __name__), self.name)

    def __set__(self, package, value):
        pass


class _Package(types.ModuleType):
    probes = _Function(".probes", "probes")
    starter = _Function(".starter", "starter")
    replay = _Function(".replay", "replay")


sys.modules[__name__].__class__ = _Package
