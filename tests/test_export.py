"""Exports read back and compared with what they came from: Parquet, Arrow IPC, CSV,
bpftrace's NDJSON, folded stacks and Prometheus text (parsed by prometheus_client)."""

import json
import os
from pathlib import Path

import pandas as pd
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

import bpfnb
from bpfnb import export

PROGS = Path(__file__).parent / "progs"
N = 64


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """The recorded.bpf.c object after the test opened a file N times, detached, and
    a stream of its events."""
    where = tmp_path_factory.mktemp("export")
    os.mknod(where / "marker")
    obj = bpfnb.load(PROGS / "recorded.bpf.c", rodata={"targ_pid": os.getpid()})
    try:
        stream = obj.maps.events.stream()
        for _ in range(N):
            os.close(os.open(where / "marker", os.O_RDONLY))
        obj.detach()
        yield obj, stream
    finally:
        obj.destroy()


@pytest.mark.parametrize("suffix", [".parquet", ".arrow", ".feather"])
def test_map_and_stream_tables_round_trip(loaded, tmp_path, suffix):
    obj, stream = loaded
    read = {".parquet": lambda p: pq.read_table(p).to_pandas(),
            ".arrow": lambda p: ipc.open_file(p).read_all().to_pandas(),
            ".feather": lambda p: feather.read_table(p).to_pandas()}[suffix]
    for source, name in ((obj.maps.counts, "counts"), (obj.maps.name_len, "name_len"),
                         (stream, "events")):
        path = source.export(tmp_path / f"{name}{suffix}")
        back, want = read(path), source.to_df()
        assert list(back.columns) == list(want.columns)
        for c in want.columns:
            assert list(back[c]) == list(want[c]), c
            assert back[c].dtype.kind == want[c].dtype.kind or want[c].dtype == object, c
    assert (read(tmp_path / f"events{suffix}")["fname"].str.endswith("marker")).sum() == N


def test_csv_round_trip(loaded, tmp_path):
    obj, stream = loaded
    back = pd.read_csv(obj.maps.counts.export(tmp_path / "counts.csv"))
    pd.testing.assert_frame_equal(back, obj.maps.counts.to_df(), check_dtype=False)
    events = pd.read_csv(stream.export(tmp_path / "events.csv"))
    want = stream.to_df()
    assert list(events["seq"]) == list(want["seq"])
    assert list(events["fname"]) == list(want["fname"])


def test_object_export_a_file_per_map_and_stream(loaded, tmp_path):
    obj, stream = loaded
    written = obj.export(tmp_path / "out", streams=[stream])
    assert sorted(p.name for p in written) == ["counts.parquet", "events.parquet",
                                               "name_len.parquet"]
    for p in written:
        assert pq.read_table(p).num_rows == len({"counts": obj.maps.counts,
                                                 "name_len": obj.maps.name_len,
                                                 "events": stream}[p.stem].to_df())
    csvs = obj.export(tmp_path / "csv", format="csv")
    assert [p.suffix for p in csvs] == [".csv", ".csv"]


def test_bpftrace_ndjson(loaded, tmp_path):
    obj, _ = loaded
    lines = (obj.export(tmp_path / "all.ndjson")[0]).read_text().splitlines()
    docs = [json.loads(line) for line in lines]
    assert docs == [json.loads(obj.maps.counts.to_bpftrace_json()),
                    json.loads(obj.maps.name_len.to_bpftrace_json())]
    assert docs[0] == {"type": "map", "data": {"@counts": {
        str(os.getpid()): int(obj.maps.counts[os.getpid()])}}}
    assert docs[1]["type"] == "hist"
    buckets = docs[1]["data"]["@name_len"]
    assert sum(b["count"] for b in buckets) == obj.maps.name_len.hist().df["count"].sum()
    one = obj.maps.name_len.export(tmp_path / "h.ndjson")
    assert json.loads(one.read_text()) == docs[1]


