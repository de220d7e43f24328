"""bpfnb.open / bpfnb.load: from C text, a .c file or a .o file to a live Object."""

from __future__ import annotations

import html
import os
from pathlib import Path

from . import build, libbpf
from .libbpf.map import PERF_EVENT_ARRAY, RINGBUF, STACK_TRACE

# Sizes libbpf-tools programs leave to their loader (max_entries 0 / value_size 0).
DEFAULT_MAX_ENTRIES = 10240
DEFAULT_RINGBUF_BYTES = 256 * 1024
DEFAULT_STACK_DEPTH = 127
_HTML_ROWS = 20


class Map(libbpf.Map):
    """A map with the data-frame side: ``to_df()``, ``hist()``, ``stream()``."""

    def to_df(self, percpu: str = "sum"):
        from . import frames
        return frames.map_to_df(self, percpu=percpu)

    def hist(self, kind: str | None = None, **options):
        """The map as a histogram: kind "log2" or "linear" (default: from its types)."""
        from . import frames
        return frames.histogram(self, kind, **options)

    def _repr_html_(self):
        """In a notebook a map shows its header and its first rows."""
        from . import frames
        head = html.escape(repr(self))
        if self.object.state != "loaded" or not frames.is_tabular(self):
            return f"<code>{head}</code>"
        df = self.to_df()
        more = f"<p>{len(df)} entries, first {_HTML_ROWS} shown</p>" if len(df) > _HTML_ROWS else ""
        return f"<code>{head}</code>{df.head(_HTML_ROWS).to_html()}{more}"

    def stream(self, type: str | None = None, **options):
        from . import stream
        return stream.EventStream(self, type, **options)

    def live(self, kind: str | None = None, *, interval: float = 1.0, **options):
        """A live dashboard of this map: kind "top", "hist", "lines", "series" or "table"
        (default: by the map's shape); ``options`` go to the view (e.g. ``n=5``)."""
        from . import live
        return live.live(live.view_of(self, kind, **options), interval=interval)


class Object(libbpf.Object):
    """An Object whose maps turn into DataFrames and event streams.

    ``image`` keeps the ELF bytes (libbpf frees its copy at load): records.py reads the
    object's instructions and DWARF from it to find what its ring buffers carry."""

    map_class = Map

    def __init__(self, source, name: str | None = None, kconfig: str | None = None):
        super().__init__(source, name=name, kconfig=kconfig)
        self.image = (bytes(source) if isinstance(source, (bytes, bytearray, memoryview))
                      else Path(source).read_bytes())

    def to_dfs(self) -> dict:
        """Every key/value map as a DataFrame, by name."""
        from . import frames
        return {m.name: m.to_df() for m in self.maps if frames.is_tabular(m)}

    def live(self, *, interval: float = 1.0):
        """A live dashboard of every map and of the numeric .bss/.data variables."""
        from . import live
        return live.live(*live.object_views(self), interval=interval, title=self.name)


def _is_c_text(source: str) -> bool:
    return "\n" in source or "SEC(" in source or len(source) > 4096


def open(source: str | os.PathLike | bytes, *, name: str | None = None,
         rodata: dict | None = None, data: dict | None = None,
         maps: dict | None = None, autoload: dict | None = None,
         prefer: str = "tp_btf", cflags=()) -> Object:
    """Compile (when given C) and open an object, ready for ``load()``.

    ``rodata``/``data`` set global variables; ``maps`` sets max_entries by map name;
    ``autoload`` turns programs on or off by name. Where a program ships both a tp_btf
    and a raw_tp variant of one hook, only the ``prefer`` family is loaded.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        obj = Object(bytes(source), name=name)
    else:
        if isinstance(source, str) and _is_c_text(source):
            path = build.compile(source, cflags=cflags, filename=f"<{name or 'cell'}>")
        else:
            path = build.compile(Path(source), cflags=cflags)
        obj = Object(path, name=name)
    try:
        _size_runtime_maps(obj, maps or {})
        _choose_family(obj, prefer)
        for prog_name, on in (autoload or {}).items():
            obj.progs[prog_name].autoload = on
        for section, values in (("rodata", rodata), ("data", data)):
            for key, value in (values or {}).items():
                setattr(getattr(obj, section), key, value)
    except BaseException:
        obj.destroy()
        raise
    return obj


def load(source: str | os.PathLike | bytes, *, name: str | None = None,
         rodata: dict | None = None, data: dict | None = None, attach: bool = True,
         maps: dict | None = None, autoload: dict | None = None, prefer: str = "tp_btf",
         cflags=()) -> Object:
    """C text, a .c path, a .o path or object bytes -> a loaded (and attached) Object."""
    obj = open(source, name=name, rodata=rodata, data=data, maps=maps, autoload=autoload,
               prefer=prefer, cflags=cflags)
    try:
        obj.load()
        if attach:
            obj.attach()
    except BaseException:
        obj.destroy()
        raise
    return obj


def _size_runtime_maps(obj: Object, sizes: dict):
    for m in obj.maps:
        if m.name in sizes:
            m.max_entries = sizes[m.name]
            continue
        if m.max_entries == 0 and m.type != PERF_EVENT_ARRAY:  # libbpf sizes these per CPU
            m.max_entries = DEFAULT_RINGBUF_BYTES if m.type == RINGBUF else DEFAULT_MAX_ENTRIES
        if m.type == STACK_TRACE and m.value_size == 0:
            m.set_value_size(DEFAULT_STACK_DEPTH * 8)


def _choose_family(obj: Object, prefer: str):
    """Turn off the raw_tp (or tp_btf) twin of a program hooking the same event."""
    other = {"tp_btf": "raw_tp", "raw_tp": "tp_btf"}[prefer]
    hooks = {p.section.split("/", 1)[1] for p in obj.progs
             if p.section.startswith(prefer + "/")}
    for p in obj.progs:
        if p.section.startswith(other + "/") and p.section.split("/", 1)[1] in hooks:
            p.autoload = False
