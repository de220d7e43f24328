"""DWARF types as split BTF over the object's own BTF: one type interface, two sources.

    types = DwarfTypes(Dwarf.from_elf(image), obj.btf)
    tid = types.find("struct event")      # converts the DIE (and what it reaches)
    types.btf.dtype(tid); types.btf.decode(tid, raw); types.btf.c_name(tid)

``types.btf`` is ``BTF(raw, base=obj.btf)``: ids and string offsets continue after the
base's, so every id of the object's BTF means the same there and layout, dtypes and
decoding never ask where a type came from. Only the types asked for are converted,
with what they reach; a named struct or union the base BTF already has is reused, and
one behind a pointer that the base lacks becomes a forward declaration (a pointer
decodes as an address: its pointee's layout is never needed).
"""

from __future__ import annotations

import struct

from ..libbpf.btf import BTF
from .die import (AT_BIT_OFFSET, AT_BIT_SIZE, AT_BYTE_SIZE, AT_CONST_VALUE, AT_COUNT,
                  AT_DATA_BIT_OFFSET, AT_DECLARATION, AT_ENCODING, AT_MEMBER_LOCATION,
                  AT_TYPE, AT_UPPER_BOUND, DIE, DwarfError, _uleb)
from .info import Dwarf

# BTF kinds (include/uapi/linux/btf.h)
_INT, _PTR, _ARRAY, _STRUCT, _UNION, _ENUM, _FWD, _TYPEDEF = 1, 2, 3, 4, 5, 6, 7, 8
_VOLATILE, _CONST, _RESTRICT, _FUNC_PROTO, _FLOAT, _ENUM64 = 9, 10, 11, 13, 16, 19
_QUALIFIERS = {"const_type": _CONST, "volatile_type": _VOLATILE,
               "restrict_type": _RESTRICT}
_COMPOSITE = {"structure_type": ("struct", _STRUCT), "union_type": ("union", _UNION)}
# DW_ATE_*
_ATE_BOOLEAN, _ATE_FLOAT, _ATE_SIGNED, _ATE_SIGNED_CHAR = 0x02, 0x04, 0x05, 0x06
_TAGS = {"struct": ("structure_type",), "union": ("union_type",),
         "enum": ("enumeration_type",)}


