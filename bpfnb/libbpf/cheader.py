"""Dump a BTF blob as a C header (vmlinux.h), in process, with libbpf's btf_dump.

The output is what ``bpftool btf dump file /sys/kernel/btf/vmlinux format c`` prints
(bpftool 7.x): a ``__VMLINUX_H__`` guard, then every type id 1..type_cnt-1 wrapped in
``#pragma clang attribute push/pop (preserve_access_index)`` unless
``BPF_NO_PRESERVE_ACCESS_INDEX`` is defined.

btf_dump prints through ``void (*)(void *ctx, const char *fmt, va_list args)``, about a
million small fragments for a vmlinux. A Python callback per fragment costs seconds,
so the fast path hands btf_dump libc's own ``vfprintf`` (same ABI, the int result is
ignored) writing into an ``open_memstream`` buffer: no Python runs per fragment, as
fast as bpftool itself. If libc lacks open_memstream, a Python callback formats each
fragment with ``_lib.format_va`` and the pieces are joined once.

Differences from bpftool 7.1's output on Debian 12 (whose libbpf is built in): this
libbpf.so (1.1.2) prints an empty parameter list as ``()``; we rewrite it to
``(void)`` as bpftool and newer libbpf do (``()`` is an old-style declaration that
newer clang warns about; "()" cannot occur anywhere else in btf_dump output). It also
sizes 1-byte enums with ``__attribute__((mode(byte)))``, which matches the kernel's
layout better; we keep that.
"""

from __future__ import annotations

import ctypes
import os
from ctypes import CFUNCTYPE, POINTER, c_char_p, c_int, c_size_t, c_void_p

from . import _lib

VMLINUX = "/sys/kernel/btf/vmlinux"

HEADER_START = (
    "#ifndef __VMLINUX_H__\n"
    "#define __VMLINUX_H__\n"
    "\n"
    "#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n"
    "#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)\n"
    "#endif\n"
    "\n"
)
HEADER_END = (
    "#ifndef BPF_NO_PRESERVE_ACCESS_INDEX\n"
    "#pragma clang attribute pop\n"
    "#endif\n"
    "\n"
    "#endif /* __VMLINUX_H__ */\n"
)

_lib.lib.btf__parse.restype = c_void_p
_lib.lib.btf__parse.argtypes = [c_char_p, c_void_p]

PRINTF_FN = CFUNCTYPE(None, c_void_p, c_char_p, c_void_p)

_libc = ctypes.CDLL(None, use_errno=True)
try:
    _open_memstream = _libc.open_memstream
    _open_memstream.restype = c_void_p
    _open_memstream.argtypes = [POINTER(c_void_p), POINTER(c_size_t)]
    _fclose = _libc.fclose
    _fclose.restype = c_int
    _fclose.argtypes = [c_void_p]
    _free = _libc.free
    _free.restype = None
    _free.argtypes = [c_void_p]
    _VFPRINTF = ctypes.cast(_libc.vfprintf, c_void_p).value
except AttributeError:  # not glibc/musl: use the Python callback
    _VFPRINTF = None


def _fail(what: str, log: str = "") -> OSError:
    err = ctypes.get_errno() or 22
    msg = f"{what}: {_lib.strerror(err)}"
    if log.strip():
        msg += "\n" + log.rstrip()
    return OSError(err, msg)


def _load_btf(btf_path: str | os.PathLike | None) -> int:
    with _lib.capture() as cap:
        if btf_path is None or os.fspath(btf_path) == VMLINUX:
            btf = _lib.lib.btf__load_vmlinux_btf()
            what = "loading the kernel's BTF (btf__load_vmlinux_btf)"
        else:
            path = os.fspath(btf_path)
            if not os.path.exists(path):
                raise FileNotFoundError(2, "no such BTF file", path)
            btf = _lib.lib.btf__parse(path.encode(), None)
            what = f"parsing BTF from {path}"
    if not btf:
        raise _fail(what, cap.text)
    return btf


def _dump_types(d: int, cnt: int) -> None:
    dump_type = _lib.lib.btf_dump__dump_type
    for type_id in range(1, cnt):
        err = dump_type(d, type_id)
        if err < 0:
            raise OSError(-err, f"btf_dump__dump_type({type_id}): {_lib.strerror(err)}")


def _dump_memstream(btf: int, cnt: int) -> str:
    buf, size = c_void_p(), c_size_t()
    stream = _open_memstream(ctypes.byref(buf), ctypes.byref(size))
    if not stream:
        raise _fail("open_memstream")
    d = None
    try:
        with _lib.capture() as cap:
            d = _lib.lib.btf_dump__new(btf, _VFPRINTF, stream, None)
        if not d:
            raise _fail("btf_dump__new", cap.text)
        _dump_types(d, cnt)
    finally:
        if d:
            _lib.lib.btf_dump__free(d)
        _fclose(stream)  # flushes; buf/size are final only after this
        try:
            body = ctypes.string_at(buf.value, size.value) if buf.value else b""
        finally:
            if buf.value:
                _free(buf)
    return body.decode("utf-8", errors="replace")


def _dump_python(btf: int, cnt: int) -> str:
    parts: list[str] = []
    append = parts.append
    format_va = _lib.format_va

    def printf(_ctx, fmt, va):
        try:
            # most fragments are literal text ("\t", ";\n", "}"): skip vsnprintf
            append(fmt.decode() if b"%" not in fmt else format_va(fmt, va))
        except Exception:  # must not escape into C
            append("/* bpfnb: unformattable fragment */")

    cb = PRINTF_FN(printf)  # referenced until btf_dump__free below
    d = None
    try:
        with _lib.capture() as cap:
            d = _lib.lib.btf_dump__new(btf, ctypes.cast(cb, c_void_p), None, None)
        if not d:
            raise _fail("btf_dump__new", cap.text)
        _dump_types(d, cnt)
    finally:
        if d:
            _lib.lib.btf_dump__free(d)
    del cb
    return "".join(parts)


def dump_c_header(btf_path: str | os.PathLike | None = VMLINUX, *,
                  python_callback: bool = False) -> str:
    """Return the C header (vmlinux.h text) describing every type of a BTF file.

    ``btf_path`` defaults to the running kernel's BTF (``btf__load_vmlinux_btf``);
    any other path is read with ``btf__parse`` (raw BTF or an ELF with .BTF).
    ``python_callback=True`` forces the slow path that formats fragments in Python
    (kept for platforms without open_memstream, and for testing).
    """
    btf = _load_btf(btf_path)
    try:
        cnt = _lib.lib.btf__type_cnt(btf)
        if python_callback or _VFPRINTF is None:
            body = _dump_python(btf, cnt)
        else:
            body = _dump_memstream(btf, cnt)
    finally:
        _lib.lib.btf__free(btf)
    return HEADER_START + body.replace("()", "(void)") + HEADER_END
