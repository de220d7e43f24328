"""Map: typed lookup/update/delete, iteration, batch lookups, per-CPU values.

Keys and values are decoded from the object's BTF (see btf/). Maps without BTF
types decode 1/2/4/8-byte keys and values as unsigned ints and anything else as bytes.
"""

from __future__ import annotations

import ctypes
import errno
import weakref

import numpy as np

from . import _check, _lib
from ._lib import lib
from .errors import BPFError, ObjectClosedError, last_errno
from .names import type_label

# enum bpf_map_type (uapi/linux/bpf.h)
HASH, ARRAY, PROG_ARRAY, PERF_EVENT_ARRAY, PERCPU_HASH, PERCPU_ARRAY, STACK_TRACE = range(1, 8)
LRU_HASH, LRU_PERCPU_HASH = 9, 10
RINGBUF = 27
PERCPU_TYPES = {PERCPU_HASH, PERCPU_ARRAY, LRU_PERCPU_HASH, 21}  # 21: percpu cgroup storage
ARRAY_TYPES = {ARRAY, PERCPU_ARRAY, PROG_ARRAY, PERF_EVENT_ARRAY}
NO_VALUE_TYPES = {RINGBUF, 28}  # ringbuf, user ringbuf: not key/value maps

BPF_ANY, BPF_NOEXIST, BPF_EXIST, BPF_F_LOCK = 0, 1, 2, 4
ENOTSUPP = 524  # kernel-internal errno: the map type has no batch ops


def type_name(map_type: int) -> str:
    name = lib.libbpf_bpf_map_type_str(map_type)
    return name.decode() if name else str(map_type)


class _RawCodec:
    """Fallback codec for maps without BTF key/value types.

    Without a type the sign is unknown: an int is taken if it fits ``size`` bytes
    either way (-2**31..2**32-1 for 4 bytes), as two's complement."""

    def __init__(self, size: int, what: str):
        self.size, self.what = size, what
        self.dtype = np.dtype(f"<u{size}") if size in (1, 2, 4, 8) else np.dtype(f"V{size}")
        self.plain = size in (1, 2, 4, 8)

    def decode(self, buf, offset=0):
        raw = bytes(memoryview(buf)[offset:offset + self.size])
        return int.from_bytes(raw, "little") if self.size in (1, 2, 4, 8) else raw

    def encode(self, value) -> bytes:
        if isinstance(value, (bytes, bytearray)):
            if len(value) != self.size:
                raise ValueError(f"{self.what}: expected {self.size} bytes, got {len(value)}")
            return bytes(value)
        if self.size in (1, 2, 4, 8) and not isinstance(value, (float, str)):
            v = _check.integer(value, self.what, f"{self.size}-byte int")
            nbits = self.size * 8
            if not -(1 << (nbits - 1)) <= v < 1 << nbits:
                raise _check.RangeError(self.what, v, f"{self.size}-byte int",
                                        -(1 << (nbits - 1)), (1 << nbits) - 1)
            return (v & ((1 << nbits) - 1)).to_bytes(self.size, "little")
        raise TypeError(f"{self.what}: expected an int or {self.size} bytes, got "
                        f"{type(value).__name__}")


class _BTFCodec:
    def __init__(self, btf, type_id: int, size: int, what: str):
        self.btf, self.type_id, self.size, self.what = btf, type_id, size, what
        self.dtype = btf.dtype(type_id)
        # ints and floats decode the same through numpy's tolist(), much faster
        self.plain = btf.type(btf.resolve(type_id)).kind in ("int", "float") and \
            self.dtype.kind in "iuf"

    def decode(self, buf, offset=0):
        return self.btf.decode(self.type_id, buf, offset)

    def encode(self, value) -> bytes:
        if isinstance(value, (bytes, bytearray)) and len(value) == self.size:
            return bytes(value)
        return self.btf.encode(self.type_id, value, self.what)


