"""A ctypes binding to libbpf.so.1: Object, Program, Map, Link, BTF.

Imports nothing else of bpfnb, nor pandas, nor IPython.
"""

from ._check import RangeError
from ._lib import VERSION, PATH as LIBRARY_PATH, has
from .btf import BTF, BTFError, Record
from .errors import (AttachError, BPFError, LoadError, ObjectClosedError, OpenError,
                     PrivilegeError, VerifierError)
from .map import Map
from .object import Object, live_objects
from .program import Link, Program
from .proginfo import kernel_ids, kernel_prog_info
from .targets import perf_event_open
from .stats import end_looks, look_stats, stats_since

__all__ = ["VERSION", "LIBRARY_PATH", "has", "BTF", "BTFError", "Record", "AttachError",
           "BPFError", "LoadError", "ObjectClosedError", "OpenError", "PrivilegeError",
           "RangeError", "VerifierError", "Map", "Object", "live_objects", "Link", "Program",
           "kernel_ids", "kernel_prog_info", "perf_event_open", "end_looks", "look_stats",
           "stats_since"]
