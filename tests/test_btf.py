"""bpfnb.libbpf.btf: BTF parsing, dtypes, decode/encode, Record.

Types come from real clang output (a small BPF object compiled here) and from the
running kernel's /sys/kernel/btf/vmlinux; a few corner cases clang cannot produce
(name collisions, old-style bitfields, split and big-endian BTF) use hand-built blobs.
No root needed.
"""

import importlib.util
import os
import pickle
import shutil
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

try:
    from bpfnb.libbpf import btf as btfmod
except ImportError:  # the rest of the package may not import (yet); btf.py stands alone
    _path = os.path.join(os.path.dirname(__file__), "..", "bpfnb", "libbpf", "btf.py")
    _spec = importlib.util.spec_from_file_location("_bpfnb_btf_standalone", _path)
    btfmod = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = btfmod
    _spec.loader.exec_module(btfmod)

BTF, Record, EnumValue = btfmod.BTF, btfmod.Record, btfmod.EnumValue

VMLINUX = "/sys/kernel/btf/vmlinux"

C_SOURCE = r"""
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef signed char s8;
typedef short s16;
typedef int s32;
typedef long long s64;

enum state { ST_IDLE, ST_RUN = 5, ST_DEAD = 100 };
enum neg { NEG_A = -2, NEG_B = 3 };

struct inner { u16 a; u64 b; };
struct ints { u8 u8v; s8 s8v; u16 u16v; s16 s16v; u32 u32v; s32 s32v; u64 u64v; s64 s64v;
              _Bool flag; char c; };
struct event {
    u32 pid;
    char comm[16];
    enum state st;
    struct inner in;
    union { u32 as_u32; u8 bytes[4]; };
    u16 arr[3];
    int grid[2][3];
    void *ptr;
    const char *name;
    float f;
    double d;
    u8 mac[6];
    unsigned char uc[4];
};
struct bits { u32 a:3; u32 b:5; int c:4; enum state st:8; u64 big:40; u8 tail; };
union either { u32 x; u64 y; char s[12]; };
struct flex { u32 len; char data[]; };
struct packed_s { u8 a; u32 b; } __attribute__((packed));
struct nested_bits { u32 id; struct bits inner; };
struct names { char n[3][8]; };

struct event g_event;
struct ints g_ints;
union either g_either;
struct flex *g_flex;
struct packed_s g_packed;
struct nested_bits g_nb;
struct names g_names;
enum neg g_neg;
int (*g_fn)(int, const char *);
int g_data = 5;
const volatile u32 g_rodata = 7;

__attribute__((section(".data.bits"))) struct bits g_bits = {
    .a = 5, .b = 17, .c = -3, .st = ST_RUN, .big = 0x12345678ABull, .tail = 9 };
__attribute__((section(".data.ev"))) struct event g_ev = {
    .pid = 42, .comm = "bash", .st = ST_DEAD, .in = { .a = 7, .b = 1ull << 40 },
    .as_u32 = 0x01020304, .arr = {1, 2, 3}, .grid = {{1, 2, 3}, {4, 5, -6}},
    .ptr = (void *)0x1000, .f = 1.5, .d = -2.25, .mac = {1, 2, 3, 4, 5, 6}, .uc = "ab" };
__attribute__((section(".data.ints"))) struct ints g_ints_init = {
    .u8v = 255, .s8v = -128, .u16v = 65535, .s16v = -32768, .u32v = 4294967295u,
    .s32v = -2147483647 - 1, .u64v = 18446744073709551615ull, .s64v = -9223372036854775807ll - 1,
    .flag = 1, .c = 'x' };
"""


# ----------------------------------------------------------------------------- helpers

def elf_sections(data):
    """{name: bytes} of an ELF64 little-endian object (tiny, for the tests)."""
    assert data[:4] == b"\x7fELF" and data[4] == 2
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def sh(i):
        return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)

    stroff, strsize = sh(shstrndx)[4:6]
    strtab = data[stroff:stroff + strsize]
    out = {}
    for i in range(shnum):
        name_off, sh_type, _flags, _addr, off, size = sh(i)[:6]
        name = strtab[name_off:strtab.index(b"\0", name_off)].decode()
        out[name] = data[off:off + size] if sh_type != 8 else bytes(size)  # NOBITS
    return out