class Map:
    """One BPF map of an Object (``obj.maps.name``)."""

    def __init__(self, obj, ptr: int):
        self._obj = weakref.ref(obj)
        self._ptr = ptr
        self.name = lib.bpf_map__name(ptr).decode()
        self.type = lib.bpf_map__type(ptr)
        self.type_name = type_name(self.type)
        self.key_size = lib.bpf_map__key_size(ptr)
        self.value_size = lib.bpf_map__value_size(ptr)
        self.key_type_id = lib.bpf_map__btf_key_type_id(ptr)
        self.value_type_id = lib.bpf_map__btf_value_type_id(ptr)
        self.percpu = self.type in PERCPU_TYPES
        self._codecs = None

    # --- state --------------------------------------------------------------

    @property
    def object(self):
        obj = self._obj()
        if obj is None or obj.state == "destroyed":
            raise ObjectClosedError(f"map {self.name!r}: its BPF object has been destroyed")
        return obj

    @property
    def fd(self) -> int:
        obj = self.object
        if obj.state != "loaded":
            raise BPFError(f"map {self.name!r} exists in the kernel only after load()")
        return lib.bpf_map__fd(self._ptr)

    @property
    def max_entries(self) -> int:
        self.object
        return lib.bpf_map__max_entries(self._ptr)

    @max_entries.setter
    def max_entries(self, n: int):
        obj = self.object
        if obj.state != "opened":
            raise BPFError(f"map {self.name!r}: max_entries can only change before load()")
        n = _check.u32(n, f"map {self.name!r} max_entries")
        rc = lib.bpf_map__set_max_entries(self._ptr, n)
        if rc < 0:
            raise BPFError(f"cannot resize map {self.name!r}", last_errno(rc))

    def set_value_size(self, size: int):
        """Size the value before load (stack-trace maps declared with value_size 0)."""
        if self.object.state != "opened":
            raise BPFError(f"map {self.name!r}: value_size can only change before load()")
        size = _check.u32(size, f"map {self.name!r} value_size")
        rc = lib.bpf_map__set_value_size(self._ptr, size)
        if rc < 0:
            raise BPFError(f"cannot set value_size of map {self.name!r}", last_errno(rc))
        self.value_size = size
        self._codecs = None

    def resize(self, max_entries: int) -> "Map":
        self.max_entries = max_entries
        return self

    @property
    def map_flags(self) -> int:
        """BPF_F_* creation flags (e.g. BPF_F_STACK_BUILD_ID on a stack-trace map)."""
        self.object
        return lib.bpf_map__map_flags(self._ptr)

    # --- types --------------------------------------------------------------

    def _codec(self):
        if self._codecs is None:
            btf = self.object.btf
            # value_size may be fixed up at load (stack maps): read it again.
            self.value_size = lib.bpf_map__value_size(self._ptr)
            kwhat, vwhat = f"map {self.name!r} key", f"map {self.name!r} value"
            key = (_BTFCodec(btf, self.key_type_id, self.key_size, kwhat)
                   if btf is not None and self.key_type_id
                   else _RawCodec(self.key_size, kwhat))
            value = (_BTFCodec(btf, self.value_type_id, self.value_size, vwhat)
                     if btf is not None and self.value_type_id
                     else _RawCodec(self.value_size, vwhat))
            self._codecs = (key, value)
        return self._codecs

    @property
    def key_dtype(self) -> np.dtype:
        return self._codec()[0].dtype

    @property
    def value_dtype(self) -> np.dtype:
        return self._codec()[1].dtype

    def _type_str(self, type_id, size):
        btf = self.object.btf
        if btf is not None and type_id:
            return btf.c_name(type_id)
        return f"{size} bytes" if size else "-"  # ring buffers have no key or value

    @property
    def key_type(self) -> str:
        return self._type_str(self.key_type_id, self.key_size)

    @property
    def value_type(self) -> str:
        return self._type_str(self.value_type_id, self.value_size)

    @property
    def _stride(self) -> int:
        """Bytes per value in a lookup buffer: per-CPU values are 8-byte aligned, one per CPU."""
        if self.percpu:
            return (self.value_size + 7) // 8 * 8 * _lib.possible_cpus()
        return self.value_size

    def _decode_value(self, buf, offset=0):
        codec = self._codec()[1]
        if not self.percpu:
            return codec.decode(buf, offset)
        step = (self.value_size + 7) // 8 * 8
        return [codec.decode(buf, offset + i * step) for i in range(_lib.possible_cpus())]

    def _encode_value(self, value) -> bytes:
        codec = self._codec()[1]
        if not self.percpu:
            return codec.encode(value)
        ncpu = _lib.possible_cpus()
        values = list(value) if isinstance(value, (list, tuple)) else [value] * ncpu
        if len(values) != ncpu:
            raise ValueError(f"per-CPU map {self.name!r} wants {ncpu} values, got {len(values)}")
        pad = b"\0" * ((self.value_size + 7) // 8 * 8 - self.value_size)
        return b"".join(codec.encode(v) + pad for v in values)

    def _check_kv(self):
        if self.type in NO_VALUE_TYPES:
            raise TypeError(f"map {self.name!r} is a {self.type_name}: read it with .stream()")

    # --- element operations -------------------------------------------------

    def lookup(self, key, default=None):
        self._check_kv()
        kbuf = self._codec()[0].encode(key)
        vbuf = ctypes.create_string_buffer(self._stride)
        rc = lib.bpf_map_lookup_elem(self.fd, kbuf, vbuf)
        if rc < 0:
            err = last_errno(rc)
            if err == errno.ENOENT:
                return default
            raise BPFError(f"lookup in map {self.name!r} failed", err)
        return self._decode_value(vbuf.raw)

    def __getitem__(self, key):
        missing = object()
        value = self.lookup(key, missing)
        if value is missing:
            raise KeyError(key)
        return value

    def get(self, key, default=None):
        return self.lookup(key, default)

    def update(self, key, value, flags: int = BPF_ANY):
        self._check_kv()
        kbuf = self._codec()[0].encode(key)
        vbuf = self._encode_value(value)
        flags = _check.u64(flags, f"map {self.name!r} update flags")
        rc = lib.bpf_map_update_elem(self.fd, kbuf, vbuf, flags)
        if rc < 0:
            raise BPFError(f"update of map {self.name!r} failed", last_errno(rc))

    __setitem__ = update

    def delete(self, key):
        self._check_kv()
        rc = lib.bpf_map_delete_elem(self.fd, self._codec()[0].encode(key))
        if rc < 0:
            err = last_errno(rc)
            if err == errno.ENOENT:
                raise KeyError(key)
            raise BPFError(f"delete from map {self.name!r} failed", err)

    __delitem__ = delete

    def __contains__(self, key):
        missing = object()
        return self.lookup(key, missing) is not missing

    def _raw_keys(self):
        """Key bytes in kernel order (bpf_map_get_next_key)."""
        self._check_kv()
        fd = self.fd
        prev = None
        nxt = ctypes.create_string_buffer(self.key_size)
        while True:
            rc = lib.bpf_map_get_next_key(fd, prev, nxt)
            if rc < 0:
                err = last_errno(rc)
                if err == errno.ENOENT:
                    return
                raise BPFError(f"iterating map {self.name!r} failed", err)
            raw = nxt.raw
            yield raw
            prev = ctypes.create_string_buffer(raw, self.key_size)

    def keys(self):
        codec = self._codec()[0]
        return [codec.decode(raw) for raw in self._raw_keys()]

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return sum(1 for _ in self._raw_keys())

    def items(self) -> list:
        """(key, value) pairs, fetched with batch lookups where the kernel offers them."""
        self._check_kv()
        kc, vc = self._codec()
        if kc.plain and vc.plain:
            keys, values = self.lookup_batch()
            return list(zip(keys.tolist(), values.tolist()))
        # The kernel's bytes as they are: per-CPU values keep their 8-byte padding.
        kb, vb = self._lookup_batch_raw(4096)
        stride = self._stride
        return [(kc.decode(kb, i * self.key_size), self._decode_value(vb, i * stride))
                for i in range(len(kb) // self.key_size)]

    def values(self) -> list:
        return [v for _, v in self.items()]

    def clear(self):
        for raw in list(self._raw_keys()):
            if self.type in ARRAY_TYPES:
                self.update(raw, b"\0" * self._stride if not self.percpu
                            else [b"\0" * self.value_size] * _lib.possible_cpus())
            else:
                lib.bpf_map_delete_elem(self.fd, raw)

    # --- batch --------------------------------------------------------------

    def lookup_batch(self, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
        """All entries as two raw numpy arrays: keys (n,) of key_dtype and values.

        Values are (n,) of value_dtype, or (n, ncpu) for per-CPU maps. Uses
        bpf_map_lookup_batch, falling back to per-key lookups where it is refused.
        """
        self._check_kv()
        kdt, vdt = self.key_dtype, self.value_dtype
        chunk = _check.check(chunk, f"map {self.name!r} lookup_batch chunk", 32, False,
                             lo=1)
        keys, values = self._lookup_batch_raw(chunk)
        keys = np.frombuffer(keys, dtype=kdt) if keys else np.empty(0, kdt)
        if self.percpu:
            ncpu = _lib.possible_cpus()
            step = (self.value_size + 7) // 8 * 8
            padded = np.dtype({"names": ["v"], "formats": [vdt], "offsets": [0],
                               "itemsize": step})
            arr = np.frombuffer(values, dtype=padded)["v"] if values else np.empty(0, vdt)
            return keys, arr.reshape(len(keys), ncpu)
        return keys, (np.frombuffer(values, dtype=vdt) if values else np.empty(0, vdt))

    def _lookup_batch_raw(self, chunk: int) -> tuple[bytes, bytes]:
        fd = self.fd
        stride = self._stride
        chunk = max(1, min(chunk, self.max_entries or chunk))
        kbuf = ctypes.create_string_buffer(self.key_size * chunk)
        vbuf = ctypes.create_string_buffer(stride * chunk)
        # Batch tokens are opaque; hash maps use a u32 bucket index, arrays a u32 index.
        token_size = max(self.key_size, 8)
        in_tok = ctypes.create_string_buffer(token_size)
        out_tok = ctypes.create_string_buffer(token_size)
        keys, values = [], []
        first = True
        while True:
            count = ctypes.c_uint32(chunk)
            rc = lib.bpf_map_lookup_batch(fd, None if first else in_tok, out_tok,
                                          kbuf, vbuf, ctypes.byref(count), None)
            err = last_errno(rc) if rc < 0 else 0
            if err and err != errno.ENOENT:
                if first and err in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
                    return self._lookup_per_key_raw()
                if err == errno.ENOSPC:  # a hash bucket larger than the chunk
                    chunk *= 2
                    kbuf = ctypes.create_string_buffer(self.key_size * chunk)
                    vbuf = ctypes.create_string_buffer(stride * chunk)
                    continue
                raise BPFError(f"batch lookup in map {self.name!r} failed", err)
            n = count.value
            if n:
                keys.append(kbuf.raw[:n * self.key_size])
                values.append(vbuf.raw[:n * stride])
            if err == errno.ENOENT:
                break
            ctypes.memmove(in_tok, out_tok, token_size)
            first = False
        return b"".join(keys), b"".join(values)

    def _lookup_per_key_raw(self) -> tuple[bytes, bytes]:
        fd = self.fd
        vbuf = ctypes.create_string_buffer(self._stride)
        keys, values = [], []
        for raw in self._raw_keys():
            if lib.bpf_map_lookup_elem(fd, raw, vbuf) == 0:
                keys.append(raw)
                values.append(vbuf.raw)
        return b"".join(keys), b"".join(values)

    def update_batch(self, keys, values):
        """Write many entries in one bpf_map_update_batch call.

        ``keys`` is (n,) of key_dtype, ``values`` (n,) of value_dtype, or (n, ncpu)
        for per-CPU maps (anything numpy converts to those).
        """
        self._check_kv()
        keys = _check.array(keys, self.key_dtype, f"map {self.name!r} update_batch keys")
        values = _check.array(values, self.value_dtype,
                              f"map {self.name!r} update_batch values")
        n = len(keys)
        shape = (n, _lib.possible_cpus()) if self.percpu else (n,)
        if keys.ndim != 1 or values.shape != shape:
            raise ValueError(f"update_batch on map {self.name!r}: want keys of shape "
                             f"({n},) and values of shape {shape}, got {keys.shape} "
                             f"and {values.shape}")
        if self.percpu:  # each CPU's value padded to 8 bytes, as the kernel lays them out
            step = (self.value_size + 7) // 8 * 8
            buf = np.zeros((n, shape[1], step), np.uint8)
            buf[:, :, :self.value_size] = values.view(np.uint8).reshape(
                n, shape[1], self.value_size)
        else:
            buf = values
        # The kernel reads n keys and n values from these addresses: check the sizes.
        if keys.nbytes != n * self.key_size or buf.nbytes != n * self._stride:
            raise ValueError(f"update_batch on map {self.name!r}: key/value types do "
                             f"not match the map's key_size/value_size")
        if n == 0:
            return
        count = ctypes.c_uint32(n)
        rc = lib.bpf_map_update_batch(self.fd, keys.ctypes.data, buf.ctypes.data,
                                      ctypes.byref(count), None)
        if rc < 0:
            raise BPFError(f"batch update of map {self.name!r} failed after "
                           f"{count.value} of {n} entries", last_errno(rc))

    def __repr__(self):
        try:
            entries = self.max_entries
        except ObjectClosedError:
            return f"<Map {self.name!r} (destroyed)>"
        btf = self.object.btf
        key = type_label(self.key_type, btf, self.key_type_id)
        value = type_label(self.value_type, btf, self.value_type_id)
        return (f"<Map {self.name!r} {self.type_name} key={key} value={value} "
                f"max_entries={entries}>")
