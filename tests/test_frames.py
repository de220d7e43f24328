"""Map snapshots as DataFrames, against the real kernel: every column rule, per-CPU modes."""

import os
from contextlib import contextmanager

import numpy as np
import pandas as pd
import pytest

import bpfnb
from bpfnb import frames
from bpfnb.libbpf import _lib

SOURCE = r"""
enum color { RED = 1, GREEN = 2, BLUE = 4 };
enum sign { MINUS = -1, ZERO = 0, PLUS = 1 };

struct fkey {
    u32 pid;
    char comm[16];
};

struct inner { s32 x; s32 y; };

struct fval {
    u64 count;
    enum color color;
    struct inner where;
    u16 hist[4];
    u32 flags: 3;
    u32 level: 5;
    enum color tint: 4;
    char name[8];
    u32 pid;
};

struct pcv { u64 packets; u64 bytes; char tag[8]; };

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, struct fkey); __type(value, struct fval); } things SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __uint(max_entries, 16);
         __type(key, u32); __type(value, struct pcv); } pc_hash SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 4);
         __type(key, u32); __type(value, u64); } pc_arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH); __uint(max_entries, 16);
         __type(key, u64); __type(value, u32); } lru_pc SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 5);
         __type(key, u32); __type(value, s64); } arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 32);
         __type(key, u64); __type(value, u64); } lru SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8);
         __type(key, u32); __type(value, enum sign); } signs SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } rb SEC(".maps");

const volatile u32 target_pid = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    if (pid != target_pid)
        return 0;

    struct fkey k = {};
    k.pid = pid;
    bpf_get_current_comm(&k.comm, sizeof(k.comm));
    struct fval *v = bpf_map_lookup_elem(&things, &k);
    if (v) {
        __sync_fetch_and_add(&v->count, 1);
    } else {
        struct fval init = { .count = 1, .color = BLUE, .where = { -3, 4 },
                             .flags = 5, .level = 17, .tint = GREEN, .pid = 7 };
        init.hist[1] = 11;
        __builtin_memcpy(init.name, "kernel", 7);
        bpf_map_update_elem(&things, &k, &init, BPF_ANY);
    }

    struct pcv *p = bpf_map_lookup_elem(&pc_hash, &pid);
    if (p) {
        p->packets += 1;
        p->bytes += 10;
        __builtin_memcpy(p->tag, "seen", 5);
    } else {
        struct pcv first = { .packets = 1, .bytes = 10 };
        __builtin_memcpy(first.tag, "seen", 5);
        bpf_map_update_elem(&pc_hash, &pid, &first, BPF_NOEXIST);
    }

    u32 zero = 0;
    u64 *c = bpf_map_lookup_elem(&pc_arr, &zero);
    if (c)
        *c += 1;
    u64 cpu = bpf_get_smp_processor_id();
    u32 one = 1, *l = bpf_map_lookup_elem(&lru_pc, &cpu);
    if (l)
        *l += 1;
    else
        bpf_map_update_elem(&lru_pc, &cpu, &one, BPF_NOEXIST);
    return 0;
}
"""


@pytest.fixture
def obj(no_leaks):
    o = bpfnb.load(SOURCE, rodata={"target_pid": os.getpid()})
    yield o
    o.destroy()


@contextmanager
def on_cpu(cpu):
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, saved)


def calls_on_cpus(counts: dict):
    """getppid() counts[cpu] times on each cpu."""
    for cpu, n in counts.items():
        with on_cpu(cpu):
            for _ in range(n):
                os.getppid()


def two_cpus():
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.skip("needs two CPUs this process may run on")
    return cpus[:2]


def test_struct_columns_from_a_kernel_written_entry(obj):
    for _ in range(6):
        os.getppid()
    df = obj.maps.things.to_df()
    assert list(df.columns) == [
        "key.pid", "comm", "count", "color", "where.x", "where.y", "hist",
        "flags", "level", "tint", "name", "value.pid"]
    assert len(df) == 1
    row = df.iloc[0]
    assert row["key.pid"] == os.getpid() and row["value.pid"] == 7
    assert isinstance(row["comm"], str) and row["comm"] and "\0" not in row["comm"]
    assert row["count"] == 6
    assert (row["where.x"], row["where.y"]) == (-3, 4)
    assert isinstance(row["hist"], np.ndarray) and row["hist"].tolist() == [0, 11, 0, 0]
    assert (row["flags"], row["level"]) == (5, 17)
    assert row["color"] == "BLUE" and row["tint"] == "GREEN"
    assert row["name"] == "kernel"
    assert df["comm"].dtype == "str" or df["comm"].dtype == object
    assert df["count"].dtype == np.uint64 and df["where.x"].dtype == np.int32


