"""Which names are the toolkit's own, and how a C type reads to a person.

One rule for every place a name or a type is shown (summaries, ``dir()``, reprs,
dashboards, ``%bpf show``):

* internal: a name starting with ``bpfnb_`` (bpf/bpfnb.h reserves the prefix: its
  lost-record counter ``bpfnb_lost``, histogram key structs ``bpfnb_hist_key__*``...)
  or with ``____`` (libbpf's macros: ``bpf_printk``'s static format ``____fmt``).
  Clang names a function's static variable ``func.var`` (``func.var.2`` for the
  second of that name): the last part that is not a number decides.
  Internal names stay reachable by attribute; they are only never listed.
* types: ``__u32`` reads ``u32`` (also ``__s64``, ``__be16``...), bpfnb.h's semantic
  typedefs read as what they mean (``bpfnb_ipv4_t`` -> ``ipv4``), and its histogram
  structs as what they hold.
"""

from __future__ import annotations

import re

_KERNEL_INT = re.compile(r"\b__((?:[us]|be|le)(?:8|16|32|64))\b")
_SEMANTIC = re.compile(r"\bbpfnb_(\w+?)_t\b")


def is_internal(name: str) -> bool:
    """Whether ``name`` (a variable, field or struct tag) is bpfnb's or libbpf's own."""
    parts = name.split(".")
    while len(parts) > 1 and parts[-1].isdigit():  # func.____fmt.2: clang numbers twins
        parts.pop()
    return parts[-1].startswith(("bpfnb_", "____"))


def shown(names) -> list:
    """``names`` without the internal ones, in order."""
    return [n for n in names if not is_internal(n)]


def type_label(c_name: str, btf=None, type_id: int = 0) -> str:
    """``c_name`` (a C type as BTF spells it) as a person reads it.

    With the BTF and id of a bpfnb.h histogram struct, says what it holds instead:
    ``struct bpfnb_hist_key__lat`` -> ``{u32 key, slot}``."""
    if btf is not None and type_id:
        t = btf.type(btf.resolve(type_id))
        if t.kind == "struct" and t.name.startswith("bpfnb_hist_key__"):
            key = next((m for m in t.members if m.name == "key"), None)
            if key is not None:
                return f"{{{type_label(btf.c_name(key.type_id), btf, key.type_id)} key, slot}}"
        if t.kind == "struct" and (t.name == "bpfnb_hist" or t.name.startswith("bpfnb_lhist__")):
            return "histogram count"
    return _SEMANTIC.sub(r"\1", _KERNEL_INT.sub(r"\1", c_name))
