"""bpfnb.open / bpfnb.load: from C text, a .c file or a .o file to a live Object."""

from __future__ import annotations

import html
import os
from pathlib import Path

from . import build, hooks, libbpf, mcpu, output
from . import record as recording
from .record import start as recordstart
from .follow import counted, uncounted
from .libbpf.map import NO_VALUE_TYPES, PERF_EVENT_ARRAY, RINGBUF, STACK_TRACE
from .libbpf.object import Globals as _Globals

# Sizes libbpf-tools programs leave to their loader (max_entries 0 / value_size 0).
DEFAULT_MAX_ENTRIES = 10240
DEFAULT_RINGBUF_BYTES = 256 * 1024
DEFAULT_STACK_DEPTH = 127

# Compiled objects the verifier rejected for their -mcpu (bpfnb.mcpu) -> the rebuild that
# loaded: loading the same build again goes straight to it (per process).
_REBUILT: dict = {}


def _map_read(m):
    return m.object, f"maps/{m.name}"


class Map(libbpf.Map):
    """A map with the data-frame side: ``to_df()``, ``hist()``, ``stream()``.
    Its reads count for a recording made with reads=True (see bpfnb.follow)."""

    @counted(_map_read)
    def to_df(self, percpu: str = "sum", decode: dict | None = None):
        """The map as a DataFrame; ``decode={"daddr": "ipv4", ...}`` decodes columns
        (decoders: see bpfnb/decode.py)."""
        from . import frames
        return frames.map_to_df(self, percpu=percpu, decode=decode)

    @counted(_map_read)
    def hist(self, kind: str | None = None, **options):
        """The map as a histogram: kind "log2" or "linear" (default: from its types)."""
        from . import aggregate, hist
        if kind is None and not options and aggregate.kind(self) == "histk":
            return aggregate.histogram(self)
        return hist.histogram(self, kind, **options)

    @counted(_map_read)
    def __len__(self):
        return super().__len__()

    def __bool__(self):  # `if m:` is no read of the notebook's (see bpfnb.follow)
        with uncounted():
            return len(self) > 0

    @counted(_map_read)
    def to_text(self, limit: int | None = None) -> str:
        """The map as bpftrace prints it: ``@name[key]: value`` lines, largest first,
        or a histogram's bars; at most ``limit`` lines or histograms."""
        from . import show
        return show.map_text(self, limit)

    def _shows_data(self) -> bool:
        from . import frames
        try:
            return self.object.state == "loaded" and frames.is_tabular(self)
        except libbpf.ObjectClosedError:
            return False

    def __repr__(self):
        """Loaded, a map prints its entries like bpftrace; otherwise its types."""
        with uncounted():  # how a map prints is no read of its values
            return self.to_text() if self._shows_data() else super().__repr__()

    def folded(self, **options) -> str:
        """Folded stacks (``comm;outer;...;inner count`` lines) of a map counting stacks."""
        from . import flame
        return flame.folded_of(self, **options)

    def flame(self, **options):
        """A flame graph (matplotlib Figure) of a map counting stacks."""
        from . import flame
        return flame.flame(self, **options)

    def to_bpftrace_json(self, **options) -> str:
        """The JSON line ``bpftrace -f json`` prints for this map ("" when empty)."""
        from . import aggregate
        return aggregate.to_bpftrace_json(self, **options)

    def export(self, path, format: str | None = None):
        """The map to a file: .parquet, .arrow/.feather, .csv, .ndjson, .folded (see
        bpfnb.export)."""
        from . import export
        return export.export(self, path, format)

    def _repr_html_(self):
        """In a notebook: its types, then its entries (a table, largest first, or bars)."""
        from . import show
        head = f"<code>{html.escape(libbpf.Map.__repr__(self))}</code>"
        with uncounted():
            return head + show.printout(self).html if self._shows_data() else head

    def stream(self, type: str | None = None, **options):
        from . import stream
        return stream.EventStream(self, type, **options)

    # What a dashboard asks of a map, as of a replayed one (bpfnb/live/sources.py).
    @property
    def is_tabular(self) -> bool:
        """Key/value entries a DataFrame shows (not a ring buffer, program array...)."""
        from . import frames
        return frames.is_tabular(self)

    @property
    def is_histogram(self) -> bool:
        """Its types make a histogram (bpfnb.hist, or bpfnb.h's BPFNB_HISTK)."""
        from . import aggregate, hist
        return hist.is_histogram(self) or aggregate.kind(self) == "histk"

    @property
    def key_columns(self) -> int | None:
        """How many leading columns of ``to_df()`` its key makes (None: no key)."""
        from . import frames
        return frames.key_column_count(self.key_dtype) if self.is_tabular else None

    @property
    def is_stream(self) -> bool:
        """A ring buffer or perf event array: read through ``stream()``."""
        return self.type in NO_VALUE_TYPES or self.type == PERF_EVENT_ARRAY

    def live(self, kind: str | None = None, *, interval: float = 1.0, **options):
        """A live dashboard of this map: kind "top", "hist", "lines", "series" or "table"
        (default: by the map's shape); ``options`` go to the view (e.g. ``n=5``)."""
        from . import live
        return live.live(live.view_of(self, kind, **options), interval=interval)


