"""What a ``%%bpf`` cell shows: programs with their hooks, maps, globals; text and HTML.

A :class:`Summary` is a snapshot taken when the cell ran. It holds no reference to
the Object, so a cell's output never keeps a torn-down object alive. Internal names
never show and types read as a person writes them (``u32``, not ``__u32``): see
bpfnb/libbpf/names.py. Each loaded program shows what it costs (runs, events/s, ns
per run, share of one CPU; "-" where unknown): see bpfnb/overhead.py.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from . import overhead
from .libbpf.names import type_label

PROGRAM_COLUMNS = ("program", "type", "hook", "state", "id", "runs", "events/s", "ns/run",
                   "cpu")
MAP_COLUMNS = ("map", "type", "key", "value", "max_entries")
GLOBAL_COLUMNS = ("section", "variable", "type", "value")
SKIPPED_COLUMNS = ("skipped", "hook", "why")
_MAX_VALUE = 60  # characters of a global's value shown; arrays can be long


@dataclass
class Summary:
    name: str
    state: str
    programs: list = field(default_factory=list)  # rows of PROGRAM_COLUMNS
    maps: list = field(default_factory=list)      # rows of MAP_COLUMNS
    globals: list = field(default_factory=list)   # rows of GLOBAL_COLUMNS
    notes: list = field(default_factory=list)     # e.g. timings
    warnings: str = ""                             # clang's
    skipped: list = field(default_factory=list)   # rows of SKIPPED_COLUMNS

    def _tables(self):
        return [(cols, rows) for cols, rows in ((PROGRAM_COLUMNS, self.programs),
                                                (MAP_COLUMNS, self.maps),
                                                (GLOBAL_COLUMNS, self.globals),
                                                (SKIPPED_COLUMNS, self.skipped)) if rows]

    def __repr__(self):
        out = [self.headline()]
        for cols, rows in self._tables():
            out.append(_text_table(cols, rows))
        if self.warnings:
            out.append("clang warnings:\n" + self.warnings.rstrip())
        return "\n".join(out)

    def _repr_html_(self):
        out = [f"<div class='bpfnb-summary'><b>{html.escape(self.headline())}</b>"]
        for cols, rows in self._tables():
            out.append(_html_table(cols, rows))
        if self.warnings:
            out.append("<details><summary>clang warnings</summary><pre>"
                       f"{html.escape(self.warnings.rstrip())}</pre></details>")
        out.append("</div>")
        return "\n".join(out)

    def headline(self) -> str:
        return " · ".join([f"{self.name}: {self.state}", *self.notes])


def summarize(obj, name: str | None = None, notes=(), warnings: str = "") -> Summary:
    """A snapshot of ``obj`` (a libbpf Object) for display."""
    loaded = obj.state == "loaded"
    attached = any(p.links for p in obj.progs)
    state = "attached" if attached else obj.state
    var = name if name and name.isidentifier() else "obj"
    skipped = getattr(obj, "skipped", {})
    notes = [*notes, *getattr(obj, "notes", ())]  # what bpfnb.load did (bpfnb.mcpu)
    costs = overhead.measure([obj])[0] if loaded else {}
    programs = []
    for p in obj.progs:
        pid = p.id if loaded and p.autoload else ""
        if not p.autoload:
            pstate = "skipped" if p.name in skipped else "autoload off"
        elif p.name in skipped:
            pstate = "not attached"
        elif p.links:
            pstate = "attached"
        elif loaded and p.attach_call:
            pstate = f"needs a target: {var}.progs.{p.name}.{p.attach_call}"
        else:
            pstate = obj.state
        cost = costs.get(p.name)
        cells = cost.cells() if cost is not None else ("-",) * 4
        programs.append((p.name, p.type_name, p.hook, pstate, pid, *cells))
    if costs and all(c.runs is None for c in costs.values()):
        notes = [*notes, overhead.NO_STATS]
    skipped_rows = [(prog, obj.progs[prog].section, why) for prog, why in skipped.items()]
    if skipped_rows:
        notes = [*notes, f"{len(skipped_rows)} of {len(obj.progs)} programs skipped "
                         f"(hooks this kernel lacks)"]
    btf = obj.btf
    maps = [(m.name, m.type_name, type_label(m.key_type, btf, m.key_type_id),
             type_label(_value_type(obj, m), btf, m.value_type_id), m.max_entries)
            for m in obj.maps]
    globals_ = []
    for section, g in obj.globals.items():  # internal variables are not listed
        types, values = g._types(), g._asdict()
        for var, ctype in types.items():
            globals_.append((section, var, type_label(ctype), _short(values[var])))
    return Summary(name or obj.name, state, programs, maps, globals_, list(notes), warnings,
                   skipped_rows)


def _value_type(obj, m) -> str:
    """A map's value type; for ring and perf buffers the records' type(s)."""
    from .libbpf.map import PERF_EVENT_ARRAY, RINGBUF
    if m.type in (RINGBUF, PERF_EVENT_ARRAY):
        from .recordtypes import record_types_text
        return record_types_text(obj, m)
    return m.value_type


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_VALUE else text[:_MAX_VALUE - 3] + "..."


def _text_table(cols, rows) -> str:
    cells = [list(cols)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(cols))]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
                     for r in cells)


def _html_table(cols, rows) -> str:
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td style='text-align:left'>{html.escape(str(c))}</td>"
                                    for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