def test_folded_stacks(no_leaks, tmp_path):
    obj = bpfnb.load(r"""
const volatile u32 target_pid = 0;
BPFNB_STACKS(stacks);
BPFNB_COUNT(opens, struct bpfnb_kstack);
SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(void *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) == target_pid)
        bpfnb_count(&opens, bpfnb_kstack(ctx, &stacks));
    return 0;
}
""", rodata={"target_pid": os.getpid()})
    try:
        os.mknod(tmp_path / "m")
        for _ in range(N):
            os.close(os.open(tmp_path / "m", os.O_RDONLY))
        obj.detach()
        path = obj.maps.opens.export(tmp_path / "opens.folded")
        text = path.read_text()
        assert text.rstrip("\n") == obj.maps.opens.folded().rstrip("\n")
        total = sum(int(line.rpartition(" ")[2]) for line in text.splitlines())
        assert total == obj.maps.opens.to_df()["count"].sum() >= N
    finally:
        obj.destroy()


def test_prometheus_text_parses_and_matches_the_maps(loaded):
    obj, _ = loaded
    text = obj.prometheus()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = families["recorded_counts"]
    assert counts.type == "gauge"
    assert [(s.labels, s.value) for s in counts.samples] == [
        ({"key": str(k)}, float(v)) for k, v in zip(obj.maps.counts.to_df()["key"],
                                                   obj.maps.counts.to_df()["value"])]
    h = families["recorded_name_len"]
    assert h.type == "histogram"
    buckets = [s for s in h.samples if s.name.endswith("_bucket")]
    df = obj.maps.name_len.hist().df.sort_values("high")
    assert [s.value for s in buckets[:len(df)]] == list(df["count"].cumsum().astype(float))
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == df["count"].sum()
    assert [float(s.labels["le"]) for s in buckets[:len(df)]] == list(df["high"] - 1)
    count = [s for s in h.samples if s.name.endswith("_count")][0]
    assert count.value == df["count"].sum()
    assert families["recorded_total"].samples[0].value == obj.bss.total
    assert "# TYPE recorded_name_len histogram" in text


def test_prometheus_of_aggregations(no_leaks):
    obj = bpfnb.load(r"""
const volatile u32 target_pid = 0;
BPFNB_COUNT(opens, struct bpfnb_comm);
BPFNB_STATS(flags, u32);
BPFNB_HISTK(lat, u32, 0);
SEC("tracepoint/syscalls/sys_enter_openat")
int on_open(struct trace_event_raw_sys_enter *ctx)
{
    if ((bpf_get_current_pid_tgid() >> 32) != target_pid)
        return 0;
    bpfnb_count(&opens, bpfnb_comm());
    bpfnb_stats(&flags, (u32)ctx->args[2], 5);
    bpfnb_histk(&lat, (u32)ctx->args[2], 100);
    return 0;
}
""", name="agg", rodata={"target_pid": os.getpid()})
    try:
        for _ in range(N):
            os.close(os.open("/etc/hostname", os.O_RDONLY))
        obj.detach()
        families = {f.name: f for f in text_string_to_metric_families(obj.prometheus())}
        opens = families["agg_opens"]
        assert opens.type == "counter"
        assert {(s.name, s.labels["comm"], s.value) for s in opens.samples} == {
            ("agg_opens_total", c, float(v)) for c, v in zip(obj.maps.opens.to_df()["comm"],
                                                            obj.maps.opens.to_df()["count"])}
        stats = obj.maps.flags.to_df()
        assert families["agg_flags_count"].type == "counter"
        assert families["agg_flags_max"].type == "gauge"
        assert sum(s.value for s in families["agg_flags_sum"].samples) == stats["sum"].sum()
        assert sum(s.value for s in families["agg_flags_count"].samples) >= N
        lat = families["agg_lat"]
        counts = [s for s in lat.samples if s.name == "agg_lat_count"]
        assert sorted(s.labels["key"] for s in counts) == sorted(map(str, stats["key"]))
        assert sum(s.value for s in counts) == stats["count"].sum()
    finally:
        obj.destroy()


def test_prometheus_names_and_labels_are_sanitised():
    assert export.metric_name("9x-y.z") == "_9x_y_z"
    assert export.label_name("sender.comm") == "sender_comm"
    assert export.label_name("__x") == "k__x"
    assert export._labels([("comm", 'a"b\\c\nd')]) == '{comm="a\\"b\\\\c\\nd"}'


def test_unknown_suffix_says_which_exist(loaded, tmp_path):
    obj, stream = loaded
    with pytest.raises(ValueError, match=r"\.parquet, \.arrow, \.feather, \.csv"):
        obj.maps.counts.export(tmp_path / "x.xlsx")
    with pytest.raises(TypeError, match="written from a map"):
        stream.export(tmp_path / "x.ndjson")
