"""An ELF object's DWARF debug info, and its types as split BTF over the object's own.

    info = Dwarf.from_elf(image)          # DwarfError when there is none, or it is bad
    info.subprogram("handle_exec")        # -> DIE, with .children parsed on demand
    info.named("structure_type", "event") # top-level DIEs by tag and name
    info.decl_path(die); info.locations(variable)

    types = DwarfTypes(info, obj.btf)
    tid = types.find("struct event")      # converts the DIE and what it reaches
    types.btf.dtype(tid)                  # BTF(raw, base=obj.btf): one type interface

clang keeps the types of local variables out of .BTF, but -g puts every type into
DWARF. Files: die.py (units, abbreviations, DIEs), elf.py (sections, symbols,
relocations), info.py (strings, lookups, source files, location lists), btf.py (the
conversion to BTF). It lives beside bpfnb/libbpf/, not in it: it needs nothing of
libbpf, and libbpf/ keeps to the binding (btf.py there parses BTF; this builds it).
"""

from .btf import DwarfTypes
from .die import DIE, DwarfError
from .elf import Elf
from .info import Dwarf

__all__ = ["DIE", "Dwarf", "DwarfError", "DwarfTypes", "Elf"]
