"""DWARF units and their DIEs: forms, abbreviations, a fast scan, parsing on demand.

Made for speed on BPF objects: a cell that reads a task_struct carries ~28,000 DIEs
(the kernel types it reaches), and a load must not pay for parsing them. One pass
over .debug_info skips each DIE by a size plan made from its abbreviation (no
attribute is decoded) and keeps only the offsets of the compile unit's children;
attributes and subtrees are parsed on demand.
"""

from __future__ import annotations

import struct

# DW_TAG_*
TAG = {0x01: "array_type", 0x04: "enumeration_type", 0x05: "formal_parameter",
       0x0B: "lexical_block", 0x0D: "member", 0x0F: "pointer_type", 0x11: "compile_unit",
       0x13: "structure_type", 0x15: "subroutine_type", 0x16: "typedef",
       0x17: "union_type", 0x18: "unspecified_parameters", 0x1D: "inlined_subroutine",
       0x21: "subrange_type", 0x24: "base_type", 0x26: "const_type", 0x28: "enumerator",
       0x2E: "subprogram", 0x34: "variable", 0x35: "volatile_type",
       0x37: "restrict_type", 0x3B: "unspecified_type", 0x47: "atomic_type"}
# DW_AT_* the package reads
AT_NAME, AT_BYTE_SIZE, AT_BIT_OFFSET, AT_BIT_SIZE, AT_LOCATION = 0x03, 0x0B, 0x0C, 0x0D, 0x02
AT_LOW_PC, AT_HIGH_PC, AT_CONST_VALUE, AT_UPPER_BOUND = 0x11, 0x12, 0x1C, 0x2F
AT_ABSTRACT_ORIGIN, AT_COUNT, AT_MEMBER_LOCATION, AT_DECL_FILE = 0x31, 0x37, 0x38, 0x3A
AT_DECLARATION, AT_ENCODING, AT_TYPE = 0x3C, 0x3E, 0x49
AT_DATA_BIT_OFFSET, AT_STR_OFFSETS_BASE, AT_ADDR_BASE = 0x6B, 0x72, 0x73
AT_LOCLISTS_BASE, AT_STMT_LIST, AT_COMP_DIR = 0x8C, 0x10, 0x1B

# DW_FORM_* of a fixed size (address and offset sizes filled in per unit)
_FIXED = {0x0B: 1, 0x11: 1, 0x0C: 1, 0x25: 1, 0x29: 1, 0x05: 2, 0x12: 2, 0x26: 2,
          0x2A: 2, 0x27: 3, 0x2B: 3, 0x06: 4, 0x13: 4, 0x28: 4, 0x2C: 4, 0x1C: 4,
          0x07: 8, 0x14: 8, 0x20: 8, 0x1E: 16, 0x19: 0, 0x21: 0}
_OFFSET_FORMS = (0x0E, 0x1F, 0x17, 0x10, 0x1D)  # strp, line_strp, sec_offset, ref_addr, strp_sup
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


# --- units ---------------------------------------------------------------------------

class Unit:
    """One compile unit: header, abbreviations, its top-level DIE offsets."""

    def __init__(self, dwarf, offset: int):
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
        self._top = None

    @property
    def top(self) -> list:
        """[(offset, tag)] of the unit's children (one scan of the unit, on first use)."""
        if self._top is None:
            self._top = self._scan()
        return self._top

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
        # per abbreviation code: tag, fixed size (or -1: steps), steps, has children
        tags = [None] * top_code
        sizes = [-1] * top_code
        steps = [None] * top_code
        kids = [False] * top_code
        for code, (tag, children, _, plan) in table.items():
            tags[code] = tag
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
        return [(off, tags[code]) for off, code in top]

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
