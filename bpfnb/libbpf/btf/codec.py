"""Values of types: decode bytes into Python objects (Record for structs), encode back.

Works on the type model and layout only; ``decode``/``encode`` handle bitfields, enums
(EnumValue), char arrays (str) and unions (fields sharing storage must agree).
"""

from __future__ import annotations

import operator
import struct as _struct
from collections.abc import Mapping

import numpy as np

from .._check import RangeError, int_type
from .record import Record, _Schema
from .types import EnumValue, _suggest

_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLOAT_CODES = {2: "e", 4: "f", 8: "d"}


class Codec:
    """decode/encode (mixin over a type source with Layout)."""

    def _init_codec(self):
        self._decoders = {}
        self._encoders = {}

    def decode(self, type_id, buf, offset=0):
        """Decode the value of ``type_id`` at ``buf[offset:]`` into Python objects."""
        tid = self._check_id(type_id)
        mv = _as_bytes_view(buf)
        size = self.size(tid)
        if offset < 0 or offset + size > len(mv):
            raise ValueError(f"decode {self.c_name(tid)}: need {size} bytes at offset "
                             f"{offset}, buffer has {len(mv)}")
        return self._decoder(tid)(mv, offset)

    def _decoder(self, tid):
        d = self._decoders.get(tid)
        if d is None:
            d = self._make_decoder(tid)
            self._decoders[tid] = d
        return d

    def _make_decoder(self, tid):
        rid = self.resolve(tid)
        if rid != tid:
            return self._decoder(rid)
        t = self.type(tid)
        k = t.kind
        e = self._endian
        if k == "int":
            if t.size in _INT_CODES:
                st = _struct.Struct(e + (_INT_CODES[t.size] if t.signed
                                         else _INT_CODES[t.size].upper()))
                if t.encoding == "bool":
                    return lambda b, o, u=st.unpack_from: bool(u(b, o)[0])
                return lambda b, o, u=st.unpack_from: u(b, o)[0]
            n, signed = t.size, bool(t.signed)
            order = "little" if e == "<" else "big"
            return lambda b, o: int.from_bytes(b[o:o + n], order, signed=signed)
        if k in ("enum", "enum64"):
            table = {}
            for nm, val in t.values:
                table.setdefault(val, EnumValue(nm, val))
            if t.size in _INT_CODES:
                code = _INT_CODES[t.size]
                st = _struct.Struct(e + (code if t.signed else code.upper()))

                def dec_enum(b, o, u=st.unpack_from, g=table.get):
                    v = u(b, o)[0]
                    return g(v, v)
                return dec_enum
            n, signed = t.size, bool(t.signed)
            order = "little" if e == "<" else "big"
            return lambda b, o: (lambda v: table.get(v, v))(
                int.from_bytes(b[o:o + n], order, signed=signed))
        if k == "ptr":
            u = _struct.Struct(e + "Q").unpack_from
            return lambda b, o: u(b, o)[0]
        if k == "float":
            if t.size in _FLOAT_CODES:
                u = _struct.Struct(e + _FLOAT_CODES[t.size]).unpack_from
                return lambda b, o: u(b, o)[0]
            n = t.size
            return lambda b, o: bytes(b[o:o + n])
        if k == "array":
            n = t.nelems
            if self._is_char_array(t):
                def dec_str(b, o):
                    raw = bytes(b[o:o + n])
                    i = raw.find(b"\0")
                    if i >= 0:
                        raw = raw[:i]
                    return raw.decode("utf-8", "replace")
                return dec_str
            et = self.type(self.resolve(t.type_id))
            esz = self.size(t.type_id)
            if et.kind in ("int", "float", "ptr") and esz in (1, 2, 4, 8) and n \
                    and not (et.kind == "int" and et.encoding == "bool"):
                if et.kind == "int":
                    c = _INT_CODES[esz] if et.signed else _INT_CODES[esz].upper()
                elif et.kind == "float":
                    c = _FLOAT_CODES.get(esz)
                else:
                    c = "Q"
                if c:
                    u = _struct.Struct(f"{e}{n}{c}").unpack_from
                    return lambda b, o: list(u(b, o))
            ed = self._decoder(t.type_id)
            return lambda b, o: [ed(b, o + i * esz) for i in range(n)]
        if k in ("struct", "union", "datasec"):
            schema, parts = self._struct_decoder_parts(tid)
            size = self.size(tid)

            def dec_struct(b, o, parts=parts, schema=schema, make=Record._make):
                return make(schema, [d(b, o + off) for d, off in parts],
                            bytes(b[o:o + size]))
            return dec_struct
        if k == "var":
            return self._decoder(t.type_id)
        raise TypeError(f"cannot decode {self.c_name(tid)} ({k})")

    def _struct_decoder_parts(self, tid):
        """(Record schema, [(decoder, byte offset)]) of a struct/union/datasec."""
        t = self.type(tid)
        lay = self._layout(tid)
        if t.kind == "datasec":
            rname = t.name
        else:
            rname = t.name or ("union" if t.kind == "union" else "struct")
        schema = _Schema(rname, [f.name for f in lay])
        order = "little" if self._endian == "<" else "big"
        parts = []
        for f in lay:
            if f.bit_size:
                parts.append(self._bitfield_decoder(f, order))
            else:
                parts.append((self._decoder(f.type_id), f.byte_offset))
        return schema, parts

    def _overlaps(self, tid):
        """Per flattened field: does it share storage with another field?"""
        key = ("overlap", tid)
        ov = self._layouts.get(key)
        if ov is not None:
            return ov
        spans = []
        for i, f in enumerate(self._layout(tid)):
            if f.bit_size:
                lo, hi = f.bit_offset, f.bit_offset + f.bit_size
            else:
                lo = f.byte_offset * 8
                hi = lo + self.size(f.type_id) * 8
            spans.append((lo, hi, i))
        ov = [False] * len(spans)
        spans.sort()
        best_hi, best_i = -1, -1
        for lo, hi, i in spans:
            if lo < best_hi:
                ov[i] = True
                ov[best_i] = True
            if hi > best_hi:
                best_hi, best_i = hi, i
        self._layouts[key] = ov
        return ov

    def _bitfield_decoder(self, f, order):
        first = f.bit_offset // 8
        within = f.bit_offset % 8
        nbytes = (within + f.bit_size + 7) // 8
        mask = (1 << f.bit_size) - 1
        bs = f.bit_size
        signed = f.signed
        if order == "little":
            shift = within
        else:
            shift = nbytes * 8 - within - bs
        rt = self.type(self.resolve(f.type_id))
        table = None
        if rt.kind in ("enum", "enum64"):
            table = {}
            for nm, val in rt.values:
                table.setdefault(val, EnumValue(nm, val))
        is_bool = rt.kind == "int" and rt.encoding == "bool"

        def dec_bits(b, o):
            v = (int.from_bytes(b[o:o + nbytes], order) >> shift) & mask
            if signed and v >> (bs - 1):
                v -= 1 << bs
            if table is not None:
                return table.get(v, v)
            if is_bool:
                return bool(v)
            return v
        return (dec_bits, first)

    # ------------------------------------------------------------------ encode
    def encode(self, type_id, value, what: str = "value") -> bytes:
        """Inverse of decode: Python value -> bytes of exactly ``size(type_id)``.

        Nothing is truncated: an int outside its type's range (bitfields: their bit
        width) raises RangeError, a str longer than its char[N] ValueError; errors
        name ``what`` (a variable, ``map 'm' key``) and the field path in it.
        """
        tid = self._check_id(type_id)
        size = self.size(tid)
        buf = bytearray(size)
        self._encoder(tid)(value, buf, 0, what)
        return bytes(buf)

    def _encoder(self, tid):
        enc = self._encoders.get(tid)
        if enc is None:
            enc = self._make_encoder(tid)
            self._encoders[tid] = enc
        return enc

    def _make_encoder(self, tid):
        rid = self.resolve(tid)
        if rid != tid:
            return self._encoder(rid)
        t = self.type(tid)
        k = t.kind
        e = self._endian
        cname = self.c_name(tid)
        size = self.size(tid)

        def passthrough(value, buf, off, path):
            """bytes of the exact size (or a numpy scalar/array of it) pass through."""
            if isinstance(value, (bytes, bytearray, memoryview)):
                raw = bytes(value)
            elif isinstance(value, np.void) and value.dtype.itemsize == size:
                raw = value.tobytes()
            elif isinstance(value, np.ndarray) and value.dtype.names is not None \
                    and value.nbytes == size:
                raw = value.tobytes()
            else:
                return False
            if len(raw) != size:
                raise ValueError(f"{path}: expected {size} bytes for {cname}, "
                                 f"got {len(raw)}")
            buf[off:off + size] = raw
            return True

        if k in ("int", "enum", "enum64", "ptr"):
            signed = bool(t.signed) if k != "ptr" else False
            nbits = size * 8
            lo, hi = (-(1 << (nbits - 1)), (1 << (nbits - 1)) - 1) if signed \
                else (0, (1 << nbits) - 1)
            order = "little" if e == "<" else "big"
            is_bool = k == "int" and t.encoding == "bool"
            names = None
            if k in ("enum", "enum64"):
                names = {nm: val for nm, val in t.values}
                # enums: accept both signed and unsigned readings of the bits
                lo, hi = -(1 << (nbits - 1)), (1 << nbits) - 1
            if is_bool:
                lo, hi = 0, 1
            mask = (1 << nbits) - 1
            what = "bool" if is_bool else ("enum name or int" if names is not None else "int")
            label = ("bool" if is_bool else cname if names is not None
                     else "pointer" if k == "ptr" else int_type(nbits, signed))

            def enc_int(value, buf, off, path):
                if value is None and k == "ptr":
                    value = 0
                if names is not None and isinstance(value, str):
                    try:
                        v = names[value]
                    except KeyError:
                        near = _suggest(value, list(names), n=8) or list(names)[:8]
                        raise ValueError(f"{path}: {value!r} is not an enumerator of "
                                         f"{cname} (e.g. {', '.join(near)})") from None
                elif isinstance(value, (bytes, bytearray, memoryview)) and \
                        len(value) == size:
                    buf[off:off + size] = bytes(value)
                    return
                else:
                    if isinstance(value, (float, np.floating)) or isinstance(value, str):
                        raise TypeError(f"{path}: expected {what} for {label}, got "
                                        f"{type(value).__name__} {value!r}")
                    try:
                        v = operator.index(value)
                    except TypeError:
                        raise TypeError(f"{path}: expected {what} for {label}, got "
                                        f"{type(value).__name__}") from None
                    if not lo <= v <= hi:
                        raise RangeError(path, v, label, lo, hi)
                buf[off:off + size] = (v & mask).to_bytes(size, order)
            return enc_int
        if k == "float":
            if size not in _FLOAT_CODES:
                def enc_f(value, buf, off, path):
                    if not passthrough(value, buf, off, path):
                        raise TypeError(f"{path}: {cname} can only be set from bytes")
                return enc_f
            st = _struct.Struct(e + _FLOAT_CODES[size])

            def enc_float(value, buf, off, path):
                if isinstance(value, (bool, str)) or not isinstance(
                        value, (int, float, np.integer, np.floating)):
                    if passthrough(value, buf, off, path):
                        return
                    raise TypeError(f"{path}: expected float for {cname}, got "
                                    f"{type(value).__name__}")
                try:
                    st.pack_into(buf, off, float(value))
                except (OverflowError, _struct.error) as ex:
                    raise ValueError(f"{path}: {value!r} does not fit {cname}: {ex}") from None
            return enc_float
        if k == "array":
            n = t.nelems
            if self._is_char_array(t):
                def enc_str(value, buf, off, path):
                    if isinstance(value, str):
                        raw = value.encode("utf-8")
                        if len(raw) > max(n - 1, 0):     # char[0]: only ""
                            raise ValueError(
                                f"{path}: expected str of at most {max(n - 1, 0)} chars "
                                f"(UTF-8 bytes) for {cname}, got {len(raw)}: {value!r}")
                    elif isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
                        raw = bytes(value)
                        if len(raw) > n:
                            raise ValueError(f"{path}: expected at most {n} bytes for "
                                             f"{cname}, got {len(raw)}")
                    else:
                        raise TypeError(f"{path}: expected str of at most "
                                        f"{max(n - 1, 0)} chars for {cname}, got "
                                        f"{type(value).__name__}")
                    buf[off:off + n] = raw.ljust(n, b"\0")
                return enc_str
            esz = self.size(t.type_id)
            ed = self._encoder(t.type_id)

            def enc_array(value, buf, off, path):
                if passthrough(value, buf, off, path):
                    return
                if isinstance(value, np.ndarray):
                    value = value.tolist()
                if isinstance(value, (str, Mapping)) or not hasattr(value, "__len__") \
                        or not hasattr(value, "__iter__"):
                    raise TypeError(f"{path}: expected a list of at most {n} items for "
                                    f"{cname}, got {type(value).__name__}")
                if len(value) > n:
                    raise ValueError(f"{path}: expected at most {n} items for {cname}, "
                                     f"got {len(value)}")
                for i, item in enumerate(value):
                    ed(item, buf, off + i * esz, f"{path}[{i}]")
            return enc_array
        if k in ("struct", "union", "datasec"):
            lay = self._layout(tid)
            fields = [f.name for f in lay]
            index = {f.name: i for i, f in enumerate(lay)}
            parts = []
            order = "little" if e == "<" else "big"
            for f in lay:
                if f.bit_size:
                    parts.append((self._bitfield_encoder(f, order, cname), 0))
                else:
                    parts.append((self._encoder(f.type_id), f.byte_offset))

            overlap = self._overlaps(tid)
            _, dparts = self._struct_decoder_parts(tid)
            whole = self._decoder(tid)
            has_overlap = any(overlap)

            def check_overlaps(provided, buf, off, path):
                """Fields sharing storage (unions) must agree once all are written."""
                if not has_overlap:
                    return
                mine = [(i, v) for i, v in provided if overlap[i]]
                if len(mine) < 2:
                    return
                for i, v in mine:
                    fn, foff = parts[i]
                    dfn, doff = dparts[i]
                    alone = bytearray(size)
                    fn(v, alone, foff, path)
                    if not _same(dfn(alone, doff), dfn(buf, off + doff)):
                        others = [fields[j] for j, _ in mine if j != i]
                        raise ValueError(
                            f"{path}: fields {fields[i]!r} and {', '.join(map(repr, others))}"
                            f" of {cname} share storage (a union) and the values given "
                            f"disagree; set only one of them")

            def enc_struct(value, buf, off, path):
                if passthrough(value, buf, off, path):
                    return
                if isinstance(value, Record) \
                        and value._raw is not None and len(value._raw) == size \
                        and value._fields == tuple(fields):
                    # decoded (maybe _replace()d): start from its bytes, write changes
                    buf[off:off + size] = value._raw
                    orig = whole(value._raw, 0)._values
                    provided = []
                    for i, (v, o) in enumerate(zip(value._values, orig)):
                        if not _same(v, o):
                            fn, foff = parts[i]
                            fn(v, buf, off + foff, f"{path}.{fields[i]}")
                            provided.append((i, v))
                    check_overlaps(provided, buf, off, path)
                    return
                if isinstance(value, Record):
                    items = list(zip(value._fields, value._values))
                elif isinstance(value, np.void) and value.dtype.names:
                    items = [(nm, value[nm]) for nm in value.dtype.names]
                elif isinstance(value, Mapping):
                    items = list(value.items())
                elif isinstance(value, (tuple, list)):
                    if len(value) > len(lay):
                        raise ValueError(f"{path}: {cname} has {len(lay)} fields "
                                         f"({', '.join(fields)}), got {len(value)} values")
                    items = list(zip(fields, value))
                else:
                    raise TypeError(f"{path}: expected dict, tuple or Record for "
                                    f"{cname}, got {type(value).__name__}")
                provided = []
                for key, v in items:
                    i = index.get(key)
                    if i is None:
                        near = _suggest(str(key), fields)
                        hint = f"; did you mean {', '.join(near)}?" if near else \
                            f" (fields: {', '.join(fields)})"
                        raise ValueError(f"{path}: {cname} has no field {key!r}{hint}")
                    fn, foff = parts[i]
                    fn(v, buf, off + foff, f"{path}.{key}")
                    provided.append((i, v))
                check_overlaps(provided, buf, off, path)
            return enc_struct
        if k == "var":
            return self._encoder(t.type_id)
        raise TypeError(f"cannot encode {cname} ({k})")

    def _bitfield_encoder(self, f, order, cname):
        first = f.bit_offset // 8
        within = f.bit_offset % 8
        nbytes = (within + f.bit_size + 7) // 8
        bs = f.bit_size
        mask = (1 << bs) - 1
        shift = within if order == "little" else nbytes * 8 - within - bs
        rt = self.type(self.resolve(f.type_id))
        names = {nm: val for nm, val in rt.values} if rt.kind in ("enum", "enum64") else None
        lo, hi = (-(1 << (bs - 1)), (1 << (bs - 1)) - 1) if f.signed else (0, mask)
        is_bool = rt.kind == "int" and rt.encoding == "bool"
        if names is not None:
            lo = -(1 << (bs - 1))
            hi = mask
        mtype = (f"{self.c_name(f.type_id)}:{bs}" if names is not None else
                 f"{int_type(self.size(f.type_id) * 8, bool(f.signed))}:{bs}")

        def enc_bits(value, buf, off, path):
            if names is not None and isinstance(value, str):
                if value not in names:
                    raise ValueError(f"{path}: {value!r} is not an enumerator of "
                                     f"{self.c_name(f.type_id)}")
                v = names[value]
            else:
                if isinstance(value, (float, str, np.floating)):
                    raise TypeError(f"{path}: expected int for bitfield {mtype}, got "
                                    f"{type(value).__name__}")
                try:
                    v = operator.index(value)
                except TypeError:
                    raise TypeError(f"{path}: expected int for bitfield {mtype}, got "
                                    f"{type(value).__name__}") from None
            if is_bool and not 0 <= v <= 1:
                raise RangeError(path, v, f"bool:{bs} bitfield", 0, 1)
            if not lo <= v <= hi:
                raise RangeError(path, v, f"bitfield {mtype}", lo, hi)
            o = off + first
            cur = int.from_bytes(buf[o:o + nbytes], order)
            cur = (cur & ~(mask << shift)) | ((v & mask) << shift)
            buf[o:o + nbytes] = cur.to_bytes(nbytes, order)
        return enc_bits

# --------------------------------------------------------------------------- helpers

def _same(a, b):
    """Equality for re-decoded values (NaN equals NaN)."""
    if a == b:
        return True
    return isinstance(a, float) and isinstance(b, float) and a != a and b != b


def _as_bytes_view(buf):
    if isinstance(buf, bytes):
        return buf
    mv = memoryview(buf)
    if mv.format != "B" or mv.ndim != 1:
        try:
            mv = mv.cast("B")
        except TypeError:
            mv = memoryview(mv.tobytes())
    return mv

