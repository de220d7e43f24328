"""An ELF object's DWARF debug info: its DIEs, source files and variable locations.

    info = Dwarf.from_elf(image)           # DwarfError when there is none or it is bad
    info.subprogram("handle_exec")         # -> DIE, with .children parsed
    info.named("struct", "event")          # top-level type DIEs by tag and name
    info.decl_path(die)                    # the file a type was declared in

clang puts the types of local variables only into DWARF (not into .BTF); dwarftypes.py
turns the DIEs this reader gives into split BTF over the object's own.

Made for speed on BPF objects: a cell that reads a task_struct carries ~28,000 DIEs
(the kernel types it reaches), and a load must not pay for parsing them. One pass
over .debug_info skips each DIE by a size plan made from its abbreviation (no
attribute is decoded) and keeps only the offsets of the compile unit's children;
attributes and subtrees are parsed on demand. Relocations are applied only where a
symbol's value is not 0 (in an unlinked BPF object nearly all point at section
symbols, whose value is 0, with the addend in place).
"""

from __future__ import annotations

import struct

import numpy as np

# DW_TAG_*
TAG = {0x01: "array_type", 0x04: "enumeration_type", 0x05: "formal_parameter",
       0x0B: "lexical_block", 0x0D: "member", 0x0F: "pointer_type", 0x11: "compile_unit",
       0x13: "structure_type", 0x15: "subroutine_type", 0x16: "typedef",
       0x17: "union_type", 0x18: "unspecified_parameters", 0x1D: "inlined_subroutine",
       0x21: "subrange_type", 0x24: "base_type", 0x26: "const_type", 0x28: "enumerator",
       0x2E: "subprogram", 0x34: "variable", 0x35: "volatile_type",
       0x37: "restrict_type", 0x3B: "unspecified_type", 0x47: "atomic_type"}
# DW_AT_* this module and dwarftypes.py read
AT_NAME, AT_BYTE_SIZE, AT_BIT_OFFSET, AT_BIT_SIZE, AT_LOCATION = 0x03, 0x0B, 0x0C, 0x0D, 0x02
AT_LOW_PC, AT_HIGH_PC, AT_CONST_VALUE, AT_UPPER_BOUND = 0x11, 0x12, 0x1C, 0x2F
AT_ABSTRACT_ORIGIN, AT_COUNT, AT_MEMBER_LOCATION, AT_DECL_FILE = 0x31, 0x37, 0x38, 0x3A
AT_DECLARATION, AT_ENCODING, AT_FRAME_BASE, AT_TYPE, AT_RANGES = 0x3C, 0x3E, 0x40, 0x49, 0x55
AT_DATA_BIT_OFFSET, AT_STR_OFFSETS_BASE, AT_ADDR_BASE = 0x6B, 0x72, 0x73
AT_LOCLISTS_BASE, AT_STMT_LIST, AT_COMP_DIR = 0x8C, 0x10, 0x1B

# DW_FORM_* of a fixed size (address and offset sizes filled in per unit)
_FIXED = {0x0B: 1, 0x11: 1, 0x0C: 1, 0x25: 1, 0x29: 1, 0x05: 2, 0x12: 2, 0x26: 2,
          0x2A: 2, 0x27: 3, 0x2B: 3, 0x06: 4, 0x13: 4, 0x28: 4, 0x2C: 4, 0x1C: 4,
          0x07: 8, 0x14: 8, 0x20: 8, 0x1E: 16, 0x19: 0, 0x21: 0}
_OFFSET_FORMS = (0x0E, 0x1F, 0x17, 0x10, 0x1D, 0x1F)  # strp, line_strp, sec_offset, ref_addr, strp_sup
_LEB_FORMS = frozenset({0x0F, 0x0D, 0x15, 0x1A, 0x1B, 0x22, 0x23})
_STRX = frozenset({0x1A, 0x25, 0x26, 0x27, 0x28})
_REF = frozenset({0x11, 0x12, 0x13, 0x14, 0x15})
_ADDRX = frozenset({0x1B, 0x29, 0x2A, 0x2B, 0x2C})


