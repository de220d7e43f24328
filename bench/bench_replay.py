"""Replaying recorded events into a DataFrame: bpfnb.replay(path).maps.events.stream().to_df()
against pandas.read_parquet of the same file, same run.

A recording (RECORDING.md format) of 1,000,000 execsnoop-like events (pid, ppid, comm,
filename, ts, an enum category as a pandas categorical, and the receive `_time`) is
written to streams/events.parquet in row groups of 65,536 rows, as a running recording
writes them. Each repetition opens the recording afresh (nothing cached) and the best
of BENCH_RUNS is kept. Prints JSON lines; target: replay within 2x of pandas.
"""

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import bpfnb  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS", "1000000"))
RUNS = int(os.environ.get("BENCH_RUNS", "5"))
ROW_GROUP = 65_536
T0 = time.time_ns()


def events(n: int) -> pd.DataFrame:
    i = np.arange(n, dtype=np.int64)
    comms = np.array(["bash", "sshd", "python3", "systemd", "cron", "git", "make", "cc1",
                      "ld", "node"], dtype=object)
    files = np.array([f"/usr/lib/x86_64-linux-gnu/lib{k}.so.{k % 7}" for k in range(500)],
                     dtype=object)
    rng = np.random.default_rng(1)
    return pd.DataFrame({
        "pid": rng.integers(1, 4_000_000, n).astype(np.uint32),
        "ppid": rng.integers(1, 4_000_000, n).astype(np.uint32),
        "comm": comms[rng.integers(0, len(comms), n)],
        "filename": files[rng.integers(0, len(files), n)],
        "ts": (i * 997 + 10**12).astype(np.uint64),
        "category": pd.Categorical.from_codes(rng.integers(0, 3, n), ["EXEC", "OPEN", "EXIT"]),
        "_time": T0 + i * 1000,
    })


def write_recording(path: Path, n: int) -> Path:
    (path / "streams").mkdir(parents=True)
    table = pa.Table.from_pandas(events(n), preserve_index=False)
    file = path / "streams" / "events.parquet"
    with pq.ParquetWriter(file, table.schema) as w:
        for start in range(0, n, ROW_GROUP):
            w.write_table(table.slice(start, ROW_GROUP))
    iso = pd.Timestamp(T0, unit="ns", tz="UTC").isoformat()
    manifest = {"format": "bpfnb-recording", "version": 1, "state": "complete", "error": None,
                "name": "execsnoop", "source": None, "hostname": "bench", "started": iso,
                "stopped": pd.Timestamp(T0 + n * 1000, unit="ns", tz="UTC").isoformat(),
                "interval": 1.0, "snapshots": 0, "programs": [], "maps": {},
                "streams": {"events": {"file": "streams/events.parquet",
                                       "record_type": "struct event", "rows": n, "lost": 0,
                                       "dropped": 0}},
                "globals": None, "output": None}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return file


def best(fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(RUNS):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main():
    d = Path(tempfile.mkdtemp(prefix="bpfnb-bench-replay-"))
    try:
        file = write_recording(d / "rec", ROWS)
        pandas_s, expected = best(lambda: pd.read_parquet(file))
        replay_s, got = best(lambda: bpfnb.replay(d / "rec").maps.events.stream().to_df())
        assert len(got) == ROWS and got.equals(expected.drop(columns="_time")), \
            "the replay does not give the recorded rows"
        size = file.stat().st_size
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print(json.dumps({"bench": "replay", "metric": f"stream_to_df_{ROWS}_events",
                      "value": round(replay_s * 1000, 1), "unit": "ms",
                      "baseline": round(pandas_s * 1000, 1),
                      "baseline_name": "pandas.read_parquet",
                      "ratio": round(replay_s / pandas_s, 2), "target_ratio": 2.0,
                      "file_mb": round(size / 2**20, 1), "runs": RUNS}))


if __name__ == "__main__":
    main()
