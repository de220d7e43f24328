"""Ring buffer and perf buffer consumers.

``RingBuffer`` reads a BPF_MAP_TYPE_RINGBUF through its own mmap, as the kernel lays
it out (kernel/bpf/ringbuf.c; cilium/ebpf ringbuf/ring.go reads it the same way):

    offset 0          consumer page, read-write: u64 consumer position
    offset PAGESIZE   producer page, read-only: u64 producer position,
                      then the data pages, mapped twice in a row so that a record
                      crossing the end of the ring is contiguous in memory

Each record is an 8-byte header (u32 length with BUSY bit 31 and DISCARD bit 30, u32
page offset) followed by the payload, padded to 8 bytes. Fixed-size records are
copied out in batches through a strided numpy view (one copy per run of records, not
one Python call per record); anything else takes a per-record walk.

``PerfBuffer`` wraps libbpf's perf_buffer (BPF_MAP_TYPE_PERF_EVENT_ARRAY) with a
ctypes callback per record, and counts lost samples at the moment it is asked: each
CPU's perf event is opened with PERF_FORMAT_LOST, so a read() of its fd gives the
samples the kernel could not write (Linux >= 6.0). The PERF_RECORD_LOST records
carry the same count, but only once the next sample that fits reaches that CPU's
ring; they are the fallback where the kernel lacks PERF_FORMAT_LOST.

Both hand out *runs*: a numpy structured array of records of the given dtype, or a
list of ``bytes`` for records of another size, in arrival order. Neither starts a
thread; the caller polls ``fileno()`` and calls ``read()``. A consumer dup()s the map
fd, so it stays valid after the Object is destroyed; ``close()`` must come after the
last ``read()`` has returned.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import threading
from ctypes import c_int, c_uint64, c_void_p

import numpy as np

from ._lib import lib
from .errors import BPFError, last_errno

HEADER_SIZE = 8
BUSY_BIT = 1 << 31
DISCARD_BIT = 1 << 30
# Bytes of records per batch copy: the consumer position is published after each
# batch, so a long backlog frees ring space progressively for the producer, and a
# batch's header scan leaves its records in the CPU cache for the copy that follows.
BATCH_BYTES = 2 << 20


def _padded(n: int) -> int:
    return (n + 7) & ~7


class RingBuffer:
    """Consume a BPF ring buffer map from its mmap, decoding into ``dtype`` records.

    ``dtype`` is a numpy dtype whose itemsize is the record size, or None to return
    every record as bytes.
    """

    def __init__(self, map_fd: int, size: int, dtype: np.dtype | None = None):
        if size <= 0 or size & (size - 1) or size % mmap.PAGESIZE:
            raise ValueError(f"ring buffer size {size} is not a power-of-2 multiple "
                             f"of the page size")
        self.size = size
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self._mask = size - 1
        self._fd = os.dup(map_fd)
        try:
            self._cons_mm = mmap.mmap(self._fd, mmap.PAGESIZE, flags=mmap.MAP_SHARED,
                                      prot=mmap.PROT_READ | mmap.PROT_WRITE)
            self._data_mm = mmap.mmap(self._fd, mmap.PAGESIZE + 2 * size,
                                      flags=mmap.MAP_SHARED, prot=mmap.PROT_READ,
                                      offset=mmap.PAGESIZE)
        except OSError as e:
            self._release()
            raise BPFError("cannot map the ring buffer into memory", e.errno) from None
        # Aligned 8-byte loads and stores through numpy: single instructions, so the
        # positions are never torn. On x86-64 (TSO) a plain load has acquire and a plain
        # store release semantics, which is what the kernel's protocol asks for; the
        # header scan happens before the payload copy in program order, and loads are
        # not reordered with older loads there. Weaker CPUs would need fences.
        self._cons_pos = np.frombuffer(self._cons_mm, dtype=np.uint64, count=1)
        self._prod_pos = np.frombuffer(self._data_mm, dtype=np.uint64, count=1)
        self._cons = int(self._cons_pos[0])
        self.consumed = self._cons  # where this reader starts: 0 if never read before
        if self.dtype is not None:
            self._record_size = self.dtype.itemsize
            self._stride = _padded(self._record_size + HEADER_SIZE)
            # Copied as opaque bytes: numpy copies a plain void dtype with memcpy,
            # ~10x faster than field by field.
            self._opaque = np.dtype(f"V{self._record_size}")

    def fileno(self) -> int:
        """An fd that polls readable (EPOLLIN) while records are waiting."""
        return self._fd

    def pending(self) -> bool:
        """Whether the producer is past what this reader consumed (any thread, not
        during close())."""
        return self._fd >= 0 and int(self._prod_pos[0]) != self._cons

    def read(self) -> list:
        """Every committed record up to the producer position, as runs."""
        if self._fd < 0:
            raise ValueError("read() on a closed ring buffer")
        runs: list = []
        prod = int(self._prod_pos[0])
        while self._cons < prod:
            taken = self._read_fixed(prod - self._cons, runs)
            if not taken:
                taken = self._read_one(prod - self._cons, runs)
                if not taken:
                    break  # a record still being written: wait for its commit
            self._cons += taken
            self._cons_pos[0] = self._cons
        return runs

    def _read_fixed(self, avail: int, runs: list) -> int:
        """Copy out the run of fixed-size records at the consumer position; bytes taken."""
        if self.dtype is None:
            return 0
        n = min(avail, BATCH_BYTES) // self._stride
        if not n:
            return 0
        start = mmap.PAGESIZE + (self._cons & self._mask)
        lengths = np.ndarray((n,), dtype=np.uint32, buffer=self._data_mm, offset=start,
                             strides=(self._stride,))
        # Record k+1 starts one stride after record k only if record k had our size, so
        # the good run is the prefix of headers equal to the plain size (no flag bits).
        same = lengths == self._record_size
        good = n if same.all() else int(same.argmin())
        if good:
            payload = np.ndarray((good,), dtype=self._opaque, buffer=self._data_mm,
                                 offset=start + HEADER_SIZE, strides=(self._stride,))
            runs.append(payload.copy().view(self.dtype))
        return good * self._stride

    def _read_one(self, avail: int, runs: list) -> int:
        """Walk one record of another size (or a discarded one); bytes taken, 0 if busy."""
        if avail < HEADER_SIZE:
            return 0
        start = mmap.PAGESIZE + (self._cons & self._mask)
        header = int(np.ndarray((1,), dtype=np.uint32, buffer=self._data_mm,
                                offset=start)[0])
        if header & BUSY_BIT:
            return 0
        length = header & ~(BUSY_BIT | DISCARD_BIT)
        taken = _padded(length + HEADER_SIZE)
        if taken > avail:
            raise BPFError(f"corrupt ring buffer record: length {length} at position "
                           f"{self._cons} runs past the producer ({avail} bytes left)")
        if not header & DISCARD_BIT:
            payload = start + HEADER_SIZE
            record = self._data_mm[payload:payload + length]
            if self.dtype is not None and length == self._record_size:
                # our size after all: _read_fixed met it busy, committed since
                runs.append(np.frombuffer(record, dtype=self.dtype).copy())
            else:
                _append_bytes(runs, record)
        return taken

    def _release(self):
        for name in ("_cons_mm", "_data_mm"):
            m = self.__dict__.pop(name, None)
            if m is not None:
                m.close()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def close(self):
        """Unmap and close our fd. Not while another thread is inside read()."""
        if self._fd < 0:
            return
        # numpy views export the mmap buffers: drop them before unmapping.
        self.__dict__.pop("_cons_pos", None)
        self.__dict__.pop("_prod_pos", None)
        self._release()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_RECORD_FN = ctypes.CFUNCTYPE(c_int, c_void_p, c_int, c_void_p)
_PERF_EVENT_CONT = 1  # enum bpf_perf_event_ret: go on
# Sample sizes are the record padded so that size + 4 is a multiple of 8.
_PERF_PAD = 8
# include/uapi/linux/perf_event.h
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_BPF_OUTPUT = 10
PERF_SAMPLE_RAW = 1 << 10
PERF_FORMAT_LOST = 1 << 4
PERF_RECORD_LOST = 2
PERF_RECORD_SAMPLE = 9
_ATTR_SIZE = 128  # PERF_ATTR_SIZE_VER7; the fields past the ones set stay zero
_HEADER = struct.Struct("<IHH")  # struct perf_event_header: type, misc, size
_DATA_HEAD = 1024  # offsetof(struct perf_event_mmap_page, data_head); data_tail follows


def _perf_attr(read_format: int) -> ctypes.Array:
    """struct perf_event_attr as libbpf's perf_buffer__new builds it, plus read_format."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIQQQQ", attr, 0, PERF_TYPE_SOFTWARE, _ATTR_SIZE,
                     PERF_COUNT_SW_BPF_OUTPUT, 1, PERF_SAMPLE_RAW, read_format)
    struct.pack_into("<I", attr, 48, 1)  # wakeup_events: every sample wakes the poll
    return attr


