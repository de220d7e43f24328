"""bpfnb.starter(probe, ...): a complete ``%%bpf`` cell for a probe, typed arguments
included, that counts, histograms or streams what the probe sees.

``starter("tracepoint/syscalls/sys_enter_openat", count_by="comm")`` -> the text of a
cell (``%bpf new`` puts it into the next notebook cell). It compiles and loads as it
is; a probe this machine cannot attach (kprobes here) gets a cell that still compiles
and says why it will not attach.

count_by   comm | pid | tid | cpu | stack | ustack | FIELD, or several joined by ","
           -> a hash map ``counts`` from a key struct to a u64 count
hist       FIELD -> a log2 histogram of the field (bpf/bpfnb.h BPFNB_HIST);
           latency -> entry-to-exit time per thread: sys_enter_X with sys_exit_X,
           kprobe/fentry/uprobe with their return probe, or a given (entry, exit) pair
events     "f1,f2" -> a ring buffer ``events`` of a struct with those fields, pid, comm
(none of them: count_by="comm"; any combination goes into one program)

A FIELD is an argument of the probe (bpfnb.probes() lists them), ``args.NAME`` when its
name is one of comm/pid/tid/cpu, or a pointer chain read with CO-RE
(``next->comm`` on tp_btf/sched_switch).
"""

from __future__ import annotations

import keyword
import re
import textwrap
from typing import NamedTuple

from .probes import (UNKNOWN_CATEGORY, Arg, btf_names, find, kind_verdict, raw_struct,
                     raw_struct_fields, vmlinux_btf)

COMM_LEN = 16
STR_LEN = 128          # bytes kept of a string argument
MAX_ENTRIES = 10240
STACK_DEPTH = 127      # PERF_MAX_STACK_DEPTH: a macro, so not in vmlinux.h
HIST_SLOTS = 64
COMMENT_WIDTH = 92
MAX_REG_ARGS = 5       # BPF_KPROBE/BPF_UPROBE read at most PT_REGS_PARM5
SPECIAL = ("comm", "pid", "tid", "cpu", "stack", "ustack")
# Names the generated code declares: an argument so named is renamed NAME_arg.
LOCALS = {"ctx", "k", "zero", "calls", "value", "tid", "ts", "e"}
_C_BUILTINS = {"char", "signed char", "unsigned char", "short", "unsigned short", "int",
               "unsigned", "unsigned int", "long", "unsigned long", "long long",
               "unsigned long long", "bool", "_Bool", "short int", "long int",
               "long unsigned int", "short unsigned int", "long long int",
               "long long unsigned int", "void"}


class Value(NamedTuple):
    name: str    # the struct member (and DataFrame column)
    ctype: str   # its C type: "u32", "char[16]"
    fill: str    # C statement(s) that store it into {dst}
    numeric: bool


class Hook(NamedTuple):
    """One program of the cell: its section, signature and how it reads its fields."""
    section: str
    kind: str
    args: tuple
    prog: str
    head: str           # the C line declaring the program
    values: dict        # field name -> Value
    includes: tuple = ()


def starter(probe, count_by: str | None = None, hist: str | None = None,
            events: str | None = None, name: str | None = None) -> str:
    """The text of a ``%%bpf NAME`` cell for ``probe`` (a SEC string or bpftrace's
    spelling; for hist="latency" also an (entry, exit) pair or "ENTRY,EXIT")."""
    pair = list(probe) if isinstance(probe, (tuple, list)) else [
        p.strip() for p in str(probe).split(",")]
    if len(pair) == 2 and hist != "latency":
        raise ValueError("two probes make an entry/exit pair: use them with hist='latency'")
    if len(pair) not in (1, 2):
        raise ValueError(f"starter({probe!r}): name one probe (or an entry,exit pair)")
    found = [_one(p) for p in pair]
    entry = found[0]
    if not (count_by or hist or events):
        count_by = "comm"
    name = name or _identifier(entry.probe.rsplit("/", 1)[-1].rsplit(":", 1)[-1])
    if not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"name={name!r} is not a Python identifier")
    hook = make_hook(entry)
    exit_hook = None
    if hist == "latency":
        exit_probe = found[1] if len(found) == 2 else _one(_exit_of(entry))
        exit_hook = make_hook(exit_probe, suffix="_exit" if exit_probe.probe.rsplit(
            "/", 1)[-1] == entry.probe.rsplit("/", 1)[-1] else "")
    return _Cell(name, hook, exit_hook).render(count_by, hist, events, found)


