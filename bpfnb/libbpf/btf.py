"""BTF (BPF Type Format) parser and type -> Python value / numpy dtype layer.

Pure Python plus numpy; imports nothing else of bpfnb.

    btf = BTF.from_file("/sys/kernel/btf/vmlinux")   # raw BTF, or an ELF .o with .BTF
    tid = btf.find("struct event")
    btf.dtype(tid)            # numpy structured dtype, exact offsets and itemsize
    btf.decode(tid, raw)      # -> Record(pid=..., comm='bash', ...)
    btf.encode(tid, {...})    # -> bytes

Layout of the format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst in the
kernel tree.  The type section is scanned once at construction (offsets only);
Type objects, dtypes, decoders and encoders are built on demand and cached.

Conventions used by dtype/decode/encode (and therefore by DataFrame columns):

* ``char[N]`` -> ``'S{N}'`` / ``str``.  An array is a "char array" when its element,
  after stripping const/volatile/restrict/type_tag (but *not* typedefs), is a 1-byte
  INT with CHAR encoding or named ``char``/``signed char``/``unsigned char``.  So
  ``__u8 addr[6]`` stays a numeric ``uint8`` array, while ``unsigned char buf[16]``
  becomes a string.
* Anonymous struct/union members are inlined into their parent (their fields at
  their real offsets) unless a name would collide; then they become ``_anon0``,
  ``_anon1``, ... nested fields.
* Bitfields are not representable in numpy: they are left out of ``dtype()`` and
  described by ``bitfields()`` (and extracted in bulk by ``unpack_bitfields()``);
  ``decode``/``encode`` handle them directly.
* Zero-size members (flexible arrays, empty structs) are omitted everywhere.
"""

from __future__ import annotations

import difflib
import operator
import os
import struct as _struct
import sys
from array import array as _array
from collections import namedtuple
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

__all__ = [
    "BTF",
    "Type",
    "Member",
    "BitField",
    "Record",
    "EnumValue",
    "KINDS",
]

BTF_MAGIC = 0xEB9F

KINDS = (
    "unkn", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef",
    "volatile", "const", "restrict", "func", "func_proto", "var", "datasec",
    "float", "decl_tag", "type_tag", "enum64",
)
_KIND_ID = {k: i for i, k in enumerate(KINDS)}
(K_UNKN, K_INT, K_PTR, K_ARRAY, K_STRUCT, K_UNION, K_ENUM, K_FWD, K_TYPEDEF,
 K_VOLATILE, K_CONST, K_RESTRICT, K_FUNC, K_FUNC_PROTO, K_VAR, K_DATASEC,
 K_FLOAT, K_DECL_TAG, K_TYPE_TAG, K_ENUM64) = range(20)

# words (u32) following the 12-byte btf_type: fixed part, and per vlen item
_EXTRA = (0, 1, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0)
_PER_VLEN = (0, 0, 0, 0, 3, 3, 2, 0, 0, 0, 0, 0, 0, 2, 0, 3, 0, 0, 0, 3)

_MODIFIERS = frozenset({"typedef", "const", "volatile", "restrict", "type_tag"})
_QUALIFIERS = frozenset({"const", "volatile", "restrict", "type_tag"})
_CHAR_NAMES = frozenset({"char", "signed char", "unsigned char"})
_LINKAGE = {0: "static", 1: "global", 2: "extern"}
# find() without a kind: which kind wins when a name is used by several
_FIND_PRIORITY = ("typedef", "int", "float", "struct", "union", "enum", "enum64",
                  "var", "datasec", "func", "fwd")

_INT_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}
_FLOAT_CODES = {2: "e", 4: "f", 8: "d"}


# --------------------------------------------------------------------------- types

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


# --------------------------------------------------------------------------- Record

class _Schema:
    __slots__ = ("name", "fields", "index")

    def __init__(self, name, fields):
        self.name = name
        self.fields = tuple(fields)
        self.index = {f: i for i, f in enumerate(self.fields)}


