"""Fuzzing the BTF parser: mutated .BTF blobs are refused with BTFError, or they parse
and every type works through find/dtype/decode/encode/c_decl; nothing else escapes.

The blobs come from three objects compiled here (tests/btf_objects.py).  The mutators
are ours: bit flips, words overwritten with interesting values (0, 0xff.., 0x7fffffff,
type ids around the last one), truncation, header lengths, shuffled, dropped and
duplicated type records, and references redirected (to the type itself, to a struct
holding it).  The fuzz runs in a subprocess, so a crash fails the test instead of
killing pytest; inputs that once got through are kept in tests/data/btf_fuzz.  For a
long run (``--keep DIR`` saves what fails):

    PYTHONPATH=. python tests/test_btf_fuzz.py --variants 50000 --seed 7 a.btf b.btf ...
"""

import argparse
import json
import os
import random
import re
import struct
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

SEED = 13
VARIANTS = 2400

# ----------------------------------------------------------------------------- mutators


def _layout(blob):
    """(endianness, header fields, [(start, end) of each type record]) of a valid blob."""
    from bpfnb.libbpf.btf import BTF
    e = "<" if blob[:2] == b"\x9f\xeb" else ">"
    hdr = list(struct.unpack_from(e + "HBBIIIII", blob, 0))
    b = BTF(blob)
    t0 = hdr[3] + hdr[4]
    offs = b._offs[1:] + [hdr[5] // 4]
    return e, hdr, [(t0 + 4 * a, t0 + 4 * z) for a, z in zip(offs, offs[1:])]


class Mutator:
    """Our mutations of one valid blob, drawn from ``rng``."""

    def __init__(self, blob, rng):
        self.blob = blob
        self.rng = rng
        self.e, self.hdr, self.recs = _layout(blob)
        self.ntypes = len(self.recs) + 1
        self.t0 = self.hdr[3] + self.hdr[4]
        self.t1 = self.t0 + self.hdr[5]

    def interesting(self):
        n = self.ntypes
        return self.rng.choice([0, 1, 0xFF, 0xFFFF, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000,
                                n - 2, n - 1, n, n + 1, self.rng.randrange(n),
                                self.rng.randrange(1 << 32)])

    def word_at(self, data, pos, value):
        if pos + 4 <= len(data):           # an earlier mutation may have cut it short
            data[pos:pos + 4] = struct.pack(self.e + "I", value & 0xFFFFFFFF)

    def bit_flips(self, data):
        for _ in range(self.rng.randint(1, 8) if data else 0):
            i = self.rng.randrange(len(data))
            data[i] ^= 1 << self.rng.randrange(8)
        return "bit flips"

    def byte(self, data):
        if not data:
            return "byte (empty)"
        i = self.rng.randrange(len(data))
        data[i] = self.rng.choice([0, 0xFF, 0x7F, 0x80, 0x01])
        return f"byte {i}"

    def type_word(self, data):
        """A word of the type section set to an interesting value."""
        pos = self.t0 + 4 * self.rng.randrange((self.t1 - self.t0) // 4)
        self.word_at(data, pos, self.interesting())
        return f"type word at {pos}"

    def header(self, data):
        field = self.rng.randrange(3, 8)            # hdr_len, type/str off and len
        self.word_at(data, 4 + 4 * (field - 3), self.interesting())
        return f"header field {field}"

    def truncate(self, data):
        cut = self.rng.randrange(len(data) + 1)
        del data[cut:]
        if self.rng.random() < 0.5 and cut > 24:     # and say so in the header
            hdr = list(self.hdr)
            hdr[5] = min(hdr[5], max(0, cut - self.t0)) & ~3
            hdr[7] = max(0, min(hdr[7], cut - (hdr[3] + hdr[6])))
            data[:24] = struct.pack(self.e + "HBBIIIII", *hdr)
        return f"truncated at {cut}"

    def records(self, data):
        """Type records shuffled, dropped or duplicated, the header told."""
        recs = [bytes(self.blob[a:z]) for a, z in self.recs]
        how = self.rng.choice(["swap", "drop", "dup", "shuffle"])
        if how == "swap" and len(recs) > 1:
            i, j = self.rng.sample(range(len(recs)), 2)
            recs[i], recs[j] = recs[j], recs[i]
        elif how == "drop" and recs:
            del recs[self.rng.randrange(len(recs))]
        elif how == "dup" and recs:
            i = self.rng.randrange(len(recs))
            recs.insert(self.rng.randrange(len(recs) + 1), recs[i])
        else:
            self.rng.shuffle(recs)
        types = b"".join(recs)
        strs = self.blob[self.hdr[3] + self.hdr[6]:self.hdr[3] + self.hdr[6] + self.hdr[7]]
        hdr = list(self.hdr)
        hdr[4], hdr[5], hdr[6], hdr[7] = 0, len(types), len(types), len(strs)
        data[:] = struct.pack(self.e + "HBBIIIII", *hdr) + types + strs
        return f"records {how}"

    def redirect(self, data):
        """A reference of one type record pointed at itself, a neighbour or its holder."""
        i = self.rng.randrange(len(self.recs))
        a, z = self.recs[i]
        tid = i + 1
        target = self.rng.choice([tid, tid - 1, tid + 1, self.rng.randrange(self.ntypes)])
        words = (z - a) // 4
        # the size_or_type word, or a member's/param's type word
        pos = a + 8 if words <= 3 or self.rng.random() < 0.5 else \
            a + 4 * self.rng.randrange(3, words)
        self.word_at(data, pos, target)
        return f"type #{tid} word {(pos - a) // 4} -> #{target}"

    def info(self, data):
        """The kind, kind_flag or vlen of one type record changed."""
        i = self.rng.randrange(len(self.recs))
        pos = self.recs[i][0] + 4
        if pos + 4 > len(data):
            return "info (cut short)"
        v, = struct.unpack_from(self.e + "I", data, pos)
        what = self.rng.randrange(3)
        if what == 0:
            v = (v & ~(0x1F << 24)) | (self.rng.randrange(32) << 24)
        elif what == 1:
            v ^= 1 << 31
        else:
            v = (v & ~0xFFFF) | ((v + self.rng.choice([-1, 1, 2, 0x7FFF])) & 0xFFFF)
        self.word_at(data, pos, v)
        return f"type #{i + 1} info"

    def mutate(self):
        data = bytearray(self.blob)
        ops = [self.bit_flips, self.byte, self.type_word, self.type_word, self.header,
               self.truncate, self.records, self.redirect, self.redirect, self.info]
        done = [self.rng.choice(ops)(data) for _ in range(self.rng.randint(1, 3))]
        return bytes(data), done


# ----------------------------------------------------------------------------- checks

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_NO_VALUE = {"void", "fwd", "func", "func_proto", "decl_tag"}


def exercise(b):
    """Everything a user does with types, on every type of ``b``."""
    import numpy as np
    from bpfnb.libbpf.btf import KINDS
    b.struct_names()
    for tid in range(len(b)):
        t = b.type(tid)
        b.c_name(tid)
        b.c_decl(tid)
        if t.kind == "datasec" and t.name:
            b.datasec_vars(t.name)
        if t.name and t.kind in KINDS and _IDENT.fullmatch(t.name):
            found = b.find(t.name, t.kind)
            assert b.type(found).name == t.name, (tid, t, found)
        try:
            dt = b.dtype(tid)
        except TypeError:
            # only what has no value may have no dtype
            v = b.type(b.resolve(tid))
            if v.kind == "var":
                v = b.type(b.resolve(v.type_id))
            assert v.kind in _NO_VALUE, (tid, t, v)
            continue
        b.fields(tid)
        b.bitfields(tid)
        if dt.itemsize > 1 << 16:
            continue                               # a big but valid type: decode less
        zero = bytes(dt.itemsize)
        b.encode(tid, b.decode(tid, zero))
        b.decode(tid, random.Random(tid).randbytes(dt.itemsize))
        if dt.names is not None:
            b.unpack_bitfields(tid, np.zeros(2, dt))


def run(blobs, seed, variants, keep=None):
    from bpfnb.libbpf.btf import BTF, BTFError
    rng = random.Random(seed)
    mutators = [Mutator(blob, rng) for blob in blobs]
    stats = {"variants": 0, "parsed": 0, "rejected": 0, "errors": {}}
    for v in range(variants):
        m = mutators[v % len(mutators)]
        data, done = m.mutate()
        try:
            try:
                b = BTF(data)
            except BTFError as ex:
                stats["rejected"] += 1
                key = re.sub(r"#?\d+|'[^']*'|\([^)]*\)", "N", str(ex))[:60]
                stats["errors"][key] = stats["errors"].get(key, 0) + 1
                continue
            stats["parsed"] += 1
            try:
                exercise(b)
            except BTFError:
                stats["rejected_late"] = stats.get("rejected_late", 0) + 1
        except BaseException:
            where = ""
            if keep:
                os.makedirs(keep, exist_ok=True)
                where = os.path.join(keep, f"crash-seed{seed}-v{v}.btf")
                Path(where).write_bytes(data)
            sys.stderr.write(f"variant {v} (seed {seed}, blob {v % len(mutators)}, "
                             f"{'; '.join(done)}) raised {where}\n")
            traceback.print_exc()
            sys.exit(1)
        finally:
            stats["variants"] += 1
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("blobs", nargs="+", help="raw .BTF files to mutate")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--variants", type=int, default=VARIANTS)
    ap.add_argument("--keep", help="directory for inputs that raised")
    args = ap.parse_args(argv)
    blobs = [Path(p).read_bytes() for p in args.blobs]
    t = time.perf_counter()
    stats = run(blobs, args.seed, args.variants, args.keep)
    stats["seconds"] = round(time.perf_counter() - t, 2)
    print(json.dumps(stats))


# ----------------------------------------------------------------------------- test

def test_mutated_btf_raises_only_btferror(tmp_path):
    import btf_objects
    paths = []
    for name, obj in btf_objects.objects(tmp_path).items():
        p = tmp_path / f"{name}.btf"
        p.write_bytes(btf_objects.btf_section(obj))
        paths.append(str(p))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, __file__, "--seed", str(SEED), "--variants",
                        str(VARIANTS), "--keep", str(tmp_path / "crashers"), *paths],
                       capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, f"fuzz run failed (rc {r.returncode}):\n{r.stderr[-6000:]}"
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["variants"] == VARIANTS
    # the mutators reach both sides: many variants are refused, many still parse
    assert stats["rejected"] > VARIANTS // 3, stats
    assert stats["parsed"] > VARIANTS // 10, stats
    # and refusals name what is wrong: the type and the fault
    named = sum(c for k, c in stats["errors"].items() if k.startswith("BTF type N"))
    assert named > stats["rejected"] // 2, stats



def test_kept_crashers():
    """Inputs that once raised something else than BTFError (tests/data/btf_fuzz)."""
    from bpfnb.libbpf.btf import BTF, BTFError
    kept = sorted((HERE / "data" / "btf_fuzz").glob("*.btf"))
    assert kept
    for path in kept:
        try:
            exercise(BTF(path.read_bytes()))
        except BTFError as ex:
            assert str(ex).startswith("BTF type #"), (path.name, ex)


if __name__ == "__main__":
    main()
