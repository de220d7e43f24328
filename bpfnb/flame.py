"""Flame graphs of stack counts, drawn with matplotlib; folded stacks of a map.

``folded_of(source, stack_map=None, symbolizer=None)`` turns a map counting stacks
(BPFNB_COUNT keyed by bpfnb_kstack/bpfnb_ustack, or any map whose key holds
``kstack_id``/``ustack_id`` columns, like profile.bpf.c's), a DataFrame of stacks, or
folded text into folded text (``comm;outer;...;inner count``).

``flame(source, ...)`` draws it: one box per frame, as wide as its share of the
samples, callees on top, siblings in name order. Names are written in the boxes wide
enough for them (cut with "…" when only part fits); boxes too narrow for a name get a
number that a legend below the graph explains (the ``legend`` widest ones), and every
box names itself on hover in an interactive backend (ipympl's ``%matplotlib widget``).
"""

from __future__ import annotations

import io
import zlib

import matplotlib
import matplotlib.patches
import pandas as pd
from matplotlib.figure import Figure

from . import aggregate, symbols

_FONT_PT = 8
_CHAR_EM = 0.6  # an average character's width, in font sizes (DejaVu Sans)


def folded_of(source, *, stack_map=None, symbolizer=None, **options) -> str:
    """Folded stacks of a Map, a DataFrame or folded text (returned as it is).
    ``options`` go to ``symbols.folded`` (count_col, comm_col, kernel_suffix...)."""
    if isinstance(source, str):
        return source
    if isinstance(source, pd.DataFrame):
        return symbols.folded(source, stack_map, symbolizer=symbolizer, **options)
    replayed = getattr(source, "recorded_folded", None)
    if replayed is not None:  # a replayed map (bpfnb.replay): the names recorded live
        return replayed(stack_map=stack_map, symbolizer=symbolizer, **options)
    if not hasattr(source, "lookup_batch"):
        raise TypeError(f"flame/folded want a bpfnb Map, a DataFrame or folded text, "
                        f"not {type(source).__name__}")
    if aggregate.kind(source) in aggregate.TIDY_KINDS:
        df = aggregate.to_df(source, stack_map=stack_map, symbolizer=symbolizer)
        if not {"kstack", "ustack"} & {c.rsplit(".", 1)[-1] for c in df.columns}:
            raise TypeError(f"map {source.name!r} has no stack in its key: key it by "
                            "bpfnb_kstack(ctx, &stacks) or bpfnb_ustack(ctx, &stacks)")
        return symbols.folded(df, symbolizer=symbolizer, **options)
    if stack_map is None:
        stack_map = stack_map_of(source)
    return symbols.folded(source.to_df(), stack_map, symbolizer=symbolizer, **options)


def stack_map_of(source):
    """The one stack-trace map of ``source``'s object (a live one's or a replay's), which
    its stack ids point into; else ValueError asking for ``stack_map=``."""
    found = [m for m in source.object.maps if m.type_name == "stack_trace"]
    if len(found) != 1:
        raise ValueError(f"map {source.name!r}: pass stack_map=obj.maps.NAME, the "
                         f"stack-trace map its stack ids point into "
                         f"(this object has {len(found)})")
    return found[0]


def _tree(text: str) -> list:
    """Folded lines -> [count, {frame: node}] (the root's count is the total)."""
    root = [0, {}]
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            raise ValueError(f"not a folded-stack line ('frame;frame;... count'): {line!r}")
        n = int(count)
        root[0] += n
        node = root
        for frame in stack.split(";"):
            node = node[1].setdefault(frame, [0, {}])
            node[0] += n
    return root


def _colour(name: str):
    # flamegraph.pl's warm palette: a hue from the name, so a function keeps its colour.
    h = zlib.crc32(name.encode()) % 1000 / 1000
    return (0.85 + 0.15 * h, 0.35 + 0.45 * (1 - h), 0.15 + 0.2 * h)


def _fit(name: str, chars: float) -> str:
    """The name, or its start and "…", in ``chars`` characters; "" when under 3 fit."""
    if len(name) <= chars:
        return name
    return name[:int(chars) - 1] + "…" if chars >= 4 else ""


class FlameFigure(Figure):
    """A Figure that shows itself as a PNG in IPython, whether or not pyplot set up the
    display of figures there."""

    def _repr_png_(self):
        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def _figure(figsize):
    backend = matplotlib.get_backend().lower()
    if "inline" in backend or backend == "agg":
        # Not through pyplot: a returned figure is shown once, not twice.
        fig = FlameFigure(figsize=figsize)
        return fig, fig.add_subplot()
    import matplotlib.pyplot as plt  # interactive: a canvas that sends mouse events
    return plt.subplots(figsize=figsize)


