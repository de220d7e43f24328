"""Uprobe and USDT targets of an ELF binary, for bpfnb.probes(): its function symbols
(argument types from DWARF when it has debug info) and its ``.note.stapsdt`` probes."""

from __future__ import annotations

import fnmatch
import functools
import glob
import os
import re
import shutil

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .probes import Arg

_FUNC_TYPES = ("STT_FUNC", "STT_GNU_IFUNC")
_NT_STAPSDT = 3
# Where a bare library name (libc.so.6) is looked for, as the dynamic loader would.
LIBRARY_DIRS = ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/lib64",
                "/usr/lib", "/lib", "/usr/local/lib")
# DWARF of a larger binary takes pyelftools minutes: its functions are listed without args.
MAX_DWARF_BYTES = 16 << 20
# A USDT argument spec "-4@%edx": its size (negative: signed) -> C type.
_USDT_TYPES = {-1: "signed char", 1: "unsigned char", -2: "short", 2: "unsigned short",
               -4: "int", 4: "unsigned int", -8: "long", 8: "unsigned long"}


def binaries(path: str) -> list[str]:
    """The files a uprobe/usdt pattern's path names: a path, a glob, or a bare name
    found on $PATH or in the library directories."""
    if any(c in path for c in "*?["):
        return sorted(p for p in glob.glob(path) if os.path.isfile(p))
    if os.sep in path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file (uprobe and usdt patterns name a "
                                    f"binary or library, e.g. /usr/bin/python3.11)")
        return [path]
    found = shutil.which(path) or next(
        (os.path.join(d, path) for d in LIBRARY_DIRS if os.path.isfile(os.path.join(d, path))),
        None)
    if found is None:
        raise FileNotFoundError(f"{path}: not on $PATH nor in {', '.join(LIBRARY_DIRS)}; "
                                f"give its full path")
    return [found]


def list_probes(kind: str, path: str, pattern: str) -> list[tuple]:
    """(probe, kind, args, why) of a binary's functions or USDT probes."""
    out = []
    for binary in binaries(path):
        st = os.stat(binary)
        key = (binary, st.st_mtime_ns, st.st_size)
        if kind == "usdt":
            rx = re.compile(fnmatch.translate(pattern))
            for provider, name, args in usdt_notes(*key):
                spec = f"{provider}:{name}"
                if rx.match(spec) or (":" not in pattern and rx.match(name)):
                    out.append((f"usdt/{binary}:{spec}", kind, args, ""))
            continue
        funcs = functions(*key)
        names = fnmatch.filter(funcs, pattern) if pattern != "*" else list(funcs)
        out.extend((f"{kind}/{binary}:{name}", kind, funcs[name], "") for name in names)
    return out


def _open(path: str):
    try:
        f = open(path, "rb")
    except OSError as e:
        raise FileNotFoundError(f"cannot read {path}: {e.strerror}") from None
    try:
        return f, ELFFile(f)
    except ELFError as e:
        f.close()
        raise ValueError(f"{path} is not an ELF binary ({e})") from None


@functools.lru_cache(maxsize=64)
def functions(path: str, mtime_ns: int = 0, size: int = 0) -> dict:
    """{function name: args} of a binary's defined function symbols (.symtab and
    .dynsym); args from DWARF when the binary carries it, else ()."""
    f, elf = _open(path)
    with f:
        names = []
        for section in (".symtab", ".dynsym"):
            table = elf.get_section_by_name(section)
            if table is None:
                continue
            for sym in table.iter_symbols():
                if (sym["st_info"]["type"] in _FUNC_TYPES and sym["st_shndx"] != "SHN_UNDEF"
                        and sym["st_value"] and sym.name):
                    names.append(sym.name.split("@", 1)[0])
        args = _dwarf_args(elf)
    return {name: args.get(name, ()) for name in sorted(set(names))}