def test_enums_are_categoricals_of_all_enumerators(obj):
    m = obj.maps.things
    m[(1, "one")] = {"count": 1, "color": "RED", "tint": "BLUE"}
    m[(2, "two")] = {"count": 2, "color": 3, "tint": 0}  # 3 and 0: no enumerator
    df = m.to_df()
    assert isinstance(df["color"].dtype, pd.CategoricalDtype)
    assert list(df["color"].cat.categories) == ["RED", "GREEN", "BLUE", "3"]
    assert df["color"].tolist() == ["RED", "3"]
    assert list(df["tint"].cat.categories) == ["RED", "GREEN", "BLUE", "0"]
    assert df["tint"].tolist() == ["BLUE", "0"]
    signs = obj.maps.signs
    for k, v in enumerate(["PLUS", "MINUS", 5, "ZERO"]):
        signs[k] = v
    sdf = signs.to_df()
    assert list(sdf["value"].cat.categories) == ["MINUS", "ZERO", "PLUS", "5"]
    assert sdf["value"].tolist() == ["PLUS", "MINUS", "5", "ZERO"]


def test_rows_match_per_key_decoding(obj):
    m = obj.maps.things
    rng = np.random.default_rng(7)
    for pid in rng.permutation(40).tolist():
        m[(pid, f"p{pid}")] = {
            "count": pid * 1000, "color": ["RED", "GREEN", "BLUE"][pid % 3],
            "where": (-pid, pid), "hist": [pid, pid + 1, 0, 65535],
            "flags": pid % 8, "level": pid % 32, "tint": "BLUE", "name": f"n{pid}",
            "pid": pid + 1}
    df = m.to_df()
    assert df["key.pid"].tolist() == list(range(40))  # hash maps come sorted by key
    items = sorted(m.items(), key=lambda kv: kv[0].pid)
    for row, (key, val) in zip(df.itertuples(index=False, name=None), items):
        assert row[:6] == (key.pid, key.comm, val.count, val.color, val.where.x,
                           val.where.y)
        assert row[6].tolist() == val.hist
        assert row[7:] == (val.flags, val.level, val.tint, val.name, val.pid)


def test_char_array_ends_at_the_first_nul(obj):
    m = obj.maps.things
    m[{"pid": 3, "comm": b"ab\0garbage"}] = {"name": b"x\0yz"}
    m[{"pid": 4, "comm": "héllo"}] = {"name": "full8ch"}
    df = m.to_df()
    assert df["comm"].tolist() == ["ab", "héllo"]
    assert df["name"].tolist() == ["x", "full8ch"]


def test_scalar_maps_array_order_and_lru(obj):
    arr = obj.maps.arr
    for i, v in enumerate([5, -1, 0, 2**40, -(2**62)]):
        arr[i] = v
    df = arr.to_df()
    assert list(df.columns) == ["key", "value"]
    assert df["key"].tolist() == [0, 1, 2, 3, 4]
    assert df["value"].tolist() == [5, -1, 0, 2**40, -(2**62)]
    assert df["value"].dtype == np.int64
    lru = obj.maps.lru
    for k in (30, 10, 20):
        lru[k] = k * 2
    assert lru.to_df().values.tolist() == [[10, 20], [20, 40], [30, 60]]


def test_empty_map_has_columns(obj):
    df = obj.maps.things.to_df()
    assert len(df) == 0
    assert "comm" in df.columns and "value.pid" in df.columns
    assert len(obj.maps.pc_hash.to_df(percpu="rows")) == 0
    assert list(obj.maps.pc_hash.to_df().columns) == ["key", "packets", "bytes", "tag"]


