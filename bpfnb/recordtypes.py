"""What each ring buffer and perf event array receives: the record types, read from
the object's instructions, relocations and DWARF, never guessed from names.

    rec = recordtypes.of(obj)              # analysed once per object, on first use
    rec.types("events")                    # -> [RecordType(name="struct event", ...)]
    rec.find("struct event")               # (BTF, id): the object's BTF + its DWARF types

Each program is walked instruction by instruction, tracking what every register and
8-byte stack slot holds: a map (an ld_imm64 the relocation names), a constant, a
stack address (r10 + offset), or the value one instruction made. At each call of
bpf_ringbuf_reserve, bpf_ringbuf_output or bpf_perf_event_output the map and size
arguments are read from that state, and the record's type is taken from DWARF:

* reserve: the variables that DWARF places, wherever the returned pointer is held
  (r0 or a register it was copied to), in that register: their pointee;
* output: the stack variable at the data pointer's frame offset (DWARF counts from
  the bottom of the frame, the instructions from r10 at its top), else the pointer
  variables held in the data register: their pointee;
* when locations are optimised out: the structs and unions of the program's own
  files (not vmlinux.h, libbpf's or bpfnb's headers) whose size is the size passed.

CO-RE flavours (``task_struct___o``) and types of kernel headers are never chosen.
``record_type(obj, map, type)`` is what a stream decodes with: the type named, else the
one the program writes, else (no DWARF) the one plausible struct of the object's BTF.
"""

from __future__ import annotations

import contextlib
import os
import struct
from dataclasses import dataclass, field

from .dwarf import DIE, Dwarf, DwarfError, DwarfTypes, Elf
from .dwarf.die import AT_ABSTRACT_ORIGIN, AT_DECLARATION, AT_TYPE, _sleb, _uleb

# helper ids (include/uapi/linux/bpf.h): name, map argument, data argument, size argument
HELPERS = {131: ("bpf_ringbuf_reserve", 1, None, 2),
           130: ("bpf_ringbuf_output", 1, 2, 3),
           25: ("bpf_perf_event_output", 2, 4, 5)}
MAX_STEPS = 200_000  # instruction visits per function: bounded whatever the input
_SYSTEM_DIRS = ("/usr/", "/opt/", "/sys/")
_OUR_HEADERS = (os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "bpf") + os.sep,)


@dataclass
class Write:
    """One call that puts records into a map."""
    program: str
    insn: int            # instruction index in its section
    helper: str
    size: int | None     # the size argument when it is a constant
    type: DIE | None     # the record's type DIE, None when unknown
    how: str             # "reserved pointer", "stack variable", "pointer", "size", ...


@dataclass
class RecordType:
    name: str            # C name, e.g. "struct event"
    die: DIE
    writes: list = field(default_factory=list)


