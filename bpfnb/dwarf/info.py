"""The DWARF of one object: strings, addresses, lookups, source files, locations."""

from __future__ import annotations

import struct

import numpy as np

from .die import (AT_COMP_DIR, AT_DECL_FILE, AT_HIGH_PC, AT_LOCATION, AT_LOW_PC,
                  AT_STMT_LIST, DIE, DwarfError, Unit, _uleb)
from .elf import Elf


class Dwarf:
    """The DWARF of one ELF object (see the package doc)."""

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
            self._named = {}
        index = self._named.get(tag)
        if index is None:  # the names of that tag's DIEs only, read once
            index = self._named[tag] = {}
            for unit in self.units:
                for off, t in unit.top:
                    if t == tag:
                        index.setdefault(unit.name_of(off), []).append((unit, off))
        return [unit.parse(off) for unit, off in index.get(name, [])]

    def subprogram(self, name: str, start: int | None = None,
                   size: int = 0) -> DIE | None:
        """The defining subprogram DIE of function ``name`` (with low_pc). Given the
        function's ``start`` (its symbol's value) and ``size``, found without a scan
        of the units where their DWARF allows (see _find_subprogram)."""
        if self._subprograms is None and start is not None:
            found = self._find_subprogram(name, start, size)
            if found is not None:
                return found
        if self._subprograms is None:
            self._subprograms = {}
            for die in self.top_level({"subprogram"}):
                if AT_LOW_PC in die.attrs and die.name:
                    self._subprograms.setdefault(die.name, die)
        return self._subprograms.get(name)

    def _find_subprogram(self, name, start, size) -> DIE | None:
        """A DWARF 5 subprogram DIE begins with its abbreviation code and the index of
        its low_pc in .debug_addr: look for those two bytes (numpy over .debug_info)
        and keep the DIE that parses with the function's name, start and size. None
        when this does not apply (then a scan finds it)."""
        info = np.frombuffer(self.info, np.uint8)
        for unit in self.units:
            codes = [code for code, (tag, _, specs, _) in unit.table.items()
                     if tag == "subprogram" and code < 0x80 and specs
                     and specs[0][0] == AT_LOW_PC and specs[0][1] in (0x1B, 0x29)]
            if unit.version < 5 or not codes:
                return None
            if self._addr is None:
                self._addr = self.elf.relocated(".debug_addr") or b""
            count = (len(self._addr) - unit.addr_base) // 8
            if unit.addr_size != 8 or count <= 0:
                return None
            addrs = np.frombuffer(self._addr, self.e + "u8", count, unit.addr_base)
            indices = np.flatnonzero(addrs == start)
            indices = indices[indices < 0x80]
            lo, hi = unit.first, unit.end - 1
            hits = np.flatnonzero(np.isin(info[lo:hi], codes) & np.isin(info[lo + 1:hi + 1],
                                                                         indices))
            hits = hits + lo
            for code in codes:  # high_pc as data4 right after: it must be the size
                specs = unit.table[code][2]
                if size and len(specs) > 1 and specs[1][:2] == (AT_HIGH_PC, 0x06) \
                        and self.e == "<":
                    at = hits[hits + 6 <= len(info)]
                    word = (info[at + 2].astype(np.uint32) | info[at + 3].astype(np.uint32) << 8
                            | info[at + 4].astype(np.uint32) << 16
                            | info[at + 5].astype(np.uint32) << 24)
                    hits = np.concatenate([hits[info[hits] != code],
                                           at[(info[at] == code) & (word == size)]])
            for pos in sorted(hits.tolist()):
                try:
                    die = unit.parse(pos)
                except (DwarfError, IndexError, KeyError, ValueError, TypeError):
                    continue
                if (die.tag == "subprogram" and die.name == name
                        and die.attrs.get(AT_LOW_PC) == start
                        and (not size or die.attrs.get(AT_HIGH_PC) in (size, start + size))):
                    return die
        return None

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
                elif form in (0x0B, 0x05, 0x06, 0x07, 0x0F, 0x1E, 0x09, 0x0A, 0x03, 0x04):
                    entry[ct], pos = unit._value(form, None, pos, d, self.e)  # numbers, MD5
                else:
                    raise DwarfError(f"unexpected form 0x{form:x} in the line table")
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
