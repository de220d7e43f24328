"""The BTF type model: Type, Member, BitField, EnumValue and the kind names.

Everything above parsing (layout, codec, C declarations) sees types only through this
model (``btf.type(tid)``, ``resolve``, the byte order), never through raw BTF words, so
another source of types can stand where the .BTF parser stands.
"""

from __future__ import annotations

import difflib
from collections import namedtuple
from typing import NamedTuple

KINDS = (
    "unkn", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef",
    "volatile", "const", "restrict", "func", "func_proto", "var", "datasec",
    "float", "decl_tag", "type_tag", "enum64",
)
_KIND_ID = {k: i for i, k in enumerate(KINDS)}
(K_UNKN, K_INT, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_FWD, K_TYPEDEF,
 K_VOLATILE, K_CONST, K_RESTRICT, K_FUNC, K_FUNC_PROTO, K_VAR, K_DATASEC,
 K_FLOAT, K_DECL_TAG, K_TYPE_TAG, K_ENUM64) = range(20)

# words (u32) following the 12-byte btf_type in raw BTF: fixed part, and per vlen item
_EXTRA = (0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0)
_PER_VLEN = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)

_MODIFIERS = frozenset({"typedef", "const", "volatile", "restrict", "type_tag"})
_QUALIFIERS = frozenset({"const", "volatile", "restrict", "type_tag"})
_CHAR_NAMES = frozenset({"char", "signed char", "unsigned char"})
_LINKAGE = {0: "static", 1: "global", 2: "extern"}


class BTFError(ValueError):
    """Malformed BTF: the message names the type id and what is wrong with it."""


Member = namedtuple("Member", "name type_id bit_offset bitfield_size")
Member.__doc__ = """A struct/union member.

bit_offset is from the start of the struct; bitfield_size is 0 for ordinary members.
(For structs without kind_flag, bitfields encoded in the INT type are normalised
into bit_offset/bitfield_size too.)"""


class _BitFieldBase(NamedTuple):
    name: str            # dotted path, e.g. "flags.dirty"
    byte_offset: int     # offset of the storage unit from the start of the outer type
    bit_offset: int      # right shift to apply to the storage unit (read with the BTF's endianness)
    bit_size: int
    signed: bool


class BitField(_BitFieldBase):
    """A bitfield: read ``storage_size`` bytes at ``byte_offset`` as an unsigned
    integer (BTF endianness), shift right by ``bit_offset``, mask ``bit_size`` bits,
    sign-extend if ``signed``.  ``type_id`` is the member's declared type."""

    storage_size: int
    type_id: int


class Type:
    """One BTF type.  Kind-specific attributes are None when they do not apply."""

    __slots__ = ("id", "kind", "name", "size", "type_id", "members", "nelems",
                 "index_type", "values", "encoding", "bits", "bit_offset", "signed",
                 "vars", "linkage", "params", "kind_flag", "component_idx", "fwd_kind")

    def __init__(self, id, kind, name="", **kw):
        self.id = id
        self.kind = kind
        self.name = name
        for s in self.__slots__[3:]:
            setattr(self, s, kw.pop(s, None))
        if kw:
            raise TypeError(f"unknown Type attributes: {sorted(kw)}")

    def __repr__(self):
        parts = [f"id={self.id}", f"kind={self.kind!r}"]
        if self.name:
            parts.append(f"name={self.name!r}")
        for s in ("size", "type_id", "nelems", "encoding", "bits", "linkage"):
            v = getattr(self, s)
            if v not in (None, ""):
                parts.append(f"{s}={v!r}")
        if self.members is not None:
            parts.append(f"members={len(self.members)}")
        if self.values is not None:
            parts.append(f"values={len(self.values)}")
        if self.vars is not None:
            parts.append(f"vars={len(self.vars)}")
        return "Type(" + ", ".join(parts) + ")"


class EnumValue(str):
    """An enumerator: compares and hashes as its name, carries ``.value``."""

    __slots__ = ("value",)

    def __new__(cls, name, value):
        self = str.__new__(cls, name)
        self.value = value
        return self

    def __int__(self):
        return self.value

    def __getnewargs__(self):
        return (str(self), self.value)

    def __reduce__(self):
        return (EnumValue, (str(self), self.value))


def _suggest(name, candidates, n=5):
    """Near misses of ``name`` (for "did you mean" in lookups and encoders)."""
    near = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    if len(near) < n:
        low = name.lower()
        for c in candidates:
            if low in c.lower() and c not in near:
                near.append(c)
                if len(near) >= n:
                    break
    return near