def _globals_read(g):
    return g._obj, "globals"


class Globals(_Globals):
    """A section's variables, whose reads count for a recording made with reads=True
    (see bpfnb.follow): a shown variable's value, and ``_asdict()`` (print)."""

    def __getattr__(self, name):
        if name in self._shown:
            return self._value(name)
        return super().__getattr__(name)

    __getitem__ = __getattr__

    @counted(_globals_read)
    def _value(self, name):
        return super().__getattr__(name)

    @counted(_globals_read)
    def _asdict(self) -> dict:
        return super()._asdict()


class Object(libbpf.Object):
    """An Object whose maps turn into DataFrames and event streams.

    With ``strict = False`` (what bpfnb.load sets), ``load()`` first turns off the
    programs whose hooks this kernel lacks (see bpfnb.hooks) and records why in
    ``skipped``, and ``attach()`` records, rather than raises, hooks that refuse at
    attach time. ``strict = True`` raises one error naming all of them instead;
    ``None`` (the default) checks nothing and lets libbpf and the kernel speak.

    ``image`` keeps the ELF bytes (libbpf frees its copy at load): recordtypes.py reads the
    object's instructions and DWARF from it to find what its ring buffers carry.
    ``notes`` says what bpfnb.load did besides the user's asking (e.g. rebuilt the
    source with another -mcpu, see bpfnb.mcpu); the summary shows them.
    """

    map_class = Map
    globals_class = Globals
    strict: bool | None = None
    # What it was built from (bpfnb.open/load and %%bpf set them; recordings keep them).
    source: str | None = None
    source_path: str | None = None
    cflags: tuple = ()
    recording = None  # the last obj.record(...)
    _follower = None  # a recording's Marks while it counts reads (bpfnb.follow)

    def load(self) -> "Object":
        if self.state == "opened" and self.strict is not None:
            hooks.turn_off_unavailable(self, strict=self.strict)
        super().load()
        output.loaded(self)
        recordstart.loaded(self)  # a recording asked for before it loaded
        return self

    def attach(self, on_error=None) -> "Object":
        if on_error is None and self.strict is False:
            on_error = hooks.attach_failure
        super().attach(on_error)
        if self.strict is False:
            hooks.check_something_left(self)
        return self

    def __init__(self, source, name: str | None = None, kconfig: str | None = None):
        super().__init__(source, name=name, kconfig=kconfig)
        self.notes: list[str] = []
        self.image = (bytes(source) if isinstance(source, (bytes, bytearray, memoryview))
                      else Path(source).read_bytes())

    def to_dfs(self) -> dict:
        """Every key/value map as a DataFrame, by name."""
        from . import frames
        return {m.name: m.to_df() for m in self.maps if frames.is_tabular(m)}

    def export(self, path, format: str | None = None, streams=()):
        """Every map (and each stream in ``streams``) to a file in the directory
        ``path``, or every map's bpftrace JSON line into ``path`` ending in .ndjson."""
        from . import export
        return export.export_object(self, path, format, streams)

    def prometheus(self, prefix: str | None = None) -> str:
        """Maps, histograms and numeric globals in Prometheus' text format."""
        from . import export
        return export.prometheus(self, prefix)

    def live(self, *, interval: float = 1.0):
        """A live dashboard of every map and of the numeric .bss/.data variables."""
        from . import live
        return live.live(*live.object_views(self), interval=interval, title=self.name)

    def output(self):
        """What the programs printed with bpf_printk: a DataFrame (time, pid, comm, cpu,
        text) of this object's lines only, the last bpfnb.output.MAX_LINES kept;
        ``attrs`` say the route and how many lines were dropped (see bpfnb.output)."""
        return output.frame(self)


    def record(self, path, seconds: float | None = None, interval: float = 1.0,
               overwrite: bool = False, types: dict | None = None, reads: bool = False):
        """Record streams, map snapshots every ``interval`` s, globals and metadata
        into the directory ``path`` in the background (see bpfnb.record); ``.stop()``.
        ``types={"events": "struct event"}`` names a stream's record type;
        ``reads=True`` also snapshots at each read this thread makes, for a replay
        that follows them (bpfnb.replay(path, follow="reads"))."""
        return recording.record(self, path, seconds=seconds, interval=interval,
                                overwrite=overwrite, types=types, reads=reads)

    def _destroy(self):
        recording.release(self)  # its last snapshot, while the maps are there
        output.release(self)  # stop its delivery before its programs go
        super()._destroy()