def _dwarf_args(elf: ELFFile) -> dict:
    info = elf.get_section_by_name(".debug_info")
    if info is None or info["sh_size"] > MAX_DWARF_BYTES:
        return {}
    out = {}
    for cu in elf.get_dwarf_info().iter_CUs():
        for die in cu.get_top_DIE().iter_children():
            if die.tag != "DW_TAG_subprogram" or "DW_AT_name" not in die.attributes:
                continue
            if "DW_AT_declaration" in die.attributes:
                continue
            name = die.attributes["DW_AT_name"].value.decode("utf-8", "replace")
            params = [Arg(_dwarf_type(p), p.attributes["DW_AT_name"].value.decode()
                          if "DW_AT_name" in p.attributes else f"arg{i}")
                      for i, p in enumerate(c for c in die.iter_children()
                                            if c.tag == "DW_TAG_formal_parameter")]
            out.setdefault(name, tuple(params))
    return out


_DWARF_TAGS = {"DW_TAG_structure_type": "struct", "DW_TAG_union_type": "union",
               "DW_TAG_enumeration_type": "enum", "DW_TAG_class_type": "class"}
_DWARF_QUALIFIERS = {"DW_TAG_const_type": "const", "DW_TAG_volatile_type": "volatile",
                     "DW_TAG_restrict_type": "restrict"}


def _dwarf_type(die, depth: int = 0) -> str:
    """A DIE's DW_AT_type as C: "int", "const char *", "struct foo *", "char[16]"."""
    if "DW_AT_type" not in die.attributes or depth > 16:
        return "void"
    t = die.get_DIE_from_attribute("DW_AT_type")
    name = t.attributes["DW_AT_name"].value.decode() if "DW_AT_name" in t.attributes else ""
    if t.tag in ("DW_TAG_base_type", "DW_TAG_typedef"):
        return name
    if t.tag in _DWARF_TAGS:
        return f"{_DWARF_TAGS[t.tag]} {name or '{...}'}"
    if t.tag == "DW_TAG_pointer_type":
        inner = _dwarf_type(t, depth + 1)
        return inner + ("*" if inner.endswith("*") else " *")
    if t.tag in _DWARF_QUALIFIERS:
        inner = _dwarf_type(t, depth + 1)
        if inner.endswith("*"):
            return f"{inner} {_DWARF_QUALIFIERS[t.tag]}"
        return f"{_DWARF_QUALIFIERS[t.tag]} {inner}"
    if t.tag == "DW_TAG_array_type":
        dims = "".join(f"[{c.attributes['DW_AT_upper_bound'].value + 1}]"
                       if "DW_AT_upper_bound" in c.attributes else "[]"
                       for c in t.iter_children() if c.tag == "DW_TAG_subrange_type")
        return _dwarf_type(t, depth + 1) + dims
    if t.tag == "DW_TAG_subroutine_type":
        return f"{_dwarf_type(t, depth + 1)} (*)()"
    return name or "void"


@functools.lru_cache(maxsize=64)
def usdt_notes(path: str, mtime_ns: int = 0, size: int = 0) -> tuple:
    """((provider, name, args), ...) of a binary's USDT probes (.note.stapsdt)."""
    f, elf = _open(path)
    with f:
        section = elf.get_section_by_name(".note.stapsdt")
        if section is None:
            return ()
        word = 8 if elf.elfclass == 64 else 4
        out = []
        for note in section.iter_notes():
            # pyelftools names type 3 after the GNU owner's NT_GNU_BUILD_ID whatever
            # the owner: the owner "stapsdt" is what identifies a USDT note.
            if note["n_name"] != "stapsdt" or note["n_type"] not in (_NT_STAPSDT,
                                                                    "NT_GNU_BUILD_ID"):
                continue
            desc = note["n_desc"]
            if isinstance(desc, str):  # pyelftools hands unknown descriptors over as text
                desc = desc.encode("latin-1")
            provider, name, spec = (desc[3 * word:].split(b"\0") + [b"", b""])[:3]
            args = tuple(_usdt_arg(i, token) for i, token in enumerate(spec.decode().split()))
            out.append((provider.decode(), name.decode(), args))
    return tuple(out)


def _usdt_arg(i: int, token: str) -> Arg:
    size_text, _, _location = token.partition("@")
    try:
        size = int(size_text)
    except ValueError:
        size = 8
    return Arg(_USDT_TYPES.get(size, "long"), f"arg{i}", size=abs(size), signed=size < 0)
