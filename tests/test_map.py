"""Typed maps against the real kernel: struct keys/values, per-CPU, LRU, arrays, batches."""

import os

import numpy as np
import pytest

import bpfnb
from bpfnb.libbpf import _lib

TYPES = r"""
enum run_state { ST_IDLE = 0, ST_RUNNING = 1, ST_BLOCKED = 7 };

struct thing_key {
    u32 pid;
    char comm[16];
};

struct point { s32 x; s32 y; };

struct val {
    u64 count;
    enum run_state st;
    struct point where;
    u16 hist[4];
};

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 16);
         __type(key, struct thing_key); __type(value, struct val); } things SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY); __uint(max_entries, 4);
         __type(key, u32); __type(value, u64); } percpu SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_LRU_HASH); __uint(max_entries, 8);
         __type(key, u64); __type(value, u64); } lru SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 3);
         __type(key, u32); __type(value, s64); } arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 20000);
         __type(key, u32); __type(value, u64); } big SEC(".maps");

const volatile u32 target_pid = 0;

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
        return 0;
    u32 zero = 0;
    u64 *v = bpf_map_lookup_elem(&percpu, &zero);
    if (v)
        *v += 1;
    struct thing_key k = {};
    k.pid = target_pid;
    bpf_get_current_comm(&k.comm, sizeof(k.comm));
    struct val *cur = bpf_map_lookup_elem(&things, &k);
    if (cur) {
        cur->count++;
    } else {
        struct val init = { .count = 1, .st = ST_RUNNING, .where = { -3, 4 } };
        init.hist[2] = 9;
        bpf_map_update_elem(&things, &k, &init, BPF_ANY);
    }
    return 0;
}
"""


@pytest.fixture
def obj(no_leaks):
    o = bpfnb.load(TYPES, rodata={"target_pid": os.getpid()})
    yield o
    o.destroy()


def test_struct_key_and_value_from_the_kernel(obj):
    for _ in range(25):
        os.getppid()
    items = obj.maps.things.items()
    assert len(items) == 1
    key, val = items[0]
    assert key.pid == os.getpid()
    assert isinstance(key.comm, str) and key.comm
    assert val.count == 25
    assert val.st == "ST_RUNNING" and val.st.value == 1
    assert (val.where.x, val.where.y) == (-3, 4)
    assert val.hist == [0, 0, 9, 0]
    assert obj.maps.things[key].count == 25
    assert obj.maps.things[{"pid": key.pid, "comm": key.comm}].count == 25


def test_struct_update_round_trip(obj):
    m = obj.maps.things
    m[{"pid": 1, "comm": "init"}] = {"count": 5, "st": "ST_BLOCKED", "where": (1, 2),
                                      "hist": [1, 2, 3, 4]}
    v = m[(1, "init")]
    assert (v.count, v.st, v.where.x, v.where.y, v.hist) == (5, "ST_BLOCKED", 1, 2, [1, 2, 3, 4])
    assert v.st.value == 7
    with pytest.raises(KeyError):
        m[(2, "nobody")]
    del m[(1, "init")]
    assert (1, "init") not in m
    with pytest.raises((ValueError, TypeError), match="comm"):
        m[{"pid": 1, "comm": "x" * 40}] = {"count": 1}


def test_percpu_array_values_per_cpu(obj):
    for _ in range(40):
        os.getppid()
    per_cpu = obj.maps.percpu[0]
    assert len(per_cpu) == _lib.possible_cpus()
    assert sum(per_cpu) == 40
    keys, values = obj.maps.percpu.lookup_batch()
    assert values.shape == (4, _lib.possible_cpus())
    assert int(values[0].sum()) == 40
    obj.maps.percpu[1] = [3] * _lib.possible_cpus()
    assert obj.maps.percpu[1] == [3] * _lib.possible_cpus()


def test_lru_hash_evicts(obj):
    m = obj.maps.lru
    for i in range(100):
        m[i] = i * 2
    assert 0 < len(m) <= 8 + _lib.possible_cpus() * 8
    for k, v in m.items():
        assert v == 2 * k


def test_array_map(obj):
    m = obj.maps.arr
    assert m.items() == [(0, 0), (1, 0), (2, 0)]
    m[1] = -5
    assert m[1] == -5
    m.clear()
    assert m.values() == [0, 0, 0]
    with pytest.raises(bpfnb.BPFError):
        m[7] = 1


def test_batch_equals_per_key_on_10000_entries(obj):
    m = obj.maps.big
    n = 10000
    keys = np.arange(n, dtype="<u4")
    for k in keys.tolist():
        m[k] = k * 3 + 1
    kb, vb = m.lookup_batch(chunk=1024)
    assert len(kb) == n
    batch = dict(zip(kb.tolist(), vb.tolist()))
    per_key = {k: m.lookup(k) for k in m.keys()}
    assert batch == per_key == {k: k * 3 + 1 for k in range(n)}
    raw_k, raw_v = m._lookup_per_key_raw()
    assert len(raw_k) == 4 * n
    m.clear()
    assert len(m) == 0


def test_map_types_reported(obj):
    assert obj.maps.things.key_type == "struct thing_key"
    assert obj.maps.things.value_type == "struct val"
    assert obj.maps.percpu.type_name == "percpu_array"
    assert obj.maps.things.value_dtype.itemsize == obj.maps.things.value_size
