"""PNG encoding of dashboard frames: a frame re-compresses only the bands of rows that
changed since the last one (a bar that grew, a line that moved), the rest is reused.

A PNG's pixels are one zlib stream. Each band of BAND rows is deflated on its own and
ended with a sync flush (byte-aligned, so the pieces concatenate); the stream's
Adler-32 is combined from the bands'. Filter 0 and level 1: plot images are mostly flat
colour. Deflate is zlib-ng's (4x as fast as zlib's level 1 on a 2x dashboard frame, 25%
larger), zlib's where zlib-ng is not installed.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np

try:
    from zlib_ng import zlib_ng as _deflate
except ImportError:   # a slower encoder, the same PNG
    _deflate = zlib

BAND = 16              # rows per independently compressed band
_ADLER_BASE = 65521
_ZLIB_HEADER = b"\x78\x01"
_FINAL_BLOCK = b"\x03\x00"   # an empty final deflate block (fixed Huffman)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def _png(width: int, height: int, zdata: bytes) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)   # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zdata)
            + _chunk(b"IEND", b""))


def _rows(pixels: np.ndarray) -> bytes:
    """PNG scanlines (filter byte 0, then RGB) of (h, w, 3 or 4) uint8 pixels."""
    h, w = pixels.shape[:2]
    rows = np.empty((h, w * 3 + 1), np.uint8)
    rows[:, 0] = 0
    rgb = rows[:, 1:].reshape(h, w, 3)
    for c in range(3):   # channel by channel: a strided RGBA -> RGB copy is 6x slower
        rgb[..., c] = pixels[..., c]
    return rows.tobytes()


def png_bytes(pixels: np.ndarray, level: int = 1) -> bytes:
    """(h, w, 3) or (h, w, 4) uint8 pixels as RGB PNG bytes."""
    h, w = pixels.shape[:2]
    return _png(w, h, _deflate.compress(_rows(pixels), level))


def png_pixels(data: bytes) -> np.ndarray:
    """The (h, w, 3) uint8 pixels of PNG bytes: a stopped dashboard keeps only its PNG."""
    from PIL import Image   # matplotlib's own dependency
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _adler_combine(a1: int, a2: int, len2: int) -> int:
    """The Adler-32 of A + B from those of A and B (zlib's adler32_combine)."""
    rem = len2 % _ADLER_BASE
    s1 = a1 & 0xFFFF
    s2 = rem * s1 % _ADLER_BASE
    s1 = (s1 + (a2 & 0xFFFF) + _ADLER_BASE - 1) % _ADLER_BASE
    s2 = (s2 + (a1 >> 16) + (a2 >> 16) + _ADLER_BASE - rem) % _ADLER_BASE
    return s1 | (s2 << 16)


class FrameEncoder:
    """PNG bytes of successive frames of one size, re-deflating only changed bands.

    ``encode(rgba)`` takes the (h, w, 4) uint8 pixels of a frame (Agg's buffer);
    ``bands_encoded`` counts the bands compressed, for the benchmarks.
    """

    def __init__(self, level: int = 1):
        self.level = level
        self.bands_encoded = 0
        self._last: np.ndarray | None = None   # the previous frame, as (h, w) uint32
        self._bands: list[tuple[bytes, int, int]] = []   # deflated, adler32, length

    def encode(self, rgba: np.ndarray) -> bytes:
        h, w = rgba.shape[:2]
        words = np.ascontiguousarray(rgba).view(np.uint32).reshape(h, w)
        n = -(-h // BAND)
        if self._last is None or self._last.shape != words.shape:
            self._last = words.copy()
            self._bands = [None] * n
            dirty = range(n)
        else:
            changed = (words != self._last).any(axis=1)
            dirty = np.flatnonzero(np.logical_or.reduceat(changed, np.arange(0, h, BAND)))
        for i in dirty:
            rows = slice(i * BAND, min(h, (i + 1) * BAND))
            raw = _rows(rgba[rows])
            deflate = _deflate.compressobj(self.level, _deflate.DEFLATED, -15)
            self._bands[i] = (deflate.compress(raw) + deflate.flush(_deflate.Z_SYNC_FLUSH),
                              _deflate.adler32(raw), len(raw))
            self._last[rows] = words[rows]
        self.bands_encoded += len(dirty)
        adler = 1
        for _, a, length in self._bands:
            adler = _adler_combine(adler, a, length)
        zdata = (_ZLIB_HEADER + b"".join(b for b, _, _ in self._bands) + _FINAL_BLOCK
                 + struct.pack(">I", adler))
        return _png(w, h, zdata)