def flame(source, *, title: str | None = None, min_share: float = 0.001, legend: int = 12,
          ax=None, figsize=(11, 4.5), stack_map=None, symbolizer=None, **options):
    """A flame graph of ``source`` (see ``folded_of``); returns the matplotlib Figure.

    Frames under ``min_share`` of the samples are left out; ``legend`` bounds the
    legend of numbered narrow frames. ``ax`` draws into an existing Axes."""
    text = folded_of(source, stack_map=stack_map, symbolizer=symbolizer, **options)
    root = _tree(text)
    own = ax is None
    if own:
        fig, ax = _figure(figsize)
    else:
        fig = ax.figure
    total = root[0]
    name = title or getattr(source, "name", None)
    ax.set_title(f"@{name}: {total} samples" if name else f"{total} samples")
    ax.set_yticks([])
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of samples")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if not total:
        ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
        return fig

    boxes = []  # (x, width, depth, name, count)

    def walk(children, x, depth):
        for frame, (count, grandchildren) in sorted(children.items()):
            width = count / total
            if width >= min_share:
                boxes.append((x, width, depth, frame, count))
                walk(grandchildren, x, depth + 1)
            x += width

    walk(root[1], 0.0, 0)
    depth = max(b[2] for b in boxes) + 1
    ax.set_ylim(-0.5, depth - 0.5)
    ax.barh([b[2] for b in boxes], [b[1] for b in boxes], left=[b[0] for b in boxes],
            height=0.92, color=[_colour(b[3]) for b in boxes], edgecolor="white",
            linewidth=0.5)

    # How many characters fit in a box: its width in points over a character's.
    width_pt = ax.get_position().width * fig.get_figwidth() * 72
    narrow = []
    for x, width, level, frame, count in boxes:
        label = _fit(frame, width * width_pt / (_FONT_PT * _CHAR_EM) - 1)
        if label:
            ax.text(x + 0.002, level, label, va="center", fontsize=_FONT_PT, clip_on=True)
        else:
            narrow.append((width, x, level, frame, count))
    narrow.sort(key=lambda b: -b[0])
    handles = []
    for i, (width, x, level, frame, count) in enumerate(narrow[:legend], 1):
        if width * width_pt >= _FONT_PT * _CHAR_EM * len(str(i)) * 0.9:
            ax.text(x + width / 2, level, str(i), va="center", ha="center",
                    fontsize=_FONT_PT - 1, clip_on=True)
        handles.append(matplotlib.patches.Patch(
            color=_colour(frame), label=f"{i}: {frame} ({count}, {100 * count / total:.1f}%)"))
    if handles and own:  # below the graph, in room the figure grows by
        rows = (len(handles) + 1) // 2
        extra = 0.3 + 0.17 * rows
        height = fig.get_figheight()
        fig.set_figheight(height + extra)
        fig.subplots_adjust(bottom=(extra + 0.45) / (height + extra))
        fig.legend(handles=handles, loc="lower left", ncol=2, fontsize=_FONT_PT,
                   frameon=False, title="narrow frames", title_fontsize=_FONT_PT,
                   bbox_to_anchor=(ax.get_position().x0, 0.0), alignment="left")
    elif handles:
        ax.legend(handles=handles, loc="upper right", fontsize=_FONT_PT,
                  title="narrow frames", title_fontsize=_FONT_PT)
    _hover(fig, ax, boxes, total)
    return fig


def _hover(fig, ax, boxes, total):
    """Name the box under the mouse (interactive backends send motion events)."""
    tip = ax.annotate("", xy=(0, 0), xytext=(8, 8), textcoords="offset points",
                      fontsize=_FONT_PT, bbox={"boxstyle": "round", "fc": "lightyellow"},
                      visible=False)

    def on_move(event):
        if event.inaxes is not ax or event.xdata is None:
            return
        level = round(event.ydata)
        hit = next((b for b in boxes if b[2] == level and b[0] <= event.xdata < b[0] + b[1]),
                   None)
        if hit is None:
            if tip.get_visible():
                tip.set_visible(False)
                fig.canvas.draw_idle()
            return
        tip.xy = (event.xdata, event.ydata)
        tip.set_text(f"{hit[3]}\n{hit[4]} samples ({100 * hit[4] / total:.1f}%)")
        tip.set_visible(True)
        fig.canvas.draw_idle()

    fig.canvas.mpl_connect("motion_notify_event", on_move)