class Records:
    """The record analysis of one object (see the module doc)."""

    def __init__(self, image: bytes, base_btf):
        with _bad_dwarf():
            self.elf = Elf(image)
            self.dwarf = Dwarf(self.elf)
            self.types_ = DwarfTypes(self.dwarf, base_btf)
            self.writes: dict[str, list] = {}
            self._own = None
            self._analyse()

    # --- results ---------------------------------------------------------------

    @property
    def btf(self):
        with _bad_dwarf():
            return self.types_.btf

    # Both return the BTF with the id: converting a type makes a new, larger BTF.

    def find(self, name: str):
        """(BTF, id) of a type of the DWARF named like C; KeyError if none."""
        with _bad_dwarf():
            tid = self.types_.find(name)
        return self.btf, tid

    def typed(self, die: DIE):
        """(BTF, id) of a record type DIE."""
        with _bad_dwarf():
            tid = self.types_.type_id(die)
        return self.btf, tid

    def types(self, map_name: str) -> list:
        """The distinct record types written to ``map_name``, in order of first write."""
        out: dict[int, RecordType] = {}
        for w in self.writes.get(map_name, []):
            if w.type is None:
                continue
            key = self._strip(w.type).offset  # a typedef and its struct are one type
            rt = out.get(key)
            if rt is None:
                rt = out[key] = RecordType(self.c_name(w.type), w.type)
            rt.writes.append(w)
        return list(out.values())

    def c_name(self, die: DIE) -> str:
        tag = {"structure_type": "struct ", "union_type": "union ",
               "enumeration_type": "enum "}.get(die.tag, "")
        return tag + (die.name or "{...}")

    # --- instructions ----------------------------------------------------------

    def _analyse(self):
        elf = self.elf
        maps_index = elf.by_name.get(".maps")
        symbols = elf.symbols()
        for i, h in enumerate(elf.headers):
            if h[1] != 1 or not h[2] & 0x4 or not h[5]:  # PROGBITS, SHF_EXECINSTR
                continue
            code = elf.index_bytes(i)
            offs, syms, _, _, _ = elf.relocations(i)
            relocs = {}  # instruction offset -> the map it loads (None: another symbol)
            for off, sym in zip(offs.tolist(), syms.tolist()):
                if sym < len(symbols):
                    relocs[off] = symbols[sym][0] if symbols[sym][3] == maps_index else None
            funcs = sorted((s[1], s[2], s[0]) for s in symbols if s[3] == i and s[4] == 2)
            for start, size, name in funcs:
                end = min(start + (size or len(code) - start), len(code))
                self._function(name, code, start, end, relocs)

    def _function(self, name, code, start, end, relocs):
        flow = _Flow(code, start, end, relocs, self.elf.e)
        calls = [c for c in flow.calls if c[1] in HELPERS]
        if not calls:
            return
        sub = self.dwarf.subprogram(name, start, end - start)
        variables = _variables(self.dwarf, sub) if sub is not None else []
        for pc, helper, args in calls:
            hname, map_arg, data_arg, size_arg = HELPERS[helper]
            target = args.get(map_arg)
            if not target or target[0] != "map":
                continue
            size = args.get(size_arg)
            size = size[1] if size and size[0] == "const" else None
            die, how = None, ""
            if data_arg is None:
                die, how = self._held(flow, variables, ("def", pc)), "reserved pointer"
            else:
                data = args.get(data_arg)
                if data and data[0] == "fp":
                    die, how = self._on_stack(flow, variables, data[1], size), "stack variable"
                elif data:
                    die, how = self._held(flow, variables, data), "pointer"
            if die is None and size is not None:
                die, how = self._by_size(size), "size"
            self.writes.setdefault(target[1], []).append(
                Write(name, (start // 8) + pc, hname, size, die, how if die else "unknown"))

    def _held(self, flow, variables, value) -> DIE | None:
        """The pointee of a pointer variable DWARF places where ``value`` is held."""
        for pc, state in flow.states.items():
            regs = [r for r, v in state.items() if v == value and isinstance(r, int)]
            if not regs:
                continue
            addr = (flow.start // 8 + pc) * 8
            for var_type, locs in variables:
                for lo, hi, where in locs:
                    if where[0] == "reg" and where[1] in regs and (
                            lo is None or lo <= addr < hi):
                        die = self._pointee(var_type)
                        if die is not None:
                            return die
        return None

    def _on_stack(self, flow, variables, offset, size) -> DIE | None:
        """The variable at frame offset ``offset`` (from r10)."""
        frame = flow.frame_size
        for var_type, locs in variables:
            for _, _, where in locs:
                if where[0] == "fb" and where[1] - frame == offset:
                    die = self._record(var_type)
                    if die is not None and (size is None
                                            or self.types_.base_size(die) == size):
                        return die
        return None

    def _pointee(self, die: DIE | None) -> DIE | None:
        die = self._strip(die)
        if die is None or die.tag != "pointer_type" or die.get(AT_TYPE) is None:
            return None
        return self._record(self.dwarf.die(die.get(AT_TYPE)))

    def _strip(self, die):
        for _ in range(64):
            if die is None or die.tag not in ("typedef", "const_type", "volatile_type",
                                              "restrict_type", "atomic_type"):
                return die
            ref = die.get(AT_TYPE)
            die = self.dwarf.die(ref) if ref is not None else None
        return None

    def _record(self, die: DIE | None) -> DIE | None:
        """``die`` when it can be a record type: a struct or union of the program's
        own (a typedef of one stays, for its name), not a flavour nor a kernel type."""
        inner = self._strip(die)
        if inner is None or inner.tag not in ("structure_type", "union_type"):
            return None
        named = die if die.tag == "typedef" else inner
        if "___" in (inner.name or "") or not self._own_file(named) or (
                inner.name and not self._own_file(inner)):
            return None
        return named

    def _own_file(self, die: DIE) -> bool:
        path = self.dwarf.decl_path(die)
        if not path:
            return True
        if os.path.basename(path) == "vmlinux.h" or path.startswith(_SYSTEM_DIRS):
            return False
        return not os.path.abspath(path).startswith(_OUR_HEADERS)

    def _by_size(self, size: int) -> DIE | None:
        """The one struct/union of the program's own files of ``size`` bytes."""
        if self._own is None:
            self._own = []
            for die in self.dwarf.top_level({"structure_type", "union_type", "typedef"}):
                if not die.name or die.get(AT_DECLARATION):
                    continue  # anonymous: a map definition, or under a typedef
                rec = self._record(die)
                if rec is not None and (die.tag != "typedef" or not self._strip(die).name):
                    self._own.append((self.types_.base_size(rec), rec))
        fits = [d for s, d in self._own if s == size]
        return fits[0] if len(fits) == 1 else None


@contextlib.contextmanager
def _bad_dwarf():
    """Whatever malformed DWARF makes the reader trip on becomes a DwarfError."""
    try:
        yield
    except (IndexError, TypeError, AttributeError, OverflowError, RecursionError,
            struct.error) as e:
        raise DwarfError(f"malformed DWARF or BPF instructions: {e!r}") from None
    except ValueError as e:
        if isinstance(e, DwarfError):
            raise
        raise DwarfError(f"malformed DWARF or BPF instructions: {e}") from None


def _variables(dwarf: Dwarf, sub: DIE) -> list:
    """[(type DIE, [(low, high, ("reg", n) | ("fb", offset))])] of every variable and
    parameter in a subprogram, its blocks and its inlined calls."""
    out = []
    stack = list(sub.children)
    while stack:
        die = stack.pop()
        if die.tag in ("lexical_block", "inlined_subroutine"):
            stack.extend(die.children)
            continue
        if die.tag not in ("variable", "formal_parameter"):
            continue
        locs = dwarf.locations(die)
        if not locs:
            continue
        typed = die
        for _ in range(8):
            if AT_TYPE in typed.attrs or AT_ABSTRACT_ORIGIN not in typed.attrs:
                break
            typed = dwarf.die(typed.attrs[AT_ABSTRACT_ORIGIN])
        if AT_TYPE not in typed.attrs:
            continue
        places = [(lo, hi, p) for lo, hi, expr in locs if (p := _place(expr))]
        if places:
            out.append((dwarf.die(typed.attrs[AT_TYPE]), places))
    return out


def _place(expr: bytes):
    """("reg", n) or ("fb", offset) for the location expressions we follow."""
    if not expr:
        return None
    op = expr[0]
    if 0x50 <= op <= 0x6F and len(expr) == 1:
        return ("reg", op - 0x50)
    if op == 0x90:
        return ("reg", _uleb(expr, 1)[0])
    if op in (0x91, 0x7A):  # DW_OP_fbreg, DW_OP_breg10: the frame base is r10
        return ("fb", _sleb(expr, 1)[0])
    return None


class _Flow:
    """Register and stack-slot contents before each instruction of one function."""

    def __init__(self, code: bytes, start: int, end: int, relocs: dict, e: str):
        self.start = start
        n = (end - start) // 8
        ops, regs, offs, imms = [], [], [], []
        for i in range(n):
            op, r, off, imm = struct.unpack_from(e + "BBhi", code, start + 8 * i)
            ops.append(op)
            regs.append((r & 0xF, r >> 4) if e == "<" else (r >> 4, r & 0xF))
            offs.append(off)
            imms.append(imm)
        self.calls = []
        self.states: dict[int, dict] = {}
        self.frame_size = 0
        low = 0
        work, seen_calls = [(0, {10: ("fp", 0), 1: ("ctx",)})], set()
        steps = 0
        while work and steps < MAX_STEPS:
            pc, state = work.pop()
            steps += 1
            if not 0 <= pc < n:
                continue
            old = self.states.get(pc)
            if old is not None:
                joined = {k: v for k, v in old.items() if state.get(k) == v}
                if len(joined) == len(old):
                    continue
                state = joined
            self.states[pc] = state
            s = dict(state)
            op, (dst, src), off, imm = ops[pc], regs[pc], offs[pc], imms[pc]
            cls, code_ = op & 7, op & 0xF0
            nxt = [pc + 1]
            if op == 0x18:  # ld_imm64
                where = start + 8 * pc
                hi = imms[pc + 1] if pc + 1 < n else 0
                if where in relocs:
                    s[dst] = ("map", relocs[where]) if relocs[where] else ("def", pc)
                else:
                    s[dst] = (("const", (imm & 0xFFFFFFFF) | (hi << 32)) if src == 0
                              else ("def", pc))
                nxt = [pc + 2]
            elif cls in (4, 7):  # ALU, ALU64
                s[dst] = self._alu(s, cls, code_, op & 8, dst, src, imm, pc)
                if s[dst][0] == "fp":
                    low = min(low, s[dst][1])
            elif cls == 1:  # LDX
                base = s.get(src)
                if base and base[0] == "fp":
                    low = min(low, base[1] + off)
                s[dst] = (s.get(("s", base[1] + off), ("def", pc))
                          if base and base[0] == "fp" and op == 0x79 else ("def", pc))
            elif cls in (2, 3):  # ST, STX
                base = s.get(dst)
                if base and base[0] == "fp":
                    slot = base[1] + off
                    low = min(low, slot)
                    width = {0x00: 4, 0x08: 2, 0x10: 1, 0x18: 8}[op & 0x18]
                    for k in [k for k in s if isinstance(k, tuple)
                              and slot - 8 < k[1] < slot + width]:
                        del s[k]
                    if op == 0x7B and src in s:
                        s[("s", slot)] = s[src]
                    elif op == 0x7A:
                        s[("s", slot)] = ("const", imm)
                if op & 0xE0 == 0xC0:  # atomic: a fetch writes the source register
                    s[src] = ("def", pc)
            elif cls in (5, 6):
                if code_ == 0x80:  # call
                    if src == 0 and pc not in seen_calls:
                        seen_calls.add(pc)
                        self.calls.append((pc, imm, {r: s[r] for r in range(1, 6) if r in s}))
                    for r in range(0, 6):
                        s.pop(r, None)
                    s[0] = ("def", pc)
                elif code_ == 0x90:  # exit
                    nxt = []
                elif code_ == 0x00:  # ja
                    nxt = [pc + 1 + (imm if cls == 6 else off)]
                else:
                    nxt = [pc + 1, pc + 1 + off]
            for q in nxt:
                work.append((q, s))
        self.frame_size = (-low + 7) // 8 * 8

    @staticmethod
    def _alu(s, cls, code, is_reg, dst, src, imm, pc):
        wide = cls == 7
        if code == 0xB0:  # mov
            if is_reg:
                v = s.get(src)
                if v is None:
                    return ("def", pc)
                if not wide:
                    return ("const", v[1] & 0xFFFFFFFF) if v[0] == "const" else ("def", pc)
                return v
            return ("const", imm if wide else imm & 0xFFFFFFFF)
        if code in (0x00, 0x10) and wide:  # add, sub
            v = s.get(dst)
            k = imm if not is_reg else (s.get(src) or ("def",))
            if not is_reg or k[0] == "const":
                amount = k if not is_reg else k[1]
                amount = -amount if code == 0x10 else amount
                if v and v[0] in ("fp", "const"):
                    return (v[0], v[1] + amount)
        return ("def", pc)


def of(obj) -> Records | None:
    """The record analysis of ``obj`` (cached on it); None when the object has no
    image to read or no DWARF (``why_not(obj)`` says why)."""
    cached = obj.__dict__.get("_records")
    if cached is not None:
        return cached if isinstance(cached, Records) else None
    image = getattr(obj, "image", None)
    try:
        if image is None and getattr(obj, "path", None) is not None:
            image = obj.path.read_bytes()  # a libbpf.Object opened from a file
        if image is None:
            raise DwarfError("the object's ELF image was not kept")
        result = Records(image, obj.btf)
    except (DwarfError, OSError) as e:
        obj.__dict__["_records"] = str(e)
        return None
    obj.__dict__["_records"] = result
    return result


def why_not(obj) -> str:
    """Why ``of(obj)`` is None ("" when it is not)."""
    cached = obj.__dict__.get("_records")
    return cached if isinstance(cached, str) else ""


# --- a stream's record type ----------------------------------------------------------

VMLINUX_BTF = "/sys/kernel/btf/vmlinux"


def record_type(obj, map, type: str | None = None):
    """(BTF, id) of the records' type: ``type`` by name, else the type the program
    writes into ``map`` (recordtypes.py: instructions and DWARF); id None when unknown
    (records stay bytes). The BTF is the object's, with its DWARF types when it has
    DWARF (split BTF: the object's ids stand)."""
    if type is not None:
        return _named_type(obj, map, type)
    rec = of(obj)
    if rec is None:  # no DWARF: the one plausible struct of the object's BTF
        return obj.btf, (_guess(obj, map) if obj.btf is not None else None)
    found = rec.types(map.name)
    if len(found) > 1:
        names = sorted(rt.name for rt in found)
        where = "; ".join(f"{rt.name} from {_writers(rt.writes)}" for rt in found)
        raise ValueError(f"{map.name!r} receives {len(found)} record types: "
                         f"{', '.join(names)} ({where}). Pass the one to decode, e.g. "
                         f".stream({names[0]!r}); records of another size keep their "
                         f"bytes in a `raw` column")
    if not found:
        return rec.btf, None
    return rec.typed(found[0].die)


def _writers(writes) -> str:
    seen = []
    for w in writes:
        text = f"{w.program} ({w.helper})"
        if text not in seen:
            seen.append(text)
    return ", ".join(seen)


def record_types_text(obj, map) -> str:
    """The record type(s) of ``map`` for display ("struct event", "struct a | struct
    b", or "raw bytes"); never raises."""
    try:
        rec = of(obj)
        if rec is not None:
            names = [rt.name for rt in rec.types(map.name)]
            return " | ".join(names) if names else "raw bytes"
        btf, tid = record_type(obj, map)
        return btf.c_name(tid) if tid is not None else "raw bytes"
    except (ValueError, KeyError, TypeError):
        return "?"


def _named_type(obj, map, type: str):
    btf, missing = obj.btf, "the object has no BTF"
    rec = of(obj)
    if btf is not None:
        try:
            tid = btf.find(type)
        except KeyError as e:
            missing = e.args[0]
        else:
            return _check_kind(rec.btf if rec is not None else btf, tid, type)
    if rec is None:
        why = why_not(obj)
        stop = "" if missing.endswith(("?", ".")) else "."
        raise ValueError(
            f"record type for {map.name!r}: {missing}{stop}\n{why[:1].upper()}{why[1:]}, where "
            f"clang keeps the types of local variables: rebuild the object with -g and "
            f"keep its debug info (bpftool gen object and strip drop it), or use the type "
            f"in a global, e.g. `{type} *unused_event;`") from None
    try:
        btf, tid = rec.find(type)
    except KeyError:
        _, _, near = missing.partition("; did you mean")
        hint = f"; did you mean{near}" if near else ""
        raise ValueError(f"record type for {map.name!r}: no type {type!r} in the "
                         f"object's BTF nor in its DWARF{hint}") from None
    return _check_kind(btf, tid, type)


def _check_kind(btf, tid: int, type: str):
    kind = btf.type(btf.resolve(tid)).kind
    if kind not in ("struct", "union"):
        raise ValueError(f"{type!r} is a {kind}: records are decoded as a struct "
                         f"or union")
    return btf, tid


def _guess(obj, map) -> int | None:
    """For objects without DWARF: the one struct or union the program defines itself
    (not the kernel's, not a CO-RE flavour, not nested in another, not a map's key or
    value), narrowed to those named like "event" when several remain."""
    found = _own_structs(obj)
    if len(found) > 1:
        events = {name: tid for name, tid in found.items() if "event" in name.lower()}
        found = events if len(events) == 1 else found
    if len(found) > 1:
        names = sorted(found)
        raise ValueError(f"which type do the records of {map.name!r} have? The object "
                         f"has no DWARF to tell ({why_not(obj)}) and its BTF "
                         f"defines {', '.join(names)}: pass one, e.g. "
                         f".stream({names[0]!r})")
    return next(iter(found.values()), None)


def _own_structs(obj) -> dict[str, int]:
    """{C name: id} of the program's own top-level structs/unions (see record_type)."""
    btf = obj.btf
    found, inner = {}, set()
    for t in btf.types():
        if t.kind in ("struct", "union") and t.size:
            inner.update(_element(btf, m.type_id) for m in t.members)
            if t.name:
                found[t.id] = t
        elif t.kind == "typedef" and t.name:
            target = btf.type(btf.resolve(t.id))
            if target.kind in ("struct", "union") and target.size and not target.name:
                found[t.id] = t
    for m in obj.maps:
        inner.update(_element(btf, tid) for tid in (m.key_type_id, m.value_type_id) if tid)
    return {btf.c_name(tid): tid for tid, t in found.items()
            if btf.resolve(tid) not in inner and "___" not in t.name
            and not _from_kernel(btf, t)}


def _element(btf, tid: int) -> int:
    """The struct (or other type) under modifiers and arrays."""
    for _ in range(64):
        t = btf.type(btf.resolve(tid))
        if t.kind != "array":
            return t.id
        tid = t.type_id
    return tid


def _from_kernel(btf, t) -> bool:
    """Whether ``t`` is the kernel's type of that name (vmlinux.h copies it whole)."""
    vmlinux = _vmlinux_btf()
    if vmlinux is None:
        return False
    try:
        vt = vmlinux.type(vmlinux.find(t.name, t.kind))
    except KeyError:
        return False
    if btf.size(t.id) != vmlinux.size(vt.id):
        return False
    ours, theirs = btf.type(btf.resolve(t.id)), vmlinux.type(vmlinux.resolve(vt.id))
    return [m.name for m in ours.members or ()] == [m.name for m in theirs.members or ()]


_vmlinux: list = []


def _vmlinux_btf():
    """The running kernel's BTF (parsed once; ~0.1 s), or None where it is missing."""
    if not _vmlinux:
        from .libbpf import BTF
        try:
            _vmlinux.append(BTF.from_file(VMLINUX_BTF))
        except (OSError, ValueError):
            _vmlinux.append(None)
    return _vmlinux[0]