def _is_c_text(source: str) -> bool:
    return "\n" in source or "SEC(" in source or len(source) > 4096


def _compile(source, name, cflags):
    """Object bytes, or the path of the compiled (or given) object file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    cflags = build._split(cflags)
    if isinstance(source, str) and _is_c_text(source):
        return build.compile(source, cflags=cflags + output.cflags(source),
                             filename=f"<{name}>")
    path = Path(source)
    extra = [] if path.suffix == ".o" else output.cflags()
    return build.compile(path, cflags=cflags + extra)


def _default_name(source, name):
    """The object's name: given, else the file's (see file_object_name), else "cell"
    for C text; None for bytes (Object names those)."""
    if name is not None or isinstance(source, (bytes, bytearray, memoryview)):
        return name
    if isinstance(source, str) and _is_c_text(source):
        return "cell"
    return file_object_name(source)


def open(source: str | os.PathLike | bytes, *, name: str | None = None,
         rodata: dict | None = None, data: dict | None = None,
         maps: dict | None = None, autoload: dict | None = None,
         prefer: str = "tp_btf", cflags=(), strict: bool | None = None) -> Object:
    """Compile (when given C) and open an object, ready for ``load()``.

    ``rodata``/``data`` set global variables; ``maps`` sets max_entries by map name;
    ``autoload`` turns programs on or off by name. Where a program ships both a tp_btf
    and a raw_tp variant of one hook, only the ``prefer`` family is loaded. ``strict``
    (see :class:`Object`): False turns off programs whose hooks this kernel lacks at
    ``load()``, True fails naming them all, None (default) checks nothing. The
    object's ``name`` defaults to the file's (``opensnoop.bpf.c`` -> ``opensnoop``),
    or ``cell`` for C text.
    """
    name = _default_name(source, name)
    obj = _open(_compile(source, name, cflags), name=name, rodata=rodata, data=data,
                maps=maps, autoload=autoload, prefer=prefer, strict=strict)
    _remember(obj, source, cflags)
    return obj


def _remember(obj: Object, source, cflags):
    """The C text (or .c file) and flags ``obj`` was built from, for recordings."""
    obj.cflags = tuple(build._split(cflags))
    if isinstance(source, str) and _is_c_text(source):
        obj.source = source
    elif isinstance(source, (str, os.PathLike)) and Path(source).suffix == ".c":
        obj.source_path = str(Path(source).resolve())
        obj.source = Path(source).read_text(errors="replace")


def _open(compiled, *, name, rodata, data, maps, autoload, prefer, strict,
          skipped=None) -> Object:
    obj = Object(compiled, name=name)
    try:
        obj.strict = strict
        output.tag(obj)  # before load: the tag goes into .rodata's initial image
        _size_runtime_maps(obj, maps or {})
        _choose_family(obj, prefer)
        for prog_name, on in (autoload or {}).items():
            obj.progs[prog_name].autoload = on
        for prog_name, reason in (skipped or {}).items():
            obj.progs[prog_name].autoload = False
            obj.skipped[prog_name] = reason
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
         cflags=(), strict: bool = False) -> Object:
    """C text, a .c path, a .o path or object bytes -> a loaded (and attached) Object.

    Programs whose hooks this kernel lacks (kprobes, fentry, a missing tracepoint,
    kernel function or uprobe binary) are turned off and the rest load: ``obj.skipped``
    says which and why. A program the kernel still refuses at load for such a reason
    is turned off too, and the object opened and loaded again (a libbpf load is
    one-shot). ``strict=True`` raises instead, naming every such program at once.
    C the verifier rejects because clang checked a copy of a value and indexed with the
    original, in the way the build's -mcpu makes it (bpfnb.mcpu), is built again with
    the other -mcpu (v2 for v3/v4, v3 for v1/v2) and loaded; ``obj.notes`` says so. Any
    other rejection is raised as it is.
    """
    name = _default_name(source, name)
    cflags = build._split(cflags)
    compiled = _compile(source, name, cflags)
    options = dict(name=name, rodata=rodata, data=data, maps=maps, autoload=autoload,
                   prefer=prefer, strict=strict)
    skipped: dict = {}
    first, rejected = compiled, None
    rebuilt = _REBUILT.get(str(compiled)) if _is_c_source(source) else None
    if rebuilt is not None:  # rejected before in this process: build as then
        compiled = _compile(source, name, rebuilt.cflags)
    while True:
        obj = _open(compiled, **options, skipped=skipped)
        _remember(obj, source, cflags)
        try:
            obj.load()
            break
        except libbpf.VerifierError as e:
            obj.destroy()
            if rebuilt is not None and rejected is None:  # remembered, and now rejected
                del _REBUILT[str(first)]                  # (other globals): start over
                compiled, rebuilt = first, None
                continue
            if rejected is not None:  # the rebuild did not help: the first rejection
                rejected.hint = mcpu.also_rejected(rejected, e)
                raise rejected from None
            rebuilt = mcpu.rebuild(cflags, e) if _is_c_source(source) else None
            if rebuilt is None:
                raise
            rejected = e
            try:
                compiled = _compile(source, name, rebuilt.cflags)
            except build.CompileError as ce:  # the source needs the -mcpu it had
                e.hint = mcpu.also_rejected(e, ce)
                raise e from None
        except libbpf.LoadError as e:
            failure = None if strict else hooks.load_failure(obj, e)
            obj.destroy()
            if failure is None or failure[0] in skipped:
                raise
            skipped = {**obj.skipped, failure[0]: failure[1]}
        except BaseException:
            obj.destroy()
            raise
    if rebuilt is not None:
        if rejected is not None:
            _REBUILT[str(first)] = rebuilt
        obj.notes.append(rebuilt.note)
    try:
        if attach:
            obj.attach()
    except BaseException:
        obj.destroy()
        raise
    return obj


def _is_c_source(source) -> bool:
    """C that bpfnb compiles (text or a .c file), so it can build it again."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return False
    return (isinstance(source, str) and _is_c_text(source)) or Path(source).suffix != ".o"


def file_object_name(path: str | os.PathLike) -> str:
    """An object's name from its file, libbpf-tools style: ``opensnoop.bpf.c`` and
    ``opensnoop.bpf.o`` -> ``opensnoop`` (not the compile cache's hash)."""
    name = Path(path).name
    for suffix in (".c", ".o", ".bpf"):
        name = name.removesuffix(suffix)
    return name or Path(path).name


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
