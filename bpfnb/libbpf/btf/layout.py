"""Layout of types in memory: resolve, size, flattened fields, bitfields, numpy dtypes.

Works on the type model only (``type``, the byte order ``_endian``), so it serves any
source of types.  Conventions (they are the DataFrame columns' too):

* ``char[N]`` -> ``'S{N}'``.  An array is a "char array" when its element, after
  stripping const/volatile/restrict/type_tag (but *not* typedefs), is a 1-byte INT with
  CHAR encoding or named ``char``/``signed char``/``unsigned char``.  So ``__u8 addr[6]``
  stays a numeric ``uint8`` array, while ``unsigned char buf[16]`` becomes a string.
* Anonymous struct/union members are inlined into their parent (their fields at their
  real offsets) unless a name would collide; then they become ``_anon0``, ``_anon1``, ...
* Bitfields are not representable in numpy: they are left out of ``dtype()`` and
  described by ``bitfields()`` (extracted in bulk by ``unpack_bitfields()``).
* Zero-size members (flexible arrays, empty structs) are omitted everywhere.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .types import _CHAR_NAMES, _MODIFIERS, _QUALIFIERS, BitField, BTFError


class _Field(NamedTuple):
    """A flattened struct entry (internal)."""
    name: str
    type_id: int
    byte_offset: int      # ordinary members
    bit_offset: int       # bitfields: absolute bit offset from the struct start
    bit_size: int         # 0 for ordinary members
    signed: bool


class Layout:
    """Sizes, fields and dtypes of types (mixin over a type source)."""

    def _init_layout(self):
        self._dtypes = {}
        self._layouts = {}
        self._sizes = {}

    def resolve(self, type_id) -> int:
        """Skip typedef/const/volatile/restrict/type_tag (not pointers)."""
        tid = self._check_id(type_id)
        for _ in range(256):
            t = self.type(tid)
            if t.kind not in _MODIFIERS:
                return tid
            tid = t.type_id
        raise BTFError(f"BTF type #{type_id}: modifier chain too long (loop?)")

    def _strip_quals(self, type_id):
        tid = type_id
        for _ in range(256):
            t = self.type(tid)
            if t.kind not in _QUALIFIERS:
                return tid
            tid = t.type_id
        raise BTFError(f"BTF type #{type_id}: qualifier chain too long (loop?)")

    def size(self, type_id) -> int:
        tid = self._check_id(type_id)
        s = self._sizes.get(tid)
        if s is not None:
            return s
        t = self.type(self.resolve(tid))
        k = t.kind
        if k in ("int", "enum", "enum64", "struct", "union", "float"):
            s = t.size
        elif k == "datasec":
            # a raw clang object says 0 until libbpf lays the section out: then the
            # variables say how far it reaches (as dtype() does)
            s = max([t.size] + [f.byte_offset + self.size(f.type_id)
                                for f in self._layout(t.id)])
        elif k == "ptr":
            s = 8
        elif k == "array":
            s = t.nelems * self.size(t.type_id)
        elif k == "var":
            s = self.size(t.type_id)
        elif k == "void":
            s = 0
        elif k == "fwd":
            raise TypeError(f"{self.c_name(tid)} is an incomplete type (forward "
                            "declaration only); its size is unknown")
        else:
            raise TypeError(f"BTF type #{tid} ({k}) has no size")
        self._sizes[tid] = s
        return s

    def _is_char_array(self, arr):
        e = self.type(self._strip_quals(arr.type_id))
        return (e.kind == "int" and e.size == 1 and e.encoding != "bool"
                and (e.encoding == "char" or e.name in _CHAR_NAMES))

    # ------------------------------------------------------------------ layout
    def _layout(self, tid):
        """Flattened fields of a struct/union/datasec (resolved id)."""
        lay = self._layouts.get(tid)
        if lay is not None:
            return lay
        t = self.type(tid)
        fields = []
        if t.kind == "datasec":
            for vt, off, _sz in t.vars:
                v = self.type(vt)
                if v.kind != "var":
                    continue
                try:
                    if self.size(v.type_id) == 0:
                        continue
                except TypeError:
                    continue
                fields.append(_Field(v.name, v.type_id, off, 0, 0, False))
            self._layouts[tid] = self._unique(tid, fields)
            return fields
        named = {m.name for m in t.members if m.name}
        taken = set()
        n_anon = 0
        for m in t.members:
            if m.bitfield_size:
                if not m.name:
                    continue          # unnamed padding bitfield: `int :3;`
                rt = self.type(self.resolve(m.type_id))
                signed = bool(rt.signed) if rt.kind in ("int", "enum", "enum64") else False
                fields.append(_Field(m.name, m.type_id, m.bit_offset // 8, m.bit_offset,
                                     m.bitfield_size, signed))
                taken.add(m.name)
                continue
            try:
                msize = self.size(m.type_id)
            except TypeError:
                continue              # fwd / func member: cannot be represented
            if msize == 0:
                continue              # flexible array, empty struct
            if not m.name:
                rid = self.resolve(m.type_id)
                rt = self.type(rid)
                if rt.kind not in ("struct", "union"):
                    continue
                sub = self._layout(rid)
                subnames = {f.name for f in sub}
                if subnames & (named | taken):
                    name = f"_anon{n_anon}"
                    n_anon += 1
                    while name in named or name in taken:
                        name = f"_anon{n_anon}"
                        n_anon += 1
                    fields.append(_Field(name, m.type_id, m.bit_offset // 8, 0, 0, False))
                    taken.add(name)
                else:
                    base = m.bit_offset // 8
                    for f in sub:
                        fields.append(f._replace(byte_offset=f.byte_offset + base,
                                                 bit_offset=f.bit_offset + m.bit_offset))
                    taken |= subnames
                continue
            fields.append(_Field(m.name, m.type_id, m.bit_offset // 8, 0, 0, False))
            taken.add(m.name)
        self._layouts[tid] = self._unique(tid, fields)
        return fields

    def _unique(self, tid, fields):
        """``fields``, checked for names used twice (numpy and Record cannot)."""
        seen = set()
        for f in fields:
            if f.name in seen:
                raise BTFError(f"BTF type #{tid} ({self.c_name(tid)}): two members named "
                               f"{f.name!r}")
            seen.add(f.name)
        return fields

    def fields(self, type_id) -> list:
        """The fields ``dtype()`` and ``decode()`` use for a struct/union, in order:
        (name, type_id, byte_offset, bit_size) with anonymous members inlined as
        there; bit_size is 0 except for bitfields. [] for other kinds."""
        tid = self.resolve(type_id)
        if self.type(tid).kind not in ("struct", "union"):
            return []
        return [(f.name, f.type_id, f.byte_offset, f.bit_size) for f in self._layout(tid)]

    def bitfields(self, type_id) -> list:
        """Bitfields of a struct/union (recursing into nested struct members),
        as BitField(dotted_name, byte_offset, bit_offset, bit_size, signed)."""
        tid = self.resolve(type_id)
        t = self.type(tid)
        if t.kind not in ("struct", "union", "datasec"):
            return []
        out = []
        self._collect_bitfields(tid, "", 0, out)
        return out

    def _collect_bitfields(self, tid, prefix, base_byte, out):
        for f in self._layout(tid):
            if f.bit_size:
                out.append(self._bitfield_info(prefix + f.name, f, base_byte))
            else:
                rid = self.resolve(f.type_id)
                if self.type(rid).kind in ("struct", "union"):
                    self._collect_bitfields(rid, prefix + f.name + ".",
                                            base_byte + f.byte_offset, out)

    def _bitfield_info(self, name, f, base_byte):
        try:
            unit = self.size(f.type_id)
        except TypeError:
            unit = 0
        bo, bs = f.bit_offset, f.bit_size
        if unit in (1, 2, 4, 8) and (bo % (unit * 8)) + bs <= unit * 8:
            soff = (bo // (unit * 8)) * unit
            ss = unit
        else:
            soff = bo // 8
            need = bo % 8 + bs
            ss = next((s for s in (1, 2, 4, 8) if need <= 8 * s), (need + 7) // 8)
        within = bo - soff * 8
        shift = within if self._endian == "<" else ss * 8 - within - bs
        bf = BitField(name, base_byte + soff, shift, bs, f.signed)
        bf.storage_size = ss
        bf.type_id = f.type_id
        return bf

    def unpack_bitfields(self, type_id, records) -> dict:
        """Vectorised bitfield extraction: ``records`` is a numpy array of
        ``dtype(type_id)`` (or any array whose rows are the raw records);
        returns {dotted_name: int64/uint64 array}."""
        bfs = self.bitfields(type_id)
        size = self.size(type_id)
        arr = np.ascontiguousarray(records)
        raw = arr.view(np.uint8).reshape(-1, size) if size else np.zeros((len(arr), 0), np.uint8)
        out = {}
        for bf in bfs:
            ss = bf.storage_size
            if ss > 8:
                vals = [self._read_bits(bytes(row), bf.byte_offset, bf) for row in raw]
                out[bf.name] = np.array(vals, dtype=np.int64 if bf.signed else np.uint64)
                continue
            chunk = raw[:, bf.byte_offset:bf.byte_offset + ss]
            if chunk.shape[1] < ss:
                pad = np.zeros((raw.shape[0], ss), np.uint8)
                pad[:, :chunk.shape[1]] = chunk
                chunk = pad
            st = np.ascontiguousarray(chunk).view(f"{self._endian}u{ss}")[:, 0].astype(np.uint64)
            v = (st >> np.uint64(bf.bit_offset)) & np.uint64((1 << bf.bit_size) - 1)
            if bf.signed:
                v = v.astype(np.int64)
                if bf.bit_size < 64:
                    sign = np.int64(1 << (bf.bit_size - 1))
                    v = (v ^ sign) - sign
            out[bf.name] = v
        return out

    def _read_bits(self, buf, base, bf):
        data = bytes(buf[base:base + bf.storage_size]).ljust(bf.storage_size, b"\0")
        v = int.from_bytes(data, "little" if self._endian == "<" else "big")
        v = (v >> bf.bit_offset) & ((1 << bf.bit_size) - 1)
        if bf.signed and v >> (bf.bit_size - 1):
            v -= 1 << bf.bit_size
        return v

    # ------------------------------------------------------------------ dtype
    def dtype(self, type_id) -> np.dtype:
        tid = self._check_id(type_id)
        dt = self._dtypes.get(tid)
        if dt is None:
            dt = self._make_dtype(tid)
            self._dtypes[tid] = dt
        return dt

    def _make_dtype(self, tid):
        rid = self.resolve(tid)
        if rid != tid:
            return self.dtype(rid)
        t = self.type(tid)
        k = t.kind
        e = self._endian
        if k == "int":
            if t.encoding == "bool" and t.size == 1:
                return np.dtype("?")
            if t.size in (1, 2, 4, 8):
                return np.dtype(f"{e}{'i' if t.signed else 'u'}{t.size}")
            return np.dtype(f"V{t.size}")
        if k in ("enum", "enum64"):
            if t.size in (1, 2, 4, 8):
                return np.dtype(f"{e}{'i' if t.signed else 'u'}{t.size}")
            return np.dtype(f"V{t.size}")
        if k == "ptr":
            return np.dtype(f"{e}u8")
        if k == "float":
            if t.size in (2, 4, 8):
                return np.dtype(f"{e}f{t.size}")
            return np.dtype(f"V{t.size}")
        if k == "array":
            if self._is_char_array(t):
                return np.dtype(f"S{t.nelems}") if t.nelems else np.dtype("V0")
            ed = self.dtype(t.type_id)
            if ed.itemsize == 0:                 # char[6][0], struct empty[4]: no bytes
                return np.dtype("V0")
            if ed.subdtype is not None:          # int[2][3] -> ('<i4', (2, 3))
                base, shape = ed.subdtype
                return np.dtype((base, (t.nelems,) + shape))
            return np.dtype((ed, (t.nelems,)))
        if k in ("struct", "union", "datasec"):
            names, formats, offsets = [], [], []
            end = 0
            for f in self._layout(tid):
                if f.bit_size:
                    continue
                dt = self.dtype(f.type_id)
                names.append(f.name)
                formats.append(dt)
                offsets.append(f.byte_offset)
                end = max(end, f.byte_offset + dt.itemsize)
            size = t.size if k != "datasec" else max(t.size, end)
            if end > size:
                raise BTFError(f"{self.c_name(tid)}: members extend past its size "
                                 f"({end} > {size})")
            return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                             "itemsize": size})
        if k == "var":
            return self.dtype(t.type_id)
        if k == "void":
            raise TypeError("void has no dtype")
        if k == "fwd":
            raise TypeError(f"{self.c_name(tid)} is an incomplete type (forward "
                            "declaration only); no dtype")
        raise TypeError(f"BTF type #{tid} ({k} {t.name}) has no dtype")
