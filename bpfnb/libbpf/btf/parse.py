"""Reading BTF: the raw .BTF blob (or an ELF object's .BTF section) into Type objects.

Layout of the format: include/uapi/linux/btf.h and Documentation/bpf/btf.rst in the
kernel tree.  At construction the type section is scanned (offsets only) and checked
(validate.py: bad BTF raises BTFError there, not later); Type objects are built on
demand and cached.  Name lookups (find, struct_names, datasec_vars) search the raw
name offsets with numpy.
"""

from __future__ import annotations

import operator
import os
import struct as _struct
import sys
from array import array as _array

import numpy as np

from .strings import StringTable
from .types import (_EXTRA, _KIND_ID, _LINKAGE, _PER_VLEN, K_ARRAY, K_CONST, K_DATASEC,
                    K_DECL_TAG, K_ENUM, K_ENUM64, K_FLOAT, K_FUNC, K_FUNC_PROTO, K_FWD,
                    K_INT, K_PTR, K_RESTRICT, K_STRUCT, K_TYPE_TAG, K_TYPEDEF, K_UNION,
                    K_VAR, K_VOLATILE, KINDS, BTFError, Member, Type, _suggest)
from .validate import check

BTF_MAGIC = 0xEB9F

# words each type takes (types._EXTRA, _PER_VLEN) by the info word's top byte (kind
# and kind_flag); a kind this parser does not know sends the scan far past the end
# (int32 words: a type section is at most 1 GiB, so positions stay below 2**28)
_MAX_TYPES_BYTES = 1 << 30
_UNKNOWN = 1 << 30
_STEP = np.array([3 + _EXTRA[b & 0x1F] if b & 0x1F < len(_EXTRA) else _UNKNOWN
                  for b in range(256)], np.int32)
_PER = np.array([_PER_VLEN[b & 0x1F] if b & 0x1F < len(_EXTRA) else 0
                 for b in range(256)], np.int32)

# find() without a kind: which kind wins when a name is used by several
_FIND_PRIORITY = ("typedef", "int", "float", "struct", "union", "enum", "enum64",
                  "var", "datasec", "func", "fwd")


class BTFSource:
    """Parsed BTF.  Type ids start at 1; 0 is void.  ``base`` makes this a split
    BTF whose ids continue after the base's and whose string offsets continue
    after the base's string section."""

    def __init__(self, raw: bytes, base: "BTFSource | None" = None):
        data = bytes(raw)
        if len(data) < 24:
            raise BTFError(f"BTF blob too short ({len(data)} bytes)")
        if data[:2] == b"\x9f\xeb":
            e = "<"
        elif data[:2] == b"\xeb\x9f":
            e = ">"
        else:
            raise BTFError(f"not BTF data: bad magic {data[:2].hex()} (expected 0xeb9f)")
        _magic, version, flags, hdr_len = _struct.unpack_from(e + "HBBI", data, 0)
        if version != 1:
            raise BTFError(f"unsupported BTF version {version}")
        if hdr_len < 24:
            raise BTFError(f"corrupt BTF header: header length {hdr_len} (at least 24)")
        type_off, type_len, str_off, str_len = _struct.unpack_from(e + "IIII", data, 8)
        t0 = hdr_len + type_off
        s0 = hdr_len + str_off
        if t0 + type_len > len(data) or s0 + str_len > len(data) or type_len % 4:
            raise BTFError("corrupt BTF header: sections exceed the data")
        if type_len > _MAX_TYPES_BYTES:
            raise BTFError(f"BTF type section of {type_len} bytes: more than this parser "
                           "takes (1 GiB)")
        if base is not None and base._endian != e:
            raise BTFError("split BTF and its base have different endianness")

        self._data = data
        self._endian = e
        self.base = base
        self.version = version
        self.flags = flags
        self._strings = StringTable(data[s0:s0 + str_len],
                                    base._strings if base is not None else None)
        self._str_len = str_len
        self._str_base = self._strings.first
        self._str_end = self._str_base + str_len
        self._id_base = len(base) if base is not None else 0

        w = _array("I")
        if w.itemsize != 4:  # pragma: no cover - exotic platform
            raise RuntimeError("array('I') is not 32-bit here")
        w.frombytes(data[t0:t0 + type_len])
        if (e == "<") != (sys.byteorder == "little"):
            w.byteswap()
        self._w = w
        self._offs = offs = _scan(w, self._id_base, base is None)
        self._types = {}
        self._np = None          # (offs, name_offs, kinds) numpy arrays, lazily
        self._names_list = None
        self._local_offs = np.asarray(offs[0 if base is not None else 1:], dtype=np.int64)
        self._checked = check(self, np.frombuffer(w, dtype=np.uint32), self._local_offs)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_file(cls, path, base: "BTFSource | None" = None):
        """Raw BTF (e.g. /sys/kernel/btf/vmlinux) or an ELF object's .BTF section."""
        with open(path, "rb") as f:
            data = f.read()
        if data[:4] == b"\x7fELF":
            return cls.from_elf(data, base=base)
        return cls(data, base=base)

    @classmethod
    def from_elf(cls, data, base: "BTFSource | None" = None):
        """The .BTF section of an ELF64 object (bytes, or a path)."""
        if isinstance(data, (str, os.PathLike)):
            with open(data, "rb") as f:
                data = f.read()
        sec = _elf_section(bytes(data), ".BTF")
        if sec is None:
            raise BTFError("ELF object has no .BTF section (compile with clang -g)")
        return cls(sec, base=base)

    # ------------------------------------------------------------------ basics
    def __len__(self):
        return self._id_base + len(self._offs)

    def __repr__(self):
        return f"<BTF {len(self)} types{' (split)' if self.base is not None else ''}>"

    def _str(self, off):
        return self._strings.get(off)

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
            size = int(self._checked.size[tid])
            t.size = size if size >= 0 else None
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
            return Type(tid, kind, name, type_id=w[p], index_type=w[p + 1], nelems=w[p + 2],
                        size=int(self._checked.size[tid]))
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
                    rt = self.type(int(self._checked.rid[mtype]))
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
        raise BTFError(f"BTF type #{tid}: unsupported kind {k}")

    def types(self):
        """Iterate over all Type objects (this BTF's own, not the base's)."""
        start = max(self._id_base, 1)
        for tid in range(start, len(self)):
            yield self.type(tid)

    # ------------------------------------------------------------------ lookups
    def _arrays(self):
        if self._np is None:
            offs = self._local_offs
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
        _, name_offs, _ = self._arrays()
        if "\ufffd" in name:
            # shown with bytes that are not UTF-8 replaced: compare as shown
            offsets = [o for o in np.unique(name_offs).tolist()
                       if o >= self._str_base and self._str(o) == name]
        else:
            offsets = self._strings.offsets_of(name)
        if not offsets:
            return ids
        want = np.asarray(offsets, dtype=np.uint32)
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


