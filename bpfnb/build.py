"""The clang driver: BPF C text (or a .c file) -> a cached BPF object file.

API
---
``compile(source, cflags=(), filename=None) -> Path``
    C text, or a path to a ``.c`` file, compiled to ``<cache>/obj/<key>.o``. A ``.o``
    path is returned as is. Raises :class:`CompileError` when clang fails.
``build(source, cflags=(), filename=None, *, prelude=None, pch=True) -> CompileResult``
    The same, returning what the magic wants to show besides the path: clang's
    ``warnings`` (text, also remembered on a cache hit), whether the result was
    ``cached``, whether the precompiled header was used, the ``seconds`` spent and the
    clang ``command``.
``find_clang()``, ``clang_version()``, ``cache_dir()``, ``kernel_key()``,
``vmlinux_h()``, ``vmlinux_pch()``, ``default_cflags()``: the pieces, public for the
doctor and the benchmarks.

What a cell gets
----------------
A cell that does not include ``vmlinux.h`` (nor any ``<linux/...>`` uapi header, which
would clash with it) gets the prelude: vmlinux.h of the running kernel, libbpf's
bpf_helpers.h, bpf_tracing.h, bpf_core_read.h, bpf_endian.h and our ``bpf/bpfnb.h``,
through a precompiled header when one can be built (clang ~40 ms instead of ~200 ms for
parsing vmlinux.h), else through ``-include``. A source without a ``license`` section
gets a GPL one (``-include bpfnb_license.h``). ``bpf/`` is first on the include path
after the user's ``-I``, so ``<bpf/bpf_helpers.h>`` (of the prelude or of the source)
is ``bpf/bpf/bpf_helpers.h``: libbpf's, with bpf_printk formats tagged per loaded
object (see bpfnb.output). A libbpf-tools style source that
includes "vmlinux.h" itself compiles unmodified: the directory holding the cached
vmlinux.h is on the include path (after the user's own ``-I``). Every source gets
``-include bpf/bpfnb_compat.h``: what libbpf >= 1.2 headers define (BPF_UPROBE,
bpf_ksym_exists, bpf_for, ...) when the headers on the include path are older. The
running kernel's kfunc prototypes (from its BTF) end vmlinux.h, as in bpftool's, and
are in ``bpfnb_kfuncs.h`` for cells.

Line numbers: nothing is inserted into the source. A cell is written verbatim to
``src/<key>/cell.c`` and clang's diagnostics are rewritten to name ``<cell>`` (or the
given filename), so ``<cell>:3:9: error: ...`` is the cell's own line 3. (``#line 1
"<cell>"`` would do the same for diagnostics, but clang then cannot read the line texts
it stores in the BTF line info, and the verifier log would lose the source lines it
quotes.) A .c file is compiled in place, so its own ``"..."`` includes work.

The cache
---------
bpfnb.cache holds where it lives and what it trusts (a per-user directory at 0700,
refused when others can write it; entries sealed by digests and an HMAC). Entries::

    kernel/<key>/vmlinux.h, bpfnb_kfuncs.h,    per running kernel (BTF content) and
                 bpfnb_prelude.h, bpfnb_license.h  prelude text
    pch/<key>/prelude.pch                      per clang + flags + kernel + headers
    src/<key>/cell.c                           a cell's text, as handed to clang
    obj/<key>/<key>.o                          the object; its manifest keeps clang's
                                               warnings and the header deps

The object key hashes the source text, file name, flags, clang version, kernel
BTF and the prelude headers' content. Headers the source pulls in itself (a program's
own ``foo.h``) are recorded from clang's ``-MD`` output and checked (size, mtime, then
content) on a hit, so editing one recompiles. A PCH that cannot be built or used is
never an error: the compile falls back to ``-include``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from . import cache
from .toolchain import (ClangNotFound, clang_version, find_clang,  # noqa: F401 (re-exported)
                        multiarch_include, target_arch)

REPO_BPF_DIR = Path(__file__).resolve().parent.parent / "bpf"
BTF_VMLINUX = Path("/sys/kernel/btf/vmlinux")
PRELUDE_NAME = "bpfnb_prelude.h"
PCH_NAME = "prelude.pch"  # in pch/<key>/
# Put before every source (cells get it through bpfnb.h too): what libbpf >= 1.2
# headers define and older ones lack, each only when missing.
COMPAT_H = REPO_BPF_DIR / "bpfnb_compat.h"
KFUNCS_NAME = "bpfnb_kfuncs.h"  # per kernel, beside vmlinux.h: its kfunc prototypes
_KEY_VERSION = "bpfnb-build-4"  # bump to invalidate every cached object

PRELUDE_HEADERS = ("bpf/bpf_helpers.h", "bpf/bpf_helper_defs.h", "bpf/bpf_tracing.h",
                   "bpf/bpf_core_read.h", "bpf/bpf_endian.h")

# alu32 and jmp32: clang 14's default (v1) widens 32-bit values with shift pairs whose
# bounds the verifier loses (see bpfnb.mcpu); v3 loads every real tool v2 loads here.
DEFAULT_MCPU = "v3"

WARNING_FLAGS = ("-Wno-unused-value", "-Wno-pointer-sign",
                 "-Wno-compare-distinct-pointer-types", "-Wno-address-of-packed-member")


_INCLUDES_VMLINUX = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"](?:[^">\n]*/)?vmlinux\.h[">]',
                               re.M)
_INCLUDES_UAPI = re.compile(r'^[ \t]*#[ \t]*include[ \t]*<linux/', re.M)
_HAS_LICENSE = re.compile(r'(?:SEC|section)\s*\(\s*"license"\s*\)')
_PCH_TROUBLE = re.compile(r"precompiled header|PCH file|\.pch\b", re.I)
LICENSE_NAME = "bpfnb_license.h"
_LICENSE_TEXT = ("/* generated by bpfnb.build: given to sources without a license section */\n"
                 'char __bpfnb_license[] __attribute__((section("license"), used)) = "GPL";\n')

_memo: dict = {}  # per process: kernel BTF hash, failed PCHs


# --- errors -------------------------------------------------------------------

class CompileError(Exception):
    """clang rejected the source. ``diagnostics`` is clang's message text, naming the
    cell (or file) and its own line numbers, each error followed by the offending
    source line and a caret, as clang prints them."""

    def __init__(self, diagnostics: str, source: str, filename: str,
                 command: Sequence[str] = ()):
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.source = source
        self.filename = filename
        self.command = tuple(command)

    def __reduce__(self):
        return (type(self), (self.diagnostics, self.source, self.filename, self.command))

    def __str__(self):
        diag = self.diagnostics.rstrip() or "(clang printed nothing)"
        text = f"clang could not compile {self.filename}:\n{diag}"
        clashes = sorted(set(_KERNEL_CLASH.findall(self.diagnostics)))
        if clashes:
            names = ", ".join(f"'{n}'" for n in clashes)
            text += (f"\nHint: the kernel's vmlinux.h already defines {names}; "
                     f"rename yours (e.g. with a _t suffix).")
        return text


# "<cell>:2:8: error: redefinition of 'stat'" followed by a note in vmlinux.h
_KERNEL_CLASH = re.compile(r"error: redefinition of '([^']+)'[^\n]*\n(?:[^\n]*\n){0,3}?"
                           r"[^\n]*vmlinux\.h:\d+:\d+: note: previous definition")


@dataclass(frozen=True)
class CompileResult:
    path: Path                 # the object file
    warnings: str = ""         # clang's warnings ("" when none), also on a cache hit
    cached: bool = False       # True when no clang ran
    used_pch: bool = False     # the prelude came from the precompiled header
    seconds: float = 0.0
    command: tuple = field(default=(), repr=False)

    def __fspath__(self):
        return str(self.path)


def cache_dir() -> Path:
    """The cache root in use: the default one (see bpfnb.cache) when it is safe, else
    this process's private temporary one."""
    return cache.current().root


