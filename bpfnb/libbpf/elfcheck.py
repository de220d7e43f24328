"""Validation of a BPF ELF object before libbpf 1.1.2 parses it (it trusts what it reads).

libbpf 1.1.2 dereferences what the object says without checking it: a type id beyond
the last BTF type (``skip_mods_and_typedefs`` on NULL from ``parse_btf_map_def``,
``bpf_object__init_user_btf_map``, ``bpf_core_parse_spec``), a symbol name outside the
string table (``strcmp(NULL)`` in ``find_extern_btf_id``), a relocation section whose
entry size is 0 (a division).  ``check(data)`` reads the same things first and raises
OpenError saying what is wrong: the ELF header, section headers, symbols and
relocations in bounds; .BTF through the BTF parser (which validates every type);
.BTF.ext func/line info and CO-RE relocations (type ids, string offsets, access strings
walked against their type, instruction offsets inside their section); DATASECs against
the ELF sections and symbols; the map definitions of ``.maps`` as libbpf reads them;
``.kconfig``/``.ksyms`` externs present in BTF.
"""

from __future__ import annotations

import errno
import struct

import numpy as np

from .btf import BTF, BTFError
from .btf.types import (K_ARRAY, K_DATASEC, K_ENUM, K_ENUM64, K_FUNC, K_STRUCT,
                        K_UNION)
from .errors import OpenError

EM_BPF = 247
SHT_NULL, SHT_SYMTAB, SHT_STRTAB, SHT_RELA, SHT_NOBITS, SHT_REL = 0, 2, 3, 4, 8, 9
SHN_UNDEF, SHN_LORESERVE, SHN_ABS, SHN_COMMON = 0, 0xFF00, 0xFFF1, 0xFFF2
STB_GLOBAL, STB_WEAK = 1, 2
SHF_EXECINSTR = 0x4
STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2
EXTERN_SECTIONS = (".kconfig", ".ksyms")
# no map value and no BPF program comes near this; libbpf would allocate it
_MAX_NOBITS = 1 << 30
# enum bpf_core_relo_kind: field-based 0-5, type-based 6-9 and 12, enum-based 10-11
_FIELD_RELOS, _ENUM_RELOS, _N_RELOS = range(0, 6), (10, 11), 13
_CORE_SPEC_MAX_LEN = 64
# parse_btf_map_def: members read as an integer through a pointer to an array
_INT_FIELDS = ("type", "max_entries", "map_flags", "numa_node", "key_size",
               "value_size", "pinning", "map_extra")


class Section:
    __slots__ = ("index", "name", "type", "flags", "offset", "size", "link", "info",
                 "entsize", "header")

    def __init__(self, index, name, fields, header):
        self.index, self.name, self.header = index, name, header
        (_, self.type, self.flags, _, self.offset, self.size, self.link, self.info, _,
         self.entsize) = fields


class Symbol:
    __slots__ = ("index", "name", "bind", "type", "shndx", "value", "size", "entry")

    def __init__(self, index, name, info, shndx, value, size, entry):
        self.index, self.name, self.shndx = index, name, shndx
        self.bind, self.type = info >> 4, info & 0xF
        self.value, self.size, self.entry = value, size, entry


class Elf:
    """What check() read: sections (by index and name), symbols, the object's BTF, and
    where .BTF.ext records and map definitions sit (the fuzzer aims at them)."""

    def __init__(self, data: bytes):
        self.data = data
        self.sections: list[Section] = []
        self.by_name: dict[str, Section] = {}
        self.symbols: list[Symbol] = []
        self.symtab: Section | None = None
        self.btf: BTF | None = None
        self.ext_records: list[tuple[str, int, int]] = []  # (kind, file offset, size)

    def section(self, name):
        return self.by_name.get(name)

    def bytes_of(self, sec: Section) -> bytes:
        if sec.type == SHT_NOBITS:
            return b""
        return self.data[sec.offset:sec.offset + sec.size]


def fail(what: str):
    raise OpenError(f"malformed BPF object: {what}", errno.EINVAL, "",
                    "libbpf would misread it: rebuild it with clang -g -O2 -target bpf, "
                    "or check where it was copied from")