class PerfBuffer:
    """Consume a perf event array map through libbpf's perf_buffer.

    One ctypes callback per record (the kernel interface hands samples out one by one
    across per-CPU rings); samples are gathered as bytes and decoded per ``read()`` in
    one numpy call. ``lost`` is the number of samples the kernel dropped for lack of
    space, current when read (any thread).
    """

    def __init__(self, map_fd: int, dtype: np.dtype | None = None, page_cnt: int = 64):
        if page_cnt <= 0 or page_cnt & (page_cnt - 1):
            raise ValueError(f"page_cnt must be a power of 2, not {page_cnt}")
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self._samples: list[bytes] = []
        self._lost_records = 0   # from PERF_RECORD_LOST (the fallback)
        self._lost_read = 0      # from the events' fds, last read
        self._event_fds: list[int] = []
        self._lock = threading.Lock()  # lost (any thread) against close()
        # libbpf keeps the fd and deletes its per-CPU entries from it at free time:
        # our own dup keeps that from hitting an fd number the Object closed and reused.
        self._fd = os.dup(map_fd)
        # The callback must outlive the perf_buffer: held on self until close().
        self._record_cb = _RECORD_FN(self._on_record)
        ptr = self._open(page_cnt, PERF_FORMAT_LOST)
        lost_format = bool(ptr)
        if not ptr:  # a kernel before 6.0: PERF_RECORD_LOST only
            ptr = self._open(page_cnt, 0)
        if not ptr:
            err = last_errno()
            os.close(self._fd)
            self._fd = -1
            raise BPFError("cannot open the perf buffer", err)
        self._ptr = ptr
        n = lib.perf_buffer__buffer_cnt(ptr)
        if lost_format:
            self._event_fds = [lib.perf_buffer__buffer_fd(ptr, i) for i in range(n)]
        # Each CPU's ring starts with its struct perf_event_mmap_page: data_head and
        # data_tail say whether samples wait there (pending()).
        self._heads = []
        for i in range(n):
            base, size = c_void_p(), ctypes.c_size_t()
            if lib.perf_buffer__buffer(ptr, i, ctypes.byref(base), ctypes.byref(size)) == 0 \
                    and base.value:
                self._heads.append((c_uint64.from_address(base.value + _DATA_HEAD),
                                    c_uint64.from_address(base.value + _DATA_HEAD + 8)))
        self._epoll_fd = lib.perf_buffer__epoll_fd(ptr)
        if self._epoll_fd < 0:
            self.close()
            raise BPFError("perf buffer has no epoll fd", last_errno(self._epoll_fd))

    def _open(self, page_cnt: int, read_format: int):
        attr = _perf_attr(read_format)  # libbpf passes it to perf_event_open only
        return lib.perf_buffer__new_raw(self._fd, page_cnt, attr,
                                        ctypes.cast(self._record_cb, c_void_p), None, None)

    def _on_record(self, _ctx, _cpu, header):
        if header:
            kind, _, size = _HEADER.unpack(ctypes.string_at(header, 8))
            if kind == PERF_RECORD_SAMPLE and size > 12:
                raw = ctypes.string_at(header + 8, size - 8)
                self._samples.append(raw[4:4 + int.from_bytes(raw[:4], "little")])
            elif kind == PERF_RECORD_LOST and not self._event_fds:
                self._lost_records += int.from_bytes(ctypes.string_at(header + 16, 8),
                                                     "little")
        return _PERF_EVENT_CONT

    @property
    def lost(self) -> int:
        """Samples the kernel could not write, up to now."""
        with self._lock:
            if self._ptr is not None and self._event_fds:
                # struct read_format with PERF_FORMAT_LOST alone: {u64 value, u64 lost}
                self._lost_read = sum(struct.unpack("<QQ", os.read(fd, 16))[1]
                                      for fd in self._event_fds)
        return self._lost_read + self._lost_records

    def pending(self) -> bool:
        """Whether a CPU's ring holds records not yet read (any thread, not during
        close())."""
        return self._ptr is not None and any(head.value != tail.value
                                             for head, tail in self._heads)

    def fileno(self) -> int:
        """libbpf's epoll fd over the per-CPU rings: readable while samples wait."""
        return self._epoll_fd

    def read(self) -> list:
        """Every sample waiting in every CPU's ring, as runs."""
        if self._ptr is None:
            raise ValueError("read() on a closed perf buffer")
        rc = lib.perf_buffer__consume(self._ptr)
        if rc < 0:
            raise BPFError("reading the perf buffer failed", last_errno(rc))
        samples, self._samples = self._samples, []
        return _group(samples, self.dtype)

    def close(self):
        """Free libbpf's perf_buffer (``lost`` keeps its last count). Not while another
        thread is inside read()."""
        if getattr(self, "_ptr", None):
            self.lost  # the final count, while the events are open
        with self._lock:
            ptr, self._ptr = getattr(self, "_ptr", None), None
            self._heads = []  # they point into the rings freed next
            if ptr:
                lib.perf_buffer__free(ptr)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def _group(samples: list[bytes], dtype: np.dtype | None) -> list:
    """Runs of samples: those of the record size (plus perf padding) batch-decoded."""
    if dtype is None:
        return [samples] if samples else []
    size = dtype.itemsize
    runs: list = []
    fixed: list[bytes] = []
    for s in samples:
        if size <= len(s) < size + _PERF_PAD:
            fixed.append(s[:size] if len(s) != size else s)
            continue
        if fixed:
            runs.append(np.frombuffer(b"".join(fixed), dtype=dtype))
            fixed = []
        _append_bytes(runs, s)
    if fixed:
        runs.append(np.frombuffer(b"".join(fixed), dtype=dtype))
    return runs


def _append_bytes(runs: list, record: bytes):
    """Add a record of another size: to the last run if it is one of bytes."""
    if runs and isinstance(runs[-1], list):
        runs[-1].append(record)
    else:
        runs.append([record])