class DwarfTypes:
    """Converts DWARF type DIEs to ids of a split BTF over ``base`` (see module doc)."""

    def __init__(self, dwarf: Dwarf, base: BTF | None):
        self.dwarf, self.base = dwarf, base
        self.e = dwarf.e
        self._id0 = len(base) if base is not None else 1
        # string offsets continue after the base's own strings: libbpf adds some at
        # open (e.g. "dummy_ksym" for kfunc externs), so not the ELF's .BTF length
        self._str0 = base._str_end if base is not None else 0
        self._records: list = []
        self._strings = bytearray(b"\0")
        self._string_offs = {"": 0}
        self._memo: dict = {}
        self._btf = None
        self._index_type = None
        self._open: set = set()  # ids being converted: met again, not behind a pointer,
        # the type would contain itself (only bad DWARF does that)

    # --- the result ------------------------------------------------------------

    @property
    def btf(self) -> BTF:
        """The split BTF of every type converted so far (rebuilt after new ones)."""
        if self._btf is None or self._btf_types != len(self._records):
            if any(r is None for r in self._records):
                raise DwarfError("a type is still being converted")
            body = b"".join(self._records)
            head = struct.pack(self.e + "HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body),
                               len(body), len(self._strings))
            self._btf = BTF(head + body + bytes(self._strings), base=self.base)
            self._btf_types = len(self._records)
        return self._btf

    def find(self, name: str) -> int:
        """Id of a type named like C ("struct event", "union u", "enum e", a typedef
        or base type name) defined at the top level of the DWARF. KeyError if none."""
        words = " ".join(name.split()).split(" ", 1)
        if len(words) == 2 and words[0] in _TAGS:
            tags, bare = _TAGS[words[0]], words[1]
        else:
            tags, bare = ("typedef", "base_type", "structure_type", "union_type",
                          "enumeration_type"), " ".join(words)
        for tag in tags:
            dies = [d for d in self.dwarf.named(tag, bare) if not d.get(AT_DECLARATION)]
            if dies:
                return self.type_id(dies[0])
        raise KeyError(f"no type {name!r} in the object's DWARF")

    # --- conversion ------------------------------------------------------------

    def type_id(self, die: DIE | None, shallow: bool = False) -> int:
        """The split BTF id of a type DIE (0 for void). ``shallow``: behind a pointer,
        where a named struct or union may stay a forward declaration."""
        if die is None:
            return 0
        tid = self._memo.get(die.offset)
        if tid is not None:
            if not shallow and tid in self._open:
                raise DwarfError(f"DWARF type at 0x{die.offset:x} contains itself")
            return tid
        tag = die.tag
        if shallow and tag in _COMPOSITE and die.name:
            kind = _COMPOSITE[tag][0]
            reused = self._from_base(kind, die)
            return reused if reused is not None else self._fwd(kind, die.name)
        if die.get(AT_DECLARATION) and tag in _COMPOSITE:
            return self._fwd(_COMPOSITE[tag][0], die.name)
        mark = len(self._records)
        try:
            return self._convert(die, shallow)
        except (IndexError, KeyError, TypeError, struct.error, DwarfError, RecursionError) as e:
            # forget the half-converted types: later conversions start clean
            del self._records[mark:]
            last = self._id0 + mark
            self._memo = {k: v for k, v in self._memo.items() if v < last}
            self._open = {t for t in self._open if t < last}
            if self._index_type is not None and self._index_type >= last:
                self._index_type = None
            if isinstance(e, DwarfError):
                raise
            raise DwarfError(f"cannot convert DWARF type at 0x{die.offset:x}: {e!r}") from None

    def _target(self, die: DIE):
        ref = die.get(AT_TYPE)
        return self.dwarf.die(ref) if ref is not None else None

    def _convert(self, die: DIE, shallow: bool) -> int:
        tag = die.tag
        if tag == "base_type":
            return self._base_type(die)
        if tag in _QUALIFIERS:
            tid = self._reserve(die)
            return self._set(tid, _QUALIFIERS[tag], "", 0,
                             self.type_id(self._target(die), shallow))
        if tag == "atomic_type":
            return self.type_id(self._target(die), shallow)
        if tag == "pointer_type":
            tid = self._reserve(die)
            return self._set(tid, _PTR, "", 0, self.type_id(self._target(die), True))
        if tag == "typedef":
            reused = self._from_base("typedef", die)
            if reused is not None:
                self._memo[die.offset] = reused
                return reused
            tid = self._reserve(die)
            return self._set(tid, _TYPEDEF, die.name, 0,
                             self.type_id(self._target(die), shallow))
        if tag in _COMPOSITE:
            return self._composite(die)
        if tag == "enumeration_type":
            return self._enum(die)
        if tag == "array_type":
            return self._array(die, shallow)
        if tag == "subroutine_type":
            tid = self._reserve(die)
            params = []
            for c in die.children:
                if c.tag == "formal_parameter":
                    params.append((0, self.type_id(self._target(c), True)))
                elif c.tag == "unspecified_parameters":
                    params.append((0, 0))
            extra = b"".join(struct.pack(self.e + "II", *p) for p in params)
            return self._set(tid, _FUNC_PROTO, "", len(params),
                             self.type_id(self._target(die), True), extra)
        if tag == "unspecified_type":
            return 0
        raise DwarfError(f"DWARF {tag} at 0x{die.offset:x} is not a type")

    def _base_type(self, die: DIE) -> int:
        size, enc = die.get(AT_BYTE_SIZE, 0), die.get(AT_ENCODING, 0)
        kind = "float" if enc == _ATE_FLOAT else "int"
        reused = self._from_base(kind, die)
        if reused is not None:
            self._memo[die.offset] = reused
            return reused
        tid = self._reserve(die)
        if enc == _ATE_FLOAT:
            return self._set(tid, _FLOAT, die.name, 0, size)
        bits = 1 if enc in (_ATE_SIGNED, _ATE_SIGNED_CHAR) else 4 if enc == _ATE_BOOLEAN else 0
        return self._set(tid, _INT, die.name, 0, size,
                         struct.pack(self.e + "I", (bits << 24) | (size * 8)))

    def _composite(self, die: DIE) -> int:
        kind, code = _COMPOSITE[die.tag]
        if die.name:
            reused = self._from_base(kind, die)
            if reused is not None:
                self._memo[die.offset] = reused
                return reused
        tid = self._reserve(die)
        members, bitfields = [], False
        for c in die.children:
            if c.tag != "member":
                continue
            mtype = self.type_id(self._target(c))
            bit_size = c.get(AT_BIT_SIZE, 0)
            if bit_size:
                bitfields = True
                bit_offset = self._bit_offset(c, bit_size)
            else:
                bit_offset = self._byte_offset(c) * 8
            members.append((c.name, mtype, bit_offset, bit_size))
        extra = b"".join(
            struct.pack(self.e + "III", self._str(name), mtype,
                        (bit_size << 24 | off) if bitfields else off)
            for name, mtype, off, bit_size in members)
        return self._set(tid, code, die.name, len(members), die.get(AT_BYTE_SIZE, 0),
                         extra, kind_flag=bitfields)

    @staticmethod
    def _byte_offset(member: DIE) -> int:
        loc = member.get(AT_MEMBER_LOCATION, 0)
        if isinstance(loc, bytes):  # DWARF 2 style: DW_OP_plus_uconst N
            if not loc or loc[0] != 0x23:
                raise DwarfError(f"member {member.name!r}: unsupported location expression")
            return _uleb(loc, 1)[0]
        return loc

    def _bit_offset(self, member: DIE, bit_size: int) -> int:
        if AT_DATA_BIT_OFFSET in member.attrs:
            return member.attrs[AT_DATA_BIT_OFFSET]
        # DWARF 2/3: the bit offset counts from the storage unit's most significant bit
        unit = member.get(AT_BYTE_SIZE)
        if unit is None:
            unit = self.base_size(self._target(member))
        from_msb = member.get(AT_BIT_OFFSET, 0)
        start = self._byte_offset(member) * 8
        if self.e == ">":
            return start + from_msb
        return start + unit * 8 - from_msb - bit_size

    def base_size(self, die: DIE | None) -> int:
        """Byte size of a type DIE (through typedefs and qualifiers)."""
        for _ in range(64):
            if die is None:
                return 0
            if AT_BYTE_SIZE in die.attrs:
                return die.attrs[AT_BYTE_SIZE]
            if die.tag == "pointer_type":
                return self.dwarf.units[0].addr_size
            if die.tag == "array_type":
                n = 1
                for c in die.children:
                    if c.tag == "subrange_type":
                        n *= _count(c)
                return n * self.base_size(self._target(die))
            die = self._target(die)
        raise DwarfError("type chain too long")

    def _enum(self, die: DIE) -> int:
        if die.get(AT_DECLARATION):
            return self._fwd("struct", die.name)
        reused = self._from_base("enum", die) if die.name else None
        if reused is not None:
            self._memo[die.offset] = reused
            return reused
        tid = self._reserve(die)
        size = die.get(AT_BYTE_SIZE, 4)
        values = [(c.name, c.get(AT_CONST_VALUE, 0)) for c in die.children
                  if c.tag == "enumerator"]
        under = self._target(die)
        signed = any(v < 0 for _, v in values) or (
            under is not None and self._signed(under))
        wide = size > 4 or any(not -(1 << 31) <= v < (1 << 32) for _, v in values)
        if wide:
            extra = b"".join(struct.pack(self.e + "III", self._str(n), v & 0xFFFFFFFF,
                                         (v >> 32) & 0xFFFFFFFF) for n, v in values)
            return self._set(tid, _ENUM64, die.name, len(values), size, extra,
                             kind_flag=signed)
        extra = b"".join(struct.pack(self.e + "II", self._str(n), v & 0xFFFFFFFF)
                         for n, v in values)
        return self._set(tid, _ENUM, die.name, len(values), size, extra, kind_flag=signed)

    def _signed(self, die: DIE) -> bool:
        for _ in range(64):
            if die is None:
                return False
            if die.tag == "base_type":
                return die.get(AT_ENCODING) in (_ATE_SIGNED, _ATE_SIGNED_CHAR)
            die = self._target(die)
        return False

    def _array(self, die: DIE, shallow: bool) -> int:
        counts = [_count(c) for c in die.children if c.tag == "subrange_type"] or [0]
        tid = self._reserve(die)
        inner = self.type_id(self._target(die), shallow)
        index = self._index()
        for n in reversed(counts[1:]):
            inner = self._set(self._reserve(None), _ARRAY, "", 0, 0,
                              struct.pack(self.e + "III", inner, index, n))
        return self._set(tid, _ARRAY, "", 0, 0,
                         struct.pack(self.e + "III", inner, index, counts[0]))

    def _index(self) -> int:
        if self._index_type is None:
            tid = self._reserve(None)
            self._index_type = self._set(tid, _INT, "__ARRAY_SIZE_TYPE__", 0, 4,
                                         struct.pack(self.e + "I", 32))
        return self._index_type

    # --- reuse and encoding ----------------------------------------------------

    def _from_base(self, kind: str, die: DIE) -> int | None:
        """The base BTF's type of that kind and name, when it has the same size."""
        base = self.base
        if base is None or not die.name:
            return None
        try:
            tid = base.find(die.name, kind)
        except (KeyError, ValueError):
            return None
        t = base.type(tid)
        if t.kind != kind and not (kind == "enum" and t.kind == "enum64"):
            return None
        size = die.get(AT_BYTE_SIZE)
        try:
            if size is not None and base.size(tid) != size:
                return None
        except TypeError:
            return None
        return tid

    def _fwd(self, kind: str, name: str) -> int:
        key = ("fwd", kind, name)
        tid = self._memo.get(key)
        if tid is None:
            tid = self._set(self._reserve(None), _FWD, name, 0, 0,
                            kind_flag=kind == "union")
            self._memo[key] = tid
        return tid

    def _reserve(self, die: DIE | None) -> int:
        self._records.append(None)
        tid = self._id0 + len(self._records) - 1
        if die is not None:
            self._memo[die.offset] = tid
        self._open.add(tid)
        return tid

    def _set(self, tid, kind, name, vlen, size_or_type, extra=b"", kind_flag=False) -> int:
        info = (kind << 24) | (vlen & 0xFFFF) | (1 << 31 if kind_flag else 0)
        self._records[tid - self._id0] = struct.pack(
            self.e + "III", self._str(name), info, size_or_type) + extra
        self._open.discard(tid)
        return tid

    def _str(self, s: str) -> int:
        if not s:
            return 0
        off = self._string_offs.get(s)
        if off is None:
            off = len(self._strings)
            self._strings += s.encode() + b"\0"
            self._string_offs[s] = off
        return self._str0 + off


def _count(subrange: DIE) -> int:
    if AT_COUNT in subrange.attrs:
        n = subrange.attrs[AT_COUNT]
    elif AT_UPPER_BOUND in subrange.attrs:
        n = subrange.attrs[AT_UPPER_BOUND] + 1
    else:
        return 0  # flexible array
    return n if isinstance(n, int) and n >= 0 else 0
