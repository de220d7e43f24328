"""Exports: maps, streams and objects to Parquet, Arrow IPC, CSV, bpftrace's NDJSON,
folded stacks and Prometheus' text exposition.

    obj.maps.counts.export("counts.parquet")   # format from the suffix
    obj.maps.events.stream().export("events.arrow")
    obj.export("out/")                          # a file per map (and stream given)
    obj.export("maps.ndjson")                   # what `bpftrace -f json` prints at exit
    print(obj.prometheus())                     # for a textfile collector or a scrape

Suffixes: .parquet; .arrow and .feather (Arrow IPC file format, the second
lz4-compressed as feather writes it); .csv; .ndjson/.json (a map's bpftrace JSON
line: aggregate.to_bpftrace_json); .folded (flame.folded_of, maps counting stacks).
Tables are the rows of ``to_df()`` with their column types (CSV writes them as text).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".feather": "feather", ".csv": "csv",
           ".ndjson": "ndjson", ".json": "ndjson", ".folded": "folded"}
TABLE_FORMATS = ("parquet", "arrow", "feather", "csv")
_SUFFIX = {"parquet": ".parquet", "arrow": ".arrow", "feather": ".feather", "csv": ".csv",
           "ndjson": ".ndjson", "folded": ".folded"}


def format_of(path, format: str | None = None) -> str:
    """The format named, else the one of ``path``'s suffix."""
    if format is not None:
        if format not in _SUFFIX:
            raise ValueError(f"export: unknown format {format!r}; formats: "
                             f"{', '.join(_SUFFIX)}")
        return format
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"export: cannot tell the format of {str(path)!r} from its suffix: "
                         f"name the file .parquet, .arrow, .feather, .csv, .ndjson or "
                         f".folded, or pass format=")
    return FORMATS[suffix]


def export(source, path, format: str | None = None) -> Path:
    """A Map, an EventStream or a DataFrame to ``path``; returns the path."""
    import pandas as pd
    fmt = format_of(path, format)
    path = Path(path)
    is_map = hasattr(source, "lookup_batch")
    if fmt in ("ndjson", "folded"):
        if not is_map:
            raise TypeError(f"export: {fmt} is written from a map (its aggregation or "
                            f"stacks), not from a {type(source).__name__}")
        text = source.to_bpftrace_json() if fmt == "ndjson" else source.folded()
        path.write_text(text + ("\n" if text and not text.endswith("\n") else ""))
        return path
    df = source if isinstance(source, pd.DataFrame) else source.to_df()
    write_table(df, path, fmt)
    return path


def write_table(df, path, fmt: str):
    import pyarrow as pa
    if fmt == "csv":
        df.to_csv(path, index=False)
        return
    table = pa.Table.from_pandas(df, preserve_index=False)
    if fmt == "parquet":
        import pyarrow.parquet as pq
        pq.write_table(table, path)
    else:
        import pyarrow.feather as feather
        feather.write_feather(table, path,
                              compression="uncompressed" if fmt == "arrow" else "lz4")


def export_object(obj, path, format: str | None = None, streams=()) -> list[Path]:
    """Every key/value map of ``obj`` (and each EventStream in ``streams``) to a file
    ``<map>.<format>`` in the directory ``path`` (default format parquet); a path
    ending in .ndjson gets every map's bpftrace JSON line in one file."""
    from . import frames
    path = Path(path)
    if format is None and path.suffix.lower() in (".ndjson", ".json"):
        lines = [m.to_bpftrace_json() for m in obj.maps if frames.is_tabular(m)]
        path.write_text("".join(line + "\n" for line in lines if line))
        return [path]
    fmt = format or "parquet"
    if fmt not in TABLE_FORMATS + ("ndjson",):
        raise ValueError(f"export: a directory of {fmt!r} files? Formats for objects: "
                         f"{', '.join(TABLE_FORMATS)}, ndjson")
    path.mkdir(parents=True, exist_ok=True)
    written = []
    for m in obj.maps:
        if frames.is_tabular(m):
            written.append(export(m, path / f"{m.name}{_SUFFIX[fmt]}", fmt))
    for s in streams:
        if fmt == "ndjson":
            raise ValueError("export: streams have no bpftrace JSON form; pick a table format")
        written.append(export(s, path / f"{s.map_name}{_SUFFIX[fmt]}", fmt))
    return written


# --- Prometheus text exposition ----------------------------------------------------

_METRIC_BAD = re.compile(r"[^a-zA-Z0-9_:]")
_LABEL_BAD = re.compile(r"[^a-zA-Z0-9_]")


def metric_name(text: str) -> str:
    name = _METRIC_BAD.sub("_", text)
    return "_" + name if not name or name[0].isdigit() else name


