"""Range checks for integers crossing into C: an error naming the thing, never a wrap.

ctypes and ``int.to_bytes`` cut a Python int to the width of the C type without a word
(``2**32 + 1`` as a ``__u32`` is 1). Every integer bpfnb hands to libbpf or the kernel
goes through one of these checks first.

What is accepted as an integer: ``int``, ``bool`` (it is an int: True is 1) and numpy
integers (anything with ``__index__``). Floats are refused even when whole (``3.0``),
as are strings: a string is only an enumerator's name, or text for a ``char[]``.
"""

from __future__ import annotations

import operator

import numpy as np


class RangeError(ValueError, OverflowError):
    """An integer does not fit the C type it goes into.

    ``what`` names the thing (a variable, ``map 'm' max_entries``, an argument),
    ``type`` its C type (``u8``, ``s32``, ``u32:3 bitfield``), ``lo..hi`` its range.
    A ValueError, and an OverflowError as Python's own int conversions raise.
    """

    def __init__(self, what: str, value, type_: str, lo: int, hi: int):
        self.what, self.value, self.type, self.lo, self.hi = what, value, type_, lo, hi
        super().__init__(f"{what}: {value} out of range for {type_} ({lo}..{hi})")


def int_type(nbits: int, signed: bool) -> str:
    """``u8``, ``s32``, ...: the kernel's short names say width and signedness."""
    return f"{'s' if signed else 'u'}{nbits}"


def int_range(nbits: int, signed: bool) -> tuple[int, int]:
    if signed:
        return -(1 << (nbits - 1)), (1 << (nbits - 1)) - 1
    return 0, (1 << nbits) - 1


def integer(value, what: str, type_: str = "int") -> int:
    """``value`` as a Python int; TypeError naming ``what`` for floats, strings, None."""
    if isinstance(value, (float, str, bytes, np.floating)):
        raise TypeError(f"{what}: expected an integer for {type_}, got "
                        f"{type(value).__name__} {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{what}: expected an integer for {type_}, got "
                        f"{type(value).__name__}") from None


def check(value, what: str, nbits: int, signed: bool, lo: int | None = None) -> int:
    """``value`` as an int within ``nbits`` (signed or not), else RangeError.

    ``lo`` raises the lower bound (e.g. 1 for a size that must not be 0, 0 for a
    signed C int that must not be negative).
    """
    v = integer(value, what, int_type(nbits, signed))
    low, high = int_range(nbits, signed)
    if lo is not None:
        low = max(low, lo)
    if not low <= v <= high:
        raise RangeError(what, v, int_type(nbits, signed), low, high)
    return v


def u16(value, what: str) -> int:
    return check(value, what, 16, False)


def u32(value, what: str) -> int:
    return check(value, what, 32, False)


def u64(value, what: str) -> int:
    return check(value, what, 64, False)


def s32(value, what: str) -> int:
    return check(value, what, 32, True)


def fd(value, what: str = "fd") -> int:
    """A file descriptor: a C int that is not negative."""
    return check(value, what, 32, True, lo=0)


def pid(value, what: str) -> int:
    """A pid argument: -1 (every process) or a pid, as a C int."""
    return check(value, f"{what}: pid", 32, True, lo=-1)


def sample_rate(freq, period, what: str):
    """perf_event_attr.sample_freq/period are u64; 0 would mean "never sample"."""
    if period:
        check(period, f"{what}: period", 64, False, lo=1)
    elif freq is not None:
        check(freq, f"{what}: freq", 64, False, lo=1)


def array(values, dtype: np.dtype, what: str) -> np.ndarray:
    """``values`` as a contiguous array of ``dtype``, refusing anything numpy would wrap.

    Integer targets are checked with one min/max over the whole array (never per
    element), and only when the source type can hold values the target cannot.
    Structured targets are checked field by field. Floats into integers are refused:
    numpy would drop the fraction.
    """
    dtype = np.dtype(dtype)
    src = values if isinstance(values, np.ndarray) else _as_array(values, dtype, what)
    _check_cast(src, dtype, what)
    return np.ascontiguousarray(src, dtype=dtype)


def _as_array(values, dtype, what):
    if dtype.kind not in "iub":
        try:
            return np.asarray(values, dtype=dtype)
        except OverflowError as e:  # numpy names no field: at least name the map
            raise OverflowError(f"{what}: {e}") from None
    try:
        return np.asarray(values)
    except (ValueError, OverflowError, TypeError) as e:
        raise TypeError(f"{what}: cannot make an array of {dtype} from "
                        f"{type(values).__name__}: {e}") from None


def _check_cast(src: np.ndarray, dtype: np.dtype, what: str):
    if dtype.names is not None:
        if src.dtype.names is not None:  # numpy assigns fields by position
            for name, src_name in zip(dtype.names, src.dtype.names):
                _check_cast(src[src_name], dtype.fields[name][0], f"{what}.{name}")
        return
    if dtype.subdtype is not None:  # an array field: check its elements
        dtype = dtype.subdtype[0]
    if dtype.kind not in "iu" or np.can_cast(src.dtype, dtype, "safe") or src.size == 0:
        return
    label = int_type(dtype.itemsize * 8, dtype.kind == "i")
    if src.dtype.kind == "O":  # Python ints too large for int64 land here
        src = np.array([integer(v, what, label) for v in src.ravel()], dtype=object)
    elif src.dtype.kind not in "iub":
        raise TypeError(f"{what}: expected integers for {label}, got an array of "
                        f"{src.dtype}")
    info = np.iinfo(dtype)
    lo, hi = src.min(), src.max()
    if lo < info.min or hi > info.max:
        flat = src.ravel()
        i = int(np.argmax((flat < info.min) | (flat > info.max)))
        where = ", ".join(str(int(j)) for j in np.unravel_index(i, src.shape))
        raise RangeError(f"{what}[{where}]", int(flat[i]), label, int(info.min),
                         int(info.max))
