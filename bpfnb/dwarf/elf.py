"""Sections, symbols and relocations of an ELF64 relocatable object (a BPF .o).

Relocations are applied only where a symbol's value is not 0: in an unlinked BPF
object nearly all point at section symbols, whose value is 0, with the addend in place.
"""

from __future__ import annotations

import struct

import numpy as np

from .die import DwarfError


class Elf:
    """Sections, symbols and relocations of an ELF64 relocatable object."""

    def __init__(self, data: bytes):
        if len(data) < 64 or data[:4] != b"\x7fELF" or data[4] != 2:
            raise DwarfError("not an ELF64 object")
        self.data = data
        self.e = e = "<" if data[5] == 1 else ">"
        self.machine, = struct.unpack_from(e + "H", data, 0x12)
        shoff, = struct.unpack_from(e + "Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from(e + "HHH", data, 0x3A)
        if shoff == 0 or shentsize < 64 or shoff + shnum * shentsize > len(data):
            raise DwarfError("ELF section headers out of bounds")
        heads = [struct.unpack_from(e + "IIQQQQIIQQ", data, shoff + i * shentsize)
                 for i in range(shnum)]
        strtab = heads[shstrndx] if shstrndx < shnum else None
        self.headers = heads
        self.by_name: dict[str, int] = {}
        self.names = []
        for i, h in enumerate(heads):
            name = self._cstr(strtab[4] + h[0]) if strtab else ""
            self.names.append(name)
            self.by_name.setdefault(name, i)
        self._symbols = None

    def _cstr(self, off):
        end = self.data.find(b"\0", off)
        return self.data[off:end].decode("utf-8", "replace") if end >= 0 else ""

    def section(self, name) -> bytes | None:
        i = self.by_name.get(name)
        if i is None:
            return None
        return self.index_bytes(i)

    def index_bytes(self, i) -> bytes:
        h = self.headers[i]
        if h[1] == 8:  # SHT_NOBITS
            return bytes(h[5])
        if h[4] + h[5] > len(self.data):
            raise DwarfError(f"ELF section {self.names[i]!r} out of bounds")
        return self.data[h[4]:h[4] + h[5]]

    def symbols(self) -> list:
        """[(name, value, size, section index, type)] of .symtab, by index."""
        if self._symbols is None:
            out = []
            i = next((j for j, h in enumerate(self.headers) if h[1] == 2), None)
            if i is not None:
                raw, link = self.index_bytes(i), self.headers[i][6]
                strs = self.headers[link][4] if link < len(self.headers) else 0
                for off in range(0, len(raw) - 23, 24):
                    name, info, _, shndx, value, size = struct.unpack_from(
                        self.e + "IBBHQQ", raw, off)
                    out.append((self._cstr(strs + name), value, size, shndx, info & 0xF))
            self._symbols = out
        return self._symbols

    def relocations(self, target: int) -> np.ndarray:
        """(offset, symbol index, type, addend) rows of the REL/RELA sections of section
        ``target``, as a numpy record array."""
        rows = []
        for h in self.headers:
            if h[1] in (9, 4) and h[7] == target:
                raw = self.data[h[4]:h[4] + h[5]]
                if h[1] == 9:
                    dt = np.dtype([("offset", self.e + "u8"), ("info", self.e + "u8")])
                    r = np.frombuffer(raw[:len(raw) // 16 * 16], dt)
                    add = np.zeros(len(r), np.int64)
                else:
                    dt = np.dtype([("offset", self.e + "u8"), ("info", self.e + "u8"),
                                   ("addend", self.e + "i8")])
                    r = np.frombuffer(raw[:len(raw) // 24 * 24], dt)
                    add = r["addend"].astype(np.int64)
                rows.append((r["offset"].astype(np.int64), (r["info"] >> 32).astype(np.int64),
                             (r["info"] & 0xFFFFFFFF).astype(np.int64), add,
                             np.full(len(r), h[1] == 4)))
        if not rows:
            z = np.zeros(0, np.int64)
            return z, z, z, z, np.zeros(0, bool)
        return tuple(np.concatenate(c) for c in zip(*rows))

    def relocated(self, name) -> bytes | None:
        """Section ``name`` with its absolute (debug) relocations applied."""
        i = self.by_name.get(name)
        if i is None:
            return None
        data = self.index_bytes(i)
        offs, syms, types, addends, rela = self.relocations(i)
        if not len(offs):
            return data
        values = np.array([s[1] for s in self.symbols()] or [0], np.int64)
        if syms.size and syms.max() >= len(values):
            raise DwarfError(f"relocation of {name!r} names a symbol out of range")
        s = values[syms]
        keep = (s != 0) | rela
        if not keep.any():
            return data
        out = bytearray(data)
        for off, typ, sv, a, is_rela in zip(offs[keep].tolist(), types[keep].tolist(),
                                             s[keep].tolist(), addends[keep].tolist(),
                                             rela[keep].tolist()):
            width = 8 if typ == 2 else 4 if typ in (3, 4) else 0  # R_BPF_64_ABS64/ABS32/NODYLD32
            if not width or off + width > len(out):
                continue
            fmt = self.e + ("Q" if width == 8 else "I")
            old = 0 if is_rela else struct.unpack_from(fmt, out, off)[0]
            struct.pack_into(fmt, out, off, (old + sv + a) & ((1 << (8 * width)) - 1))
        return bytes(out)
