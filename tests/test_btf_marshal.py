"""bpfnb.libbpf.btf.marshal: Type objects back to raw BTF, as base or as split BTF.

Round trips compare what users get from a type (C declaration, size, dtype, fields,
bitfields, decoded values of the same bytes) before and after, on every type of a real
clang object and on a sample of the running kernel's vmlinux types.
"""

import os
import random
import re

import pytest

from bpfnb.libbpf.btf import BTF, Member, Type
from bpfnb.libbpf.btf.marshal import marshal

import btf_objects

VMLINUX = "/sys/kernel/btf/vmlinux"


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    return BTF.from_file(btf_objects.compile_zoo(tmp_path_factory.mktemp("zoo")))


@pytest.fixture(scope="module")
def vmlinux():
    if not os.path.exists(VMLINUX):
        pytest.skip(f"{VMLINUX} not present (kernel without CONFIG_DEBUG_INFO_BTF)")
    return BTF.from_file(VMLINUX)


def _outcome(fn):
    try:
        return repr(fn())
    except (TypeError, ValueError) as ex:
        return f"{type(ex).__name__}: {re.sub(r'#[0-9]+', '#N', str(ex))}"


def describe(btf, tid, delta=0):
    """Everything a user sees of one type, as comparable text; type ids it names are
    given as if ``delta`` were taken from them (values are decoded from bytes drawn
    from the type id so shifted)."""
    def rid(x):
        return x - delta if x else x
    t = btf.type(tid)
    out = [t.kind, t.name, btf.c_name(tid), btf.c_decl(tid), _outcome(lambda: btf.size(tid)),
           _outcome(lambda: btf.dtype(tid)),
           repr([(n, rid(ft), off, bs) for n, ft, off, bs in btf.fields(tid)]),
           repr([(bf, bf.storage_size, rid(bf.type_id)) for bf in btf.bitfields(tid)])]
    try:
        size = btf.size(tid)
    except TypeError:
        return out
    if 0 < size <= 1 << 16 and btf.type(btf.resolve(tid)).kind != "func_proto":
        raw = random.Random(tid - delta).randbytes(size)
        out.append(_outcome(lambda: btf.decode(tid, raw)))
    return out


def test_every_type_of_a_clang_object_round_trips(zoo):
    raw = marshal(list(zoo.types()))
    again = BTF(raw)
    assert len(again) == len(zoo)
    for tid in range(len(zoo)):
        assert describe(again, tid) == describe(zoo, tid), zoo.type(tid)
    ev = again.find("struct event")
    assert ev == zoo.find("struct event")
    assert again.datasec_vars(".rodata") == zoo.datasec_vars(".rodata")
    assert again.datasec_vars(".ksyms") == zoo.datasec_vars(".ksyms")
    value = {"pid": 7, "comm": "zoo", "st": "ZOO_DEAD", "wide": "ZOO_NEG",
             "flags": {"kind": 5, "delta": -3, "big": 0x12345678AB}, "grid": [[1, 2, 3]]}
    assert again.encode(ev, value) == zoo.encode(ev, value)
    # a fixed point: what was read back marshals to the same bytes
    assert marshal(list(again.types())) == raw


def test_vmlinux_sample_round_trips(vmlinux):
    raw = marshal(list(vmlinux.types()))
    again = BTF(raw)
    assert len(again) == len(vmlinux)
    rng = random.Random(13)
    sample = rng.sample(range(1, len(vmlinux)), 1500)
    sample += [vmlinux.find(n) for n in ("struct task_struct", "struct sk_buff",
                                         "union bpf_attr", "struct file")]
    for tid in sample:
        assert describe(again, tid) == describe(vmlinux, tid), vmlinux.type(tid)
    assert again.struct_names() == vmlinux.struct_names()


def _shifted(t, delta):
    """A copy of Type ``t`` with its id and every type reference moved by ``delta``."""
    def f(x):
        return x + delta if x else x
    kw = {s: getattr(t, s) for s in Type.__slots__[3:]}
    kw["type_id"] = f(t.type_id) if t.type_id is not None else None
    kw["index_type"] = f(t.index_type) if t.index_type is not None else None
    if t.members is not None:
        kw["members"] = [m._replace(type_id=f(m.type_id)) for m in t.members]
    if t.params is not None:
        kw["params"] = [(n, f(p)) for n, p in t.params]
    if t.vars is not None:
        kw["vars"] = [(f(v), off, sz) for v, off, sz in t.vars]
    return Type(t.id + delta, t.kind, t.name, **kw)


def test_split_over_vmlinux(zoo, vmlinux):
    delta = len(vmlinux) - 1
    types = [_shifted(t, delta) for t in zoo.types()]
    # and types that lean on the base: a struct holding a kernel list_head and a
    # pointer to a task_struct
    nxt = len(vmlinux) + len(types)
    lh, task = vmlinux.find("struct list_head"), vmlinux.find("struct task_struct")
    types.append(Type(nxt, "ptr", "", size=8, type_id=task))
    types.append(Type(nxt + 1, "struct", "zoo_node", size=24, kind_flag=0, members=[
        Member("node", lh, 0, 0), Member("task", nxt, 128, 0)]))
    raw = marshal(types, base=vmlinux)
    split = BTF(raw, base=vmlinux)
    assert len(split) == len(vmlinux) + len(types)
    assert split._str_base == vmlinux._str_base + vmlinux._str_len
    for tid in range(1, len(zoo)):
        assert describe(split, tid + delta, delta) == describe(zoo, tid), zoo.type(tid)
    assert split.find("struct event") == zoo.find("struct event") + delta
    assert split.find("struct task_struct") == task           # base types stay visible
    assert split.c_decl(nxt + 1) == ("struct zoo_node {\n\tstruct list_head node;\n"
                                     "\tstruct task_struct *task;\n};")
    assert split.dtype(nxt + 1).names == ("node", "task")
    assert marshal(list(split.types()), base=vmlinux) == raw


def test_marshal_refuses_what_it_cannot_write(zoo):
    types = list(zoo.types())
    with pytest.raises(ValueError, match=r"id order from 1: got #2"):
        marshal(types[1:])
    with pytest.raises(ValueError, match="byteorder"):
        marshal(types, byteorder="little")
    big = Type(1, "enum", "e", size=4, signed=False, values=[("A", 0)] * 70000)
    with pytest.raises(ValueError, match="more than BTF can hold"):
        marshal([big])


def test_big_endian_marshal(zoo):
    raw = marshal(list(zoo.types()), byteorder=">")
    assert raw[:2] == b"\xeb\x9f"
    be = BTF(raw)
    ev = zoo.find("struct event")
    assert be.c_decl(ev) == zoo.c_decl(ev)
    assert be.dtype(ev).fields["pid"][0].str == ">u4"
    raw = be.encode(ev, {"pid": 0x01020304, "comm": "be"})
    assert raw[:4] == b"\x01\x02\x03\x04"
    back = be.decode(ev, raw)
    assert (back.pid, back.comm) == (0x01020304, "be")
