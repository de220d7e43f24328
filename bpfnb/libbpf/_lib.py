"""Find and open libbpf.so.1, declare the prototypes we use, route libbpf's log.

Every pointer-returning call is declared with ``restype = c_void_p`` (ctypes would
otherwise cut it to 32 bits), and the library is opened with ``use_errno=True`` so a
failing call's errno can be read back. Integer arguments are range-checked: ctypes
would pass ``2**32 + 1`` to a ``__u32`` as 1 (callers check with names first, see
_check.py; this is the net under them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import operator
import os
import platform
import sys
import threading
from ctypes import (CFUNCTYPE, POINTER, c_bool, c_char_p, c_int, c_size_t, c_uint32,
                    c_uint64, c_void_p)

from ._check import RangeError, int_range, int_type

MIN_VERSION = (1, 0)


class LibbpfNotFound(ImportError):
    pass


def _find() -> str:
    path = os.environ.get("BPFNB_LIBBPF")
    if path:
        return path
    # A conda environment keeps its libbpf in <prefix>/lib, off the loader's path.
    in_prefix = os.path.join(sys.prefix, "lib", "libbpf.so.1")
    for name in (in_prefix if os.path.exists(in_prefix) else None, "libbpf.so.1",
                 ctypes.util.find_library("bpf")):
        if not name:
            continue
        try:
            ctypes.CDLL(name)
            return name
        except OSError:
            pass
    raise LibbpfNotFound(
        "libbpf.so.1 not found. Install it (Debian/Ubuntu: apt install libbpf1; "
        "conda: conda install -c conda-forge libbpf) or point BPFNB_LIBBPF at the file.")


PATH = _find()
lib = ctypes.CDLL(PATH, use_errno=True)
VERSION = (lib.libbpf_major_version(), lib.libbpf_minor_version())
if VERSION < MIN_VERSION:
    raise LibbpfNotFound(f"{PATH} is libbpf {VERSION[0]}.{VERSION[1]}; bpfnb needs >= 1.0")

P = c_void_p
u32p = POINTER(c_uint32)

# name: (restype, argtypes). Calls missing from an older libbpf are left undeclared
# and reported by has(); callers check before use.
_PROTOTYPES = {
    "libbpf_version_string": (c_char_p, []),
    "libbpf_strerror": (c_int, [c_int, c_char_p, c_size_t]),
    "libbpf_num_possible_cpus": (c_int, []),
    "libbpf_bpf_prog_type_str": (c_char_p, [c_int]),
    "libbpf_bpf_map_type_str": (c_char_p, [c_int]),
    "libbpf_bpf_attach_type_str": (c_char_p, [c_int]),
    "libbpf_probe_bpf_prog_type": (c_int, [c_int, P]),
    # object
    "bpf_object__open_file": (P, [c_char_p, P]),
    "bpf_object__open_mem": (P, [P, c_size_t, P]),
    "bpf_object__load": (c_int, [P]),
    "bpf_object__close": (None, [P]),
    "bpf_object__name": (c_char_p, [P]),
    "bpf_object__btf": (P, [P]),
    "bpf_object__next_map": (P, [P, P]),
    "bpf_object__next_program": (P, [P, P]),
    # maps
    "bpf_map__name": (c_char_p, [P]),
    "bpf_map__type": (c_int, [P]),
    "bpf_map__fd": (c_int, [P]),
    "bpf_map__key_size": (c_uint32, [P]),
    "bpf_map__value_size": (c_uint32, [P]),
    "bpf_map__set_value_size": (c_int, [P, c_uint32]),
    "bpf_map__max_entries": (c_uint32, [P]),
    "bpf_map__set_max_entries": (c_int, [P, c_uint32]),
    "bpf_map__map_flags": (c_uint32, [P]),
    "bpf_map__btf_key_type_id": (c_uint32, [P]),
    "bpf_map__btf_value_type_id": (c_uint32, [P]),
    "bpf_map__is_internal": (c_bool, [P]),
    "bpf_map__initial_value": (P, [P, POINTER(c_size_t)]),
    "bpf_map__set_initial_value": (c_int, [P, P, c_size_t]),
    "bpf_map__set_autocreate": (c_int, [P, c_bool]),
    "bpf_map_lookup_elem": (c_int, [c_int, P, P]),
    "bpf_map_update_elem": (c_int, [c_int, P, P, c_uint64]),
    "bpf_map_delete_elem": (c_int, [c_int, P]),
    "bpf_map_get_next_key": (c_int, [c_int, P, P]),
    "bpf_map_lookup_batch": (c_int, [c_int, P, P, P, P, u32p, P]),
    "bpf_map_update_batch": (c_int, [c_int, P, P, u32p, P]),
    "bpf_map_delete_batch": (c_int, [c_int, P, u32p, P]),
    # programs and links
    "bpf_program__name": (c_char_p, [P]),
    "bpf_program__section_name": (c_char_p, [P]),
    "bpf_program__type": (c_int, [P]),
    "bpf_program__fd": (c_int, [P]),
    "bpf_program__autoload": (c_bool, [P]),
    "bpf_program__set_autoload": (c_int, [P, c_bool]),
    "bpf_program__set_log_buf": (c_int, [P, c_char_p, c_size_t]),
    "bpf_program__set_log_level": (c_int, [P, c_uint32]),
    "bpf_program__attach": (P, [P]),
    "bpf_program__attach_uprobe_opts": (P, [P, c_int, c_char_p, c_size_t, P]),
    "bpf_program__attach_usdt": (P, [P, c_int, c_char_p, c_char_p, c_char_p, P]),
    "bpf_program__attach_perf_event": (P, [P, c_int]),
    "bpf_program__attach_xdp": (P, [P, c_int]),
    "bpf_program__attach_cgroup": (P, [P, c_int]),
    "bpf_program__attach_iter": (P, [P, P]),
    "bpf_program__attach_tracepoint": (P, [P, c_char_p, c_char_p]),
    "bpf_program__attach_raw_tracepoint": (P, [P, c_char_p]),
    "bpf_link__destroy": (c_int, [P]),
    "bpf_link__fd": (c_int, [P]),
    "bpf_iter_create": (c_int, [c_int]),
    "bpf_tc_hook_create": (c_int, [P]),
    "bpf_tc_hook_destroy": (c_int, [P]),
    "bpf_tc_attach": (c_int, [P, P]),
    "bpf_tc_detach": (c_int, [P, P]),
    "bpf_prog_get_next_id": (c_int, [c_uint32, u32p]),
    "bpf_link_get_next_id": (c_int, [c_uint32, u32p]),
    "bpf_prog_get_fd_by_id": (c_int, [c_uint32]),
    "bpf_obj_get_info_by_fd": (c_int, [c_int, P, u32p]),
    "bpf_enable_stats": (c_int, [c_int]),
    # BTF
    "btf__raw_data": (P, [P, u32p]),
    "btf__load_vmlinux_btf": (P, []),
    "btf__type_cnt": (c_uint32, [P]),
    "btf__free": (None, [P]),
    "btf_dump__new": (P, [P, P, P, P]),
    "btf_dump__dump_type": (c_int, [P, c_uint32]),
    "btf_dump__free": (None, [P]),
    # ring and perf buffers
    "ring_buffer__new": (P, [c_int, P, P, P]),
    "ring_buffer__poll": (c_int, [P, c_int]),
    "ring_buffer__consume": (c_int, [P]),
    "ring_buffer__free": (None, [P]),
    "perf_buffer__new": (P, [c_int, c_size_t, P, P, P, P]),
    "perf_buffer__new_raw": (P, [c_int, c_size_t, P, P, P, P]),
    "perf_buffer__buffer_cnt": (c_size_t, [P]),
    "perf_buffer__buffer_fd": (c_int, [P, c_size_t]),
    "perf_buffer__buffer": (c_int, [P, c_int, P, P]),
    "perf_buffer__poll": (c_int, [P, c_int]),
    "perf_buffer__consume": (c_int, [P]),
    "perf_buffer__free": (None, [P]),
    "perf_buffer__epoll_fd": (c_int, [P]),
}

_INT_ARGS = {c_int: (32, True), c_uint32: (32, False), c_uint64: (64, False),
             c_size_t: (ctypes.sizeof(c_size_t) * 8, False)}


def _checked(base, fn_name: str):
    """``base`` as an argument type that raises RangeError instead of wrapping."""
    nbits, signed = _INT_ARGS[base]
    lo, hi = int_range(nbits, signed)
    label = int_type(nbits, signed)

    def convert(value):
        if isinstance(value, base):
            return value
        v = operator.index(value)
        if not lo <= v <= hi:
            raise RangeError(f"{fn_name}()", v, label, lo, hi)
        return base(v)

    # Fast paths, as these sit under per-element calls: ctypes passes a plain int as a
    # C int, exact for 32-bit arguments within the int range; 64-bit ones reuse
    # instances for the small values (flags) they mostly carry.
    if nbits == 32:
        fast_lo, fast_hi = max(lo, -(1 << 31)), min(hi, (1 << 31) - 1)

        def from_param(cls, value):
            if type(value) is int and fast_lo <= value <= fast_hi:
                return value
            return convert(value)
    else:
        small = [base(i) for i in range(256)]

        def from_param(cls, value):
            if type(value) is int and 0 <= value < 256:
                return small[value]
            return convert(value)
    return type(f"checked_{base.__name__}", (base,), {"from_param": classmethod(from_param)})


_missing: set[str] = set()
for _name, (_res, _args) in _PROTOTYPES.items():
    try:
        _fn = getattr(lib, _name)
    except AttributeError:
        _missing.add(_name)
        continue
    _fn.restype = _res
    _fn.argtypes = [_checked(a, _name) if a in _INT_ARGS else a for a in _args]


def has(name: str) -> bool:
    """Whether this libbpf exports ``name`` (newer calls must be checked first)."""
    return name not in _missing and hasattr(lib, name)


def strerror(err: int) -> str:
    buf = ctypes.create_string_buffer(256)
    lib.libbpf_strerror(abs(err), buf, len(buf))
    return buf.value.decode(errors="replace")


def possible_cpus() -> int:
    return lib.libbpf_num_possible_cpus()


# --- libbpf's log ------------------------------------------------------------
# libbpf prints through one global callback taking a C va_list. We format it with
# libc's vsnprintf and hand the lines to whichever capture() is active on the
# calling thread, so each failing call can raise with its own log.

_libc = ctypes.CDLL(None, use_errno=True)
_vsnprintf = _libc.vsnprintf
_vsnprintf.restype = c_int
_vsnprintf.argtypes = [c_char_p, c_size_t, c_char_p, c_void_p]
# va_list is an array of one 24-byte struct on x86-64 (32 bytes on arm64), passed by
# pointer; vsnprintf consumes it, so size the output on a byte copy (what va_copy does).
_VA_LIST_SIZE = 32 if platform.machine() in ("aarch64", "arm64") else 24


def format_va(fmt: bytes, va: int) -> str:
    copy = ctypes.create_string_buffer(_VA_LIST_SIZE)
    ctypes.memmove(copy, va, _VA_LIST_SIZE)
    n = _vsnprintf(None, 0, fmt, ctypes.addressof(copy))
    if n < 0:
        return fmt.decode(errors="replace")
    out = ctypes.create_string_buffer(n + 1)
    _vsnprintf(out, n + 1, fmt, va)
    return out.value.decode(errors="replace")


LIBBPF_WARN, LIBBPF_INFO, LIBBPF_DEBUG = 0, 1, 2
_tls = threading.local()


class capture:
    """Collect libbpf's log lines printed on this thread while the block runs."""

    def __init__(self, debug: bool = False):
        self.lines: list[str] = []
        self.debug = debug

    def __enter__(self):
        self._outer = getattr(_tls, "active", None)
        _tls.active = self
        return self

    def __exit__(self, *exc):
        _tls.active = self._outer
        if self._outer is not None:
            self._outer.lines.extend(self.lines)
        return False

    @property
    def text(self) -> str:
        return "".join(self.lines)


_PRINT_FN = CFUNCTYPE(c_int, c_int, c_char_p, c_void_p)


def _on_print(level, fmt, va):
    try:
        active = getattr(_tls, "active", None)
        if active is None or (level >= LIBBPF_DEBUG and not active.debug):
            return 0
        active.lines.append(format_va(fmt, va))
    except Exception:  # an exception escaping a C callback would be lost anyway
        pass
    return 0


_print_cb = _PRINT_FN(_on_print)  # module global: must outlive every libbpf call
lib.libbpf_set_print.restype = c_void_p
lib.libbpf_set_print.argtypes = [c_void_p]
lib.libbpf_set_print(ctypes.cast(_print_cb, c_void_p))
