"""The BTF string table: NUL-terminated names addressed by byte offset.

A split BTF's table continues the base's: offsets below ``first`` belong to the base.
"""

from __future__ import annotations

from .types import BTFError


class StringTable:
    """Names of one BTF blob (``blob``: the string section's bytes)."""

    def __init__(self, blob: bytes, base: "StringTable | None" = None):
        self.blob = bytes(blob)
        self.base = base
        self.first = (base.first + len(base.blob)) if base is not None else 0

    def get(self, off) -> str:
        """The name at offset ``off`` (UTF-8, undecodable bytes replaced)."""
        if off < self.first:
            return self.base.get(off)
        off -= self.first
        blob = self.blob
        if off >= len(blob):
            raise BTFError(f"BTF string offset {off} out of range")
        end = blob.find(b"\0", off)
        if end < 0:
            end = len(blob)
        return blob[off:end].decode("utf-8", "replace")

    def offsets_of(self, name) -> list:
        """Offsets (absolute, this table only) whose string is exactly ``name``: where
        a string starts, or a name shares the tail of a longer one."""
        key = name.encode("utf-8")
        if not key or b"\0" in key:
            return []
        blob = self.blob
        offsets = []
        needle = key + b"\0"
        pos = blob.find(needle)
        while pos >= 0:
            offsets.append(pos + self.first)
            pos = blob.find(needle, pos + 1)
        if blob.endswith(key):             # a last name without its NUL, as get() reads
            offsets.append(len(blob) - len(key) + self.first)
        return offsets