class DwarfError(ValueError):
    """The object has no DWARF, or DWARF this reader cannot read."""


class DIE:
    """One debugging information entry: ``tag`` (a name from TAG, or the number),
    ``attrs`` {DW_AT number: value}, ``children`` (parsed with the DIE or on demand)."""

    __slots__ = ("offset", "tag", "attrs", "has_children", "_children", "unit")

    def __init__(self, offset, tag, attrs, has_children, unit):
        self.offset, self.tag, self.attrs = offset, tag, attrs
        self.has_children, self.unit, self._children = has_children, unit, None

    @property
    def children(self) -> list:
        if self._children is None:
            self._children = self.unit.children_of(self) if self.has_children else []
        return self._children

    @property
    def name(self) -> str:
        return self.attrs.get(AT_NAME, "")

    def get(self, attr, default=None):
        return self.attrs.get(attr, default)

    def __repr__(self):
        return f"<DIE 0x{self.offset:x} {self.tag} {self.name!r}>"


def _uleb(data, pos):
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _sleb(data, pos):
    result = shift = 0
    while True:
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            if b & 0x40:
                result -= 1 << shift
            return result, pos


# --- ELF ------------------------------------------------------------------------------

class Elf:
    """Sections, symbols and relocations of an ELF64 relocatable object."""

    def __init__(self, data: bytes):
        if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2:
            raise DwarfError("not an ELF64 object")
        self.data = data
        self.e = e = "<" if data[5] == 1 else ">"
        self.machine, = struct.unpack_from(e + "H", data, 0x12)
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
        if shoff == 0 or shentsize < 64 or shoff + shnum * shentsize > len(data):
            raise DwarfError("ELF section headers out of bounds")
        heads = [struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize)
                 for i in range(shnum)]
        strtab = heads[shstrndx] if shstrndx < shnum else None
        self.headers = heads
        self.by_name: dict[str, int] = {}
        self.names = []
        for i, h in enumerate(heads):
            name = self._cstr(strtab[4] + h[0]) if strtab else ""
            self.names.append(name)
            self.by_name.setdefault(name, i)
        self._symbols = None

    def _cstr(self, off):
        end = self.data.find(b"\0", off)
        return self.data[off:end].decode("utf-8", "replace") if end >= 0 else ""

    def section(self, name) -> bytes | None:
        i = self.by_name.get(name)
        if i is None:
            return None
        return self.index_bytes(i)

    def index_bytes(self, i) -> bytes:
        h = self.headers[i]
        if h[1] == 8:  # SHT_NOBITS
            return bytes(h[5])
        if h[4] + h[5] > len(self.data):
            raise DwarfError(f"ELF section {self.names[i]!r} out of bounds")
        return self.data[h[4]:h[4] + h[5]]

    def symbols(self) -> list:
        """[(name, value, size, section index, type)] of .symtab, by index."""
        if self._symbols is None:
            out = []
            i = next((j for j, h in enumerate(self.headers) if h[1] == 2), None)
            if i is not None:
                raw, link = self.index_bytes(i), self.headers[i][6]
                strs = self.headers[link][4] if link < len(self.headers) else 0
                for off in range(0, len(raw) - 23, 24):
                    name, info, _, shndx, value, size = struct.unpack_from(
                        self.e + "IBBHQQ", raw, off)
                    out.append((self._cstr(strs + name), value, size, shndx, info & 0xF))
            self._symbols = out
        return self._symbols

    def relocations(self, target: int) -> np.ndarray:
        """(offset, symbol index, type, addend) rows of the REL/RELA sections of section
        ``target``, as a numpy record array."""
        rows = []
        for h in self.headers:
            if h[1] in (9, 4) and h[7] == target:
                raw = self.data[h[4]:h[4] + h[5]]
                if h[1] == 9:
                    dt = np.dtype([("offset", self.e + "u8"), ("info", self.e + "u8")])
                    r = np.frombuffer(raw[:len(raw) // 16 * 16], dt)
                    add = np.zeros(len(r), np.int64)
                else:
                    dt = np.dtype([("offset", self.e + "u8"), ("info", self.e + "u8"),
                                   ("addend", self.e + "i8")])
                    r = np.frombuffer(raw[:len(raw) // 24 * 24], dt)
                    add = r["addend"].astype(np.int64)
                rows.append((r["offset"].astype(np.int64), (r["info"] >> 32).astype(np.int64),
                             (r["info"] & 0xFFFFFFFF).astype(np.int64), add,
                             np.full(len(r), h[1] == 4)))
        if not rows:
            z = np.zeros(0, np.int64)
            return z, z, z, z, np.zeros(0, bool)
        return tuple(np.concatenate(c) for c in zip(*rows))

    def relocated(self, name) -> bytes | None:
        """Section ``name`` with its absolute (debug) relocations applied."""
        i = self.by_name.get(name)
        if i is None:
            return None
        data = self.index_bytes(i)
        offs, syms, types, addends, rela = self.relocations(i)
        if not len(offs):
            return data
        values = np.array([s[1] for s in self.symbols()] or [0], np.int64)
        if syms.size and syms.max() >= len(values):
            raise DwarfError(f"relocation of {name!r} names a symbol out of range")
        s = values[syms]
        keep = (s != 0) | rela
        if not keep.any():
            return data
        out = bytearray(data)
        for off, typ, sv, a, is_rela in zip(offs[keep].tolist(), types[keep].tolist(),
                                             s[keep].tolist(), addends[keep].tolist(),
                                             rela[keep].tolist()):
            width = 8 if typ == 2 else 4 if typ in (3, 4) else 0  # R_BPF_64_ABS64/ABS32/NODYLD32
            if not width or off + width > len(out):
                continue
            fmt = self.e + ("Q" if width == 8 else "I")
            old = 0 if is_rela else struct.unpack_from(fmt, out, off)[0]
            struct.pack_into(fmt, out, off, (old + sv + a) & ((1 << (8 * width)) - 1))
        return bytes(out)


# --- units ---------------------------------------------------------------------------

class Unit:
    """One compile unit: header, abbreviations, its top-level DIE offsets."""

    def __init__(self, dwarf: "Dwarf", offset: int):
        d, e = dwarf.info, dwarf.e
        self.dwarf, self.offset = dwarf, offset
        length, = struct.unpack_from(e + "I", d, offset)
        if length >= 0xFFFFFFF0:
            raise DwarfError("64-bit DWARF is not supported")
        self.end = offset + 4 + length
        self.version, = struct.unpack_from(e + "H", d, offset + 4)
        if self.version >= 5:
            _unit_type, self.addr_size, abbrev = struct.unpack_from(e + "BBI", d, offset + 6)
            self.first = offset + 12
        elif self.version >= 2:
            abbrev, self.addr_size = struct.unpack_from(e + "IB", d, offset + 6)
            self.first = offset + 11
        else:
            raise DwarfError(f"DWARF version {self.version} is not supported")
        if self.end > len(d):
            raise DwarfError("truncated .debug_info")
        self._abbrevs(dwarf.abbrev, abbrev)
        # the unit's DIE names the bases its own strx/addrx attributes need: read them
        # first as indices, then again
        self.str_base = self.addr_base = None
        a = self.parse(self.first).attrs
        self.str_base = a.get(AT_STR_OFFSETS_BASE, 8)
        self.addr_base = a.get(AT_ADDR_BASE, 8)
        self.loclists_base = a.get(AT_LOCLISTS_BASE, 12)
        self.die = self.parse(self.first)
        low = self.die.attrs.get(AT_LOW_PC, 0)
        self.low_pc = low if isinstance(low, int) else 0
        self.top = self._scan()

    def _abbrevs(self, data, pos):
        """{code: (tag, has_children, [(attr, form, implicit)], plan)}; plan: the
        DIE's byte size when all forms are fixed, else a list of steps."""
        fixed = dict(_FIXED)
        fixed[0x01] = self.addr_size
        for f in _OFFSET_FORMS:
            fixed[f] = 4
        if self.version == 2:
            fixed[0x10] = self.addr_size
        table, self.name_at = {}, {}
        while True:
            code, pos = _uleb(data, pos)
            if code == 0:
                break
            tag, pos = _uleb(data, pos)
            children = data[pos]
            pos += 1
            specs, steps, run, name_at = [], [], 0, None
            while True:
                attr, pos = _uleb(data, pos)
                form, pos = _uleb(data, pos)
                implicit = None
                if form == 0x21:  # implicit_const
                    implicit, pos = _sleb(data, pos)
                if attr == 0 and form == 0:
                    break
                specs.append((attr, form, implicit))
                if attr == AT_NAME and not steps:
                    name_at = (run, form)
                size = fixed.get(form)
                if size is not None:
                    run += size
                elif form == 0x16:
                    raise DwarfError("DW_FORM_indirect is not supported")
                else:
                    steps.append((run, form))
                    run = 0
            plan = run if not steps else (steps, run)
            table[code] = (TAG.get(tag, tag), bool(children), specs, plan)
            self.name_at[code] = name_at
        self.table = table

    def _skip_var(self, steps, tail, pos, d):
        for run, form in steps:
            pos += run
            if form in _LEB_FORMS:
                while d[pos] & 0x80:
                    pos += 1
                pos += 1
            elif form == 0x08:  # string
                pos = d.index(0, pos) + 1
            elif form in (0x18, 0x09):  # exprloc, block
                n, pos = _uleb(d, pos)
                pos += n
            elif form == 0x0A:
                pos += 1 + d[pos]
            elif form == 0x03:
                pos += 2 + struct.unpack_from(self.dwarf.e + "H", d, pos)[0]
            elif form == 0x04:
                pos += 4 + struct.unpack_from(self.dwarf.e + "I", d, pos)[0]
            else:
                raise DwarfError(f"unknown DWARF form 0x{form:x}")
        return pos + tail

    def _scan(self) -> list:
        """[(offset, tag)] of the compile unit's children, skipping everything else."""
        d, table, end = self.dwarf.info, self.table, self.end
        top_code = max(table) + 1
        # per abbreviation code: fixed size (or -1: steps), steps, has children
        sizes = [-1] * top_code
        steps = [None] * top_code
        kids = [False] * top_code
        for code, (_, children, _, plan) in table.items():
            if plan.__class__ is int:
                sizes[code] = plan
            else:
                steps[code] = plan
            kids[code] = children
        pos = self.first
        code, pos = _uleb(d, pos)
        pos = pos + sizes[code] if sizes[code] >= 0 else self._skip_var(*steps[code], pos, d)
        top, depth = [], 1 if kids[code] else 0
        append, skip = top.append, self._skip_var
        try:
            while depth:
                start = pos
                code = d[pos]
                pos += 1
                if code > 0x7F:
                    code, pos = _uleb(d, start)
                if not code:
                    depth -= 1
                    continue
                if depth == 1:
                    append((start, code))
                size = sizes[code]
                if size >= 0:
                    pos += size
                else:
                    pos = skip(*steps[code], pos, d)
                if kids[code]:
                    depth += 1
        except (IndexError, TypeError):
            raise DwarfError(f"truncated or malformed DIE at 0x{start:x}") from None
        if pos > end:
            raise DwarfError("DIEs run past the end of their unit")
        return [(off, table[code][0]) for off, code in top]

    def name_of(self, pos) -> str:
        """The DW_AT_name of the DIE at ``pos``, reading nothing else where possible."""
        d = self.dwarf.info
        code, at = _uleb(d, pos)
        where = self.name_at.get(code)
        if where is None:
            return self.parse(pos).name
        value = self._value(where[1], None, at + where[0], d, self.dwarf.e)[0]
        return value if isinstance(value, str) else ""

    def parse(self, pos) -> DIE:
        die, _ = self._parse(pos)
        return die

    def _parse(self, pos):
        d, e = self.dwarf.info, self.dwarf.e
        start = pos
        code, pos = _uleb(d, pos)
        if code == 0:
            return None, pos
        try:
            tag, children, specs, _ = self.table[code]
        except KeyError:
            raise DwarfError(f"DIE 0x{start:x}: unknown abbreviation {code}") from None
        attrs = {}
        for attr, form, implicit in specs:
            attrs[attr], pos = self._value(form, implicit, pos, d, e)
        return DIE(start, tag, attrs, children, self), pos

    def _value(self, form, implicit, pos, d, e):
        if form in _REF:
            size = _FIXED.get(form)
            if size is None:
                v, pos = _uleb(d, pos)
            else:
                v = int.from_bytes(d[pos:pos + size], "little" if e == "<" else "big")
                pos += size
            return ("ref", self.offset + v), pos
        if form == 0x10:  # ref_addr
            v, = struct.unpack_from(e + "I", d, pos)
            return ("ref", v), pos + 4
        if form in _STRX:
            if form == 0x1A:
                v, pos = _uleb(d, pos)
            else:
                n = _FIXED[form]
                v = int.from_bytes(d[pos:pos + n], "little" if e == "<" else "big")
                pos += n
            if self.str_base is None:
                return ("strx", v), pos
            return self.dwarf.str_at_index(self, v), pos
        if form == 0x0E:
            v, = struct.unpack_from(e + "I", d, pos)
            return self.dwarf.str_at(".debug_str", v), pos + 4
        if form == 0x1F:
            v, = struct.unpack_from(e + "I", d, pos)
            return self.dwarf.str_at(".debug_line_str", v), pos + 4
        if form == 0x08:
            end = d.index(0, pos)
            return d[pos:end].decode("utf-8", "replace"), end + 1
        if form in (0x0B, 0x05, 0x06, 0x07, 0x17, 0x0C):  # data1/2/4/8, sec_offset, flag
            n = {0x0B: 1, 0x05: 2, 0x06: 4, 0x07: 8, 0x17: 4, 0x0C: 1}[form]
            return int.from_bytes(d[pos:pos + n], "little" if e == "<" else "big"), pos + n
        if form == 0x0F:
            return _uleb(d, pos)
        if form == 0x0D:
            return _sleb(d, pos)
        if form == 0x19:
            return True, pos
        if form == 0x21:
            return implicit, pos
        if form == 0x01:
            v = int.from_bytes(d[pos:pos + self.addr_size], "little" if e == "<" else "big")
            return self.dwarf.info_reloc.get(pos, 0) + v, pos + self.addr_size
        if form in _ADDRX:
            if form == 0x1B:
                v, pos = _uleb(d, pos)
            else:
                n = _FIXED[form]
                v = int.from_bytes(d[pos:pos + n], "little" if e == "<" else "big")
                pos += n
            if self.addr_base is None:
                return ("addrx", v), pos
            return self.dwarf.addr(self, v), pos
        if form in (0x22, 0x23):  # loclistx, rnglistx
            v, pos = _uleb(d, pos)
            return ("index", v), pos
        if form in (0x18, 0x09, 0x0A, 0x03, 0x04):
            if form in (0x18, 0x09):
                n, pos = _uleb(d, pos)
            else:
                w = {0x0A: 1, 0x03: 2, 0x04: 4}[form]
                n = int.from_bytes(d[pos:pos + w], "little" if e == "<" else "big")
                pos += w
            return bytes(d[pos:pos + n]), pos + n
        size = _FIXED.get(form)
        if size is not None:
            return bytes(d[pos:pos + size]), pos + size
        raise DwarfError(f"unknown DWARF form 0x{form:x}")

    def children_of(self, die: DIE) -> list:
        """The subtree under ``die``, parsed whole."""
        _, pos = self._parse(die.offset)
        return self._children(pos)[0]

    def _children(self, pos):
        out = []
        while pos < self.end:
            child, pos = self._parse(pos)
            if child is None:
                return out, pos
            if child.has_children:
                child._children, pos = self._children(pos)
            out.append(child)
        return out, pos


class Dwarf:
    """The DWARF of one ELF object (see the module doc)."""

    def __init__(self, elf: Elf):
        info = elf.section(".debug_info")
        abbrev = elf.section(".debug_abbrev")
        if info is None or abbrev is None:
            raise DwarfError("the object has no DWARF debug info (built without -g)")
        self.elf, self.e, self.info, self.abbrev = elf, elf.e, info, abbrev
        self._strs: dict[str, bytes | None] = {}
        self._addr = None
        i = elf.by_name[".debug_info"]
        offs, syms, types, _, _ = elf.relocations(i)
        values = np.array([s[1] for s in elf.symbols()] or [0], np.int64)
        ok = syms < len(values)
        s = values[syms[ok]]
        self.info_reloc = {o: v for o, v, t in zip(offs[ok][s != 0].tolist(), s[s != 0].tolist(),
                                                   types[ok][s != 0].tolist()) if t == 2}
        self._files: dict[int, list] = {}
        try:
            self.units = []
            pos = 0
            while pos + 11 < len(info):
                unit = Unit(self, pos)
                self.units.append(unit)
                pos = unit.end
        except (IndexError, KeyError, struct.error, ValueError) as e:
            if isinstance(e, DwarfError):
                raise
            raise DwarfError(f"malformed DWARF: {e!r}") from None
        self._named = self._subprograms = None

    @classmethod
    def from_elf(cls, image: bytes) -> "Dwarf":
        return cls(Elf(bytes(image)))

    # --- strings and addresses -------------------------------------------------

    def _sec(self, name):
        if name not in self._strs:
            self._strs[name] = self.elf.section(name)
        return self._strs[name]

    def str_at(self, section, off) -> str:
        data = self._sec(section)
        if data is None or off >= len(data):
            raise DwarfError(f"string offset {off} outside {section}")
        end = data.find(b"\0", off)
        return data[off:end if end >= 0 else len(data)].decode("utf-8", "replace")

    def str_at_index(self, unit, index) -> str:
        offs = self._sec(".debug_str_offsets")
        pos = unit.str_base + 4 * index
        if offs is None or pos + 4 > len(offs):
            raise DwarfError(f"string index {index} outside .debug_str_offsets")
        return self.str_at(".debug_str", struct.unpack_from(self.e + "I", offs, pos)[0])

    def addr(self, unit, index) -> int:
        if self._addr is None:
            self._addr = self.elf.relocated(".debug_addr") or b""
        pos = unit.addr_base + index * unit.addr_size
        if pos + unit.addr_size > len(self._addr):
            raise DwarfError(f"address index {index} outside .debug_addr")
        return int.from_bytes(self._addr[pos:pos + unit.addr_size],
                              "little" if self.e == "<" else "big")

    # --- lookups ---------------------------------------------------------------

    def die(self, ref) -> DIE:
        """The DIE a ("ref", offset) attribute value (or an offset) points at."""
        off = ref[1] if isinstance(ref, tuple) else ref
        for unit in self.units:
            if unit.first <= off < unit.end:
                return unit.parse(off)
        raise DwarfError(f"DIE reference 0x{off:x} outside .debug_info")

    def top_level(self, tags=None):
        """The compile units' children (DIEs parsed, not their subtrees)."""
        for unit in self.units:
            for off, tag in unit.top:
                if tags is None or tag in tags:
                    yield unit.parse(off)

    def named(self, tag: str, name: str) -> list:
        """Top-level DIEs of ``tag`` (e.g. "structure_type") named ``name``."""
        if self._named is None:
            index: dict = {}
            wanted = {"structure_type", "union_type", "enumeration_type", "typedef",
                      "base_type"}
            for unit in self.units:
                for off, t in unit.top:
                    if t in wanted:
                        index.setdefault((t, unit.name_of(off)), []).append((unit, off))
            self._named = index
        return [unit.parse(off) for unit, off in self._named.get((tag, name), [])]

    def subprogram(self, name: str) -> DIE | None:
        """The defining subprogram DIE of function ``name`` (with low_pc)."""
        if self._subprograms is None:
            self._subprograms = {}
            for die in self.top_level({"subprogram"}):
                if AT_LOW_PC in die.attrs and die.name:
                    self._subprograms.setdefault(die.name, die)
        return self._subprograms.get(name)

    # --- source files ----------------------------------------------------------

    def decl_path(self, die: DIE) -> str:
        """The path of the file ``die`` was declared in ("" when unknown)."""
        index = die.attrs.get(AT_DECL_FILE)
        if index is None:
            return ""
        files = self.files(die.unit)
        if self.units and die.unit.version < 5:
            index -= 1
        return files[index] if 0 <= index < len(files) else ""

    def files(self, unit) -> list:
        """The line table's file names of ``unit``, joined with their directories."""
        if unit.offset not in self._files:
            try:
                self._files[unit.offset] = self._read_files(unit)
            except (IndexError, KeyError, struct.error) as e:
                raise DwarfError(f"malformed .debug_line: {e!r}") from None
        return self._files[unit.offset]

    def _read_files(self, unit) -> list:
        stmt = unit.die.attrs.get(AT_STMT_LIST)
        d = self.elf.section(".debug_line")
        if stmt is None or d is None:
            return []
        e = self.e
        version, = struct.unpack_from(e + "H", d, stmt + 4)
        pos = stmt + 6 + (2 if version >= 5 else 0)
        pos += 4  # header_length
        pos += 4 if version >= 4 else 3  # min_inst, max_ops, default_is_stmt, line_base
        line_range_pos = pos
        opcode_base = d[line_range_pos + 1]
        pos = line_range_pos + 2 + opcode_base - 1
        comp_dir = unit.die.attrs.get(AT_COMP_DIR, "")
        if version < 5:
            dirs = [comp_dir]
            while d[pos]:
                end = d.index(0, pos)
                dirs.append(_join(comp_dir, d[pos:end].decode("utf-8", "replace")))
                pos = end + 1
            pos += 1
            files = []
            while d[pos]:
                end = d.index(0, pos)
                name = d[pos:end].decode("utf-8", "replace")
                di, pos = _uleb(d, end + 1)
                _, pos = _uleb(d, pos)
                _, pos = _uleb(d, pos)
                files.append(_join(dirs[di] if di < len(dirs) else "", name))
            return files
        dirs, pos = self._entries(unit, d, pos)
        dirs = [_join(comp_dir, entry.get(1, "")) for entry in dirs]
        files, pos = self._entries(unit, d, pos)
        return [_join(dirs[f.get(2, 0)] if f.get(2, 0) < len(dirs) else "", f.get(1, ""))
                for f in files]

    def _entries(self, unit, d, pos):
        """DWARF 5 directory or file entries: [{DW_LNCT: value}]."""
        nformats = d[pos]
        pos += 1
        formats = []
        for _ in range(nformats):
            ct, pos = _uleb(d, pos)
            form, pos = _uleb(d, pos)
            formats.append((ct, form))
        count, pos = _uleb(d, pos)
        out = []
        saved = self.info
        for _ in range(count):
            entry = {}
            for ct, form in formats:
                if form in (0x1F, 0x0E, 0x17):
                    v, = struct.unpack_from(self.e + "I", d, pos)
                    pos += 4
                    entry[ct] = self.str_at(".debug_line_str" if form == 0x1F else ".debug_str",
                                            v) if form != 0x17 else v
                elif form == 0x08:
                    end = d.index(0, pos)
                    entry[ct] = d[pos:end].decode("utf-8", "replace")
                    pos = end + 1
                else:  # numbers and blocks: read them out of this section
                    self.info = d
                    try:
                        entry[ct], pos = unit._value(form, None, pos, d, self.e)
                    finally:
                        self.info = saved
            out.append(entry)
        return out, pos

    # --- locations -------------------------------------------------------------

    def locations(self, die: DIE) -> list | None:
        """DW_AT_location of a variable as [(low, high, expression bytes)]; low/high
        None for a location valid wherever the variable is in scope. None when absent."""
        loc = die.attrs.get(AT_LOCATION)
        if loc is None:
            return None
        if isinstance(loc, bytes):
            return [(None, None, loc)]
        unit = die.unit
        try:
            if isinstance(loc, tuple):  # loclistx
                lists = self._loclists()
                pos = unit.loclists_base + 4 * loc[1]
                off = unit.loclists_base + struct.unpack_from(self.e + "I", lists, pos)[0]
                return self._loclist5(unit, lists, off)
            if unit.version >= 5:
                return self._loclist5(unit, self._loclists(), loc)
            return self._loclist4(unit, loc)
        except (IndexError, struct.error) as e:
            raise DwarfError(f"malformed location list: {e!r}") from None

    def _loclists(self):
        if ".debug_loclists" not in self._strs:
            self._strs[".debug_loclists"] = self.elf.relocated(".debug_loclists") or b""
        return self._strs[".debug_loclists"]

    def _loclist5(self, unit, d, pos):
        out, base, a = [], unit.low_pc, unit.addr_size
        order = "little" if self.e == "<" else "big"
        for _ in range(100000):
            kind = d[pos]
            pos += 1
            if kind == 0:
                return out
            if kind == 1:
                i, pos = _uleb(d, pos)
                base = self.addr(unit, i)
                continue
            if kind == 6:
                base = int.from_bytes(d[pos:pos + a], order)
                pos += a
                continue
            if kind == 2:
                i, pos = _uleb(d, pos)
                j, pos = _uleb(d, pos)
                lo, hi = self.addr(unit, i), self.addr(unit, j)
            elif kind == 3:
                i, pos = _uleb(d, pos)
                n, pos = _uleb(d, pos)
                lo = self.addr(unit, i)
                hi = lo + n
            elif kind == 4:
                lo, pos = _uleb(d, pos)
                hi, pos = _uleb(d, pos)
                lo, hi = base + lo, base + hi
            elif kind == 5:
                lo = hi = None
            elif kind == 7:
                lo = int.from_bytes(d[pos:pos + a], order)
                hi = int.from_bytes(d[pos + a:pos + 2 * a], order)
                pos += 2 * a
            elif kind == 8:
                lo = int.from_bytes(d[pos:pos + a], order)
                n, pos = _uleb(d, pos + a)
                hi = lo + n
            else:
                raise DwarfError(f"unknown location list entry {kind}")
            n, pos = _uleb(d, pos)
            out.append((lo, hi, bytes(d[pos:pos + n])))
            pos += n
        raise DwarfError("location list without an end")

    def _loclist4(self, unit, pos):
        if ".debug_loc" not in self._strs:
            self._strs[".debug_loc"] = self.elf.relocated(".debug_loc") or b""
        d, a = self._strs[".debug_loc"], unit.addr_size
        order = "little" if self.e == "<" else "big"
        out, base, top = [], unit.low_pc, (1 << (8 * a)) - 1
        for _ in range(100000):
            lo = int.from_bytes(d[pos:pos + a], order)
            hi = int.from_bytes(d[pos + a:pos + 2 * a], order)
            pos += 2 * a
            if lo == 0 and hi == 0:
                return out
            if lo == top:
                base = hi
                continue
            n, = struct.unpack_from(self.e + "H", d, pos)
            out.append((base + lo, base + hi, bytes(d[pos + 2:pos + 2 + n])))
            pos += 2 + n
        raise DwarfError("location list without an end")


def _join(directory: str, name: str) -> str:
    if not directory or name.startswith("/"):
        return name
    return directory.rstrip("/") + "/" + name