def check(data: bytes) -> Elf:
    """Validate ``data`` (an ELF BPF object); the parsed layout, or OpenError."""
    elf = Elf(bytes(data))
    _sections(elf)
    _symbols(elf)
    _relocations(elf)
    btf_sec, ext_sec = elf.section(".BTF"), elf.section(".BTF.ext")
    if btf_sec is not None:
        try:
            elf.btf = BTF(elf.bytes_of(btf_sec))
        except BTFError as e:
            fail(f".BTF: {e}")
    elif ext_sec is not None:
        fail(".BTF.ext without .BTF")
    if elf.btf is not None:
        if ext_sec is not None:
            _btf_ext(elf, elf.bytes_of(ext_sec), ext_sec.offset)
        _datasecs(elf)
        _maps(elf)
    _externs(elf)
    return elf


# --------------------------------------------------------------------------- ELF

def _cstr(table: bytes, off: int, what: str) -> str:
    if off >= len(table):
        fail(f"{what}: name offset {off} beyond its string table ({len(table)} bytes)")
    end = table.find(b"\0", off)
    if end < 0:
        fail(f"{what}: name at offset {off} is not NUL-terminated")
    try:
        # libbpf hands section and symbol names on as program and map names
        return table[off:end].decode()
    except UnicodeDecodeError:
        fail(f"{what}: name {table[off:end]!r} is not UTF-8")


