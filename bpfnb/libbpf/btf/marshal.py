"""Writing BTF: a list of Type objects back into raw .BTF bytes (header, types, strings).

    raw = marshal(list(btf.types()))                 # a base BTF
    raw = marshal(split_types, base=vmlinux)         # split BTF over vmlinux
    BTF(raw, base=vmlinux)                           # the same types again

Types are written from the model alone, so types from any source can be marshalled.
Structs with bitfields are written with kind_flag set (bitfield size in each member's
offset word), which describes the same members as the old INT-encoded form.
"""

from __future__ import annotations

import struct as _struct

from .parse import BTF_MAGIC
from .types import _KIND_ID, _LINKAGE

_LINKAGE_ID = {v: k for k, v in _LINKAGE.items()}
_U32 = 0xFFFFFFFF


class _Strings:
    """A string section under construction: each name once, offsets after the base's."""

    def __init__(self, base):
        self.first = (base._str_base + base._str_len) if base is not None else 0
        # offset 0 is "" in every BTF: a base table starts with it, a split one has
        # the base's
        self.blob = bytearray() if base is not None else bytearray(b"\0")
        self.offsets = {"": 0}

    def add(self, name):
        off = self.offsets.get(name)
        if off is None:
            off = self.first + len(self.blob)
            self.blob += name.encode("utf-8") + b"\0"
            self.offsets[name] = off
        return off


def _linkage(t):
    lk = t.linkage
    return _LINKAGE_ID[lk] if lk in _LINKAGE_ID else int(lk)


def _type_words(t, strs):
    """(kind_flag, vlen, size_or_type, [extra words]) of one type."""
    k = t.kind
    if k == "int":
        enc = {"signed": 1, "char": 2, "bool": 4}.get(t.encoding, 0)
        if t.signed:
            enc |= 1
        return 0, 0, t.size, [enc << 24 | (t.bit_offset or 0) << 16 | t.bits]
    if k in ("ptr", "typedef", "const", "volatile", "restrict", "type_tag"):
        return 0, 0, t.type_id, []
    if k == "array":
        return 0, 0, 0, [t.type_id, t.index_type, t.nelems]
    if k in ("struct", "union"):
        bitfields = any(m.bitfield_size for m in t.members)
        kflag = 1 if bitfields else (t.kind_flag or 0)
        words = []
        for m in t.members:
            if kflag:
                if m.bit_offset >= 1 << 24 or m.bitfield_size >= 1 << 8:
                    raise ValueError(f"BTF type #{t.id} ({k} {t.name}): member "
                                     f"{m.name!r} offset or bitfield size too large")
                off = m.bitfield_size << 24 | m.bit_offset
            else:
                off = m.bit_offset
            words += [strs.add(m.name), m.type_id, off]
        return kflag, len(t.members), t.size, words
    if k == "enum":
        words = []
        for nm, val in t.values:
            words += [strs.add(nm), val & _U32]
        return int(bool(t.signed)), len(t.values), t.size, words
    if k == "enum64":
        words = []
        for nm, val in t.values:
            val &= (1 << 64) - 1
            words += [strs.add(nm), val & _U32, val >> 32]
        return int(bool(t.signed)), len(t.values), t.size, words
    if k == "fwd":
        return int(t.fwd_kind == "union"), 0, 0, []
    if k == "func":
        return 0, _linkage(t), t.type_id, []
    if k == "func_proto":
        words = []
        for pname, ptid in t.params:
            words += [strs.add(pname), ptid]
        return 0, len(t.params), t.type_id, words
    if k == "var":
        return 0, 0, t.type_id, [_linkage(t)]
    if k == "datasec":
        words = []
        for vt, off, sz in t.vars:
            words += [vt, off, sz]
        return 0, len(t.vars), t.size, words
    if k == "float":
        return 0, 0, t.size, []
    if k == "decl_tag":
        return t.kind_flag or 0, 0, t.type_id, [t.component_idx & _U32]
    raise ValueError(f"BTF type #{t.id}: cannot marshal kind {k!r}")


def marshal(types, base=None, byteorder=None) -> bytes:
    """Raw BTF holding ``types`` (Type objects in id order: ids 1, 2, ... or, over
    ``base``, len(base), len(base) + 1, ...; a leading void is skipped).  With
    ``base`` the result is split BTF: ids and string offsets continue the base's.
    ``byteorder`` is "<" or ">" (default: the base's, else little-endian)."""
    e = byteorder or (base._endian if base is not None else "<")
    if e not in ("<", ">"):
        raise ValueError(f"byteorder must be '<' or '>', not {byteorder!r}")
    if base is not None and base._endian != e:
        raise ValueError("split BTF must have its base's byte order")
    strs = _Strings(base)
    words = []
    want = len(base) if base is not None else 1
    for t in types:
        if t.id == 0 and t.kind == "void":
            continue
        if t.id != want:
            raise ValueError(f"marshal: types must be in id order from {want}: "
                             f"got #{t.id} ({t.kind} {t.name}) where #{want} belongs")
        want += 1
        kflag, vlen, size_or_type, extra = _type_words(t, strs)
        if vlen > 0xFFFF:
            raise ValueError(f"BTF type #{t.id} ({t.kind} {t.name}): {vlen} items, "
                             "more than BTF can hold (65535)")
        words += [strs.add(t.name or ""), kflag << 31 | _KIND_ID[t.kind] << 24 | vlen,
                  size_or_type & _U32]
        words += extra
    try:
        type_sec = _struct.pack(f"{e}{len(words)}I", *words)
    except _struct.error as ex:
        raise ValueError(f"marshal: a value does not fit a 32-bit BTF word ({ex})") from None
    str_sec = bytes(strs.blob)
    hdr = _struct.pack(f"{e}HBBIIIII", BTF_MAGIC, 1, 0, 24, 0, len(type_sec),
                       len(type_sec), len(str_sec))
    return hdr + type_sec + str_sec