def _freeze(v):
    if isinstance(v, Record):
        return tuple(_freeze(x) for x in v._values)
    if isinstance(v, (list, tuple)):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, np.ndarray):
        return tuple(_freeze(x) for x in v.tolist())
    if isinstance(v, dict):
        return tuple(_freeze(x) for x in v.values())
    return v


def _unfreeze(v):
    if isinstance(v, Record):
        return v._asdict()
    if isinstance(v, list):
        return [_unfreeze(x) for x in v]
    return v


class Record:
    """A decoded struct/union: ``r.pid``, ``r["pid"]``, ``r[0]``, iteration over
    values, ``_fields``, ``_asdict()`` (recursive), ``_replace(**kw)``.

    Immutable and hashable (hash of the tuple of values, nested records and lists
    turned into tuples), so a Record equals -- and hashes like -- the plain tuple of
    its values; it also equals a dict with the same keys and values.
    """

    __slots__ = ("_schema", "_values", "_raw")

    def __init__(self, name, fields, values=None):
        if values is None:                     # Record(name, {"a": 1, ...})
            if not isinstance(fields, Mapping):
                raise TypeError("Record(name, fields, values) or Record(name, mapping)")
            values = list(fields.values())
            fields = list(fields.keys())
        values = list(values)
        fields = list(fields)
        if len(values) != len(fields):
            raise ValueError(f"Record: {len(fields)} fields but {len(values)} values")
        object.__setattr__(self, "_schema", _Schema(name, fields))
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_raw", None)

    @classmethod
    def _make(cls, schema, values, raw=None):
        # raw: the bytes it was decoded from, so that encoding a (_replace()d)
        # record starts from them and rewrites only the fields that changed: exact
        # round trips even for lossy fields (bytes after a NUL, unions, bools)
        r = object.__new__(cls)
        object.__setattr__(r, "_schema", schema)
        object.__setattr__(r, "_values", values)
        object.__setattr__(r, "_raw", raw)
        return r

    @property
    def _fields(self):
        return self._schema.fields

    @property
    def _name(self):
        return self._schema.name

    def __getattr__(self, name):
        try:
            i = self._schema.index[name]
        except (KeyError, AttributeError):
            if name.startswith("__") or name in ("_schema", "_values", "_raw"):
                raise AttributeError(name) from None
            raise AttributeError(
                f"{self._schema.name} has no field {name!r} "
                f"(fields: {', '.join(self._schema.fields)})") from None
        return self._values[i]

    def __setattr__(self, name, value):
        raise AttributeError(f"{self._schema.name} record is immutable; use _replace()")

    def __delattr__(self, name):
        raise AttributeError(f"{self._schema.name} record is immutable")

    def __getitem__(self, key):
        if isinstance(key, str):
            try:
                return self._values[self._schema.index[key]]
            except KeyError:
                raise KeyError(f"{self._schema.name} has no field {key!r} "
                               f"(fields: {', '.join(self._schema.fields)})") from None
        return self._values[key]

    def __contains__(self, value):
        return value in self._values

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __dir__(self):
        return list(self._schema.fields) + ["_fields", "_asdict", "_replace"]

    def _asdict(self):
        return {f: _unfreeze(v) for f, v in zip(self._schema.fields, self._values)}

    def _replace(self, **kw):
        values = list(self._values)
        for k, v in kw.items():
            try:
                values[self._schema.index[k]] = v
            except KeyError:
                raise ValueError(f"{self._schema.name} has no field {k!r}") from None
        return Record._make(self._schema, values, self._raw)

    def __eq__(self, other):
        if isinstance(other, Record):
            return (self._schema.fields == other._schema.fields
                    and self._values == other._values)
        if isinstance(other, Mapping):
            if len(other) != len(self._values):
                return False
            idx = self._schema.index
            for k, v in other.items():
                i = idx.get(k)
                if i is None or not (self._values[i] == v):
                    return False
            return True
        if isinstance(other, (tuple, list)):
            return len(other) == len(self._values) and all(
                a == b for a, b in zip(self._values, other))
        return NotImplemented

    def __ne__(self, other):
        r = self.__eq__(other)
        return r if r is NotImplemented else not r

    def __hash__(self):
        return hash(_freeze(self))

    def __repr__(self):
        inner = ", ".join(f"{f}={v!r}" for f, v in zip(self._schema.fields, self._values))
        return f"{self._schema.name}({inner})"

    def _repr_pretty_(self, p, cycle):
        p.text(repr(self) if not cycle else "...")

    def __reduce__(self):
        return (Record, (self._schema.name, list(self._schema.fields), list(self._values)))


