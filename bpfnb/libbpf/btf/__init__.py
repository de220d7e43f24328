"""BTF (BPF Type Format): parsing, layout and numpy dtypes, decode/encode, C declarations.

Pure Python plus numpy; imports nothing else of bpfnb.

    btf = BTF.from_file("/sys/kernel/btf/vmlinux")   # raw BTF, or an ELF .o with .BTF
    tid = btf.find("struct event")
    btf.dtype(tid)            # numpy structured dtype, exact offsets and itemsize
    btf.decode(tid, raw)      # -> Record(pid=..., comm='bash', ...)
    btf.encode(tid, {...})    # -> bytes

One file per concern: ``types`` (the model), ``parse``/``strings`` (raw .BTF into the
model) and ``validate`` (what is refused, with BTFError), ``layout`` (sizes, fields,
dtypes), ``codec``/``record`` (values), ``cdecl`` (C text), ``marshal`` (types back to
raw BTF).  Layout, codec and cdecl see only the model, never raw words: another source
of types mixes them in beside its own ``type(tid) -> Type``, ``__len__``,
``_check_id(tid)`` and ``_endian`` ("<" or ">"), as BTF does over BTFSource.
"""

from __future__ import annotations

from .cdecl import CDecl
from .codec import Codec
from .layout import Layout
from .marshal import marshal
from .parse import BTFSource
from .record import Record, _freeze  # noqa: F401 (_freeze: tests compare hashes with it)
from .types import KINDS, BitField, BTFError, EnumValue, Member, Type

__all__ = [
    "BTF",
    "BTFError",
    "Type",
    "Member",
    "BitField",
    "Record",
    "EnumValue",
    "KINDS",
    "marshal",
]


class BTF(BTFSource, Layout, Codec, CDecl):
    """Parsed BTF.  Type ids start at 1; 0 is void.  ``base`` makes this a split
    BTF whose ids continue after the base's and whose string offsets continue
    after the base's string section."""

    def __init__(self, raw: bytes, base: "BTF | None" = None):
        BTFSource.__init__(self, raw, base)
        self._init_layout()
        self._init_codec()
