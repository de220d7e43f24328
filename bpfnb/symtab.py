"""Symbol tables: the kernel's (/proc/kallsyms) and ELF files' function symbols
(.symtab, .dynsym, a /usr/lib/debug/.build-id/ debug file, the vDSO), each as a sorted
array for np.searchsorted. bpfnb.symbols uses them to name stack frames."""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections import OrderedDict

import numpy as np
from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

# 64-bit kernels live in the upper half of the address space (x86-64, arm64, riscv).
KERNEL_MIN = 1 << 63
_TEXT_TYPES = frozenset("tTwW")
_STT_FUNC, _STT_GNU_IFUNC = 2, 10
_STB_LOCAL = 0
_DEBUG_ROOT = "/usr/lib/debug/.build-id"


# --- kernel -----------------------------------------------------------------------

class KernelSymbols:
    """/proc/kallsyms text symbols as a sorted array, for np.searchsorted."""

    def __init__(self, path: str = "/proc/kallsyms"):
        addrs, names, modules = [], [], []
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 3 or parts[1] not in _TEXT_TYPES:
                    continue
                addrs.append(int(parts[0], 16))
                names.append(parts[2])
                modules.append(parts[3].strip("[]") if len(parts) > 3 else "")
        order = np.argsort(np.array(addrs, dtype=np.uint64), kind="stable")
        self.addrs = np.array(addrs, dtype=np.uint64)[order]
        self.names = [names[i] for i in order]
        self.modules = [modules[i] for i in order]
        # kernel.kptr_restrict hides addresses from the unprivileged: all read as 0.
        self.hidden = not len(self.addrs) or int(self.addrs[-1]) == 0
        if self.hidden:
            warnings.warn(f"{path} shows only zero addresses (kernel.kptr_restrict, or not "
                          "root): kernel frames stay hex. Run as root, or "
                          "`sysctl kernel.kptr_restrict=0`.", RuntimeWarning, stacklevel=3)

    def lookup(self, addr: int) -> tuple[str, int, str] | None:
        """(symbol, offset, module) of the symbol at or below ``addr``."""
        if self.hidden or addr < KERNEL_MIN:
            return None
        i = int(np.searchsorted(self.addrs, np.uint64(addr), side="right")) - 1
        if i < 0:
            return None
        return self.names[i], addr - int(self.addrs[i]), self.modules[i]


# --- ELF files ----------------------------------------------------------------------

class ElfSymbols:
    """Function symbols and PT_LOAD segments of one ELF file."""

    def __init__(self, f):
        elf = ELFFile(f)
        # (file offset, file size, vaddr): how file offsets map to the ELF's addresses
        self.loads = [(s["p_offset"], s["p_filesz"], s["p_vaddr"])
                      for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        tables = [_func_symbols(elf, name) for name in (".symtab", ".dynsym")]
        debug = _debug_file(elf)
        if debug is not None:
            with open(debug, "rb") as df:
                tables.insert(0, _func_symbols(ELFFile(df), ".symtab"))
        starts = np.concatenate([t[0] for t in tables])
        sizes = np.concatenate([t[1] for t in tables])
        local = np.concatenate([t[2] for t in tables])
        names = [n for t in tables for n in t[3]]
        # One name per address (aliases abound: getpid, __getpid, __GI___getpid): a
        # global or weak one first, then the fewest leading underscores.
        underscores = np.array([len(n) - len(n.lstrip("_")) for n in names], dtype=np.int64)
        order = np.lexsort((underscores, local, starts))
        self.starts, first = np.unique(starts[order], return_index=True)
        chosen = order[first]
        self.sizes = sizes[chosen]
        self.names = [names[i] for i in chosen]

    def vaddr(self, file_offset: int) -> int | None:
        for off, size, vaddr in self.loads:
            if off <= file_offset < off + size:
                return file_offset - off + vaddr
        return None

    def lookup(self, vaddr: int) -> tuple[str, int] | None:
        i = int(np.searchsorted(self.starts, np.uint64(vaddr), side="right")) - 1
        if i < 0:
            return None
        off = vaddr - int(self.starts[i])
        size = int(self.sizes[i])
        if size and off >= size:  # between functions (padding, stripped code)
            return None
        return self.names[i], off


def _func_symbols(elf: ELFFile, section: str):
    """(start, size, is_local, name) of the defined functions of a symbol table."""
    empty = (np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, bool), [])
    sec = elf.get_section_by_name(section)
    if sec is None or sec["sh_type"] == "SHT_NOBITS":
        return empty
    end = "<" if elf.little_endian else ">"
    if elf.elfclass == 64:
        fields = [("name", "u4"), ("info", "u1"), ("other", "u1"), ("shndx", "u2"),
                  ("value", "u8"), ("size", "u8")]
    else:
        fields = [("name", "u4"), ("value", "u4"), ("size", "u4"), ("info", "u1"),
                  ("other", "u1"), ("shndx", "u2")]
    dtype = np.dtype([(n, end + t) for n, t in fields])
    if sec["sh_entsize"] != dtype.itemsize:
        return empty
    data = sec.data()
    syms = np.frombuffer(data, dtype=dtype, count=len(data) // dtype.itemsize)
    kind = syms["info"] & 0xF
    keep = (((kind == _STT_FUNC) | (kind == _STT_GNU_IFUNC)) & (syms["shndx"] != 0)
            & (syms["value"] != 0))
    syms = syms[keep]
    strtab = elf.get_section(sec["sh_link"]).data()
    # "memcpy@@GLIBC_2.14" in some tables: the version is noise in a frame name
    names = [strtab[o:strtab.find(b"\0", o)].decode(errors="replace").split("@", 1)[0]
             for o in syms["name"].tolist()]
    return (syms["value"].astype(np.uint64), syms["size"].astype(np.uint64),
            (syms["info"] >> 4) == _STB_LOCAL, names)


def _debug_file(elf: ELFFile) -> str | None:
    """The separate debug file of a stripped binary, found by its build id."""
    note = elf.get_section_by_name(".note.gnu.build-id")
    if note is None:
        return None
    for n in note.iter_notes():
        if n["n_type"] == "NT_GNU_BUILD_ID":
            bid = n["n_desc"]
            path = f"{_DEBUG_ROOT}/{bid[:2]}/{bid[2:]}.debug"
            return path if os.path.exists(path) else None
    return None


_elf_cache: OrderedDict = OrderedDict()
_ELF_CACHE_SIZE = 128


def elf_symbols(fd: int) -> ElfSymbols | None:
    """Symbols of the open file ``fd``, cached by (device, inode, mtime, size)."""
    st = os.fstat(fd)
    key = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
    if key in _elf_cache:
        _elf_cache.move_to_end(key)
        return _elf_cache[key]
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            syms = ElfSymbols(f)
    except (ELFError, ValueError, OSError):  # not an ELF file, or a damaged one
        syms = None
    _elf_cache[key] = syms
    if len(_elf_cache) > _ELF_CACHE_SIZE:
        _elf_cache.popitem(last=False)
    return syms


@functools.cache
def vdso_symbols() -> ElfSymbols | None:
    """The kernel maps one vDSO image into every (64-bit) process: read ours."""
    with open("/proc/self/maps") as f:
        line = next((ln for ln in f if ln.rstrip().endswith("[vdso]")), None)
    if line is None:
        return None
    lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
    try:
        with open("/proc/self/mem", "rb") as mem:
            mem.seek(lo)
            return ElfSymbols(io.BytesIO(mem.read(hi - lo)))
    except (OSError, ELFError, ValueError):
        return None