def kernel_key() -> str:
    """Short sha256 of the running kernel's BTF (memoised per process)."""
    if "kernel" not in _memo:
        try:
            data = BTF_VMLINUX.read_bytes()
        except OSError:
            _memo["kernel"] = "nobtf"
        else:
            _memo["kernel"] = hashlib.sha256(data).hexdigest()[:16]
    return _memo["kernel"]


def _kernel_dir(c: cache.Cache) -> Path:
    """Where this kernel's headers are in cache ``c`` (see _kernel_entry). Its key
    must cover everything _kernel_entry writes there."""
    return c.entry_path("kernel", _sha(_KEY_VERSION, kernel_key(), _prelude_text(),
                                       _LICENSE_TEXT, _KFUNCS_HEAD)[:24])


def _kernel_entry(c: cache.Cache) -> Path:
    """This kernel's headers, made once and verified on every use: vmlinux.h and
    bpfnb_kfuncs.h (when the kernel has BTF), the prelude and the license header."""
    path = _kernel_dir(c)
    if c.open_entry("kernel", path.name) is not None:
        return path
    staging = c.stage("kernel")
    try:
        cache.write_file(staging, PRELUDE_NAME, _prelude_text())
        cache.write_file(staging, LICENSE_NAME, _LICENSE_TEXT)
        if BTF_VMLINUX.exists():
            from .libbpf.btf import BTF
            from .libbpf.cheader import dump_c_header
            kfuncs = _kfunc_text(BTF.from_file(str(BTF_VMLINUX)))
            # as bpftool's: sources calling kfuncs (bpf_dynptr_from_xdp, ...) get
            # their prototypes from vmlinux.h, and libbpf needs them in the BTF
            head, guard, tail = dump_c_header(str(BTF_VMLINUX)).rpartition("#endif")
            cache.write_file(staging, "vmlinux.h", head + kfuncs + "\n" + guard + tail)
            cache.write_file(staging, KFUNCS_NAME, kfuncs)
        c.commit(staging, "kernel", path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return path


# --- files ------------------------------------------------------------------------

def _atomic_write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        os.chmod(tmp, 0o644)  # a file of the repository (bpf/bpfnb.h), not of the cache
        os.replace(tmp, path)
    except BaseException:
        _unlink(tmp)
        raise


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _sha(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


def vmlinux_h() -> Path:
    """The running kernel's vmlinux.h, generated once per kernel (BTF content)."""
    path = cache.using(_kernel_entry) / "vmlinux.h"
    if not path.exists():
        raise _no_btf()
    return path


def _no_btf() -> FileNotFoundError:
    return FileNotFoundError(2, "this kernel exposes no BTF, so no vmlinux.h can be "
                                "generated (needs CONFIG_DEBUG_INFO_BTF=y)", str(BTF_VMLINUX))


def kfuncs_h() -> Path | None:
    """Prototypes of the running kernel's kfuncs (bpf_* functions its BTF tags
    "bpf_kfunc"), as bpftool puts them in vmlinux.h; bpfnb.h includes them, after
    vmlinux.h, unless BPF_NO_KFUNC_PROTOTYPES is defined. None without kernel BTF."""
    path = cache.using(_kernel_entry) / KFUNCS_NAME
    return path if path.exists() else None


def _kfunc_text(btf) -> str:
    decls = set()
    for tag in btf._ids_named("bpf_kfunc"):
        t = btf.type(tag)
        if t.kind == "decl_tag" and btf.type(t.type_id).name.startswith("bpf_"):
            decls.add(f"extern {btf.c_name(t.type_id)} __weak __ksym;")
    return (_KFUNCS_HEAD + "\n".join(sorted(decls)) + "\n#endif\n#endif\n")


# The kfunc block, at the end of vmlinux.h and in bpfnb_kfuncs.h (once, whichever comes
# first); __ksym and __weak as bpf_helpers.h spells them, which may come later.
_KFUNCS_HEAD = """/* bpfnb.build: this kernel's kfuncs, from its BTF, as bpftool writes them */
#ifndef __BPFNB_KFUNCS_H__
#define __BPFNB_KFUNCS_H__
#ifndef BPF_NO_KFUNC_PROTOTYPES
#ifndef __ksym
#define __ksym __attribute__((section(".ksyms")))
#endif
#ifndef __weak
#define __weak __attribute__((weak))
#endif
"""


def ensure_bpfnb_h() -> Path | None:
    """bpf/bpfnb.h of the repository (created empty when missing), or None."""
    path = REPO_BPF_DIR / "bpfnb.h"
    if not path.exists():
        try:
            _atomic_write(path, "#ifndef __BPFNB_H__\n#define __BPFNB_H__\n\n"
                                "/* bpfnb: helpers offered to every %%bpf cell. */\n\n"
                                "#endif /* __BPFNB_H__ */\n")
        except OSError:
            return None
    return path


def _prelude_text() -> str:
    lines = ['#include "vmlinux.h"']
    lines += [f"#include <{h}>" for h in PRELUDE_HEADERS if h != "bpf/bpf_helper_defs.h"]
    if ensure_bpfnb_h() is not None:
        lines.append('#include "bpfnb.h"')
    return "/* generated by bpfnb.build: the prelude of every %%bpf cell */\n" + \
        "\n".join(lines) + "\n"


def prelude_h() -> Path:
    return cache.using(_kernel_entry) / PRELUDE_NAME


def _include_dirs(flags: Sequence[str]) -> list[str]:
    """-I/-isystem/-idirafter directories in order, then the usual system ones."""
    dirs, it = [], iter(flags)
    for f in it:
        if f in ("-I", "-isystem", "-idirafter"):
            dirs.append(next(it, ""))
        elif f.startswith("-I"):
            dirs.append(f[2:])
    return dirs + ["/usr/local/include", "/usr/include"]


def _prelude_hash(c: cache.Cache, flags: Sequence[str]) -> str:
    """Hash of the prelude headers as clang would find them, every copy on the path:
    bpf/bpf/bpf_helpers.h wraps the system's through #include_next (the kernel's
    headers are covered by the name of their entry, and verified when used)."""
    h = hashlib.sha256(_prelude_text().encode())
    kernel = str(_kernel_dir(c))
    dirs = [d for d in _include_dirs(flags) if d != kernel]
    names = list(PRELUDE_HEADERS) + (["bpfnb.h", COMPAT_H.name, KFUNCS_NAME]
                                     if ensure_bpfnb_h() else [])
    for name in names:
        for d in dirs:
            p = os.path.join(d, name)
            if os.path.isfile(p):
                h.update(f"{p}\0".encode())
                with open(p, "rb") as f:
                    h.update(f.read())
    return h.hexdigest()[:16]


# --- flags ------------------------------------------------------------------------

def default_cflags() -> list[str]:
    """Flags before the user's (target, debug info for BTF, CO-RE arch, warnings)."""
    return ["-g", "-O2", "-target", "bpf", f"-mcpu={DEFAULT_MCPU}",
            f"-D__TARGET_ARCH_{target_arch()}", *WARNING_FLAGS, "-fno-stack-protector",
            "-fno-color-diagnostics"]


def _search_flags(c: cache.Cache) -> list[str]:
    flags = ["-I", str(REPO_BPF_DIR), "-I", str(_kernel_dir(c))]
    multi = multiarch_include()
    if multi:
        flags += ["-idirafter", multi]
    return flags


def _compile_flags(c: cache.Cache, cflags: Sequence[str]) -> list[str]:
    # user -D/-W come after ours (the last wins); user -I come before bpf/ and the
    # vmlinux.h directory (the first wins), so a user's own vmlinux.h is preferred.
    return default_cflags() + list(cflags) + _search_flags(c)


def _is_warning_flag(f: str) -> bool:
    return (f.startswith("-W") and not re.match(r"-W[apl],", f)) or f == "-w"


def _pch_flags(c: cache.Cache, cflags: Sequence[str]) -> list[str]:
    """Flags a PCH is built with: what compiles use, minus the user's warning flags
    (clang accepts a PCH built under other warning flags)."""
    user = [f for f in cflags if not _is_warning_flag(f)]
    return default_cflags() + user + _search_flags(c)


_VALIDATE = ["-Xclang", "-fvalidate-ast-input-files-content"]


def vmlinux_pch(cflags: Sequence[str] = ()) -> Path | None:
    """A precompiled header of the prelude for these flags, or None if it cannot be
    built (then compiles fall back to ``-include``)."""
    return cache.using(lambda c: _pch(c, _split(cflags)))


def _pch(c: cache.Cache, cflags: list[str]) -> Path | None:
    try:
        clang = find_clang()
        flags = _pch_flags(c, cflags)
        prelude = _kernel_entry(c) / PRELUDE_NAME
        key = _sha(_KEY_VERSION, "pch", clang_version(clang), flags, kernel_key(),
                   _prelude_hash(c, flags))[:24]
    except (OSError, RuntimeError):
        return None
    path = c.entry_path("pch", key) / PCH_NAME
    if c.open_entry("pch", key) is not None:
        return path
    if _memo.get(("pch-failed", key)):
        return None
    staging = c.stage("pch")
    try:
        # content validation: the PCH names the prelude and vmlinux.h it was built
        # from; clang then checks their content, not only their mtime.
        out = subprocess.run([clang, *flags, *_VALIDATE, "-x", "c-header", str(prelude),
                              "-o", str(staging / PCH_NAME)],
                             capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            _memo[("pch-failed", key)] = out.stderr
            return None
        c.commit(staging, "pch", key)
        return path
    except (OSError, subprocess.SubprocessError) as e:
        _memo[("pch-failed", key)] = str(e)
        return None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _split(cflags) -> list[str]:
    if isinstance(cflags, str):
        return shlex.split(cflags)
    return [os.fspath(f) for f in cflags or ()]


# --- the compile ------------------------------------------------------------------

def wants_prelude(source: str) -> bool:
    """A source gets the prelude unless it includes vmlinux.h or <linux/...> headers."""
    return not (_INCLUDES_VMLINUX.search(source) or _INCLUDES_UAPI.search(source))


def has_license(source: str) -> bool:
    return bool(_HAS_LICENSE.search(source))


def _src_stem(filename: str) -> str:
    stem = re.sub(r"\.c$", "", os.path.basename(filename.strip("<>")))
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("._") or "cell"


def _as_input(source, filename):
    """-> (text, filename, real source path or None, object path or None)"""
    if isinstance(source, (bytes, bytearray)):
        return bytes(source).decode(), filename or "<cell>", None, None
    is_path = isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source
        and source.rstrip().endswith((".c", ".o")))
    if not is_path:
        return source, filename or "<cell>", None, None
    path = Path(source)
    if path.suffix == ".o":
        if not path.exists():
            raise FileNotFoundError(2, "no such object file", str(path))
        return None, str(path), None, path
    return path.read_text(), filename or str(path), path, None


def build(source: str | os.PathLike | bytes, cflags: Sequence[str] | str = (),
          filename: str | None = None, *, prelude: bool | None = None,
          pch: bool = True) -> CompileResult:
    """Compile BPF C (text, or a path to a .c file) and return a :class:`CompileResult`.

    ``filename`` names the source in diagnostics (default ``<cell>``, or the file's
    path). ``prelude`` forces the prelude on or off (default: automatic, see the
    module doc). ``pch=False`` (or env ``BPFNB_NO_PCH=1``) parses the prelude headers
    instead of using the precompiled header.
    """
    t0 = time.perf_counter()
    text, filename, real_path, obj = _as_input(source, filename)
    if obj is not None:
        return CompileResult(obj, cached=True, seconds=time.perf_counter() - t0)
    user = _split(cflags)
    return cache.using(lambda c: _build(c, t0, text, filename, real_path, user, prelude,
                                        pch))


def _build(c: cache.Cache, t0: float, text: str, filename: str, real_path: Path | None,
           user: list[str], prelude: bool | None, pch: bool) -> CompileResult:
    clang = find_clang()
    use_prelude = wants_prelude(text) if prelude is None else prelude
    add_license = not has_license(text)
    flags = _compile_flags(c, user)
    prelude_hash = _prelude_hash(c, flags) if use_prelude else None
    key = _sha(_KEY_VERSION, text, filename, str(real_path or ""), flags, use_prelude,
               add_license, clang_version(clang), kernel_key(), prelude_hash,
               cache.file_sha(COMPAT_H))[:32]
    obj_path = c.entry_path("obj", key) / f"{key}.o"

    manifest = c.open_entry("obj", key)
    if manifest is not None:
        meta = manifest["meta"]
        valid, touched = cache.deps_valid(meta.get("deps", []))
        if valid:
            if touched:  # remember the new mtimes: hash only once
                c.update_meta("obj", key, manifest, meta)
            return CompileResult(obj_path, meta.get("warnings", ""), cached=True,
                                 used_pch=meta.get("pch", False),
                                 seconds=time.perf_counter() - t0,
                                 command=tuple(meta.get("command", ())))
        c.drop("obj", key)  # a header it includes changed: not tampering, no warning

    kernel = _kernel_entry(c)  # "vmlinux.h" must be findable by sources including it
    if use_prelude and not (kernel / "vmlinux.h").exists():
        raise _no_btf()
    if real_path is not None:
        src_path = real_path  # compiled in place: its own "..." includes just work
    else:
        src_path = _cell_file(c, key, filename, text)
    pch_path = None
    if use_prelude and pch and not os.environ.get("BPFNB_NO_PCH"):
        pch_path = _pch(c, user)

    staging = c.stage("obj")
    tmp_o, tmp_d = staging / obj_path.name, staging / "deps.d"

    def run(pch_path):
        extra = ([*_VALIDATE, "-include-pch", str(pch_path)] if pch_path
                 else ["-include", str(kernel / PRELUDE_NAME)] if use_prelude else [])
        if add_license:
            extra += ["-include", str(kernel / LICENSE_NAME)]
        if COMPAT_H.exists():
            extra += ["-include", str(COMPAT_H)]
        cmd = [clang, *flags, *extra, "-MD", "-MF", str(tmp_d), "-c", str(src_path),
               "-o", str(tmp_o)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=600), cmd

    try:
        out, cmd = run(pch_path)
        if out.returncode != 0 and pch_path and _PCH_TROUBLE.search(out.stderr):
            # a PCH this clang cannot use: drop it (rebuilt next time), parse this once
            c.drop("pch", pch_path.parent.name)
            _unlink(tmp_o)
            _unlink(tmp_d)
            pch_path = None
            out, cmd = run(None)
        diagnostics = _clean(out.stderr, src_path, filename)
        public_cmd = tuple(str(obj_path) if a == str(tmp_o) else a for a in cmd
                           if a not in (str(tmp_d), "-MD", "-MF"))
        if out.returncode != 0:
            raise CompileError(diagnostics, text, filename, public_cmd)
        deps = cache.record_deps(tmp_d, [src_path], c.root)
        os.unlink(tmp_d)
        c.commit(staging, "obj", key, {
            "filename": filename, "source": str(src_path), "warnings": diagnostics,
            "pch": bool(pch_path), "command": public_cmd, "deps": deps})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return CompileResult(obj_path, diagnostics, cached=False, used_pch=bool(pch_path),
                         seconds=time.perf_counter() - t0, command=public_cmd)


def _cell_file(c: cache.Cache, key: str, filename: str, text: str) -> Path:
    """The cell verbatim in ``src/<key>/`` (no #line: clang's BTF line info reads each
    line's text from this file, which the verifier log quotes; #line would lose it)."""
    path = c.entry_path("src", key) / f"{_src_stem(filename)}.c"
    if c.open_entry("src", key) is None:
        staging = c.stage("src")
        cache.write_file(staging, path.name, text)
        c.commit(staging, "src", key)
    return path


def compile(source: str | os.PathLike | bytes, cflags: Sequence[str] | str = (),
            filename: str | None = None, **kw) -> Path:
    """Compile BPF C (text, or a path to a .c file) to a cached object; return its path.

    A ``.o`` path is returned unchanged. Raises :class:`CompileError`. Use
    :func:`build` to also get clang's warnings.
    """
    return build(source, cflags, filename, **kw).path


def _clean(stderr: str, src_path: Path, filename: str) -> str:
    """clang's stderr naming the cell (or the given filename), not our file."""
    s = str(src_path)
    return stderr if s == filename else stderr.replace(s, filename)
