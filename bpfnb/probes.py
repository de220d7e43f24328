"""bpfnb.probes(pattern): the probes this machine offers, their arguments with C types,
and whether they attach here.

``probes("tracepoint:syscalls:sys_enter_open*")`` -> a DataFrame, one row per probe:

``probe``       the ``SEC()`` string to write (``tracepoint/syscalls/sys_enter_openat``)
``kind``        tracepoint, tp_btf, raw_tp, kprobe, kretprobe, fentry, fexit, uprobe,
                uretprobe or usdt
``args``        the arguments as C declarations (``int dfd, const char * filename``)
``arg_list``    the same as a list of :class:`Arg` (type, name, and for tracepoint
                fields their offset and size in the context)
``attachable``  whether this machine can attach it (the doctor's verdict on the kind)
``why``         when not, the reason and what to do

Patterns are bpftrace's (``tracepoint:syscalls:sys_enter_open*``, ``*openat*``,
``t:*:*``, ``k:vfs_*``, ``f:``, ``u:/bin/bash:read*``, ``U:/usr/bin/python3.11:*``) or
our SEC syntax (``tracepoint/syscalls/sys_enter_openat``, ``uprobe//lib/libc.so.6:malloc``).
A pattern without a kind searches the kernel's probes (tracepoint, tp_btf, raw_tp,
kprobe, fentry); uprobes and USDT need a binary.

Sources: tracefs (``available_events`` and each event's ``format``, read only for the
rows a pattern matches), else the BTF ``trace_event_raw_<name>`` structs; tp_btf and
raw_tp from the ``btf_trace_<name>`` typedefs (argument names from ``__probestub_<name>``);
kprobe and fentry from the BTF FUNC entries (where tracefs's available_filter_functions
is readable, a function missing there cannot attach); uprobes and USDT from the binary's
ELF (bpfnb.probes_elf). Everything is read once per process.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
from typing import NamedTuple

import numpy as np

from . import build, doctor
from .libbpf import sysfs
from .libbpf.btf import BTF, KINDS

COLUMNS = ["probe", "kind", "args", "arg_list", "attachable", "why"]
KERNEL_KINDS = ("tracepoint", "tp_btf", "raw_tp", "kprobe", "fentry")
ALL_KINDS = KERNEL_KINDS + ("kretprobe", "fexit", "uprobe", "uretprobe", "usdt")
ALIASES = {
    "tracepoint": "tracepoint", "t": "tracepoint", "tp": "tracepoint",
    "tp_btf": "tp_btf", "raw_tp": "raw_tp", "raw_tracepoint": "raw_tp",
    "rawtracepoint": "raw_tp", "rt": "raw_tp",
    "kprobe": "kprobe", "k": "kprobe", "kretprobe": "kretprobe", "kr": "kretprobe",
    "fentry": "fentry", "f": "fentry", "kfunc": "fentry",
    "fexit": "fexit", "fr": "fexit", "kretfunc": "fexit",
    "uprobe": "uprobe", "u": "uprobe", "uretprobe": "uretprobe", "ur": "uretprobe",
    "usdt": "usdt", "U": "usdt",
}
# The doctor's program type that decides each kind.
DOCTOR_KIND = {"tracepoint": "tracepoint", "tp_btf": "tp_btf", "raw_tp": "raw_tp",
               "kprobe": "kprobe", "kretprobe": "kprobe", "fentry": "fentry",
               "fexit": "fentry", "uprobe": "uprobe", "uretprobe": "uprobe",
               "usdt": "uprobe"}
TRACEFS_EVENTS = os.path.join(sysfs.TRACEFS, "events")
UNKNOWN_CATEGORY = "?"
_FIELD = re.compile(r"\s*field:(?P<decl>[^;]*);\s*offset:(?P<off>\d+);\s*size:(?P<size>\d+);"
                    r"(?:\s*signed:(?P<signed>\d+);)?")
_DECL = re.compile(r"(?P<type>.*?)\s*\b(?P<name>[A-Za-z_]\w*)\s*(?P<dims>(?:\[[^\]]*\])*)$")


class Arg(NamedTuple):
    """One argument: its C type (``const char *``, ``char[16]``) and name; tracepoint
    fields also carry their offset and size in the context record."""
    type: str
    name: str
    offset: int | None = None
    size: int | None = None
    signed: bool | None = None

    @property
    def decl(self) -> str:
        """The C declaration: ``const char * filename``, ``char comm[16]``."""
        t, name = self.type, self.name
        if not name:
            return t
        if "(*)" in t:
            return t.replace("(*)", f"(*{name})", 1)
        if t.endswith("]") and not t.startswith("__data_loc"):
            base, _, dims = t.partition("[")
            return f"{base.rstrip()} {name}[{dims}"
        return f"{t} {name}"


class Probe(NamedTuple):
    probe: str     # the SEC() string
    kind: str
    args: tuple    # of Arg
    why: str = ""  # set when this row cannot attach whatever its kind allows


def probes(pattern: str = "*"):
    """The probes matching ``pattern`` (bpftrace's ``-l`` syntax, or SEC strings) as a
    DataFrame: probe, kind, args, arg_list, attachable, why."""
    import pandas as pd
    rows = _rows(pattern)
    verdicts = {kind: kind_verdict(kind) for kind in {r[1] for r in rows}}
    traceable = ftrace_functions() if any(
        verdicts[k][0] for k in verdicts if k in _FUNC_KINDS) else None
    if traceable is not None:
        rows = [(p, k, a, w or (_NOT_TRACEABLE if k in _FUNC_KINDS and p.split("/", 1)[1]
                                not in traceable else "")) for p, k, a, w in rows]
    data = {"probe": [r[0] for r in rows], "kind": [r[1] for r in rows],
            "args": _args_texts(rows),
            "arg_list": [r[2] for r in rows],
            "attachable": [not r[3] and verdicts[r[1]][0] for r in rows],
            "why": [r[3] or verdicts[r[1]][1] for r in rows]}
    return pd.DataFrame(data, columns=COLUMNS)


def find(pattern: str = "*") -> list[Probe]:
    """The matching probes as :class:`Probe` tuples (what probes() tabulates)."""
    return [Probe(*r) for r in _rows(pattern)]


def _rows(pattern: str) -> list[tuple]:
    # Plain (probe, kind, args, why) tuples: a NamedTuple per row costs 0.2 s for "*".
    rows = []
    for kind, spec in parse(pattern):
        rows.extend(sorted(_LISTERS[kind](kind, spec)))
    return rows


_FUNC_KINDS = ("kprobe", "kretprobe", "fentry", "fexit")
_NOT_TRACEABLE = ("not in tracefs available_filter_functions (inlined, notrace or init "
                  "code): neither kprobes nor fentry can hook it")


@functools.lru_cache(maxsize=None)
def ftrace_functions() -> frozenset | None:
    """The functions ftrace can hook (available_filter_functions), None if unreadable."""
    try:
        with open(os.path.join(sysfs.TRACEFS, "available_filter_functions")) as f:
            return frozenset(line.split()[0] for line in f if line.strip())
    except OSError:
        return None


def kind_verdict(kind: str) -> tuple[bool, str]:
    """(attaches here, why not) for a kind of probe, from the doctor's real try."""
    check = doctor.program_type(DOCTOR_KIND[kind])
    if check.ok:
        return True, ""
    return False, f"{check.fix} (doctor: {check.detail})" if check.fix else check.detail


# --- patterns ----------------------------------------------------------------------

class Spec(NamedTuple):
    parts: tuple   # the pattern's components after the kind
    bare: bool     # no kind was given: match the name or the whole probe


def parse(pattern: str) -> list[tuple[str, Spec]]:
    """``pattern`` -> [(kind, Spec)]: the kinds it searches and what it matches there."""
    if not isinstance(pattern, str) or not pattern.strip():
        raise ValueError("probes(pattern): give a pattern such as '*openat*' or "
                         "'tracepoint:syscalls:sys_enter_open*'")
    pattern = pattern.strip()
    m = re.match(r"([^:/]*)([:/])(.*)$", pattern, re.S)
    if m is None:
        return [(k, Spec((pattern,), True)) for k in KERNEL_KINDS]
    head, _, rest = m.groups()
    if head in ALIASES:
        kind = ALIASES[head]
    elif any(c in head for c in "*?["):
        kinds = [k for k in KERNEL_KINDS if fnmatch.fnmatchcase(k, head)] or KERNEL_KINDS
        return [(k, Spec((pattern,), True)) for k in kinds]
    else:
        raise ValueError(f"{pattern!r}: unknown probe kind {head!r}; kinds: "
                         f"{', '.join(ALL_KINDS)} (bpftrace's t: k: f: u: U: too)")
    if kind in ("uprobe", "uretprobe", "usdt"):
        path, _, func = rest.partition(":")
        if not path:
            raise ValueError(f"{pattern!r}: a {kind} pattern names a binary, e.g. "
                             f"{kind}:/usr/lib/x86_64-linux-gnu/libc.so.6:malloc")
        return [(kind, Spec((path, func or "*"), False))]
    if kind == "tracepoint":
        cat, _, name = rest.replace("/", ":").partition(":")
        return [(kind, Spec((cat or "*", name) if name else (cat or "*",), False))]
    return [(kind, Spec((rest.rsplit(":", 1)[-1] or "*",), False))]


# --- the kernel's BTF ----------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def vmlinux_btf() -> BTF:
    """The running kernel's BTF, parsed once per process (world-readable)."""
    try:
        return BTF.from_file(build.BTF_VMLINUX)
    except OSError as e:
        raise FileNotFoundError(f"cannot read kernel BTF {build.BTF_VMLINUX} ({e}): listing "
                                f"probes needs a kernel built with CONFIG_DEBUG_INFO_BTF=y"
                                ) from None


@functools.lru_cache(maxsize=None)
def btf_names(kind: str, prefix: str = "") -> dict:
    """{name without ``prefix``: type id} of the kernel's named BTF types of ``kind``
    whose name starts with ``prefix`` (the first id of a name wins)."""
    if prefix:
        n = len(prefix)
        return {name[n:]: tid for name, tid in btf_names(kind).items()
                if name.startswith(prefix)}
    btf = vmlinux_btf()
    # The BTF class keeps its name and kind arrays private; a per-name find() would
    # take seconds for the 56,000 functions.
    _, name_offs, kinds = btf._arrays()
    idx = np.nonzero((kinds == KINDS.index(kind)) & (name_offs != 0))[0]
    first = btf._first_local_id()
    out = {}
    for i, off in zip(idx.tolist(), name_offs[idx].tolist()):
        out.setdefault(_name(off), i + first)
    return out


@functools.lru_cache(maxsize=None)
def _name(off: int) -> str:
    """A BTF string by offset (names of parameters repeat: dfd, file, ...)."""
    return vmlinux_btf()._str(off)


def _raw(tid: int) -> tuple:
    """(kind, name offset, referenced type or size, vlen, kind_flag, offset of what follows
    the header) of a type, read from the words. BTF.type() would parse whole structs (and
    every member's type): rendering 56,000 prototypes through it takes seconds."""
    btf = vmlinux_btf()
    o = btf._offs[tid - btf._id_base]
    w = btf._w
    info = w[o + 1]
    return KINDS[(info >> 24) & 0x1F], w[o], w[o + 2], info & 0xFFFF, info >> 31, o + 3


_TAGGED = {"struct": "struct", "union": "union", "enum": "enum", "enum64": "enum"}
_QUALS = ("const", "volatile", "restrict")


@functools.lru_cache(maxsize=None)
def _c_type(tid: int) -> str:
    """A C type's name as BTF.c_name() spells it ("const char *"), quickly for the
    common shapes: pointers to a qualified named type."""
    btf = vmlinux_btf()
    stars, quals, t = 0, [], tid
    for _ in range(64):
        if t == 0:
            base = "void"
            break
        kind, name_off, target, _, kflag, _ = _raw(t)
        if kind == "ptr" and not quals:
            stars, t = stars + 1, target
        elif kind in _QUALS:
            quals.append(kind)
            t = target
        elif kind == "type_tag":
            t = target
        elif kind in ("int", "float", "typedef"):
            base = _name(name_off)
            break
        elif kind in _TAGGED or kind == "fwd":
            tag = ("union" if kflag else "struct") if kind == "fwd" else _TAGGED[kind]
            name = _name(name_off) if name_off else ""
            if not name:
                return btf.c_name(tid)
            base = f"{tag} {name}"
            break
        else:  # arrays, function pointers, qualified pointers: the full renderer
            return btf.c_name(tid)
    else:
        return btf.c_name(tid)
    text = " ".join(quals + [base])
    return f"{text} {'*' * stars}" if stars else text


def btf_params(proto_id: int, skip: int = 0) -> tuple:
    """A FUNC_PROTO's parameters as Args, after the first ``skip``."""
    kind, _, _, vlen, _, words = _raw(proto_id)
    if kind != "func_proto":
        return ()
    w, out = vmlinux_btf()._w, []
    for i in range(skip, vlen):
        name_off, ptid = w[words + 2 * i], w[words + 2 * i + 1]
        out.append(_param(ptid, name_off, i - skip))
    return tuple(out)


@functools.lru_cache(maxsize=None)
def _param(type_id: int, name_off: int, index: int) -> Arg:
    # One Arg per distinct parameter: "struct file * file" is shared by thousands.
    if type_id == 0 and not name_off:
        return Arg("...", "")
    return Arg(_c_type(type_id), _name(name_off) if name_off else f"arg{index}")


@functools.lru_cache(maxsize=None)
def func_args(name: str) -> tuple:
    """A kernel function's arguments (from its BTF FUNC), () when unknown."""
    tid = btf_names("func").get(name)
    return () if tid is None else btf_params(_raw(tid)[2])


@functools.lru_cache(maxsize=None)
def raw_tp_args(name: str) -> tuple:
    """A raw tracepoint's arguments after the hidden ``void *`` (tp_btf, raw_tp)."""
    stub = btf_names("func").get("__probestub_" + name)
    if stub is not None:
        return btf_params(_raw(stub)[2], skip=1)
    tid = btf_names("typedef", "btf_trace_").get(name)
    if tid is None:
        return ()
    kind, _, target, *_ = _raw(vmlinux_btf().resolve(tid))
    return btf_params(target, skip=1) if kind == "ptr" else ()


def _select(kind: str, names, spec: Spec, prefix: str) -> list[str]:
    """The names (functions, raw tracepoints) a one-part spec matches."""
    pat = spec.parts[0]
    if pat == "*":
        return list(names)
    if not spec.bare:
        if not any(c in pat for c in "*?["):
            return [pat] if pat in names else []
        return fnmatch.filter(names, pat)
    rx = re.compile(fnmatch.translate(pat))
    return [n for n in names if rx.match(n) or rx.match(f"{prefix}:{n}")
            or rx.match(f"{kind}/{n}")]


def _list_raw(kind: str, spec: Spec) -> list[Probe]:
    prefix = _BPFTRACE[kind]
    return [(f"{kind}/{n}", kind, raw_tp_args(n), "")
            for n in _select(kind, btf_names("typedef", "btf_trace_"), spec, prefix)]


def _list_funcs(kind: str, spec: Spec) -> list[Probe]:
    prefix = _BPFTRACE[kind]
    return [(f"{kind}/{n}", kind, func_args(n), "")
            for n in _select(kind, btf_names("func"), spec, prefix)]


_BPFTRACE = {"tp_btf": "rawtracepoint", "raw_tp": "rawtracepoint", "kprobe": "kprobe",
             "kretprobe": "kretprobe", "fentry": "fentry", "fexit": "fexit"}


# --- tracepoints ---------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def tracefs_events() -> tuple | None:
    """(category, name) of every tracefs event, or None when tracefs is unreadable."""
    try:
        with open(os.path.join(sysfs.TRACEFS, "available_events")) as f:
            text = f.read()
    except OSError:
        return None
    return tuple(tuple(line.split(":", 1)) for line in text.splitlines() if ":" in line)


def tracefs_unreadable() -> str:
    """Why tracepoint/ probes cannot attach for want of tracefs ("" when readable)."""
    if tracefs_events() is not None:
        return ""
    if not os.path.ismount(sysfs.TRACEFS):
        return (f"tracefs is not mounted at {sysfs.TRACEFS}: attaching tracepoint/ needs it "
                f"(as root: mount -t tracefs nodev {sysfs.TRACEFS}); tp_btf/ and raw_tp/ "
                f"hooks attach without it")
    return (f"tracefs ({sysfs.TRACEFS}) is not readable by this user: attaching tracepoint/ "
            f"needs root (its category comes from there too, shown as "
            f"'{UNKNOWN_CATEGORY}'); tp_btf/ and raw_tp/ hooks attach with CAP_BPF + "
            f"CAP_PERFMON")


@functools.lru_cache(maxsize=4096)
def tracepoint_fields(category: str, name: str) -> tuple:
    """An event's own fields (not common_*) from its tracefs format file, else from the
    BTF struct trace_event_raw_<name>; () when neither is readable."""
    try:
        with open(os.path.join(TRACEFS_EVENTS, category, name, "format")) as f:
            text = f.read()
    except OSError:
        return raw_struct_fields(name)
    out = []
    for line in text.splitlines():
        m = _FIELD.match(line)
        if m is None:
            continue
        d = _DECL.match(m["decl"].strip())
        if d is None or d["name"].startswith("common_"):
            continue
        signed = None if m["signed"] is None else m["signed"] == "1"
        out.append(Arg(d["type"] + d["dims"], d["name"], int(m["off"]), int(m["size"]),
                       signed))
    return tuple(out)


def raw_struct(name: str) -> int | None:
    """The BTF id of struct trace_event_raw_<name>, if the kernel has one."""
    return btf_names("struct", "trace_event_raw_").get(name)


def raw_struct_fields(name: str) -> tuple:
    """The members of struct trace_event_raw_<name> as Args (offsets in bytes)."""
    tid = raw_struct(name)
    if tid is None:
        return ()
    btf = vmlinux_btf()
    out = []
    for m in btf.type(tid).members:
        if m.name == "ent" or m.name == "__data" or m.bitfield_size:
            continue
        size = btf.size(m.type_id)
        out.append(Arg(_c_type(m.type_id), m.name, m.bit_offset // 8, size))
    return tuple(out)


def _list_tracepoints(kind: str, spec: Spec) -> list[Probe]:
    events = tracefs_events()
    why = ""
    if events is None:
        why = tracefs_unreadable()
        tps = btf_names("typedef", "btf_trace_")
        events = tuple((UNKNOWN_CATEGORY, n) for n in btf_names("struct", "trace_event_raw_")
                       if n in tps)
    if spec.parts == ("*",):
        keep = events
    elif spec.bare:
        rx = re.compile(fnmatch.translate(spec.parts[0]))
        keep = [(c, n) for c, n in events if rx.match(n) or rx.match(f"tracepoint:{c}:{n}")
                or rx.match(f"tracepoint/{c}/{n}")]
    else:
        cat_rx = re.compile(fnmatch.translate(spec.parts[0]))
        if len(spec.parts) == 2:
            # An unknown category (no tracefs) matches only a wildcard category.
            name_rx = re.compile(fnmatch.translate(spec.parts[1]))
            keep = [(c, n) for c, n in events if name_rx.match(n) and (
                spec.parts[0] == "*" if c == UNKNOWN_CATEGORY else cat_rx.match(c))]
        else:   # tracepoint:X names a category or an event
            keep = [(c, n) for c, n in events if cat_rx.match(c) or cat_rx.match(n)]
    return [(f"tracepoint/{c}/{n}", kind, tracepoint_fields(c, n), why) for c, n in keep]


def _list_user(kind: str, spec: Spec) -> list[Probe]:
    from . import probes_elf
    return probes_elf.list_probes(kind, *spec.parts)


_LISTERS = {"tracepoint": _list_tracepoints, "tp_btf": _list_raw, "raw_tp": _list_raw,
            "kprobe": _list_funcs, "kretprobe": _list_funcs, "fentry": _list_funcs,
            "fexit": _list_funcs, "uprobe": _list_user, "uretprobe": _list_user,
            "usdt": _list_user}


def _args_texts(rows) -> list[str]:
    """The args column. Rows of one function share its args tuple (kprobe and fentry
    alike): render each tuple once, by identity while ``rows`` holds them alive."""
    memo, out = {}, []
    for r in rows:
        text = memo.get(id(r[2]))
        if text is None:
            text = memo[id(r[2])] = ", ".join(a.decl for a in r[2])
        out.append(text)
    return out
