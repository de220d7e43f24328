"""Fuzzing bpfnb.libbpf.Object with mutated BPF objects: every variant is opened, and
loaded when it opened, in a child process; a crash names its seed, variant and mutators.

Three valid objects of different shapes (tests/progs: bootstrap, a ring-buffer tool
with CO-RE relocations; fuzz_maps, map-heavy with .kconfig/.ksyms externs and a
map-in-map; fuzz_net, XDP and tc) are mutated by our own mutators: bit flips and
interesting values aimed at one part of the object (ELF header, section headers,
symbols, string tables, .BTF, .BTF.ext, .maps), truncation, section headers swapped,
and targeted writes of type ids and string offsets into map definitions, CO-RE
relocations, func/line info and extern symbols.  Variant ``i`` of seed ``s`` depends on
nothing else, so any one can be replayed alone.

Long run (prints JSON lines: one per crash, then the totals)::

    PYTHONPATH=. python bench/fuzz_objects.py --variants 20000 --seed 1 --keep /tmp/crashers
    PYTHONPATH=. python bench/fuzz_objects.py --replay tests/data/fuzz/*.elf
    PYTHONPATH=. python bench/fuzz_objects.py --cost       # open time, with and without
    PYTHONPATH=. python bench/fuzz_objects.py --leaks 3000 # RSS and fds over failures

``--no-check`` runs the same variants with the Python validation turned off (libbpf sees
them as they are): the baseline of the crash counts.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROGS = ROOT / "tests" / "progs"
OBJECTS = ("bootstrap", "fuzz_maps", "fuzz_net")


def compile_objects() -> dict[str, bytes]:
    from bpfnb import build
    return {name: Path(build.compile(PROGS / f"{name}.bpf.c")).read_bytes()
            for name in OBJECTS}


# ----------------------------------------------------------------------------- mutators

class Mutator:
    """Mutations of one valid object, each drawn from the ``rng`` it is given."""

    def __init__(self, data: bytes):
        from bpfnb.libbpf import elfcheck
        self.data = data
        elf = self.elf = elfcheck.check(data)
        btf = elf.btf
        self.ntypes = len(btf)
        sec = elf.section(".BTF")
        hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from(
            "<IIIII", data, sec.offset + 4)
        self.types = sec.offset + hdr_len + type_off          # file offset of type 1
        self.type_end = self.types + type_len
        self.strs = (sec.offset + hdr_len + str_off, str_len)
        self.str_starts = [0] + [i + 1 for i in range(str_len - 1)
                                 if data[self.strs[0] + i] == 0]
        # file offsets of every type record, and of the members of map definitions
        self.records = [self.types + 4 * o for o in btf._offs[1:]]
        self.map_members = []
        for vid, _, _ in btf.type(btf.find(".maps", "datasec")).vars:
            sid = btf.resolve(btf.type(vid).type_id)
            rec = self.records[sid - 1]
            self.map_members += [rec + 12 + 12 * j
                                 for j in range(len(btf.type(sid).members))]
        self.relos = [off for kind, off, _ in elf.ext_records if kind == "CO-RE relocation"]
        self.infos = [off for kind, off, _ in elf.ext_records if kind != "CO-RE relocation"]
        self.regions = {"elf header": (0, 64)}
        self.regions["section headers"] = (elf.sections[0].header,
                                           elf.sections[-1].header + 64)
        for name in (".symtab", ".strtab", ".BTF", ".BTF.ext", ".maps", ".text",
                     ".rel.text", "license", ".rodata", ".data", ".bss"):
            s = elf.section(name)
            if s is not None and s.type != 8 and s.size:
                self.regions[name] = (s.offset, s.offset + s.size)
        for s in elf.sections:
            if s.flags & 4 and s.size:                         # program sections
                self.regions[s.name] = (s.offset, s.offset + s.size)
        self.externs = [s.entry for s in elf.symbols if s.shndx == 0 and s.name]

    def interesting(self, rng):
        n = self.ntypes
        return rng.choice([0, 1, 2, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000,
                           n - 1, n, n + 1, n + 100, len(self.data), rng.randrange(n),
                           self.strs[1], self.strs[1] - 1, self.strs[1] + 1,
                           rng.randrange(1 << 32)])

    def string_offset(self, rng):
        """An offset into the BTF strings: a string's start, its middle, or past it."""
        return rng.choice([rng.choice(self.str_starts), rng.randrange(self.strs[1]),
                           self.strs[1], self.strs[1] + rng.randrange(1, 1 << 16)])

    @staticmethod
    def put(data, pos, value, size=4):
        if 0 <= pos and pos + size <= len(data):              # an earlier cut may bite
            data[pos:pos + size] = (value & ((1 << 8 * size) - 1)).to_bytes(size, "little")

    def region(self, rng):
        name = rng.choice(sorted(self.regions))
        return name, self.regions[name]

    # each returns what it did, for the report of a crash
    def bit_flips(self, data, rng):
        name, (a, z) = self.region(rng)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(a, z)
            if i < len(data):
                data[i] ^= 1 << rng.randrange(8)
        return f"bit flips in {name}"

    def value(self, data, rng):
        name, (a, z) = self.region(rng)
        size = rng.choice([1, 2, 4, 4, 8])
        pos = a + rng.randrange(max(1, (z - a) // size)) * size
        self.put(data, pos, self.interesting(rng), size)
        return f"interesting {size}-byte value at {pos} in {name}"

    def truncate(self, data, rng):
        name, (a, z) = self.region(rng)
        cut = rng.randrange(a, z + 1)
        del data[cut:]
        return f"truncated at {cut} (in {name})"

    def swap_sections(self, data, rng):
        secs = self.elf.sections
        i, j = rng.sample(range(1, len(secs)), 2)
        hi, hj = secs[i].header, secs[j].header
        what = rng.choice(["header", "name", "offset/size", "link/info"])
        span = {"header": (0, 64), "name": (0, 4), "offset/size": (24, 40),
                "link/info": (40, 48)}[what]
        a, b = hi + span[0], hj + span[0]
        n = span[1] - span[0]
        if b + n <= len(data) and a + n <= len(data):
            data[a:a + n], data[b:b + n] = data[b:b + n], data[a:a + n]
        return f"section #{i} and #{j} swapped their {what}"

    def type_id(self, data, rng):
        """A word of a BTF type record (a type id or size) set to an id near the end."""
        rec = rng.choice(self.records)
        pos = rec + 4 * rng.choice([2, 2, 3, 4, 5, 6, 7])
        if pos + 4 > self.type_end:
            pos = rec + 8
        tid = rng.choice([self.ntypes - 1, self.ntypes, self.ntypes + 1, 0, 0xFFFFFFFF,
                          rng.randrange(self.ntypes)])
        self.put(data, pos, tid)
        return f"BTF record at {rec} word {(pos - rec) // 4} = type #{tid}"

    def name_offset(self, data, rng):
        rec = rng.choice(self.records)
        off = self.string_offset(rng)
        self.put(data, rec, off)
        return f"BTF record at {rec} name offset = {off}"

    def map_def(self, data, rng):
        pos = rng.choice(self.map_members)
        field = rng.randrange(3)                       # name_off, type, bit offset
        value = self.string_offset(rng) if field == 0 else self.interesting(rng)
        self.put(data, pos + 4 * field, value)
        return f"map member at {pos} field {field} = {value}"

    def core_relo(self, data, rng):
        if not self.relos:
            return self.value(data, rng)
        pos = rng.choice(self.relos)
        field = rng.randrange(4)                       # insn_off, type_id, access, kind
        value = self.string_offset(rng) if field == 2 else \
            rng.randrange(16) if field == 3 and rng.random() < 0.7 else self.interesting(rng)
        self.put(data, pos + 4 * field, value)
        return f"CO-RE relocation at {pos} field {field} = {value}"

    def access_string(self, data, rng):
        """An access string of a CO-RE relocation rewritten in place."""
        if not self.relos:
            return self.value(data, rng)
        pos = rng.choice(self.relos)
        off = struct.unpack_from("<I", self.data, pos + 8)[0]
        start = self.strs[0] + off
        end = self.data.index(b"\0", start)
        new = rng.choice([b"-1", b"0:-1", b"0:65535", b"0:9", b"4294967296", b":", b"0::",
                          b"0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0:0", b"99", b"0:1:x"])
        new = (new + b"\0" * (end - start))[:end - start]
        data[start:end] = new
        return f"access string at {start} = {new!r}"

    def ext_info(self, data, rng):
        if not self.infos:
            return self.value(data, rng)
        pos = rng.choice(self.infos)
        field = rng.randrange(4)
        self.put(data, pos + 4 * field, self.interesting(rng))
        return f"func/line info at {pos} field {field}"

    def extern(self, data, rng):
        if not self.externs:
            return self.value(data, rng)
        entry = rng.choice(self.externs)
        field, size = rng.choice([(0, 4), (4, 1), (6, 2)])   # st_name, st_info, st_shndx
        value = rng.choice([0, 1, 0xFFFF, 0x7FFFFFFF, rng.randrange(1 << 16),
                            self.interesting(rng)])
        self.put(data, entry + field, value, size)
        return f"extern symbol at {entry} field {field} = {value}"

    def symbol(self, data, rng):
        sym = rng.choice(self.elf.symbols)
        field, size = rng.choice([(0, 4), (4, 1), (6, 2), (8, 8), (16, 8)])
        self.put(data, sym.entry + field, self.interesting(rng), size)
        return f"symbol #{sym.index} field {field}"

    OPS = ("bit_flips", "bit_flips", "value", "value", "truncate", "swap_sections",
           "type_id", "type_id", "name_offset", "map_def", "map_def", "core_relo",
           "core_relo", "access_string", "ext_info", "extern", "symbol")

    def mutate(self, rng) -> tuple[bytes, list[str]]:
        data = bytearray(self.data)
        done = [getattr(self, rng.choice(self.OPS))(data, rng)
                for _ in range(rng.choice([1, 1, 2, 3]))]
        return bytes(data), done


def variant(mutators: dict, seed: int, i: int) -> tuple[str, bytes, list[str]]:
    """Variant ``i`` of ``seed``: (object name, bytes, what was done)."""
    rng = random.Random(f"{seed}:{i}")
    name = OBJECTS[i % len(OBJECTS)]
    data, done = mutators[name].mutate(rng)
    return name, data, done


# ----------------------------------------------------------------------------- child

def attempt(data: bytes) -> str:
    """Open, then load, one object: 'opened', 'loaded' or the exception's type name
    ('bpfnb:OpenError' for bpfnb's own)."""
    from bpfnb.libbpf import BPFError, Object
    try:
        obj = Object(data)
    except BPFError as e:
        return f"bpfnb:{type(e).__name__}"
    try:
        if os.geteuid() != 0:
            return "opened"
        for m in obj.maps:
            if m.max_entries == 0:
                m.max_entries = 64            # maps sized at load, as a tool sizes them
        obj.load()
        return "loaded"
    except BPFError as e:
        return f"bpfnb:{type(e).__name__}"
    finally:
        obj.destroy()


def child(seed: int, start: int, stop: int, no_check: bool):
    """Run variants start..stop-1, telling the parent each index before trying it."""
    mutators = {name: Mutator(data) for name, data in compile_objects().items()}
    if no_check:
        from bpfnb.libbpf import elfcheck
        elfcheck.check = lambda data: None
    out = sys.stdout
    for i in range(start, stop):
        name, data, done = variant(mutators, seed, i)
        out.write(f"start {i}\n")
        out.flush()
        try:
            result = attempt(data)
        except Exception as e:
            result = type(e).__name__
            sys.stderr.write(f"variant {i} (seed {seed}, {name}: {'; '.join(done)}) "
                             f"raised {result}: {e}\n{traceback.format_exc(limit=-3)}")
        out.write(f"done {i} {result}\n")
    out.flush()


# ----------------------------------------------------------------------------- parent

def run(seed: int, variants: int, keep: str | None = None, no_check: bool = False,
        timeout: float = 3600) -> dict:
    """Fuzz ``variants`` variants of ``seed``; children restarted after each crash."""
    stats = {"seed": seed, "variants": 0, "crashes": [], "results": {}, "no_check": no_check}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    deadline = time.monotonic() + timeout
    i = 0
    mutators = None
    while i < variants and time.monotonic() < deadline:
        errors = tempfile.TemporaryFile("w+")
        p = subprocess.Popen([sys.executable, __file__, "--child", str(seed), str(i),
                              str(variants)] + (["--no-check"] if no_check else []),
                             stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
        current = None
        for line in p.stdout:
            word, n, *rest = line.split()
            if word == "start":
                current = int(n)
            else:
                stats["variants"] += 1
                stats["results"][rest[0]] = stats["results"].get(rest[0], 0) + 1
                current = None
                i = int(n) + 1
        rc = p.wait()
        errors.seek(0)
        err = errors.read()
        errors.close()
        if err.strip():
            stats.setdefault("stderr", []).append(err[-3000:])
        if current is None:
            if rc:
                raise RuntimeError(f"fuzz child failed (rc {rc}):\n{err[-3000:]}")
            break
        # the child died inside variant ``current``: a crash
        if mutators is None:
            mutators = {name: Mutator(data) for name, data in compile_objects().items()}
        name, data, done = variant(mutators, seed, current)
        crash = {"variant": current, "object": name, "mutators": done,
                 "signal": signal.Signals(-rc).name if rc < 0 else rc}
        if keep:
            os.makedirs(keep, exist_ok=True)
            path = Path(keep) / f"crash-seed{seed}-v{current}-{name}.elf"
            path.write_bytes(data)
            crash["kept"] = str(path)
        stats["crashes"].append(crash)
        stats["variants"] += 1
        stats["results"]["crash"] = stats["results"].get("crash", 0) + 1
        i = current + 1
    return stats


def replay(paths, no_check: bool = False) -> dict:
    """Each kept input in its own child: {path: result or signal}."""
    out = {}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")]))
    code = ("import sys; sys.path.insert(0, %r); import fuzz_objects as f; "
            "from bpfnb.libbpf import elfcheck\n"
            "if %r: elfcheck.check = lambda data: None\n"
            "print(f.attempt(open(sys.argv[1], 'rb').read()))"
            % (str(Path(__file__).parent), no_check))
    for path in paths:
        r = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                           text=True, env=env, timeout=120)
        rc = r.returncode
        out[str(path)] = (r.stdout.strip() if rc == 0 else f"{signal.Signals(-rc).name}"
                          if rc < 0 else f"exit {rc}: {r.stderr[-500:]}")
    return out


# ----------------------------------------------------------------------------- leaks

def failing_inputs() -> dict[str, bytes]:
    """Objects that fail in three places: refused at open (cut short), opened by libbpf
    but not by us (a program name that is not UTF-8), refused at load (an instruction
    the verifier rejects)."""
    good = compile_objects()["fuzz_net"]
    data = bytearray(good)
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shnum, shstrndx = struct.unpack_from("<HH", data, 0x3C)
    secs = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + 64 * i) for i in range(shnum)]
    names = secs[shstrndx]
    name = lambda s: bytes(data[names[4] + s[0]:data.index(0, names[4] + s[0])])
    symtab = next(s for s in secs if s[1] == 2)
    strtab = secs[symtab[6]]
    xdp = next(i for i, s in enumerate(secs) if name(s) == b"xdp")
    for j in range(0, symtab[5], 24):
        st_name, info, _, shndx = struct.unpack_from("<IBBH", data, symtab[4] + j)
        if info & 0xF == 2 and shndx == xdp:          # the xdp program's symbol
            bad_name = bytearray(data)
            bad_name[strtab[4] + st_name] = 0x80
    rejected = bytearray(good)
    # first instruction: r0 = *(u64 *)(r10 + 8), past the top of the stack
    rejected[secs[xdp][4]:secs[xdp][4] + 8] = bytes([0x79, 0xA0, 8, 0, 0, 0, 0, 0])
    return {"open": good[:len(good) * 3 // 4], "after open": bytes(bad_name),
            "load": bytes(rejected)}


def leaks(n: int) -> dict:
    """RSS and fd growth over ``n`` failures (the three kinds in turn), beside ``n``
    successful open/destroy cycles of the same object in the same run."""
    import gc
    from bpfnb.libbpf import Object
    inputs = list(failing_inputs().values())
    good = compile_objects()["fuzz_net"]

    def measure(step):
        for k in range(30):          # warm up allocator pools and caches
            step(k)
        gc.collect()
        rss0, fds0 = _rss(), len(os.listdir("/proc/self/fd"))
        for k in range(n):
            step(k)
        gc.collect()
        return (_rss() - rss0) / 2**20, len(os.listdir("/proc/self/fd")) - fds0

    def fail(k):
        try:
            obj = Object(inputs[k % len(inputs)])
            obj.load()
        except Exception:
            pass

    def succeed(_):
        Object(good).destroy()

    mb, fds = measure(fail)
    ok_mb, ok_fds = measure(succeed)
    return {"failures": n, "rss_mb": round(mb, 1), "fds": fds,
            "baseline_rss_mb": round(ok_mb, 1), "baseline_fds": ok_fds}


# a typical cell: a histogram and a keyed count, what %%bpf compiles (prelude, vmlinux.h)
CELL = r"""
struct who { u32 pid; char comm[16]; };
BPFNB_HIST(lat, 32);
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1024);
         __type(key, struct who); __type(value, u64); } calls SEC(".maps");
const volatile u32 targ_pid = 0;

SEC("tracepoint/syscalls/sys_enter_lseek")
int on_lseek(struct trace_event_raw_sys_enter *ctx)
{
    struct who w = { .pid = bpf_get_current_pid_tgid() >> 32 };
    u64 one = 1, *n;
    if (targ_pid && w.pid != targ_pid)
        return 0;
    bpf_get_current_comm(w.comm, sizeof(w.comm));
    n = bpf_map_lookup_elem(&calls, &w);
    if (n)
        __sync_fetch_and_add(n, 1);
    else
        bpf_map_update_elem(&calls, &w, &one, BPF_NOEXIST);
    bpfnb_hist_log2(&lat, ctx->args[1]);
    return 0;
}
"""


def cost(repeat: int = 40) -> list[dict]:
    """Open (and destroy) of a typical cell object with and without the validation:
    the minimum of ``repeat`` runs each, interleaved so load on the machine hits both."""
    from bpfnb import build
    out = []
    for what, src in (("cell", CELL), ("CO-RE tool (bootstrap)", PROGS / "bootstrap.bpf.c")):
        out += _cost(what, Path(build.compile(src)).read_bytes(), repeat)
    return out


def _cost(what: str, data: bytes, repeat: int) -> list[dict]:
    from bpfnb.libbpf import Object, elfcheck
    check = elfcheck.check
    best = {"with": float("inf"), "without": float("inf"), "check": float("inf")}
    for _ in range(repeat):
        for mode in best:
            elfcheck.check = check if mode == "with" else (lambda d: None)
            t = time.perf_counter()
            if mode == "check":
                check(data)
            else:
                Object(data).destroy()
            best[mode] = min(best[mode], time.perf_counter() - t)
    elfcheck.check = check
    ms = {k: round(v * 1e3, 3) for k, v in best.items()}
    return [{"bench": "fuzz_objects", "metric": f"open of a {len(data)}-byte {what} object, "
             "validated (min)", "value": ms["with"], "unit": "ms", "baseline": ms["without"]},
            {"bench": "fuzz_objects", "metric": f"elfcheck.check alone, {what} (min)",
             "value": ms["check"], "unit": "ms", "baseline": ms["without"]}]


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--variants", type=int, default=20000)
    ap.add_argument("--keep", help="directory for inputs that crashed")
    ap.add_argument("--no-check", action="store_true",
                    help="baseline: libbpf sees the variants unvalidated")
    ap.add_argument("--replay", nargs="+", help="kept inputs to run once each")
    ap.add_argument("--leaks", type=int, metavar="N",
                    help="RSS and fds over N failed opens and loads, in this process")
    ap.add_argument("--cost", action="store_true",
                    help="open time of a typical cell object with and without validation")
    ap.add_argument("--child", nargs=3, type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child, no_check=args.no_check)
        return
    if args.cost:
        for line in cost():
            print(json.dumps(line))
        return
    if args.leaks:
        r = leaks(args.leaks)
        print(json.dumps({"bench": "fuzz_objects", "metric": f"RSS growth over {r['failures']} "
                          "failed opens/loads", "value": r["rss_mb"], "unit": "MB",
                          "baseline": r["baseline_rss_mb"], "fds": r["fds"],
                          "baseline_fds": r["baseline_fds"]}))
        return
    if args.replay:
        for path, result in replay(args.replay, args.no_check).items():
            print(json.dumps({"input": path, "result": result}))
        return
    t = time.perf_counter()
    stats = run(args.seed, args.variants, args.keep, args.no_check)
    stats["seconds"] = round(time.perf_counter() - t, 1)
    for text in stats.pop("stderr", []):
        print(json.dumps({"child_stderr": text}))
    exceptions = {k: v for k, v in stats["results"].items()
                  if k not in ("opened", "loaded", "crash") and not k.startswith("bpfnb:")}
    for c in stats["crashes"]:
        print(json.dumps({"crash": c}))
    print(json.dumps({"bench": "fuzz_objects", "seed": args.seed,
                      "validation": not args.no_check, "variants": stats["variants"],
                      "crashes": len(stats["crashes"]), "exceptions": exceptions,
                      "results": stats["results"], "seconds": stats["seconds"]}))


if __name__ == "__main__":
    main()
