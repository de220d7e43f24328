"""Maps printed like bpftrace, checked as exact text: the test writes every entry
itself through the map API, so the printout is known to the character."""

import html

import pytest

import bpfnb
from bpfnb import show
from bpfnb.libbpf import _lib

SOURCE = r"""
enum worker_state { IDLE = 0, BUSY = 1 };
struct hist { u32 slots[6]; char comm[16]; };
struct flow { u32 saddr; u16 port; };
struct stats { u64 packets; u64 bytes; };
struct bcc_key { u32 whence; u64 slot; };

struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, u32); __type(value, struct hist); } hists SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, u32); __type(value, u64); } counts SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 64);
         __type(key, struct flow); __type(value, struct stats); } flows SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 6);
         __type(key, u32); __type(value, s64); } arr SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 1);
         __type(key, u32); __type(value, u64); } one SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_PERCPU_HASH); __uint(max_entries, 8);
         __type(key, u32); __type(value, u64); } pc SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8);
         __type(key, u32); __type(value, enum worker_state); } states SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_STACK_TRACE); __uint(max_entries, 8);
         __uint(key_size, 4); __uint(value_size, 8 * 8); } stacks SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 4096); } rb SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 8);
         __type(key, struct bcc_key); __type(value, u64); } bcc SEC(".maps");
u64 total = 0;

SEC("raw_tp/sys_enter")
int on_enter(void *ctx)
{
    struct stats s = {};
    bpfnb_ringbuf_output(&rb, &s, sizeof(s));
    return bpf_get_stackid(ctx, &stacks, 0) + total;
}
"""


@pytest.fixture
def obj(no_leaks):
    o = bpfnb.load(SOURCE, attach=False)
    yield o
    o.destroy()


def test_counters_largest_first_ints_stay_ints(obj):
    counts = obj.maps.counts
    assert repr(counts) == "@counts: no entries"
    for key, value in {10: 3, 11: 12, 12: 1, 13: 12}.items():
        counts[key] = value
    assert repr(counts) == "@counts[11]: 12\n@counts[13]: 12\n@counts[10]: 3\n@counts[12]: 1"
    assert counts.to_text(limit=2) == "@counts[11]: 12\n@counts[13]: 12\n... 2 more"
    assert list(counts.to_df()["key"]) == [10, 11, 12, 13]  # the frame stays tidy
    page = counts._repr_html_()
    assert page.startswith("<code>&lt;Map &#x27;counts&#x27; hash key=u32 value=u64")
    assert "<b>@counts</b>" in page and page.index(">11<") < page.index(">10<")


def test_struct_keys_and_values_print_as_fields(obj):
    flows = obj.maps.flows
    flows[{"saddr": 0x0100007f, "port": 80}] = {"packets": 2, "bytes": 120}
    flows[{"saddr": 0x0100007f, "port": 443}] = {"packets": 9, "bytes": 5400}
    assert repr(flows) == (
        "@flows[saddr 16777343, port 443]: (packets 9, bytes 5400)\n"
        "@flows[saddr 16777343, port 80]: (packets 2, bytes 120)")
    obj.maps.states[1] = "BUSY"
    obj.maps.states[2] = "IDLE"
    assert repr(obj.maps.states) == "@states[1]: BUSY\n@states[2]: IDLE"


def test_arrays_skip_zero_entries_and_one_entry_arrays_have_no_key(obj):
    arr = obj.maps.arr
    assert repr(arr) == "@arr: all 6 entries are 0"
    arr[1], arr[4] = -5, 7
    assert repr(arr) == "@arr[4]: 7\n@arr[1]: -5"
    obj.maps.one[0] = 42
    assert repr(obj.maps.one) == "@one: 42"
    ncpu = _lib.possible_cpus()
    obj.maps.pc[3] = list(range(1, ncpu + 1))
    assert repr(obj.maps.pc) == f"@pc[3]: {ncpu * (ncpu + 1) // 2}"  # summed over CPUs


def test_histograms_one_per_key_largest_total_first(obj):
    hists = obj.maps.hists
    hists[7] = {"slots": [1, 2, 0, 5, 0, 0], "comm": "bash"}
    hists[3] = {"slots": [0, 0, 0, 0, 0, 1], "comm": ""}
    assert repr(hists) == "\n".join([
        "@hists[7, comm bash]:",
        "[0, 2)    1 |@@@@@@@@                                |",
        "[2, 4)    2 |@@@@@@@@@@@@@@@@                        |",
        "[4, 8)    0 |                                        |",
        "[8, 16)   5 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|",
        "",
        '@hists[3, comm ""]:',
        "[32, ...) 1 |@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@|"])
    assert hists._repr_html_().endswith(f"</code><pre>{html.escape(repr(hists))}</pre>")
    h = hists.hist()
    assert h.groups().values.tolist() == [[3, "", 1], [7, "bash", 8]]  # key order
    assert h.group(7).df.values.tolist() == [[7, "bash", 0, 2, 1], [7, "bash", 2, 4, 2],
                                            [7, "bash", 4, 8, 0], [7, "bash", 8, 16, 5]]
    assert h.group(comm="bash").equals(h.group(7))
    with pytest.raises(KeyError, match="no label column pid; it has: key, comm"):
        h.group(pid=7)
    for pid in range(100, 112):
        hists[pid] = {"slots": [pid - 99, 0, 0, 0, 0, 0], "comm": "w"}
    text = hists.to_text(limit=3)
    assert [line for line in text.splitlines() if line.startswith("@")] == [
        "@hists[111, comm w]:", "@hists[110, comm w]:", "@hists[109, comm w]:"]
    assert text.endswith("\n... 11 more")


def test_object_printouts_leave_out_empty_stack_ring_and_internals(obj):
    obj.maps.counts[1] = 5
    obj.maps.one[0] = 1
    outs = show.object_printouts(obj)
    assert [p.name for p in outs] == ["counts", "one"]
    assert [p.text for p in outs] == ["@counts[1]: 5", "@one: 1"]
    assert outs[0]._repr_html_().startswith("<div class='bpfnb-map'><b>@counts</b>")
    names = [name for _, name, _ in show.user_globals(obj)]
    assert "total" in names and not [n for n in names if n.startswith("bpfnb_")]
    assert obj.bss.bpfnb_lost == 0  # there by name, but never listed
    obj.maps.bcc[{"whence": 0, "slot": 1000}] = 1  # no log2 slot: said, the rest printed
    assert [p.text for p in show.object_printouts(obj)] == [
        "@counts[1]: 5", "@one: 1",
        "@bcc: not printed: map 'bcc': slot numbers up to 1000 hold counts, beyond log2 "
        "slots (0..64); for linear buckets, .hist(kind='linear', min=..., step=...)"]


def test_maps_not_loaded_print_their_types(need_root):
    opened = bpfnb.open(SOURCE)
    try:
        assert repr(opened.maps.counts) == (
            "<Map 'counts' hash key=u32 value=u64 max_entries=64>")
        assert opened.maps.counts._repr_html_().startswith("<code>&lt;Map")
    finally:
        opened.destroy()
    assert repr(opened.maps.counts) == "<Map 'counts' (destroyed)>"