def _find_clang():
    for c in [os.environ.get("BPFNB_CLANG", "clang")] + [f"clang-{v}" for v in range(21, 13, -1)]:
        if c and shutil.which(c):
            return c
    return None


@pytest.fixture(scope="module")
def obj(tmp_path_factory):
    clang = _find_clang()
    if clang is None:
        pytest.skip("clang is not installed (needed to compile the BTF test object)")
    d = tmp_path_factory.mktemp("btf")
    src, out = d / "x.c", d / "x.o"
    src.write_text(C_SOURCE)
    r = subprocess.run([clang, "-g", "-O2", "-target", "bpf", "-c", str(src), "-o", str(out)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.fail(f"clang failed:\n{r.stderr}")
    data = out.read_bytes()
    secs = elf_sections(data)
    return BTF(secs[".BTF"]), secs, out


@pytest.fixture(scope="module")
def btf(obj):
    return obj[0]


@pytest.fixture(scope="module")
def vmlinux():
    if not os.path.exists(VMLINUX):
        pytest.skip(f"{VMLINUX} not present (kernel without CONFIG_DEBUG_INFO_BTF)")
    t = time.perf_counter()
    b = BTF.from_file(VMLINUX)
    b.parse_seconds = time.perf_counter() - t
    return b


class Builder:
    """Hand-built BTF blobs (for what clang will not emit)."""

    def __init__(self, base=None, endian="<"):
        self.e = endian
        self.base = base
        self.strs = bytearray() if base else bytearray(b"\0")
        self.str_base = (base._str_base + base._str_len) if base else 0
        self.words = []
        self.next_id = len(base) if base else 1

    def s(self, name):
        if not name:
            return 0
        off = self.str_base + len(self.strs)
        self.strs += name.encode() + b"\0"
        return off

    def add(self, kind, name, size_or_type, vlen=0, kflag=0, extra=()):
        kid = btfmod.KINDS.index(kind)
        self.words += [self.s(name), (kflag << 31) | (kid << 24) | vlen, size_or_type]
        self.words += [x(self) if callable(x) else x for x in extra]
        tid = self.next_id
        self.next_id += 1
        return tid

    def int(self, name, size, signed=False, bits=None, bit_offset=0):
        return self.add("int", name, size,
                        extra=[(1 if signed else 0) << 24 | bit_offset << 16 | (bits or size * 8)])

    def struct(self, name, size, members, kflag=0, kind="struct"):
        extra = []
        for mname, tid, off in members:
            extra += [lambda b, n=mname: b.s(n), tid, off]
        return self.add(kind, name, size, vlen=len(members), kflag=kflag, extra=extra)

    def raw(self):
        types = struct.pack(f"{self.e}{len(self.words)}I", *self.words)
        hdr = struct.pack(f"{self.e}HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types),
                          len(types), len(self.strs))
        return hdr + types + bytes(self.strs)


# ----------------------------------------------------------------------------- basics

def test_header_and_lookup(btf):
    assert len(btf) > 50
    assert btf.type(0).kind == "void"
    tid = btf.find("event", "struct")
    assert btf.find("struct event") == tid
    assert btf.find("  struct   event ") == tid
    assert btf.find("event") == tid
    t = btf.type(tid)
    assert (t.kind, t.name, t.size, t.id) == ("struct", "event", 128, tid)
    assert [m.name for m in t.members][:3] == ["pid", "comm", "st"]
    assert btf.type(btf.find("u32")).kind == "typedef"
    assert btf.type(btf.find("state", "enum")).values == [("ST_IDLE", 0), ("ST_RUN", 5),
                                                         ("ST_DEAD", 100)]
    assert "event" in btf.struct_names() and "inner" in btf.struct_names()
    assert "either" not in btf.struct_names()        # a union


def test_find_missing_suggests(btf):
    with pytest.raises(KeyError, match="evnt.*did you mean.*event"):
        btf.find("struct evnt")
    with pytest.raises(KeyError):
        btf.find("event", "union")
    with pytest.raises(ValueError, match="unknown BTF kind"):
        btf.find("event", "structure")


def test_resolve_size_cname(btf):
    u32 = btf.find("u32")
    assert btf.type(btf.resolve(u32)).name == "unsigned int"
    assert btf.size(u32) == 4
    ev = btf.type(btf.find("struct event"))
    mt = {m.name: m.type_id for m in ev.members}
    assert btf.c_name(mt["pid"]) == "u32"
    assert btf.c_name(mt["comm"]) == "char[16]"
    assert btf.c_name(mt["st"]) == "enum state"
    assert btf.c_name(mt["in"]) == "struct inner"
    assert btf.c_name(mt["ptr"]) == "void *"
    assert btf.c_name(mt["name"]) == "const char *"
    assert btf.c_name(mt["grid"]) == "int[2][3]"
    assert btf.c_name(mt[""]) == "union {...}"
    assert btf.size(mt["grid"]) == 24 and btf.size(mt["ptr"]) == 8
    assert btf.type(mt["pid"]).size == 4 and btf.type(mt["grid"]).size == 24
    fn = [v for v in btf.datasec_vars(".bss") if v[0] == "g_fn"][0][1]
    assert btf.c_name(fn) == "int (*)(int, const char *)"
    ro = btf.datasec_vars(".rodata")[0]
    assert ro[0] == "g_rodata" and btf.c_name(ro[1]) == "const volatile u32"
    assert btf.size(ro[1]) == 4
    assert "struct event {" in btf.c_decl(btf.find("struct event"))


def test_datasec_vars(btf):
    names = [v[0] for v in btf.datasec_vars(".bss")]
    assert {"g_event", "g_ints", "g_either", "g_flex", "g_nb"} <= set(names)
    assert [v[0] for v in btf.datasec_vars(".data")] == ["g_data"]
    assert [v[0] for v in btf.datasec_vars("data")] == ["g_data"]
    assert [v[0] for v in btf.datasec_vars(".data.bits")] == ["g_bits"]
    # raw .o: offsets are 0 until libbpf fixes them, but the type is right
    (_, tid, _, _), = btf.datasec_vars(".data.ev")
    assert btf.c_name(tid) == "struct event"
    with pytest.raises(KeyError, match=r"\.bss"):
        btf.datasec_vars(".nope")


def test_from_file_elf(obj):
    b = BTF.from_file(obj[2])
    assert b.find("struct event") == obj[0].find("struct event")


# ----------------------------------------------------------------------------- dtypes

def _check_offsets(btf, tid):
    """Every non-bitfield named member sits in the dtype at bit_offset/8."""
    t = btf.type(btf.resolve(tid))
    dt = btf.dtype(tid)
    assert dt.itemsize == t.size
    for m in t.members:
        if m.name and not m.bitfield_size and btf.size(m.type_id):
            assert dt.fields[m.name][1] == m.bit_offset // 8, m.name
            assert dt.fields[m.name][0].itemsize == btf.size(m.type_id), m.name


def test_int_dtypes(btf):
    tid = btf.find("struct ints")
    dt = btf.dtype(tid)
    want = {"u8v": "u1", "s8v": "i1", "u16v": "<u2", "s16v": "<i2", "u32v": "<u4",
            "s32v": "<i4", "u64v": "<u8", "s64v": "<i8", "flag": "?", "c": "i1"}
    for name, code in want.items():
        assert dt.fields[name][0] == np.dtype(code), name
    _check_offsets(btf, tid)
    assert dt.itemsize == 40


def test_event_dtype(btf):
    tid = btf.find("struct event")
    dt = btf.dtype(tid)
    assert dt.itemsize == btf.size(tid) == 128
    f = dt.fields
    assert f["comm"][0] == np.dtype("S16")
    assert f["st"][0] == np.dtype("<u4")
    assert f["in"][0].names == ("a", "b") and f["in"][0].fields["b"][1] == 8
    assert f["in"][0].itemsize == 16
    # anonymous union inlined at its offset
    assert f["as_u32"][1] == f["bytes"][1] == 40
    assert f["bytes"][0] == np.dtype(("u1", (4,)))
    assert f["arr"][0].shape == (3,)
    assert f["grid"][0] == np.dtype(("<i4", (2, 3)))
    assert f["ptr"][0] == np.dtype("<u8") and f["name"][0] == np.dtype("<u8")
    assert f["f"][0] == np.dtype("<f4") and f["d"][0] == np.dtype("<f8")
    assert f["mac"][0] == np.dtype(("u1", (6,)))       # __u8[6] (typedef) stays numeric
    assert f["uc"][0] == np.dtype("S4")                 # unsigned char[4] is a string
    _check_offsets(btf, tid)
    assert btf.dtype(tid) is dt                          # cached


def test_union_packed_flex_dtypes(btf):
    dt = btf.dtype(btf.find("union either"))
    assert dt.itemsize == 16
    assert {n: dt.fields[n][1] for n in dt.names} == {"x": 0, "y": 0, "s": 0}
    assert dt.fields["s"][0] == np.dtype("S12")
    dp = btf.dtype(btf.find("struct packed_s"))
    assert dp.itemsize == 5 and dp.fields["b"][1] == 1
    df = btf.dtype(btf.find("struct flex"))
    assert df.names == ("len",) and df.itemsize == 4     # flexible array omitted
    dn = btf.dtype(btf.find("struct names"))
    assert dn.fields["n"][0] == np.dtype(("S8", (3,)))


def test_bitfield_dtype_and_info(btf):
    tid = btf.find("struct bits")
    dt = btf.dtype(tid)
    assert dt.names == ("tail",) and dt.itemsize == 16 and dt.fields["tail"][1] == 8
    bfs = btf.bitfields(tid)
    assert [b.name for b in bfs] == ["a", "b", "c", "st", "big"]
    assert [(b.bit_size, b.signed) for b in bfs] == [(3, False), (5, False), (4, True),
                                                      (8, False), (40, False)]
    assert bfs[0][:5] == ("a", 0, 0, 3, False)
    nb = btf.bitfields(btf.find("struct nested_bits"))
    assert [b.name for b in nb][:2] == ["inner.a", "inner.b"]
    assert all(b.byte_offset >= 8 for b in nb)


def test_bitfields_decoded(btf, obj):
    raw = obj[1][".data.bits"]
    tid = btf.find("struct bits")
    v = btf.decode(tid, raw)
    assert (v.a, v.b, v.c, v.st, v.big, v.tail) == (5, 17, -3, "ST_RUN", 0x12345678AB, 9)
    assert isinstance(v.st, EnumValue) and v.st.value == 5
    assert btf.encode(tid, v) == raw
    assert btf.encode(tid, dict(a=5, b=17, c=-3, st="ST_RUN", big=0x12345678AB, tail=9)) == raw
    # vectorised extraction agrees
    arr = np.frombuffer(raw * 3, dtype=btf.dtype(tid))
    cols = btf.unpack_bitfields(tid, arr)
    assert cols["c"].tolist() == [-3] * 3 and cols["big"].tolist() == [0x12345678AB] * 3
    assert cols["st"].tolist() == [5] * 3 and cols["a"].tolist() == [5] * 3
    with pytest.raises(ValueError, match=r"value\.a: 8 out of range for bitfield"):
        btf.encode(tid, {"a": 8})
    with pytest.raises(ValueError, match=r"value\.c: -9 out of range"):
        btf.encode(tid, {"c": -9})


# ----------------------------------------------------------------------------- decode/encode

def test_decode_event_from_compiler_image(btf, obj):
    raw = obj[1][".data.ev"]
    tid = btf.find("struct event")
    v = btf.decode(tid, raw)
    assert isinstance(v, Record) and v._fields[:3] == ("pid", "comm", "st")
    assert v.pid == 42 and v["pid"] == 42 and v[0] == 42
    assert v.comm == "bash" and type(v.comm) is str
    assert v.st == "ST_DEAD" and v.st.value == 100
    assert v["in"] == {"a": 7, "b": 1 << 40} and getattr(v, "in").b == 1 << 40
    assert v.as_u32 == 0x01020304 and v.bytes == [4, 3, 2, 1]
    assert v.arr == [1, 2, 3] and v.grid == [[1, 2, 3], [4, 5, -6]]
    assert v.ptr == 0x1000 and v.name == 0
    assert btf.encode(tid, v._replace(ptr=None))[80:88] == bytes(8)
    assert v.f == 1.5 and v.d == -2.25
    assert v.mac == [1, 2, 3, 4, 5, 6] and v.uc == "ab"
    assert repr(v).startswith("event(pid=42, comm='bash', st='ST_DEAD', in=inner(a=7, ")
    # numpy view of the same bytes agrees
    a = np.frombuffer(raw, dtype=btf.dtype(tid))[0]
    assert a["pid"] == 42 and a["comm"] == b"bash" and a["grid"].tolist() == v.grid
    # round trips: Record, dict, tuple, numpy record, bytes
    assert btf.encode(tid, v) == raw
    assert btf.encode(tid, v._asdict()) == raw
    assert btf.encode(tid, tuple(v)) == raw
    assert btf.encode(tid, a) == raw
    assert btf.encode(tid, raw) == raw
    # offset and memoryview
    assert btf.decode(tid, memoryview(b"\0" * 8 + raw), 8) == v


def test_ints_extremes(btf, obj):
    raw = obj[1][".data.ints"]
    tid = btf.find("struct ints")
    v = btf.decode(tid, raw)
    assert v._asdict() == dict(u8v=255, s8v=-128, u16v=65535, s16v=-32768, u32v=2**32 - 1,
                               s32v=-2**31, u64v=2**64 - 1, s64v=-2**63, flag=True, c=ord("x"))
    assert v.flag is True
    assert btf.encode(tid, v) == raw
    for name, bad in [("u8v", 256), ("s8v", -129), ("u16v", -1), ("s32v", 2**31),
                      ("u64v", 2**64), ("s64v", -2**63 - 1)]:
        with pytest.raises(ValueError, match=rf"value\.{name}: {bad} out of range"):
            btf.encode(tid, {name: bad})
    with pytest.raises(TypeError, match=r"value\.u32v: expected int .* got float"):
        btf.encode(tid, {"u32v": 1.5})
    with pytest.raises(TypeError, match=r"value\.u32v: expected int .* got str"):
        btf.encode(tid, {"u32v": "7"})
    assert btf.encode(tid, {"u32v": np.uint32(7)})[8:12] == b"\x07\0\0\0"


def test_missing_fields_zero_and_partial_arrays(btf):
    tid = btf.find("struct event")
    b = btf.encode(tid, {"pid": 1, "arr": [9]})
    assert len(b) == 128
    v = btf.decode(tid, b)
    assert v.pid == 1 and v.arr == [9, 0, 0] and v.comm == "" and v.st == "ST_IDLE"
    assert btf.encode(tid, (1,)) == btf.encode(tid, {"pid": 1})


def test_encode_errors_name_the_path(btf):
    tid = btf.find("struct event")
    with pytest.raises(ValueError, match=r"value\.comm: expected str of at most 15 chars"):
        btf.encode(tid, {"comm": "x" * 16})
    btf.encode(tid, {"comm": "x" * 15})
    with pytest.raises(TypeError, match=r"value\.comm: expected str"):
        btf.encode(tid, {"comm": 5})
    with pytest.raises(ValueError, match=r"value: struct event has no field 'pdi'.*pid"):
        btf.encode(tid, {"pdi": 1})
    with pytest.raises(ValueError, match=r"value\.st: 'ST_NOPE' is not an enumerator"):
        btf.encode(tid, {"st": "ST_NOPE"})
    with pytest.raises(ValueError, match=r"value\.arr: expected at most 3 items"):
        btf.encode(tid, {"arr": [1, 2, 3, 4]})
    with pytest.raises(ValueError, match=r"value\.grid\[1\]\[2\]: 2147483648 out of range"):
        btf.encode(tid, {"grid": [[0, 0, 0], [0, 0, 2**31]]})
    with pytest.raises(ValueError, match=r"value\.in\.b: -1 out of range"):
        btf.encode(tid, {"in": {"b": -1}})
    with pytest.raises(TypeError, match=r"value: expected dict, tuple or Record"):
        btf.encode(tid, 5)
    with pytest.raises(ValueError, match=r"expected 128 bytes"):
        btf.encode(tid, b"\0" * 10)
    with pytest.raises(ValueError, match="has 14 fields"):
        btf.encode(tid, tuple(range(15)))
    with pytest.raises(ValueError, match="need 128 bytes"):
        btf.decode(tid, b"\0" * 127)


def test_enums(btf):
    st = btf.find("enum state")
    assert btf.dtype(st) == np.dtype("<u4")
    assert btf.decode(st, struct.pack("<I", 5)) == "ST_RUN"
    unknown = btf.decode(st, struct.pack("<I", 6))
    assert unknown == 6 and type(unknown) is int
    assert btf.encode(st, "ST_DEAD") == struct.pack("<I", 100)
    assert btf.encode(st, 7) == struct.pack("<I", 7)
    e = EnumValue("ST_RUN", 5)
    assert btf.encode(st, e) == struct.pack("<I", 5) and int(e) == 5
    assert pickle.loads(pickle.dumps(e)).value == 5
    neg = btf.find("enum neg")
    assert btf.decode(neg, struct.pack("<i", -2)) == "NEG_A"
    assert btf.encode(neg, "NEG_A") == struct.pack("<i", -2)
    assert btf.encode(neg, -2) == struct.pack("<i", -2)


def test_union_and_scalars(btf):
    u = btf.find("union either")
    v = btf.decode(u, struct.pack("<Q", 0x4142) + b"\0" * 8)
    assert repr(v).startswith("either(x=16706, y=16706, s='BA')")
    assert btf.encode(u, {"y": 0x4142}) == struct.pack("<Q", 0x4142) + b"\0" * 8
    assert btf.encode(u, {"s": "hello"})[:6] == b"hello\0"
    assert btf.decode(btf.find("u64"), struct.pack("<Q", 2**64 - 1)) == 2**64 - 1
    char16 = btf.type(btf.find("struct event")).members[1].type_id
    assert btf.decode(char16, b"ab\xffc\0junk" + b"\0" * 7) == "ab\ufffdc"
    assert btf.encode(char16, b"abc") == b"abc" + b"\0" * 13
    with pytest.raises(TypeError, match="no dtype|has no size|cannot"):
        btf.dtype(0)


def test_unions_replace_and_conflicts(btf):
    u = btf.find("union either")
    raw = struct.pack("<Q", 0x4100000042) + b"\xff" * 8
    v = btf.decode(u, raw)
    assert v.s == "B" and v.y == 0x4100000042
    assert btf.encode(u, v) == raw                      # exact, despite the lossy str
    w = btf.decode(u, btf.encode(u, v._replace(x=7)))
    assert w.x == 7 and w.y == 0x4100000007
    with pytest.raises(ValueError, match=r"value: fields 'x' and 'y' of union either share "
                                         r"storage .* disagree"):
        btf.encode(u, {"x": 1, "y": 2})
    btf.encode(u, {"x": 0x4142, "y": 0x4142})           # consistent: fine
    # anonymous union inlined in a struct behaves the same
    ev = btf.find("struct event")
    e = btf.decode(ev, btf.encode(ev, {"pid": 1, "as_u32": 0x01020304}))
    assert e.bytes == [4, 3, 2, 1]
    e2 = btf.decode(ev, btf.encode(ev, e._replace(as_u32=5)))
    assert e2.as_u32 == 5 and e2.bytes == [5, 0, 0, 0] and e2.pid == 1
    e3 = btf.decode(ev, btf.encode(ev, e._replace(bytes=[9, 0, 0, 0], pid=2)))
    assert e3.as_u32 == 9 and e3.pid == 2
    with pytest.raises(ValueError, match="share storage"):
        btf.encode(ev, e._replace(as_u32=5, bytes=[6, 0, 0, 0]))


# ----------------------------------------------------------------------------- Record

def test_record_behaviour(btf, obj):
    tid = btf.find("struct event")
    v = btf.decode(tid, obj[1][".data.ev"])
    w = btf.decode(tid, obj[1][".data.ev"])
    assert v == w and hash(v) == hash(w) and v is not w
    assert {v: 1}[w] == 1
    d = v._asdict()
    assert isinstance(d["in"], dict) and d["in"] == {"a": 7, "b": 1 << 40}
    assert isinstance(v["in"], Record)
    assert v == d and d == v
    assert v == tuple(v) and hash(v) == hash(tuple(btfmod._freeze(v)))
    assert v != v._replace(pid=43)
    assert v._replace(pid=43).pid == 43 and v.pid == 42
    assert list(v)[0] == 42 and len(v) == len(v._fields) == 14
    with pytest.raises(AttributeError, match="event has no field 'nope'.*pid"):
        v.nope
    with pytest.raises(KeyError):
        v["nope"]
    with pytest.raises(AttributeError, match="immutable"):
        v.pid = 3
    assert "pid" in dir(v)
    r = pickle.loads(pickle.dumps(v))
    assert r == v and repr(r) == repr(v)
    anon = btf.decode(btf.find("struct bits"), bytes(16))
    assert repr(anon) == "bits(a=0, b=0, c=0, st='ST_IDLE', big=0, tail=0)"
    assert Record("pt", ["x", "y"], [1, 2]) == Record("pt", {"x": 1, "y": 2})
    assert repr(Record("pt", {"x": 1, "y": "a"})) == "pt(x=1, y='a')"
    # struct keys as dict keys; a tuple of the values finds them too
    k = btf.decode(btf.find("struct inner"), struct.pack("<HxxxxxxQ", 1, 2))
    assert {k: "v"}[(1, 2)] == "v"


# ----------------------------------------------------------------------------- hand-built BTF

def test_anon_member_name_collision_and_inline():
    b = Builder()
    i32 = b.int("int", 4, signed=True)
    anon_s = b.struct("", 8, [("x", i32, 0), ("y", i32, 32)])
    anon_u = b.struct("", 4, [("p", i32, 0), ("q", i32, 0)], kind="union")
    outer = b.struct("outer", 16, [("x", i32, 0), ("", anon_s, 32), ("", anon_u, 96)])
    btf = BTF(b.raw())
    dt = btf.dtype(outer)
    assert dt.names == ("x", "_anon0", "p", "q")
    assert dt.fields["_anon0"][1] == 4 and dt.fields["_anon0"][0].names == ("x", "y")
    assert dt.fields["p"][1] == dt.fields["q"][1] == 12
    raw = struct.pack("<iiii", 1, 2, 3, 4)
    v = btf.decode(outer, raw)
    assert v._fields == ("x", "_anon0", "p", "q")
    assert v._anon0.y == 3 and v.p == 4
    assert btf.encode(outer, v) == raw
    assert repr(v) == "outer(x=1, _anon0=struct(x=2, y=3), p=4, q=4)"


def test_old_style_bitfields_without_kind_flag():
    b = Builder()
    u32 = b.int("unsigned int", 4)
    u32_3 = b.int("unsigned int", 4, bits=3)      # pahole (no kind_flag): width on the int
    s32_4 = b.int("int", 4, signed=True, bits=4)
    tid = b.struct("old", 4, [("a", u32_3, 0), ("b", s32_4, 3), ("c", u32, 0)], kflag=0)
    btf = BTF(b.raw())
    ms = btf.type(tid).members
    assert [(m.bit_offset, m.bitfield_size) for m in ms] == [(0, 3), (3, 4), (0, 0)]
    v = btf.decode(tid, struct.pack("<I", 5 | (0xE << 3)))
    assert (v.a, v.b) == (5, -2)
    assert btf.dtype(tid).names == ("c",)


def test_split_btf():
    base = Builder()
    i32 = base.int("int", 4, signed=True)
    basebtf = BTF(base.raw())
    split = Builder(base=basebtf)
    sid = split.struct("mod_s", 8, [("a", i32, 0), ("b", i32, 32)])
    pid = split.add("ptr", "", sid)
    sb = BTF(split.raw(), base=basebtf)
    assert len(basebtf) == 2 and sid == 2 and pid == 3 and len(sb) == 4
    assert sb.find("struct mod_s") == sid and sb.find("int") == i32
    assert sb.type(sid).members[1].name == "b"
    assert sb.c_name(pid) == "struct mod_s *"
    assert sb.decode(sid, struct.pack("<ii", -1, 2)) == (-1, 2)
    assert sb.struct_names() == ["mod_s"]


def test_big_endian_btf():
    b = Builder(endian=">")
    u32 = b.int("unsigned int", 4)
    tid = b.struct("be", 8, [("x", u32, 0), ("y", u32, 32)])
    btf = BTF(b.raw())
    assert btf.dtype(tid).fields["x"][0] == np.dtype(">u4")
    assert btf.decode(tid, struct.pack(">II", 1, 2)) == (1, 2)
    assert btf.encode(tid, (1, 2)) == struct.pack(">II", 1, 2)


def test_bad_blobs():
    with pytest.raises(ValueError, match="magic"):
        BTF(b"\0" * 32)
    with pytest.raises(ValueError, match="too short"):
        BTF(b"\x9f\xeb")
    b = Builder()
    b.int("int", 4)
    raw = bytearray(b.raw())
    raw[24 + 7] = 25  # kind 25 does not exist
    with pytest.raises(ValueError, match="unknown kind"):
        BTF(bytes(raw))


# ----------------------------------------------------------------------------- vmlinux

def test_vmlinux(vmlinux):
    print(f"\nvmlinux: {len(vmlinux)} types parsed in {vmlinux.parse_seconds * 1000:.1f} ms")
    assert len(vmlinux) > 10000
    assert vmlinux.parse_seconds < 2.0     # ~0.02 s measured; generous for slow CI
    tid = vmlinux.find("task_struct", "struct")
    assert vmlinux.find("struct task_struct") == tid
    t = vmlinux.type(tid)
    assert t.kind == "struct" and t.name == "task_struct"
    dt = vmlinux.dtype(tid)
    assert dt.itemsize == vmlinux.size(tid) == t.size
    assert dt.fields["pid"][1] == [m for m in t.members if m.name == "pid"][0].bit_offset // 8
    assert dt.fields["comm"][0].kind == "S"
    assert vmlinux.bitfields(tid)             # task_struct has bitfields
    raw = bytes(range(256)) * (t.size // 256 + 1)
    v = vmlinux.decode(tid, raw[:t.size])
    assert isinstance(v, Record) and v.pid == int.from_bytes(
        raw[dt.fields["pid"][1]:dt.fields["pid"][1] + 4], "little", signed=True)
    assert vmlinux.c_name(vmlinux.find("u32")) == "u32"
    assert "task_struct" in vmlinux.struct_names()
    with pytest.raises(KeyError, match="task_struct"):
        vmlinux.find("task_strct", "struct")


def test_vmlinux_random_round_trip(vmlinux):
    """Decoded records re-encode to exactly their bytes (unions, bools, garbage
    after a NUL included); a _replace() changes only the replaced field."""
    rng = np.random.default_rng(1)
    for name in ("struct task_struct", "struct sk_buff", "struct file", "union bpf_attr"):
        tid = vmlinux.find(name)
        raw = rng.integers(0, 256, vmlinux.size(tid), dtype=np.uint8).tobytes()
        v = vmlinux.decode(tid, raw)
        assert vmlinux.encode(tid, v) == raw, name
    tid = vmlinux.find("struct task_struct")
    v = vmlinux.decode(tid, raw := rng.integers(0, 256, vmlinux.size(tid),
                                                dtype=np.uint8).tobytes())
    out = vmlinux.encode(tid, v._replace(pid=1234))
    off = vmlinux.dtype(tid).fields["pid"][1]
    assert out[off:off + 4] == struct.pack("<i", 1234)
    assert out[:off] == raw[:off] and out[off + 4:] == raw[off + 4:]


def test_vmlinux_bitfields_vectorised_match(vmlinux):
    tid = vmlinux.find("struct sk_buff")
    size = vmlinux.size(tid)
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (4, size), dtype=np.uint8)
    cols = vmlinux.unpack_bitfields(tid, raw.view(vmlinux.dtype(tid)).reshape(-1))
    assert len(cols) > 10
    for row in range(4):
        rec = vmlinux.decode(tid, raw[row].tobytes())
        for name, col in cols.items():
            v = rec
            for part in name.split("."):
                v = getattr(v, part)
            assert int(v) == int(col[row]), name