def _sections(elf: Elf):
    d = elf.data
    if len(d) < 64 or d[:4] != b"\x7fELF":
        fail(f"not an ELF file ({len(d)} bytes, starts {d[:4]!r})")
    if d[4] != 2:
        fail("not a 64-bit ELF object (BPF objects are ELFCLASS64)")
    if d[5] != 1:
        fail("not a little-endian ELF object (this machine and libbpf need ELFDATA2LSB)")
    e_type, e_machine = struct.unpack_from("<HH", d, 16)
    if e_machine != EM_BPF:
        fail(f"ELF machine is {e_machine}, not BPF ({EM_BPF}): compile with -target bpf")
    if e_type != 1:
        fail(f"ELF type is {e_type}, not a relocatable object (ET_REL)")
    shoff, = struct.unpack_from("<Q", d, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", d, 0x3A)
    if shnum == 0 or shnum >= SHN_LORESERVE or shstrndx >= SHN_LORESERVE:
        fail(f"{shnum} sections (string table #{shstrndx}): extended section "
             f"numbering is not supported")
    if shentsize != 64:
        fail(f"section header size {shentsize}, not 64")
    if shoff + shnum * 64 > len(d):
        fail(f"{shnum} section headers at offset {shoff} run past the end of the "
             f"{len(d)}-byte file")
    if not 0 < shstrndx < shnum:
        fail(f"section name table #{shstrndx} is not one of the {shnum} sections")
    raw = [struct.unpack_from("<IIQQQQIIQQ", d, shoff + 64 * i) for i in range(shnum)]
    for i, f in enumerate(raw):
        if i and f[1] != SHT_NOBITS and f[4] + f[5] > len(d):
            fail(f"section #{i}: {f[5]} bytes at offset {f[4]} run past the end of the "
                 f"{len(d)}-byte file")
        if f[1] == SHT_NOBITS and f[5] > _MAX_NOBITS:
            fail(f"section #{i}: {f[5]} bytes of zeroes, more than any map holds")
        if f[6] >= shnum:
            fail(f"section #{i}: links to section #{f[6]}, beyond the {shnum} sections")
    names = raw[shstrndx]
    if names[1] != SHT_STRTAB:
        fail(f"section name table #{shstrndx} is not a string table (type {names[1]})")
    strtab = d[names[4]:names[4] + names[5]]
    for i, f in enumerate(raw):
        name = _cstr(strtab, f[0], f"section #{i}") if i else ""
        sec = Section(i, name, f, shoff + 64 * i)
        elf.sections.append(sec)
        if not i:
            continue
        if name in elf.by_name:
            fail(f"sections #{elf.by_name[name].index} and #{i} are both named {name!r}")
        elf.by_name[name] = sec
        if sec.type == SHT_SYMTAB:
            if elf.symtab is not None:
                fail(f"two symbol tables (sections #{elf.symtab.index} and #{i})")
            elf.symtab = sec


def _symbols(elf: Elf):
    sec = elf.symtab
    if sec is None:
        fail("no symbol table (.symtab): was it stripped?")
    if sec.entsize != 24 or sec.size % 24:
        fail(f"symbol table: entry size {sec.entsize} and size {sec.size} (24-byte "
             f"entries expected)")
    strsec = elf.sections[sec.link]
    if strsec.type != SHT_STRTAB:
        fail(f"symbol table links to section #{sec.link} ({strsec.name!r}), not a "
             f"string table")
    names = elf.bytes_of(strsec)
    nsec = len(elf.sections)
    for i, (st_name, info, _other, shndx, value, size) in enumerate(
            struct.iter_unpack("<IBBHQQ", elf.bytes_of(sec))):
        name = _cstr(names, st_name, f"symbol #{i}")
        sym = Symbol(i, name, info, shndx, value, size, sec.offset + 24 * i)
        elf.symbols.append(sym)
        if shndx >= nsec and shndx not in (SHN_ABS, SHN_COMMON):
            fail(f"symbol #{i} {name!r}: in section #{shndx}, beyond the {nsec} sections")
        if 0 < shndx < nsec and sym.type in (STT_OBJECT, STT_FUNC):
            target = elf.sections[shndx]
            if value + size > target.size:
                fail(f"symbol #{i} {name!r}: {size} bytes at {value} run past section "
                     f"{target.name!r} ({target.size} bytes)")


def _relocations(elf: Elf):
    nsym = len(elf.symbols)
    for sec in elf.sections:
        if sec.type not in (SHT_REL, SHT_RELA):
            continue
        size = 16 if sec.type == SHT_REL else 24
        if sec.entsize != size or sec.size % size:
            fail(f"relocation section {sec.name!r}: entry size {sec.entsize} and size "
                 f"{sec.size} ({size}-byte entries expected)")
        if sec.link != elf.symtab.index:
            fail(f"relocation section {sec.name!r} links to section #{sec.link}, not "
                 f"the symbol table")
        if not 0 < sec.info < len(elf.sections):
            fail(f"relocation section {sec.name!r} applies to section #{sec.info}, "
                 f"not one of the {len(elf.sections)} sections")
        target = elf.sections[sec.info]
        if not target.flags & SHF_EXECINSTR and target.name != ".maps":
            continue          # debug info: libbpf skips its relocations
        rel = np.frombuffer(elf.bytes_of(sec), "<u8").reshape(-1, size // 8)
        bad = np.flatnonzero((rel[:, 1] >> 32 >= nsym) | (rel[:, 0] + 8 > target.size))
        if len(bad):
            j = int(bad[0])
            offset, sym = int(rel[j, 0]), int(rel[j, 1] >> 32)
            fail(f"relocation #{j} of {target.name!r} (offset {offset}, symbol #{sym}): "
                 f"outside the {target.size}-byte section or the {nsym} symbols")


# --------------------------------------------------------------------------- BTF

def _btf_str(btf: BTF, off: int, what: str) -> str:
    if off >= btf._str_end:
        fail(f"{what}: string offset {off} beyond the BTF string table "
             f"({btf._str_end} bytes)")
    return btf._str(off)


def _btf_id(btf: BTF, tid: int, what: str):
    if not 0 < tid < len(btf):
        fail(f"{what} refers to BTF type #{tid}, beyond the {len(btf)} types")


def _btf_ext(elf: Elf, raw: bytes, file_off: int):
    if len(raw) < 24:
        fail(f".BTF.ext: {len(raw)} bytes, shorter than its header")
    magic, version, _flags, hdr_len = struct.unpack_from("<HBBI", raw, 0)
    if magic != 0xEB9F or version != 1:
        fail(f".BTF.ext: magic {magic:#x} version {version} (0xeb9f version 1 expected)")
    if hdr_len < 24 or hdr_len > len(raw):
        fail(f".BTF.ext: header length {hdr_len} (24 to {len(raw)})")
    fields = struct.unpack_from("<IIII", raw, 8)
    blocks = [("func_info", fields[0], fields[1], 8), ("line_info", fields[2], fields[3], 16)]
    if hdr_len >= 32:
        relo = struct.unpack_from("<II", raw, 24)
        blocks.append(("CO-RE relocation", relo[0], relo[1], 16))
    for kind, off, length, min_rec in blocks:
        if not length:
            continue
        start = hdr_len + off
        if start + length > len(raw) or length < 4:
            fail(f".BTF.ext: {kind} block ({length} bytes at {off}) outside the "
                 f"{len(raw)}-byte section")
        _ext_block(elf, kind, raw[start:start + length], min_rec, file_off + start)


def _ext_block(elf: Elf, kind: str, raw: bytes, min_rec: int, file_off: int):
    btf = elf.btf
    rec_size, = struct.unpack_from("<I", raw, 0)
    if rec_size < min_rec or rec_size % 4:
        fail(f".BTF.ext: {kind} record size {rec_size} (at least {min_rec}, a multiple "
             f"of 4)")
    pos = 4
    while pos < len(raw):
        if pos + 8 > len(raw):
            fail(f".BTF.ext: {kind} section header cut short at byte {pos}")
        name_off, count = struct.unpack_from("<II", raw, pos)
        name = _btf_str(btf, name_off, f".BTF.ext {kind}")
        sec = elf.section(name)
        if not name or sec is None:
            fail(f".BTF.ext: {kind} for section {name!r}, which the object does not have")
        if not count or pos + 8 + count * rec_size > len(raw):
            fail(f".BTF.ext: {count} {kind} records of section {name!r} do not fit")
        pos += 8
        for j in range(count):
            elf.ext_records.append((kind, file_off + pos, rec_size))
            words = struct.unpack_from("<4I", raw, pos) if min_rec == 16 else \
                struct.unpack_from("<2I", raw, pos)
            where = f".BTF.ext {kind} #{j} of {name!r}"
            insn = words[0]
            if insn % 8 or insn >= sec.size:
                fail(f"{where}: instruction offset {insn} is not an instruction of "
                     f"the section's {sec.size} bytes")
            if kind == "func_info":
                _btf_id(btf, words[1], where)
                if btf._checked.kind[words[1]] != K_FUNC:
                    fail(f"{where}: BTF type #{words[1]} is not a function")
            elif kind == "line_info":
                _btf_str(btf, words[1], f"{where} file name")
                _btf_str(btf, words[2], f"{where} source line")
            else:
                _core_relo(btf, where, *words[1:])
            pos += rec_size


def _core_relo(btf: BTF, where: str, tid: int, access_off: int, relo_kind: int):
    """What bpf_core_parse_spec reads, walked over the raw type words (building Type
    objects of kernel structs with hundreds of members would cost more than the rest)."""
    _btf_id(btf, tid, where)
    spec = _btf_str(btf, access_off, f"{where} access string")
    if relo_kind >= _N_RELOS:
        fail(f"{where}: unknown relocation kind {relo_kind}")
    parts = spec.split(":")
    if not spec or len(parts) > _CORE_SPEC_MAX_LEN or \
            not all(p.isascii() and p.isdigit() and int(p) < 1 << 31 for p in parts):
        fail(f"{where}: access string {spec!r} is not a list of indexes like '0:1:2'")
    if relo_kind not in _FIELD_RELOS and relo_kind not in _ENUM_RELOS:
        if spec != "0":
            fail(f"{where}: a type relocation's access string is '0', not {spec!r}")
        return
    ck, w, offs = btf._checked, btf._w, btf._offs
    idx = [int(p) for p in parts]

    def bad(why):
        fail(f"{where}: access {spec!r} on {btf.c_name(tid)!r}: {why}")

    rid = int(ck.rid[tid])
    kind = int(ck.kind[rid])
    if relo_kind in _ENUM_RELOS:
        if kind not in (K_ENUM, K_ENUM64) or len(idx) > 1 or \
                idx[0] >= w[offs[rid] + 1] & 0xFFFF:
            bad("not an enumerator of an enum")
        return
    if ck.size[rid] < 0:
        bad("the type has no size")
    t = tid
    for i in idx[1:]:
        r = int(ck.rid[t])
        kind, o = int(ck.kind[r]), offs[r]
        if kind in (K_STRUCT, K_UNION):
            if i >= w[o + 1] & 0xFFFF:
                bad(f"member #{i} of {w[o + 1] & 0xFFFF}")
            t = w[o + 4 + 3 * i]
        elif kind == K_ARRAY:
            if w[o + 5] and i >= w[o + 5]:
                bad(f"index {i} of an array of {w[o + 5]}")
            t = w[o + 3]
            if ck.size[ck.rid[t]] < 0:
                bad("array element without a size")
        else:
            bad(f"index {i} into a {btf.type(r).kind}, not a struct, union or array")


def _datasec_ids(btf: BTF) -> list[int]:
    _, _, kinds = btf._arrays()
    return (np.flatnonzero(kinds == K_DATASEC) + btf._first_local_id()).tolist()


def _datasecs(elf: Elf):
    btf = elf.btf
    symbols = {}
    for s in elf.symbols:
        if s.type == STT_OBJECT and s.name:
            symbols.setdefault(s.name, s)
    for tid in _datasec_ids(btf):
        t = btf.type(tid)
        if t.name in EXTERN_SECTIONS:
            continue
        sec = elf.section(t.name)
        if sec is None:
            fail(f"BTF type #{tid}: DATASEC {t.name!r} names no section of the object")
        for j, (vid, off, size) in enumerate(t.vars):
            v = btf.type(vid)
            if v.kind != "var":
                fail(f"BTF type #{tid}: DATASEC {t.name!r} entry #{j} is a {v.kind}, not "
                     f"a variable")
            if v.linkage != "global":
                continue
            sym = symbols.get(v.name)
            if sym is None or sym.shndx != sec.index:
                fail(f"BTF type #{tid}: variable {v.name!r} of {t.name!r} has no symbol "
                     f"in that section")
            if sym.value + size > sec.size or off + size > max(t.size, sec.size):
                fail(f"BTF type #{tid}: variable {v.name!r} ({size} bytes at "
                     f"{sym.value}) runs past section {t.name!r} ({sec.size} bytes)")


def _maps(elf: Elf):
    sec = elf.section(".maps")
    if sec is None:
        return
    btf = elf.btf
    ids = [i for i in btf._ids_named(".maps") if btf.type(i).kind == "datasec"]
    if not ids:
        fail("section .maps has no DATASEC '.maps' in BTF (compile with clang -g)")
    for vid, off, size in btf.type(ids[0]).vars:
        v = btf.type(vid)
        if v.kind != "var" or not v.name:
            fail(f"BTF type #{vid}: a .maps entry that is not a named variable")
        if "\ufffd" in v.name:
            fail(f"BTF type #{vid}: map name {v.name!r} is not UTF-8")
        if off + size > sec.size:
            fail(f"map {v.name!r}: {size} bytes at {off} past the .maps section "
                 f"({sec.size} bytes)")
        _map_def(btf, v.name, btf.resolve(v.type_id), size, inner=False)


def _map_def(btf: BTF, name: str, def_id: int, size: int, inner: bool):
    d = btf.type(def_id)
    if d.kind != "struct":
        fail(f"map {name!r}: its definition is a {d.kind}, not a struct")
    if d.size > size:
        fail(f"map {name!r}: definition of {d.size} bytes in a {size}-byte slot")
    for i, m in enumerate(d.members):
        what = f"map {name!r}: member {m.name!r}"
        if m.name in _INT_FIELDS:
            p = btf.type(btf.resolve(m.type_id))
            if p.kind != "ptr" or btf.type(p.type_id).kind != "array":
                fail(f"{what} is not an __uint() (a pointer to an array)")
        elif m.name in ("key", "value"):
            p = btf.type(m.type_id)
            if p.kind != "ptr" or btf._checked.size[p.type_id] < 0:
                fail(f"{what} is not a __type() (a pointer to a sized type)")
        elif m.name == "values":
            a = btf.type(m.type_id)
            if inner or i != len(d.members) - 1 or a.kind != "array" or a.nelems:
                fail(f"{what}: __array() of inner maps or programs is the last member "
                     f"of an outer map, a zero-sized array")
            p = btf.type(btf.resolve(a.type_id))
            target = btf.resolve(p.type_id) if p.kind == "ptr" else 0
            k = btf.type(target).kind
            if k == "struct":
                _map_def(btf, name + ".inner", target, btf.type(target).size, inner=True)
            elif k != "func_proto":
                fail(f"{what}: __array() of {k}, not of map definitions or programs")


def _externs(elf: Elf):
    btf = elf.btf
    for s in elf.symbols:
        if s.shndx != SHN_UNDEF or s.bind not in (STB_GLOBAL, STB_WEAK) or \
                s.type != STT_NOTYPE or not s.name:
            continue
        if btf is None:
            fail(f"extern {s.name!r} needs BTF (compile with clang -g)")
        found = [i for i in btf._ids_named(s.name) if btf.type(i).kind in ("var", "func")]
        if not found or btf.type(found[0]).linkage != "extern":
            fail(f"extern {s.name!r} (symbol #{s.index}) has no extern VAR or FUNC in BTF")
        owner = [t for t in map(btf.type, _datasec_ids(btf))
                 if any(v[0] == found[0] for v in t.vars)]
        if btf.type(found[0]).kind == "var" and \
                not (owner and owner[0].name in EXTERN_SECTIONS):
            fail(f"extern {s.name!r}: its BTF VAR is in no .kconfig or .ksyms DATASEC")