def _one(probe: str):
    rows = find(probe)
    if len(rows) == 1:
        if f"/{UNKNOWN_CATEGORY}/" in rows[0].probe:
            event = rows[0].probe.rsplit("/", 1)[-1]
            raise ValueError(f"{rows[0].why} Write the cell for tp_btf/{event} instead.")
        return rows[0]
    if not rows:
        near = find(f"*{_identifier(probe.rsplit('/', 1)[-1].rsplit(':', 1)[-1])}*")
        hint = (f"; near: {', '.join(r.probe for r in near[:5])}" if near else
                "; list them with bpfnb.probes(pattern)")
        raise ValueError(f"no probe {probe!r} on this machine{hint}")
    some = ", ".join(r.probe for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
    raise ValueError(f"{probe!r} matches {len(rows)} probes ({some}): name one")


def _exit_of(p) -> str:
    """The return side of an entry probe, for hist='latency'."""
    kind, rest = p.probe.split("/", 1)
    if kind == "tracepoint" and "/sys_enter_" in p.probe:
        return p.probe.replace("/sys_enter_", "/sys_exit_")
    if kind in ("tp_btf", "raw_tp") and rest == "sys_enter":
        return f"{kind}/sys_exit"
    returns = {"kprobe": "kretprobe", "fentry": "fexit", "uprobe": "uretprobe"}
    if kind in returns:
        return f"{returns[kind]}/{rest}"
    raise ValueError(f"hist='latency' of {p.probe}: which probe ends it? Give the pair, "
                     f"e.g. starter(('{p.probe}', 'tracepoint/...'), hist='latency')")


def _identifier(text: str) -> str:
    out = re.sub(r"\W+", "_", text).strip("_") or "probe"
    return out if not out[0].isdigit() else "p_" + out


# --- hooks: the program's signature and its fields ----------------------------------

def make_hook(p, suffix: str = "") -> Hook:
    kind, rest = p.probe.split("/", 1)
    prog = "on_" + _identifier(rest.rsplit(":", 1)[-1].rsplit("/", 1)[-1]) + suffix
    if kind == "tracepoint":
        return _tracepoint_hook(p, prog)
    includes = ()
    if kind in ("kprobe", "uprobe"):
        args = tuple(_portable(a, kind) for a in p.args[:MAX_REG_ARGS])
        macro = "BPF_KPROBE" if kind == "kprobe" else "BPF_UPROBE"
    elif kind in ("kretprobe", "uretprobe"):
        args = (Arg("long", "ret"),)
        macro = "BPF_KRETPROBE" if kind == "kretprobe" else "BPF_URETPROBE"
    elif kind == "fexit":
        args = tuple(_portable(a, kind) for a in p.args) + (Arg("long", "ret"),)
        macro = "BPF_PROG"
    elif kind == "usdt":
        args, macro, includes = p.args, "BPF_USDT", ("#include <bpf/usdt.bpf.h>",)
    else:  # tp_btf, raw_tp, fentry
        args = tuple(_portable(a, kind) for a in p.args)
        macro = "BPF_PROG"
    args = tuple(a for a in args if a.type != "...")
    named = [a._replace(name=a.name + "_arg") if a.name in LOCALS else a for a in args]
    decls = "".join(f", {_code_decl(a)}" for a in named)
    user = kind in ("uprobe", "uretprobe", "usdt")
    values = {a.name: _arg_value(a, b.name, user) for a, b in zip(args, named)}
    return Hook(p.probe, kind, args, prog, f"int {macro}({prog}{decls})", values, includes)


def _portable(a, kind: str):
    """An argument type the cell can declare: user-space types (DWARF) may not be in
    vmlinux.h, and anonymous or by-value aggregates do not fit a register."""
    t = a.type
    if "{" in t or (not t.endswith("*") and re.match(r"(const )?(struct|union) ", t)):
        return a._replace(type="u64")
    if kind in ("uprobe", "uretprobe"):
        if t.endswith("*"):
            t = "const char *" if re.match(r"(const )?(unsigned )?char \*$", t) else "void *"
        elif t.replace("const ", "") not in _C_BUILTINS:
            t = "long"
        return a._replace(type=t)
    return a


def _tracepoint_hook(p, prog: str) -> Hook:
    cat_name = p.probe.split("/", 1)[1]
    event = cat_name.rsplit("/", 1)[-1]
    fields = [a for a in p.args if a.name != "__syscall_nr"]
    values = {}
    if event.startswith("sys_enter_"):
        struct = "trace_event_raw_sys_enter"
        for i, a in enumerate(fields):
            ctype = _syscall_type(a.type)
            expr = f"ctx->args[{i}]" if ctype.endswith("*") else f"({ctype})ctx->args[{i}]"
            values[a.name] = _arg_value(a._replace(type=ctype), expr, user=True)
    elif event.startswith("sys_exit_"):
        struct = "trace_event_raw_sys_exit"
        values["ret"] = Value("ret", "long", "{dst} = ctx->ret;", True)
    else:
        struct = _context_struct(event, p.args)
        members = {m.name: m for m in raw_struct_fields(struct[len(
            "trace_event_raw_"):])} if struct else {}
        for a in fields:
            if a.type.startswith("__data_loc"):
                at = f"(void *)ctx + (ctx->__data_loc_{a.name} & 0xffff)"
                values[a.name] = Value(a.name, f"char[{STR_LEN}]",
                                       f"bpf_probe_read_kernel_str(&{{dst}}, sizeof({{dst}}), "
                                       f"{at});", False)
            elif a.name in members:
                values[a.name] = _arg_value(members[a.name], f"ctx->{a.name}", user=False)
    head = (f"int {prog}(struct {struct} *ctx)" if struct else f"int {prog}(void *ctx)")
    return Hook(p.probe, "tracepoint", tuple(fields), prog, head, values)


def _syscall_type(t: str) -> str:
    """A syscall argument's declared type, if vmlinux.h knows it; else long."""
    bare = t.replace("const ", "").strip()
    if t.endswith("*"):
        return t if re.match(r"(const )?(unsigned )?char \*$", t) else "unsigned long"
    if bare in _C_BUILTINS or bare in btf_names("typedef"):
        return t
    return "long"


def _context_struct(event: str, fields) -> str | None:
    """The BTF ``struct trace_event_raw_<class>`` whose members are the event's fields
    (events of one class share it: sched_wakeup uses sched_wakeup_template)."""
    want = ["__data_loc_" + a.name if a.type.startswith("__data_loc") else a.name
            for a in fields if a.offset is not None]
    if raw_struct(event) is not None:
        return "trace_event_raw_" + event
    for cls in btf_names("struct", "trace_event_raw_"):
        if [m.name for m in raw_struct_fields(cls)] == want:
            return "trace_event_raw_" + cls
    return None


def _arg_value(a, expr: str, user: bool) -> Value:
    """How to store argument ``a`` (read as ``expr``) into a struct member."""
    t = a.type
    bare = re.sub(r"\b(const|volatile)\b\s*", "", t).strip()
    name = a.name
    if bare.endswith("]"):
        if bare.startswith("char"):
            return Value(name, bare, f"bpf_probe_read_kernel_str(&{{dst}}, sizeof({{dst}}), "
                                     f"{expr});", False)
        return Value(name, "u64", f"{{dst}} = (u64){expr};  /* the array's address */",
                     True)
    if bare.endswith("*"):
        if re.match(r"(unsigned )?char \*$", bare):
            reader = "bpf_probe_read_user_str" if user else "bpf_probe_read_kernel_str"
            # BTF of a gcc-built kernel does not mark __user pointers: say what to change.
            note = "" if user else "  /* a __user pointer? bpf_probe_read_user_str */"
            return Value(name, f"char[{STR_LEN}]", f"{reader}(&{{dst}}, sizeof({{dst}}), "
                                                   f"(const void *){expr});{note}", False)
        return Value(name, "u64", f"{{dst}} = (u64){expr};", True)
    return Value(name, bare, f"{{dst}} = {expr};", True)


def field_value(hook: Hook, field: str) -> Value:
    """The Value of a field name: a special (comm, pid, ...), an argument, ``args.X``, or
    a CO-RE pointer chain ``arg->member->...``."""
    field = field.strip()
    if field == "comm":
        return Value("comm", f"char[{COMM_LEN}]", "bpf_get_current_comm(&{dst}, sizeof({dst}));",
                     False)
    if field == "pid":
        return Value("pid", "u32", "{dst} = bpf_get_current_pid_tgid() >> 32;", True)
    if field == "tid":
        return Value("tid", "u32", "{dst} = (u32)bpf_get_current_pid_tgid();", True)
    if field == "cpu":
        return Value("cpu", "u32", "{dst} = bpf_get_smp_processor_id();", True)
    if field == "stack":
        return Value("kstack_id", "int", "{dst} = bpf_get_stackid(ctx, &stacks, 0);", False)
    if field == "ustack":
        return Value("ustack_id", "int", "{dst} = bpf_get_stackid(ctx, &stacks, "
                                         "BPF_F_USER_STACK);", False)
    if field.startswith("args."):
        field = field[len("args."):]
    if field in hook.values:
        return hook.values[field]
    if "->" in field:
        return _core_chain(hook, field)
    have = ", ".join(list(hook.values) + list(SPECIAL[:4]))
    raise ValueError(f"{hook.section} has no field {field!r}: it has {have or 'no arguments'}")


def _core_chain(hook: Hook, field: str) -> Value:
    root, *path = [part.strip() for part in field.split("->")]
    arg = next((a for a in hook.args if a.name == root), None)
    if arg is None or hook.kind == "tracepoint" or not arg.type.endswith("*"):
        raise ValueError(f"{field!r}: {root!r} is not a pointer argument of {hook.section} "
                         f"(pointer chains need tp_btf, raw_tp, fentry or kprobe arguments)")
    btf = vmlinux_btf()
    tid = _pointer_target(btf, arg.type)
    ctype = ""
    for i, member in enumerate(path):
        t = btf.type(btf.resolve(tid)) if tid else None
        if t is None or t.kind not in ("struct", "union"):
            raise ValueError(f"{field!r}: {'->'.join([root] + path[:i])} does not point to "
                             f"a struct")
        m = next((m for m in t.members if m.name == member), None)
        if m is None:
            names = ", ".join(m.name for m in t.members if m.name)
            raise ValueError(f"{field!r}: struct {t.name} has no member {member!r} "
                             f"(it has {names})")
        ctype = btf.c_name(m.type_id)
        last = i == len(path) - 1
        if not last:
            rt = btf.type(btf.resolve(m.type_id))
            if rt.kind != "ptr":
                raise ValueError(f"{field!r}: {member} is a {ctype}, not a pointer")
            tid = rt.type_id
    col = _identifier("_".join([root] + path))
    chain = ", ".join([root] + path)
    if ctype.endswith("]") and ctype.startswith("char"):
        return Value(col, ctype, f"BPF_CORE_READ_STR_INTO(&{{dst}}, {chain});", False)
    if ctype.endswith("*"):
        return Value(col, "u64", f"{{dst}} = (u64)BPF_CORE_READ({chain});", True)
    if ctype.endswith("]") or ctype.startswith(("struct ", "union ")):
        raise ValueError(f"{field!r} is a {ctype}: name one of its members")
    return Value(col, ctype, f"{{dst}} = BPF_CORE_READ({chain});", True)


def _pointer_target(btf, ctype: str) -> int:
    m = re.match(r"(?:const )?(struct|union) (\w+) \*$", ctype)
    if m is None:
        return 0
    return btf.find(m.group(2), m.group(1))


# --- the cell ------------------------------------------------------------------------

def _code_decl(a) -> str:
    """A declaration as C code writes it: ``struct task_struct *prev``."""
    return f"{a.type}{a.name}" if a.type.endswith("*") else a.decl


def _member(ctype: str, name: str) -> str:
    return _code_decl(Arg(ctype, name)) + ";"


class _Cell:
    def __init__(self, name: str, hook: Hook, exit_hook: Hook | None):
        self.name, self.hook, self.exit_hook = name, hook, exit_hook
        self.decls: list[str] = []
        self.body: list[str] = []
        self.exit_body: list[str] = []
        self.what: list[str] = []
        self.read: list[str] = []

    def render(self, count_by, hist, events, found) -> str:
        if count_by:
            self._counts([f for f in str(count_by).split(",") if f.strip()])
        if hist == "latency":
            self._latency()
        elif hist:
            self._hist(hist)
        if events:
            self._events([f for f in str(events).split(",") if f.strip()])
        hooks = [h for h in (self.hook, self.exit_hook) if h]
        notes = [f"{' to '.join(h.section for h in hooks)}: {'; '.join(self.what)}.",
                 f"Then: {', '.join(self.read)}."]
        for p in found:
            verdict = kind_verdict(p.kind)
            if not verdict[0]:
                notes.append(f"It cannot attach on this machine: {verdict[1]}")
        lines = [f"%%bpf {self.name}"] + [
            line for note in notes for line in textwrap.wrap(
                note, COMMENT_WIDTH, initial_indent="// ", subsequent_indent="//   ",
                break_long_words=False, break_on_hyphens=False)]
        if self.hook.args:
            lines += _wrap_items("// Arguments: ", [a.decl for a in self.hook.args], "//   ")
        includes = sorted({i for h in hooks for i in h.includes})
        out = "\n".join(lines + includes) + "\n"
        if self.decls:
            out += "\n" + "\n\n".join(self.decls) + "\n"
        out += self._program(self.hook, self.body)
        if self.exit_hook:
            out += self._program(self.exit_hook, self.exit_body)
        return out

    @staticmethod
    def _program(hook: Hook, body: list[str]) -> str:
        text = "\n".join(f"    {line}" if line else "" for line in body + ["return 0;"])
        head = hook.head
        if len(head) > COMMENT_WIDTH and "(*" not in head:  # one parameter list: wrap it
            call, _, params = head[:-1].partition("(")
            head = "\n".join(_wrap_items(call + "(", params.split(", "),
                                          " " * (len(call) + 1))) + ")"
        return f'\nSEC("{hook.section}")\n{head}\n{{\n{text}\n}}\n'

    def _struct(self, tag: str, values: list[Value]) -> str:
        members = "\n".join(f"    {_member(v.ctype, v.name)}" for v in values)
        return f"struct {self.name}_{tag} {{\n{members}\n}};"

    def _stacks(self, values):
        if any(v.name in ("kstack_id", "ustack_id") for v in values) and not any(
                "} stacks SEC" in d for d in self.decls):
            self.decls.append(_map("BPF_MAP_TYPE_STACK_TRACE", 1024, "u32", None, "stacks",
                                   value_size=f"{STACK_DEPTH} * sizeof(u64)",
                                   comment="stack id -> instruction pointers"))

    def _fill(self, values: list[Value], dst: str) -> list[str]:
        return [v.fill.format(dst=f"{dst}{v.name}") for v in values]

    def _counts(self, fields):
        values = _unique([field_value(self.hook, f) for f in fields])
        if any(v.name == "ustack_id" for v in values) and "pid" not in [v.name for v in values]:
            values.insert(0, field_value(self.hook, "pid"))  # user stacks resolve per pid
        self._stacks(values)
        key = f"struct {self.name}_key"
        self.decls.append(self._struct("key", values))
        self.decls.append(_map("BPF_MAP_TYPE_HASH", MAX_ENTRIES, key, "u64", "counts",
                               comment="calls per key"))
        self.body += [f"{key} k;", "u64 zero = 0, *calls;", "",
                      "__builtin_memset(&k, 0, sizeof(k));  /* a hash map hashes padding too */",
                      *self._fill(values, "k."),
                      "bpf_map_update_elem(&counts, &k, &zero, BPF_NOEXIST);",
                      "calls = bpf_map_lookup_elem(&counts, &k);",
                      "if (calls)", "    __sync_fetch_and_add(calls, 1);", ""]
        self.what.append(f"count by {', '.join(v.name for v in values)}")
        self.read.append(f"{self.name}.maps.counts.to_df()")

    def _hist(self, field):
        v = field_value(self.hook, field)
        if not v.numeric:
            raise ValueError(f"hist={field!r}: {v.name} is a {v.ctype}, not a number")
        self.decls.append(f"BPFNB_HIST({v.name}_hist, {HIST_SLOTS});  /* log2 slots of "
                          f"{v.name} */")
        self.body += [f"{v.ctype} value;", v.fill.format(dst="value"),
                      f"bpfnb_hist_log2(&{v.name}_hist, value);", ""]
        self.what.append(f"log2 histogram of {v.name}")
        self.read.append(f"{self.name}.maps.{v.name}_hist.hist()")

    def _latency(self):
        self.decls.append(_map("BPF_MAP_TYPE_HASH", MAX_ENTRIES, "u32", "u64", "start",
                               comment="thread id -> entry time (ns)"))
        self.decls.append(f"BPFNB_HIST(latency_ns, {HIST_SLOTS});  /* log2 slots of ns */")
        self.body += ["u32 tid = (u32)bpf_get_current_pid_tgid();",
                      "u64 ts = bpf_ktime_get_ns();", "",
                      "bpf_map_update_elem(&start, &tid, &ts, BPF_ANY);", ""]
        self.exit_body += ["u32 tid = (u32)bpf_get_current_pid_tgid();",
                           "u64 *ts = bpf_map_lookup_elem(&start, &tid);", "",
                           "if (!ts)", "    return 0;  /* entered before the cell attached */",
                           "bpfnb_hist_log2(&latency_ns, bpf_ktime_get_ns() - *ts);",
                           "bpf_map_delete_elem(&start, &tid);"]
        self.what.append("log2 histogram of the latency (ns)")
        self.read.append(f"{self.name}.maps.latency_ns.hist()")

    def _events(self, fields):
        values = _unique([field_value(self.hook, f) for f in ["pid", "comm"] + fields])
        self._stacks(values)
        event = f"struct {self.name}_event"
        self.decls.append(self._struct("event", values))
        self.decls.append(_map("BPF_MAP_TYPE_RINGBUF", 256 * 1024, None, None, "events",
                               comment="bytes of records"))
        self.body += [f"{event} *e = bpfnb_ringbuf_reserve(&events, {event});", "",
                      "if (!e)", "    return 0;  /* the ring is full: counted as lost */",
                      *self._fill(values, "e->"), "bpf_ringbuf_submit(e, 0);"]
        self.what.append(f"stream {', '.join(v.name for v in values)}")
        self.read.append(f"{self.name}.maps.events.stream().to_df()")


def _wrap_items(first: str, items: list[str], indent: str) -> list[str]:
    """``first`` + items joined by ", ", broken between items at COMMENT_WIDTH."""
    lines, line = [], first
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if line not in (first, indent) and len(line) + 1 + len(piece) > COMMENT_WIDTH:
            lines.append(line)
            line = indent
        line += piece if line in (first, indent) else " " + piece
    return lines + [line]


def _unique(values: list[Value]) -> list[Value]:
    seen, out = set(), []
    for v in values:
        if v.name not in seen:
            seen.add(v.name)
            out.append(v)
    return out


def _map(type_: str, entries: int, key: str | None, value: str | None, name: str, *,
         value_size: str | None = None, comment: str = "") -> str:
    lines = [f"    __uint(type, {type_});",
             f"    __uint(max_entries, {entries});{f'  /* {comment} */' if comment else ''}"]
    if key:
        lines.append(f"    __type(key, {key});")
    if value:
        lines.append(f"    __type(value, {value});")
    if value_size:
        lines.append(f"    __uint(value_size, {value_size});")
    return "struct {\n" + "\n".join(lines) + f"\n}} {name} SEC(\".maps\");"
