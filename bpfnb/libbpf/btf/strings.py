"""The BTF string table: NUL-terminated names addressed by byte offset.

A split BTF's table continues the base's: offsets below ``first`` belong to the base.
"""

from __future__ import annotations


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
            raise ValueError(f"BTF string offset {off} out of range")
        end = blob.find(b"\0", off)
        if end < 0:
            end = len(blob)
        return blob[off:end].decode("utf-8", "replace")

    def offsets_of(self, name) -> list:
        """Offsets (absolute, this table only) where exactly ``name`` starts."""
        key = name.encode("utf-8")
        if not key or b"\0" in key:
            return []
        blob = self.blob
        offsets = []
        needle = b"\0" + key + b"\0"
        if blob.startswith(key + b"\0"):
            offsets.append(0)
        pos = blob.find(needle)
        while pos >= 0:
            offsets.append(pos + 1)
            pos = blob.find(needle, pos + 1)
        return [o + self.first for o in offsets]