def label_name(text: str) -> str:
    name = _LABEL_BAD.sub("_", text)
    if not name or name[0].isdigit():
        name = "_" + name
    return "k" + name if name.startswith("__") else name  # __* is Prometheus' own


def _label_value(v) -> str:
    if isinstance(v, (list, tuple)):
        v = ";".join(map(str, v))
    return str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs) -> str:
    return "{" + ",".join(f'{k}="{_label_value(v)}"' for k, v in pairs) + "}" if pairs else ""


def _number(v) -> str:
    v = float(v) if not isinstance(v, (int,)) else v
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "+Inf" if v > 0 else "-Inf"
        if v.is_integer() and abs(v) < 2**53:
            return str(int(v))
        return repr(v)
    return str(v)


def _keys_values(map, df) -> tuple[list[str], list[str]]:
    """The key columns and the value columns of ``map.to_df()``."""
    from . import aggregate, frames
    k = aggregate.kind(map)
    if k in aggregate._VALUE_COLUMNS:
        values = aggregate._VALUE_COLUMNS[k]
        return [c for c in df.columns if c not in values], list(values)
    n_key = len(frames._record_leaves(map.object.btf, map.key_type_id,
                                      map.lookup_batch()[0][:0]))
    return list(df.columns[:n_key]), list(df.columns[n_key:])


def prometheus(obj, prefix: str | None = None) -> str:
    """Every key/value map and numeric .bss/.data variable of ``obj`` in Prometheus'
    text format (0.0.4): metrics named ``<prefix>_<map>[_<value column>]`` (prefix:
    the object's name; counters end in ``_total``), labels from the key columns; histograms as cumulative
    ``_bucket{le=...}`` series with ``_count`` and ``_sum`` (NaN: bpfnb.h's
    histograms keep no sum). Counts and sums of bpfnb.h aggregations are counters,
    everything else gauges."""
    from . import aggregate, frames, hist, show
    import numpy as np
    base = metric_name(prefix if prefix is not None else obj.name)
    out: list[str] = []
    for m in obj.maps:
        if not frames.is_tabular(m):
            continue
        name = metric_name(f"{base}_{m.name}")
        if hist.is_histogram(m) or aggregate.kind(m) == "histk":
            out += _histogram_lines(name, m)
            continue
        df = m.to_df()
        keys, values = _keys_values(m, df)
        counter = aggregate.kind(m) in ("count", "sum", "stats", "avg")
        for col in values:
            if col not in df.columns or not np.issubdtype(df[col].dtype, np.number):
                continue
            metric = name if len(values) == 1 else metric_name(f"{name}_{col}")
            kind = "counter" if counter and col in ("count", "sum") else "gauge"
            metric += "_total" if kind == "counter" else ""  # Prometheus' naming
            out += [f"# HELP {metric} bpfnb map {m.name} of {obj.name}: {col} by "
                    f"{', '.join(keys) or 'nothing'}", f"# TYPE {metric} {kind}"]
            label_cols = [(label_name(c), c) for c in keys]
            for row in df[keys + [col]].itertuples(index=False):
                pairs = [(ln, v) for (ln, _), v in zip(label_cols, row[:-1])]
                out.append(f"{metric}{_labels(pairs)} {_number(row[-1])}")
    for section, var, value in show.user_globals(obj):
        if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
            metric = metric_name(f"{base}_{var}")
            out += [f"# HELP {metric} bpfnb global .{section} {var} of {obj.name}",
                    f"# TYPE {metric} gauge", f"{metric} {_number(value)}"]
    return "".join(line + "\n" for line in out)


def _histogram_lines(name: str, m) -> list[str]:
    import numpy as np
    h = m.hist()
    df = h.df
    keys = [c for c in h.key_columns if c in df.columns]
    lines = [f"# HELP {name} bpfnb histogram {m.name}: le is the bucket's last integer "
             f"(buckets are [low, high) of integers); _sum is NaN (not kept)",
             f"# TYPE {name} histogram"]
    groups = df.groupby(keys, sort=False) if keys else [((), df)]
    for key, g in groups:
        key = key if isinstance(key, tuple) else (key,)
        pairs = [(label_name(c), v) for c, v in zip(keys, key)]
        g = g.sort_values("high")
        total = 0
        for high, count in zip(g["high"], g["count"]):
            total += int(count)
            le = "+Inf" if np.isinf(high) else _number(high - 1)
            lines.append(f"{name}_bucket{_labels(pairs + [('le', le)])} {total}")
        if not len(g) or not np.isinf(g["high"].iloc[-1]):
            lines.append(f"{name}_bucket{_labels(pairs + [('le', '+Inf')])} {total}")
        lines.append(f"{name}_sum{_labels(pairs)} NaN")
        lines.append(f"{name}_count{_labels(pairs)} {total}")
    return lines