# --------------------------------------------------------------------------- layout

class _Field(NamedTuple):
    """A flattened struct entry (internal)."""
    name: str
    type_id: int
    byte_offset: int      # ordinary members
    bit_offset: int       # bitfields: absolute bit offset from the struct start
    bit_size: int         # 0 for ordinary members
    signed: bool


def _join_decl(base, inner):
    if not inner:
        return base
    if inner[0] == "[":
        return base + inner
    return base + " " + inner


def _suggest(name, candidates, n=5):
    near = difflib.get_close_matches(name, candidates, n=n, cutoff=0.6)
    if len(near) < n:
        low = name.lower()
        for c in candidates:
            if low in c.lower() and c not in near:
                near.append(c)
                if len(near) >= n:
                    break
    return near


# --------------------------------------------------------------------------- BTF

class BTF:
    """Parsed BTF.  Type ids start at 1; 0 is void.  ``base`` makes this a split
    BTF whose ids continue after the base's and whose string offsets continue
    after the base's string section."""

    def __init__(self, raw: bytes, base: "BTF | None" = None):
        data = bytes(raw)
        if len(data) < 24:
            raise ValueError(f"BTF blob too short ({len(data)} bytes)")
        if data[:2] == b"\x9f\xeb":
            e = "<"
        elif data[:2] == b"\xeb\x9f":
            e = ">"
        else:
            raise ValueError(f"not BTF data: bad magic {data[:2].hex()} (expected 0xeb9f)")
        _magic, version, flags, hdr_len = _struct.unpack_from(e + "HBBI", data, 0)
        if version != 1:
            raise ValueError(f"unsupported BTF version {version}")
        type_off, type_len, str_off, str_len = _struct.unpack_from(e + "IIII", data, 8)
        t0 = hdr_len + type_off
        s0 = hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data) or type_len % 4:
            raise ValueError("corrupt BTF header: sections exceed the data")
        if base is not None and base._endian != e:
            raise ValueError("split BTF and its base have different endianness")

        self._data = data
        self._endian = e
        self.base = base
        self.version = version
        self.flags = flags
        self._strs = memoryview(data)[s0:s0 + str_len]
        self._str_start = s0
        self._str_len = str_len
        self._str_base = (base._str_base + base._str_len) if base is not None else 0
        self._id_base = len(base) if base is not None else 0

        w = _array("I")
        if w.itemsize != 4:  # pragma: no cover - exotic platform
            raise RuntimeError("array('I') is not 32-bit here")
        w.frombytes(data[t0:t0 + type_len])
        if (e == "<") != (sys.byteorder == "little"):
            w.byteswap()
        self._w = w

        # scan: word offset of each type (local index; index 0 is void in a base BTF)
        offs = [] if base is not None else [-1]
        append = offs.append
        extra, per = _EXTRA, _PER_VLEN
        n = len(w)
        i = 0
        try:
            while i < n:
                append(i)
                info = w[i + 1]
                k = (info >> 24) & 0x1F
                i += 3 + extra[k] + (info & 0xFFFF) * per[k]
        except IndexError:
            bad = len(offs) - 1 + self._id_base
            if offs[-1] + 1 < n:
                kind = (w[offs[-1] + 1] >> 24) & 0x1F
                raise ValueError(f"BTF type #{bad}: unknown kind {kind} (newer than this "
                                 "parser?) or truncated type section") from None
            raise ValueError(f"BTF type #{bad}: truncated type section") from None
        if i != n:
            raise ValueError("BTF type section is truncated")
        self._offs = offs

        self._types = {}
        self._dtypes = {}
        self._decoders = {}
        self._encoders = {}
        self._layouts = {}
        self._sizes = {}
        self._np = None          # (offs, name_offs, kinds) numpy arrays, lazily
        self._names_list = None

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path, base: "BTF | None" = None):
        """Raw BTF (e.g. /sys/kernel/btf/vmlinux) or an ELF object's .BTF section."""
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] == b"\x7fELF":
            return cls.from_elf(data, base=base)
        return cls(data, base=base)

    @classmethod
    def from_elf(cls, data, base: "BTF | None" = None):
        """The .BTF section of an ELF64 object (bytes, or a path)."""
        if isinstance(data, (str, os.PathLike)):
            with open(data, "rb") as f:
                data = f.read()
        sec = _elf_section(bytes(data), ".BTF")
        if sec is None:
            raise ValueError("ELF object has no .BTF section (compile with clang -g)")
        return cls(sec, base=base)

    # ------------------------------------------------------------------ basics
    def __len__(self):
        return self._id_base + len(self._offs)

    def __repr__(self):
        return f"<BTF {len(self)} types{' (split)' if self.base is not None else ''}>"

    def _str(self, off):
        if off < self._str_base:
            return self.base._str(off)
        off -= self._str_base
        s = self._strs
        if off >= len(s):
            raise ValueError(f"BTF string offset {off} out of range")
        end = self._data.find(b"\0", self._str_start + off, self._str_start + self._str_len)
        if end < 0:
            end = self._str_start + self._str_len
        return self._data[self._str_start + off:end].decode("utf-8", "replace")

    def _check_id(self, type_id):
        try:
            tid = operator.index(type_id)
        except TypeError:
            raise TypeError(f"type id must be an int, not {type(type_id).__name__}") from None
        if not 0 <= tid < len(self):
            raise KeyError(f"BTF type id {tid} out of range (0..{len(self) - 1})")
        return tid

    def type(self, type_id) -> Type:
        tid = self._check_id(type_id)
        t = self._types.get(tid)
        if t is not None:
            return t
        if tid < self._id_base:
            return self.base.type(tid)
        if tid == 0:
            t = Type(0, "void", "", size=0)
            self._types[0] = t
            return t
        t = self._build_type(tid)
        self._types[tid] = t
        return t

    def _build_type(self, tid):
        t = self._parse_type(tid)
        if t.size is None and t.kind in ("typedef", "const", "volatile", "restrict",
                                         "type_tag", "var"):
            self._types[tid] = t          # guards against (invalid) loops
            try:
                t.size = self.size(tid)
            except (TypeError, ValueError, KeyError, RecursionError):
                pass
        return t

    def _parse_type(self, tid):
        w = self._w
        o = self._offs[tid - self._id_base]
        name_off, info, size_or_type = w[o], w[o + 1], w[o + 2]
        k = (info >> 24) & 0x1F
        vlen = info & 0xFFFF
        kflag = info >> 31
        kind = KINDS[k]
        name = self._str(name_off) if name_off else ""
        p = o + 3
        if k == K_INT:
            v = w[p]
            enc = (v >> 24) & 0x0F
            encoding = ("signed" if enc & 1 else "char" if enc & 2
                        else "bool" if enc & 4 else "")
            return Type(tid, kind, name, size=size_or_type, encoding=encoding,
                        bits=v & 0xFF, bit_offset=(v >> 16) & 0xFF, signed=bool(enc & 1))
        if k == K_PTR:
            return Type(tid, kind, name, size=8, type_id=size_or_type)
        if k == K_ARRAY:
            t = Type(tid, kind, name, type_id=w[p], index_type=w[p + 1], nelems=w[p + 2])
            try:
                t.size = t.nelems * self.size(t.type_id)
            except (TypeError, ValueError, RecursionError):
                t.size = None
            return t
        if k in (K_STRUCT, K_UNION):
            members = []
            for j in range(vlen):
                q = p + 3 * j
                mname = self._str(w[q]) if w[q] else ""
                mtype, moff = w[q + 1], w[q + 2]
                if kflag:
                    members.append(Member(mname, mtype, moff & 0xFFFFFF, moff >> 24))
                else:
                    bsz = 0
                    rt = self.type(self.resolve(mtype))
                    if rt.kind == "int" and (rt.bits != rt.size * 8 or rt.bit_offset):
                        bsz = rt.bits
                        moff += rt.bit_offset
                    members.append(Member(mname, mtype, moff, bsz))
            return Type(tid, kind, name, size=size_or_type, members=members,
                        kind_flag=kflag)
        if k == K_ENUM:
            signed = bool(kflag)
            values = []
            for j in range(vlen):
                q = p + 2 * j
                val = w[q + 1]
                if signed and val >= 0x80000000:
                    val -= 1 << 32
                values.append((self._str(w[q]), val))
            return Type(tid, kind, name, size=size_or_type, values=values,
                        signed=signed, kind_flag=kflag)
        if k == K_ENUM64:
            signed = bool(kflag)
            values = []
            for j in range(vlen):
                q = p + 3 * j
                val = w[q + 1] | (w[q + 2] << 32)
                if signed and val >= 1 << 63:
                    val -= 1 << 64
                values.append((self._str(w[q]), val))
            return Type(tid, kind, name, size=size_or_type, values=values,
                        signed=signed, kind_flag=kflag)
        if k == K_FWD:
            return Type(tid, kind, name, size=0, kind_flag=kflag,
                        fwd_kind="union" if kflag else "struct")
        if k in (K_TYPEDEF, K_VOLATILE, K_CONST, K_RESTRICT, K_TYPE_TAG):
            return Type(tid, kind, name, type_id=size_or_type)
        if k == K_FUNC:
            return Type(tid, kind, name, type_id=size_or_type,
                        linkage=_LINKAGE.get(vlen, str(vlen)))
        if k == K_FUNC_PROTO:
            params = []
            for j in range(vlen):
                q = p + 2 * j
                params.append((self._str(w[q]) if w[q] else "", w[q + 1]))
            return Type(tid, kind, name, type_id=size_or_type, params=params)
        if k == K_VAR:
            return Type(tid, kind, name, type_id=size_or_type,
                        linkage=_LINKAGE.get(w[p], str(w[p])))
        if k == K_DATASEC:
            vars_ = [(w[p + 3 * j], w[p + 3 * j + 1], w[p + 3 * j + 2]) for j in range(vlen)]
            return Type(tid, kind, name, size=size_or_type, vars=vars_)
        if k == K_FLOAT:
            return Type(tid, kind, name, size=size_or_type)
        if k == K_DECL_TAG:
            ci = w[p]
            if ci >= 0x80000000:
                ci -= 1 << 32
            return Type(tid, kind, name, type_id=size_or_type, component_idx=ci,
                        kind_flag=kflag)
        raise ValueError(f"BTF type #{tid}: unsupported kind {k}")

    def types(self):
        """Iterate over all Type objects (this BTF's own, not the base's)."""
        start = max(self._id_base, 1)
        for tid in range(start, len(self)):
            yield self.type(tid)

    # ------------------------------------------------------------------ lookups
    def _arrays(self):
        if self._np is None:
            offs = np.asarray(self._offs[0 if self.base is not None else 1:], dtype=np.int64)
            wn = np.frombuffer(self._w, dtype=np.uint32)
            name_offs = wn[offs]
            kinds = (wn[offs + 1] >> 24) & 0x1F
            self._np = (offs, name_offs, kinds)
        return self._np

    def _first_local_id(self):
        return self._id_base + (0 if self.base is not None else 1)

    def _ids_named(self, name):
        """All type ids (base first) whose name is exactly ``name``."""
        ids = []
        if self.base is not None:
            ids.extend(self.base._ids_named(name))
        key = name.encode("utf-8")
        if not key or b"\0" in key:
            return ids
        blob = self._data[self._str_start:self._str_start + self._str_len]
        offsets = []
        needle = b"\0" + key + b"\0"
        if blob.startswith(key + b"\0"):
            offsets.append(0)
        pos = blob.find(needle)
        while pos >= 0:
            offsets.append(pos + 1)
            pos = blob.find(needle, pos + 1)
        if not offsets:
            return ids
        _, name_offs, _ = self._arrays()
        want = np.asarray(offsets, dtype=np.uint32) + np.uint32(self._str_base)
        hits = np.nonzero(np.isin(name_offs, want))[0]
        ids.extend(int(h) + self._first_local_id() for h in hits)
        return ids

    def _all_names(self):
        if self._names_list is None:
            names = set()
            if self.base is not None:
                names.update(self.base._all_names())
            _, name_offs, _ = self._arrays()
            for off in np.unique(name_offs).tolist():
                if off:
                    names.add(self._str(off))
            self._names_list = sorted(names)
        return self._names_list

    def _names_of_kind(self, kinds):
        out = []
        if self.base is not None:
            out.extend(self.base._names_of_kind(kinds))
        _, name_offs, karr = self._arrays()
        sel = np.isin(karr, [_KIND_ID[k] for k in kinds]) & (name_offs != 0)
        seen = set()
        for off in name_offs[sel].tolist():
            if off not in seen:
                seen.add(off)
                out.append(self._str(off))
        return out

    def find(self, name, kind=None) -> int:
        """Type id of ``name``.  ``kind`` is a kind name ("struct", "union", "enum",
        "typedef", "int", "var", "datasec", "func", ...); "struct event",
        "union u" and "enum e" forms are accepted too.  Complete types win over
        forward declarations.  KeyError (listing near names) if absent."""
        if not isinstance(name, str):
            raise TypeError(f"find() wants a type name (str), not {type(name).__name__}")
        name = " ".join(name.split())
        for tag in ("struct", "union", "enum"):
            if name.startswith(tag + " ") and kind in (None, tag):
                kind, name = tag, name[len(tag) + 1:]
                break
        if kind is not None:
            kind = kind.lower()
            if kind not in _KIND_ID:
                raise ValueError(f"unknown BTF kind {kind!r} (one of {', '.join(KINDS[1:])})")
        ids = self._ids_named(name)
        if kind is not None:
            kinds_ok = {kind}
            if kind == "enum":
                kinds_ok.add("enum64")
            cands = [i for i in ids if self.type(i).kind in kinds_ok]
            if not cands and kind in ("struct", "union"):
                cands = [i for i in ids if self.type(i).kind == "fwd"
                         and self.type(i).fwd_kind == kind]
            if cands:
                return cands[0]
        else:
            by_kind = {}
            for i in ids:
                by_kind.setdefault(self.type(i).kind, i)
            for k in _FIND_PRIORITY:
                if k in by_kind:
                    return by_kind[k]
            if ids:
                return ids[0]
        what = f"{kind} {name}" if kind else name
        if kind in ("struct", "union", "enum", "typedef", "var", "datasec", "func", "int"):
            pool = self._names_of_kind([kind] + (["enum64"] if kind == "enum" else []))
        else:
            pool = self._all_names()
        near = _suggest(name, pool)
        hint = f"; did you mean: {', '.join(near)}?" if near else ""
        raise KeyError(f"no BTF type {what!r}{hint}")

    def struct_names(self) -> list:
        """Names of all named structs, in id order, without duplicates."""
        return self._names_of_kind(["struct"])

    def datasec_vars(self, name) -> list:
        """[(var_name, type_id, offset, size)] of DATASEC ``name`` (".bss", ".data",
        ".rodata", ".kconfig", ".data.foo" ...); type_id is the variable's declared
        type.  Note: in a raw clang .o offsets are 0 until libbpf fixes them."""
        cands = [name] if name.startswith(".") else [name, "." + name]
        for n in cands:
            for i in self._ids_named(n):
                t = self.type(i)
                if t.kind == "datasec":
                    out = []
                    for vt, off, sz in t.vars:
                        v = self.type(vt)
                        if v.kind == "var":
                            out.append((v.name, v.type_id, off, sz))
                        else:   # e.g. a func in .ksyms
                            out.append((v.name, vt, off, sz))
                    return out
        secs = self._names_of_kind(["datasec"])
        raise KeyError(f"no BTF DATASEC {name!r} (have: {', '.join(secs) or 'none'})")

    # ------------------------------------------------------------------ type algebra
    def resolve(self, type_id) -> int:
        """Skip typedef/const/volatile/restrict/type_tag (not pointers)."""
        tid = self._check_id(type_id)
        for _ in range(256):
            t = self.type(tid)
            if t.kind not in _MODIFIERS:
                return tid
            tid = t.type_id
        raise ValueError(f"BTF type #{type_id}: modifier chain too long (loop?)")

    def _strip_quals(self, type_id):
        tid = type_id
        for _ in range(256):
            t = self.type(tid)
            if t.kind not in _QUALIFIERS:
                return tid
            tid = t.type_id
        raise ValueError(f"BTF type #{type_id}: qualifier chain too long (loop?)")

    def size(self, type_id) -> int:
        tid = self._check_id(type_id)
        s = self._sizes.get(tid)
        if s is not None:
            return s
        t = self.type(self.resolve(tid))
        k = t.kind
        if k in ("int", "enum", "enum64", "struct", "union", "float", "datasec"):
            s = t.size
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

    def c_name(self, type_id) -> str:
        """Readable C type: "u32", "struct event", "char[16]", "int *"."""
        return self._decl(self._check_id(type_id), "")

    def _decl(self, tid, inner, depth=0):
        if depth > 64:
            return _join_decl("...", inner)
        t = self.type(tid)
        k = t.kind
        if k == "void":
            return _join_decl("void", inner)
        if k in ("int", "float", "typedef"):
            return _join_decl(t.name, inner)
        if k in ("struct", "union", "enum", "enum64", "fwd"):
            tag = "enum" if k == "enum64" else t.fwd_kind if k == "fwd" else k
            return _join_decl(f"{tag} {t.name}" if t.name else f"{tag} {{...}}", inner)
        if k == "ptr":
            return self._ptr_decl(t, inner, depth)
        if k == "array":
            return self._decl(t.type_id, f"{inner}[{t.nelems}]", depth + 1)
        if k in ("const", "volatile", "restrict"):
            tgt = self.type(t.type_id)
            if tgt.kind == "ptr":
                return self._ptr_decl(tgt, f"{k} {inner}".rstrip(), depth)
            return f"{k} " + self._decl(t.type_id, inner, depth + 1)
        if k in ("type_tag", "decl_tag"):
            return self._decl(t.type_id, inner, depth + 1)
        if k == "func_proto":
            ps = []
            for pname, ptid in t.params:
                if ptid == 0 and not pname:
                    ps.append("...")
                else:
                    ps.append(self._decl(ptid, pname, depth + 1))
            return self._decl(t.type_id, f"{inner}({', '.join(ps) or 'void'})", depth + 1)
        if k == "func":
            return self._decl(t.type_id, t.name + inner, depth + 1)
        if k == "var":
            return self._decl(t.type_id, inner, depth + 1)
        if k == "datasec":
            return _join_decl(f'SEC("{t.name}")', inner)
        return _join_decl(f"<{k}>", inner)

    def _ptr_decl(self, ptr, inner, depth):
        tgt = self.type(self._strip_quals(ptr.type_id)) if ptr.type_id else None
        if tgt is not None and tgt.kind in ("array", "func_proto"):
            return self._decl(ptr.type_id, f"(*{inner})", depth + 1)
        return self._decl(ptr.type_id, "*" + inner, depth + 1)

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
            self._layouts[tid] = fields
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
        self._layouts[tid] = fields
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
                raise ValueError(f"{self.c_name(tid)}: members extend past its size "
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

    # ------------------------------------------------------------------ decode
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
    def encode(self, type_id, value) -> bytes:
        """Inverse of decode: Python value -> bytes of exactly ``size(type_id)``."""
        tid = self._check_id(type_id)
        size = self.size(tid)
        buf = bytearray(size)
        self._encoder(tid)(value, buf, 0, "value")
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
            mask = (1 << nbits) - 1
            what = "bool" if is_bool else ("enum name or int" if names is not None else "int")

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
                        raise TypeError(f"{path}: expected {what} for {cname}, got "
                                        f"{type(value).__name__} {value!r}")
                    try:
                        v = operator.index(value)
                    except TypeError:
                        raise TypeError(f"{path}: expected {what} for {cname}, got "
                                        f"{type(value).__name__}") from None
                    if not lo <= v <= hi:
                        raise ValueError(f"{path}: {v} out of range for {cname} "
                                         f"[{lo}, {hi}]")
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
                        if len(raw) > n - 1:
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
        if names is not None:
            lo = -(1 << (bs - 1))
            hi = mask
        mtype = f"{self.c_name(f.type_id)}:{bs}"

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
            if not lo <= v <= hi:
                raise ValueError(f"{path}: {v} out of range for bitfield {mtype} "
                                 f"[{lo}, {hi}]")
            o = off + first
            cur = int.from_bytes(buf[o:o + nbytes], order)
            cur = (cur & ~(mask << shift)) | ((v & mask) << shift)
            buf[o:o + nbytes] = cur.to_bytes(nbytes, order)
        return enc_bits

    # ------------------------------------------------------------------ C text
    def c_decl(self, type_id) -> str:
        """C definition of a struct/union/enum (for display), e.g.
        ``struct event {\\n\\tu32 pid;\\n\\tchar comm[16];\\n};``"""
        tid = self.resolve(type_id)
        t = self.type(tid)
        if t.kind not in ("struct", "union", "enum", "enum64"):
            return self.c_name(type_id)
        return self._c_body(tid, 0) + ";"

    def _c_body(self, tid, indent):
        t = self.type(tid)
        pad = "\t" * (indent + 1)
        head = self.c_name(tid) if t.name else ("enum" if t.kind == "enum64" else t.kind)
        lines = [head + " {"]
        if t.kind in ("enum", "enum64"):
            for nm, val in t.values:
                lines.append(f"{pad}{nm} = {val},")
        else:
            for m in t.members:
                rt = self.type(self._strip_quals(m.type_id))
                if not rt.name and rt.kind in ("struct", "union", "enum", "enum64"):
                    decl = self._c_body(rt.id, indent + 1) + (" " + m.name if m.name else "")
                else:
                    decl = self._decl(m.type_id, m.name)
                if m.bitfield_size:
                    decl += f": {m.bitfield_size}"
                lines.append(f"{pad}{decl};")
        lines.append("\t" * indent + "}")
        return "\n".join(lines)


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


def _elf_section(data, want):
    """Bytes of section ``want`` in an ELF64 image, or None."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not an ELF64 object")
    e = "<" if data[5] == 1 else ">"
    shoff, = _struct.unpack_from(e + "Q", data, 0x28)
    shentsize, shnum, shstrndx = _struct.unpack_from(e + "HHH", data, 0x3A)
    if shoff == 0:
        return None
    if shnum == 0:  # extended numbering
        shnum, = _struct.unpack_from(e + "Q", data, shoff + 0x20)
    if shstrndx == 0xFFFF:
        shstrndx, = _struct.unpack_from(e + "I", data, shoff + 0x28)

    def sh(i):
        return _struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize)

    str_sh = sh(shstrndx)
    strtab = data[str_sh[4]:str_sh[4] + str_sh[5]]
    key = want.encode()
    for i in range(shnum):
        s = sh(i)
        end = strtab.find(b"\0", s[0])
        if strtab[s[0]:end] == key:
            return data[s[4]:s[4] + s[5]]
    return None