def _scan(w, id_base, with_void):
    """Word offset of each type in the type section (index 0 is void in a base BTF).

    Where the next type would start is computed for every word at once with numpy;
    the walk from the first type then only hops from one start to the next."""
    wn = np.frombuffer(w, dtype=np.uint32)
    info = wn[1:]                      # the info word of a type starting at word i
    top = info >> 24
    nxt = _STEP[top]
    nxt += np.arange(len(info), dtype=np.int32)
    nxt += (info & 0xFFFF).astype(np.int32) * _PER[top]
    hop = memoryview(nxt)
    offs = [-1] if with_void else []
    append = offs.append
    n = len(wn)
    last = n - 1                       # a type needs at least its info word
    i = 0
    while i < last:
        append(i)
        i = hop[i]
    if i != n:
        bad = len(offs) - 1 + id_base
        if i >= _UNKNOWN:
            kind = (wn[offs[-1] + 1] >> 24) & 0x1F
            raise BTFError(f"BTF type #{bad}: unknown kind {kind} (newer than this "
                           "parser?)")
        raise BTFError(f"BTF type #{bad + (i == last)}: truncated type section")
    return offs


def _elf_section(data, want):
    """Bytes of section ``want`` in an ELF64 image, or None."""
    if data[:4] != b"\x7fELF" or len(data) < 64 or data[4] != 2:
        raise BTFError("not an ELF64 object")
    e = "<" if data[5] == 1 else ">"
    try:
        shoff, = _struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum, shstrndx = _struct.unpack_from(e + "HHH", data, 0x3A)
        if shoff == 0:
            return None
        if shnum == 0:  # extended numbering
            shnum, = _struct.unpack_from(e + "Q", data, shoff + 0x20)
        if shstrndx == 0xFFFF:
            shstrndx, = _struct.unpack_from(e + "I", data, shoff + 0x28)
    except _struct.error:
        raise BTFError("corrupt ELF object: section headers outside the file") from None
    if shentsize < 64 or shoff + shnum * shentsize > len(data) or shstrndx >= shnum:
        raise BTFError(f"corrupt ELF object: {shnum} section headers of {shentsize} "
                       f"bytes at {shoff} do not fit its {len(data)} bytes")

    def sh(i):
        return _struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize)

    str_sh = sh(shstrndx)
    strtab = data[str_sh[4]:str_sh[4] + str_sh[5]]
    key = want.encode()
    for i in range(shnum):
        s = sh(i)
        end = strtab.find(b"\0", s[0])
        if end >= 0 and strtab[s[0]:end] == key:
            if s[4] + s[5] > len(data):
                raise BTFError(f"corrupt ELF object: section {want} ({s[5]} bytes at "
                               f"{s[4]}) runs past the end of the file")
            return data[s[4]:s[4] + s[5]]
    return None
