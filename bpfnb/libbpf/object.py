"""Object: open (file or bytes) -> load -> attach -> destroy, with skeleton access.

Like a libbpf skeleton, but built at run time from the object's own BTF:
``obj.maps.counts``, ``obj.progs.on_open``, ``obj.bss.total``, ``obj.rodata.target_pid``.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import mmap
import os
import re
import threading
import weakref
from pathlib import Path

from . import _lib, elfcheck, teardown
from ._lib import lib
from .btf import BTF, BTFError
from .errors import (AttachError, BPFError, LoadError, ObjectClosedError, OpenError,
                     VerifierError, last_errno, make, privilege_hint, verifier_logs)
from .map import Map
from .names import shown
from .program import Program

OPENED, LOADED, DESTROYED = "opened", "loaded", "destroyed"
GLOBAL_SECTIONS = ("bss", "data", "rodata", "kconfig")
BPF_F_MMAPABLE = 1 << 10  # uapi map flag: the map's memory can be mmapped

_live: "weakref.WeakSet[Object]" = weakref.WeakSet()


class _OpenOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("object_name", ctypes.c_char_p),
                ("relaxed_maps", ctypes.c_bool), ("pin_root_path", ctypes.c_char_p),
                ("_attach_prog_fd", ctypes.c_uint32), ("kconfig", ctypes.c_char_p),
                ("btf_custom_path", ctypes.c_char_p)]


class Namespace:
    """Attribute access over a name -> item dict, with dir() for tab completion."""

    def __init__(self, kind: str, items: dict):
        object.__setattr__(self, "_kind", kind)
        object.__setattr__(self, "_items", items)

    def __getattr__(self, name):
        try:
            return self._items[name]
        except KeyError:
            raise AttributeError(f"no {self._kind} named {name!r}; "
                                 f"there are: {', '.join(self._items) or 'none'}") from None

    __getitem__ = __getattr__

    def __dir__(self):
        return list(self._items)

    def __iter__(self):
        return iter(self._items.values())

    def __len__(self):
        return len(self._items)

    def __contains__(self, name):
        return name in self._items

    def __repr__(self):
        return f"<{self._kind}s: {', '.join(self._items) or 'none'}>"


class Globals:
    """Global variables of one data section (.bss, .data, .rodata, .kconfig).

    Before load, values go to the initial image libbpf will load. After load, reads and
    writes go to an mmap of the kernel map: no syscall. Internal variables
    (``bpfnb_lost``, bpf_printk's ``____fmt``: see names.py) are reachable by name but
    never listed (dir, iteration, repr).
    """

    def __init__(self, obj: "Object", section: str, map_: Map, variables):
        object.__setattr__(self, "_obj", obj)
        object.__setattr__(self, "_section", section)
        object.__setattr__(self, "_map", map_)
        object.__setattr__(self, "_vars", {name: (tid, off, size)
                                           for name, tid, off, size in variables})
        object.__setattr__(self, "_shown", shown(self._vars))
        object.__setattr__(self, "_mem", None)

    def _buffer(self, writing: bool):
        obj = self._obj
        obj._check_open()
        if obj.state == OPENED:
            size = ctypes.c_size_t()
            ptr = lib.bpf_map__initial_value(self._map._ptr, ctypes.byref(size))
            if not ptr:
                raise BPFError(f"no initial image for .{self._section}")
            return (ctypes.c_char * size.value).from_address(ptr)
        if writing and self._section in ("rodata", "kconfig"):
            raise AttributeError(
                f".{self._section} is read-only once loaded: set it before load "
                f"(bpfnb.load(..., rodata={{...}}) or %%bpf --set), or declare the variable "
                f"without const to change it at run time")
        if self._mem is None:
            if not self._map.map_flags & BPF_F_MMAPABLE:
                return self._copy()
            object.__setattr__(self, "_mem", obj._mmap(self._map, self._section))
        return self._mem

    def _copy(self) -> bytearray:
        """The section's bytes through a lookup: libbpf does not make a section of
        static variables only (bpfnb.h's bpfnb_lost) mmapable. __setattr__ stores the
        copy back."""
        buf = ctypes.create_string_buffer(self._map.value_size)
        rc = lib.bpf_map_lookup_elem(self._map.fd, bytes(4), buf)
        if rc < 0:
            raise BPFError(f"cannot read .{self._section}", last_errno(rc))
        return bytearray(buf.raw)

    def _var(self, name) -> tuple[int, int, int]:
        """(type id, offset, size) of a variable of this section."""
        try:
            return self._vars[name]
        except KeyError:
            raise AttributeError(f"no variable {name!r} in .{self._section}; "
                                 f"there are: {', '.join(self._shown) or 'none'}") from None

    def __getattr__(self, name):
        tid, off, _ = self._var(name)
        return self._obj.btf.decode(tid, memoryview(self._buffer(False)), off)

    def __setattr__(self, name, value):
        tid, off, size = self._var(name)
        raw = self._obj.btf.encode(tid, value, name)  # range-checked, errors name it
        buf = self._buffer(True)
        memoryview(buf).cast("B")[off:off + size] = raw
        if isinstance(buf, bytearray):  # a copy (see _copy)
            rc = lib.bpf_map_update_elem(self._map.fd, bytes(4), bytes(buf), 0)
            if rc < 0:
                raise BPFError(f"cannot write .{self._section}", last_errno(rc))

    __getitem__ = __getattr__
    __setitem__ = __setattr__

    def __dir__(self):
        return list(self._shown)

    def __iter__(self):
        return iter(self._shown)

    def __len__(self):
        return len(self._shown)

    def __contains__(self, name):
        return name in self._vars

    def _asdict(self) -> dict:
        return {name: getattr(self, name) for name in self._shown}

    def _types(self) -> dict:
        return {name: self._obj.btf.c_name(self._vars[name][0]) for name in self._shown}

    def __repr__(self):
        try:
            body = ", ".join(f"{k}={v!r}" for k, v in self._asdict().items())
        except (ObjectClosedError, BPFError):
            body = "<destroyed>"
        return f".{self._section}({body})"


class Object:
    """A BPF object: ``Object(path_or_bytes)`` opens it; then ``load()``, ``attach()``.

    ``destroy()`` (also on ``with`` exit, garbage collection and interpreter exit)
    detaches every link and frees maps and programs. Subclasses may set ``map_class``,
    ``program_class`` and ``globals_class`` to richer handles.
    """

    map_class = Map
    program_class = Program
    globals_class = Globals

    def __init__(self, source: str | os.PathLike | bytes, name: str | None = None,
                 kconfig: str | None = None):
        # Readers on other threads (live dashboards) hold it so destroy() waits for them.
        self.lock = threading.RLock()
        self.state = OPENED
        self.skipped: dict[str, str] = {}  # program -> why it is not running here
        self._ptr = None
        self._mmaps: list[mmap.mmap] = []
        opts = _OpenOpts(sz=ctypes.sizeof(_OpenOpts))
        if name:
            opts.object_name = name.encode()
        if kconfig:
            opts.kconfig = kconfig.encode()
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source)
            what = name or f"{len(data)}-byte object"
        else:
            self.path = Path(source)
            what = str(self.path)
            try:
                data = self.path.read_bytes()
            except OSError as e:
                raise OpenError(f"cannot open BPF object {what}", e.errno or errno.EIO,
                                "", e.strerror or "") from None
            # libbpf names a file's object after it, up to the first dot
            opts.object_name = (name or self.path.name.split(".")[0]).encode()
        # libbpf 1.1.2 trusts what the object says (see elfcheck): check it first, and
        # hand libbpf the very bytes that were checked
        try:
            elfcheck.check(data)
        except OpenError as e:
            e.message = f"cannot open BPF object {what}: {e.message}"
            raise
        with _lib.capture() as log:
            # libbpf parses the ELF in place until load: keep the buffer alive.
            self._image = ctypes.create_string_buffer(data, len(data))
            ptr = lib.bpf_object__open_mem(self._image, len(data), ctypes.byref(opts))
        if not ptr:
            err = last_errno()
            raise make(OpenError, f"cannot open BPF object {what}", err, log.text,
                       "Is it an ELF object built with clang -target bpf?")
        self._ptr = ptr
        try:
            self.name = (lib.bpf_object__name(ptr) or b"").decode("utf-8", "replace")
            self.btf = self._read_btf()
            self._build_skeleton()
        except BTFError as e:
            self._close_failed()
            raise OpenError(f"cannot open BPF object {what}: {e}", errno.EINVAL) from None
        except BaseException:
            self._close_failed()
            raise
        _live.add(self)

    def _close_failed(self):
        """A half-built Object owns its libbpf object: free it now (destroy() needs the
        skeleton)."""
        self.maps = self.progs = Namespace("item", {})
        self._globals = {}
        self._destroy()

    # --- skeleton -----------------------------------------------------------

    def _read_btf(self) -> BTF | None:
        btf_ptr = lib.bpf_object__btf(self._ptr)
        if not btf_ptr:
            return None
        size = ctypes.c_uint32()
        data = lib.btf__raw_data(btf_ptr, ctypes.byref(size))
        return BTF(ctypes.string_at(data, size.value)) if data else None

    def _build_skeleton(self):
        maps, globals_ = {}, {}
        m = lib.bpf_object__next_map(self._ptr, None)
        while m:
            map_ = self.map_class(self, m)
            section = _internal_section(map_) if lib.bpf_map__is_internal(m) else None
            if section is None:
                maps[map_.name] = map_
            elif section in GLOBAL_SECTIONS and self.btf is not None:
                tid = lib.bpf_map__btf_value_type_id(m)
                variables = self.btf.datasec_vars("." + section) if tid else []
                globals_[section] = self.globals_class(self, section, map_, variables)
            m = lib.bpf_object__next_map(self._ptr, m)
        progs = {}
        p = lib.bpf_object__next_program(self._ptr, None)
        while p:
            prog = self.program_class(self, p)
            progs[prog.name] = prog
            p = lib.bpf_object__next_program(self._ptr, p)
        self.maps = Namespace("map", maps)
        self.progs = Namespace("program", progs)
        self._globals = globals_

    def __getattr__(self, name):
        if name in GLOBAL_SECTIONS:
            g = self.__dict__.get("_globals", {}).get(name)
            if g is None:
                raise AttributeError(f"the object has no .{name} section (no such globals)")
            return g
        raise AttributeError(name)

    def __dir__(self):
        return list(super().__dir__()) + list(self.__dict__.get("_globals", {}))

    # --- lifecycle ----------------------------------------------------------

    def _check_open(self):
        if self.state == DESTROYED:
            raise ObjectClosedError(f"BPF object {self.name!r} has been destroyed")

    def set(self, **values):
        """Set .rodata/.data/.bss variables by name (before load for .rodata)."""
        for key, value in values.items():
            for section in ("rodata", "data", "bss"):
                g = self._globals.get(section)
                if g is not None and key in g._vars:
                    setattr(g, key, value)
                    break
            else:
                known = [v for g in self._globals.values() for v in g._shown]
                raise AttributeError(f"no global variable {key!r}; there are: "
                                     f"{', '.join(known) or 'none'}")
        return self

    def load(self) -> "Object":
        """Load maps and programs into the kernel. libbpf's load is one-shot: a failed
        load destroys the object at once (the kernel's copy of its BTF included) and
        raises; open it again to retry."""
        self._check_open()
        if self.state == LOADED:
            return self
        with _lib.capture() as log:
            rc = lib.bpf_object__load(self._ptr)
        if rc < 0:
            err = last_errno(rc)
            rejected = verifier_logs(log.text)
            if rejected:
                prog, vlog = rejected[-1]
                e = VerifierError(prog, err, vlog, log.text)
            else:
                failed = _FAILED_PROG.search(log.text)
                e = make(LoadError, f"cannot load BPF object {self.name!r}", err, log.text,
                         self._load_hint(log.text, err))
                e.program = failed.group(1) if failed else None
            self._destroy()
            raise e
        self.state = LOADED
        self.__dict__.pop("_image", None)
        return self

    def attach(self, on_error=None) -> "Object":
        """Attach every loaded program whose section names its hook.

        Programs that need a target (xdp, tc, perf_event, cgroup, bare uprobe...) are
        left for their explicit ``attach_*`` call, as a libbpf skeleton does.
        ``on_error(program, AttachError) -> reason or None``: with a reason the program
        stays unattached and is recorded in ``skipped``; None (or no ``on_error``)
        raises.
        """
        if self.state == OPENED:
            self.load()
        for prog in self.progs:
            if prog.autoload and prog.auto_attachable and not prog.links \
                    and prog.name not in self.skipped:
                try:
                    prog.attach()
                except AttachError as e:
                    reason = on_error(prog, e) if on_error else None
                    if reason is None:
                        raise
                    self.skipped[prog.name] = reason
        return self

    def detach(self, wait: bool = True):
        """Detach every program: none runs when this returns. ``wait=False`` returns
        before the kernel has let them go (they leave it ~35 ms later; see
        teardown.py), for a re-run that replaces them."""
        links = []
        for prog in self.progs:
            links.extend(prog.links)
            prog.links = []
        teardown.destroy_links(links, wait)  # all at once: their kernel waits overlap

    def destroy(self):
        """Detach all links, free maps and programs. Safe to call more than once."""
        with self.lock:
            self._destroy()

    def _destroy(self):
        if self.state == DESTROYED or self._ptr is None:
            return
        self.detach()
        for m in self._mmaps:
            try:
                m.close()
            except BufferError:  # a view still exported; the mapping dies with it
                pass
        self._mmaps.clear()
        ptr, self._ptr = self._ptr, None
        self.state = DESTROYED
        lib.bpf_object__close(ptr)
        _live.discard(self)

    close = destroy

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()

    def __del__(self):
        try:
            self.destroy()
        except Exception:
            pass

    def _load_hint(self, log: str, err: int) -> str:
        """One hint naming the cause the log shows (never a guess at another)."""
        failed = _FAILED_PROG.search(log)
        prog = self.progs._items.get(failed.group(1)) if failed else None
        where = f"program {prog.name!r} (SEC(\"{prog.section}\"))" if prog else ""
        no_btf_id = _NO_BTF_ID.search(log)
        if no_btf_id and prog is not None:
            return (f"{where}: this kernel has no {no_btf_id.group(1)!r} to attach to "
                    f"(not in its BTF): pick a hook it has, or turn the program off with "
                    f"autoload={{{prog.name!r}: False}}")
        if _NO_KERNEL_BTF.search(log) and not os.path.exists(_VMLINUX_BTF):
            return (f"CO-RE needs kernel BTF at {_VMLINUX_BTF} (a kernel built with "
                    f"CONFIG_DEBUG_INFO_BTF=y); this kernel has none")
        core = _CORE_FAILED.search(log)
        if core:
            return (f"a CO-RE relocation failed: this kernel's BTF has no {core.group(1)}; "
                    f"guard the access with bpf_core_field_exists() / bpf_core_type_exists(), "
                    f"or use a ___flavour struct")
        ksym = _NO_KSYM.search(log)
        if ksym:
            kind = {"func": "kfunc", "var": "kernel variable"}[ksym.group(1)]
            return (f"this kernel has no {kind} {ksym.group(2)!r}: declare it "
                    f"__weak and test bpf_ksym_exists({ksym.group(2)}) before using it")
        bad_map = _MAP_FAILED.search(log)
        if bad_map:
            return (f"the kernel refused to create map {bad_map.group(1)!r}: check its type, "
                    f"key/value sizes and max_entries")
        if prog is None:
            return ""
        if prog.section.startswith(_TRAMPOLINE_FAMILY) and err in _REFUSED_ERRNOS:
            return (f"{where}: this kernel refuses fentry/fexit/lsm programs (no BPF "
                    f"trampolines, or lockdown): use a tp_btf/ or tracepoint/ hook, or "
                    f"turn it off with autoload={{{prog.name!r}: False}}")
        if err in (errno.EPERM, errno.EACCES):  # which capability, for this program type
            return f"{where} failed to load: {privilege_hint()}"
        return f"{where} failed to load"

    def _mmap(self, map_: Map, section: str) -> mmap.mmap:
        writable = section in ("bss", "data")
        length = max(map_.value_size, 1)
        length = (length + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
        try:
            m = mmap.mmap(map_.fd, length, flags=mmap.MAP_SHARED, prot=prot)
        except OSError as e:
            raise BPFError(f"cannot map .{section} into memory", e.errno) from None
        self._mmaps.append(m)
        return m

    # --- description --------------------------------------------------------

    @property
    def globals(self) -> dict:
        return dict(self._globals)

    def __repr__(self):
        progs = ", ".join(p.name for p in self.progs)
        maps = ", ".join(m.name for m in self.maps)
        return f"<bpfnb Object {self.name!r} {self.state}: progs [{progs}] maps [{maps}]>"


def _internal_section(map_: Map) -> str | None:
    """'.bss' for a map named like 'bootstra.bss' (libbpf truncates the prefix)."""
    name = map_.name
    for section in GLOBAL_SECTIONS:
        if name.endswith("." + section):
            return section
    return name.rsplit(".", 1)[-1] if "." in name else None


_FAILED_PROG = re.compile(r"prog '([^']+)': (?:BPF program load failed|failed to load)")
_VMLINUX_BTF = "/sys/kernel/btf/vmlinux"
_NO_BTF_ID = re.compile(r"prog '[^']+': failed to find kernel BTF type ID of '([^']+)'")
_NO_KERNEL_BTF = re.compile(r"failed to find valid kernel BTF|Error loading vmlinux BTF|"
                            r"vmlinux BTF is not found")
_CORE_FAILED = re.compile(r"failed to resolve CO-RE relocation (?:<[^>]+> )?\[\d+\] ([^(\n]+?)"
                          r"(?: \(|$)", re.M)
_NO_KSYM = re.compile(r"extern \((func|var) ksym\) '([^']+)': not found")
_MAP_FAILED = re.compile(r"map '([^']+)': failed to create")
_TRAMPOLINE_FAMILY = ("fentry", "fexit", "fmod_ret", "lsm")
_REFUSED_ERRNOS = (errno.EPERM, errno.EOPNOTSUPP, 524)  # 524: the kernel's ENOTSUPP


def live_objects() -> list[Object]:
    return list(_live)


@atexit.register
def _destroy_all():
    for obj in list(_live):
        try:
            obj.destroy()
        except Exception:
            pass