def test_percpu_hash_modes_agree_with_per_key_lookups(obj):
    a, b = two_cpus()
    calls_on_cpus({a: 3, b: 5})
    m = obj.maps.pc_hash
    ncpu = _lib.possible_cpus()
    per_cpu = m[os.getpid()]
    assert len(per_cpu) == ncpu
    assert (per_cpu[a].packets, per_cpu[b].packets) == (3, 5)

    total = m.to_df()
    assert list(total.columns) == ["key", "packets", "bytes", "tag"]
    assert total.iloc[0].tolist() == [os.getpid(), 8, 80, "seen"]

    wide = m.to_df(percpu="columns")
    assert list(wide.columns) == ["key"] + [f"{f}[{c}]" for f in ("packets", "bytes", "tag")
                                            for c in range(ncpu)]
    for c in range(ncpu):
        assert wide[f"packets[{c}]"].iloc[0] == per_cpu[c].packets
        assert wide[f"bytes[{c}]"].iloc[0] == per_cpu[c].bytes
        assert wide[f"tag[{c}]"].iloc[0] == per_cpu[c].tag

    long = m.to_df(percpu="rows")
    assert list(long.columns) == ["key", "cpu", "packets", "bytes", "tag"]
    assert long["cpu"].tolist() == list(range(ncpu))
    assert long["packets"].tolist() == [v.packets for v in per_cpu]
    assert long["tag"].tolist() == [v.tag for v in per_cpu]


def test_percpu_array_and_lru_percpu(obj):
    a, b = two_cpus()
    calls_on_cpus({a: 4, b: 9})
    arr = obj.maps.pc_arr
    df = arr.to_df()
    assert df["key"].tolist() == [0, 1, 2, 3]
    assert df["value"].tolist() == [13, 0, 0, 0]
    assert df["value"].tolist() == [sum(arr[k]) for k in range(4)]
    wide = arr.to_df(percpu="columns")
    assert wide.loc[0, f"value[{a}]"] == 4 and wide.loc[0, f"value[{b}]"] == 9
    lru = obj.maps.lru_pc  # keyed by the CPU the program ran on
    long = lru.to_df(percpu="rows")
    hits = long[long["value"] > 0]
    assert sorted(zip(hits["key"], hits["cpu"], hits["value"])) == [(a, a, 4), (b, b, 9)]


def test_bad_percpu_mode_and_non_tabular_maps(obj):
    with pytest.raises(ValueError, match="columns"):
        obj.maps.pc_arr.to_df(percpu="max")
    assert not frames.is_tabular(obj.maps.rb)
    with pytest.raises(TypeError, match="stream"):
        obj.maps.rb.to_df()
    dfs = obj.to_dfs()
    assert set(dfs) == {"things", "pc_hash", "pc_arr", "lru_pc", "arr", "lru", "signs"}
    assert all(isinstance(df, pd.DataFrame) for df in dfs.values())


def test_map_without_btf_types(no_leaks):
    # An object built without -g has no BTF for keys and values: raw ints.
    src = r"""
    struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8);
             __uint(key_size, 4); __uint(value_size, 8); } raw SEC(".maps");
    SEC("tracepoint/syscalls/sys_enter_getppid") int nop(void *ctx) { return 0; }
    """
    with bpfnb.load(src, attach=False) as o:
        m = o.maps.raw
        assert m.key_type_id == 0
        for k in (9, 2, 5):
            m[k] = k * 100
        df = m.to_df()
        assert df.values.tolist() == [[2, 200], [5, 500], [9, 900]]


def test_stack_trace_maps_go_to_symbols(no_leaks):
    src = r"""
    struct { __uint(type, BPF_MAP_TYPE_STACK_TRACE); __uint(max_entries, 64);
             __uint(key_size, 4); __uint(value_size, 127 * 8); } stacks SEC(".maps");
    struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8);
             __type(key, s64); __type(value, u32); } ids SEC(".maps");
    const volatile u32 target_pid = 0;
    SEC("tracepoint/syscalls/sys_enter_getppid")
    int grab(void *ctx)
    {
        if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
            return 0;
        s64 id = bpf_get_stackid(ctx, &stacks, BPF_F_USER_STACK);
        u32 one = 1;
        bpf_map_update_elem(&ids, &id, &one, BPF_ANY);
        return 0;
    }
    """
    with bpfnb.load(src, rodata={"target_pid": os.getpid()}) as o:
        os.getppid()
        ids = o.maps.ids.to_df()["key"].tolist()
        assert len(ids) == 1 and ids[0] >= 0
        stacks = o.to_dfs()["stacks"]
        assert stacks["stack_id"].tolist() == ids
