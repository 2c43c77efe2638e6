"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot global state).

- :func:`table_figure`: per paper table, published vs reproduced bars per row, one bar series per
  (dataset, scale) block, each reproduced bar with its 95 % interval as an error bar (where the records
  give one); figures not comparable to the paper are grey and hatched. In a trained table, the oracle
  bound of the same variant stands beside each reproduced bar as an unfilled, dashed bar.
- :func:`sweep_figure`: a table that is a sweep (``plot:`` in method.yaml), drawn by :func:`table_figure` in
  place of the bars: the metric against ``x``, one line per ``series`` value per (dataset, scale) block, each
  point's 95 % interval as an error bar, and every column with no ``x`` (e.g. no NMS) as a dashed horizontal
  reference line labelled with the column's label; published points, where the paper gives numbers, dotted.
- :func:`speed_figure`: ms per image against accuracy, once ``speed`` records exist.
- :func:`curve_figure`: learning curves (``poseharness bench curve``), AP against optimiser steps and CPU-minutes.
- :func:`crowd_figure`: model time per image and per person against persons per image (``poseharness bench
  crowd``), one line per method: a top-down method's cost grows with the crowd, a bottom-up one's hardly.
All are saved as PNG and SVG by :func:`save_figure`, atomically and reproducibly (no dates, fixed ids).
"""
from __future__ import annotations

import textwrap
from pathlib import Path

from ..io import atomic_path
from .tables import OK, Block, SpeedPoint, TableView

PUBLISHED = "#1f4e79"
COMPARABLE = ["#e07b00", "#c0392b", "#8e44ad"]
NOT_COMPARABLE = ["#a9adb3", "#c9ccd1", "#8d9096"]
HATCHES = ["//", "\\\\", "xx", ".."]
SERIES = ["#e07b00", "#2a9d8f", "#c0392b", "#8e44ad", "#6b8e23", "#d4a017", "#17becf"]
REFERENCE = ["#555555", "#8d9096", "#2f3b52"]
MARKERS = ["o", "s", "^", "D"]
INTERVAL_LABEL = "95 % interval (seeds × images)"


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _series_style(block: Block, i_cmp: int, i_nc: int) -> dict:
    if block.comparable:
        return {"color": COMPARABLE[i_cmp % len(COMPARABLE)], "edgecolor": "black", "linewidth": 0.5}
    return {"color": NOT_COMPARABLE[i_nc % len(NOT_COMPARABLE)], "edgecolor": "#555555",
            "hatch": HATCHES[i_nc % len(HATCHES)], "linewidth": 0.5}


def table_figure(view: TableView):
    """Bars for one paper table, one subplot per metric; None when the table has no row at all.

    x: the table's variant rows then its cited rows; y: the metric in percent (0-100). A table that is a
    sweep (``plot:``) is drawn by :func:`sweep_figure` instead.
    """
    if view.table.plot is not None:
        return sweep_figure(view)
    variant_rows = list(view.blocks[0].rows)
    labels = [r.label for r in variant_rows] + [f"{r.label} (cited)" for r in view.cited]
    if not labels:
        return None
    blocks = [b for b in view.blocks if not b.empty]
    n_series = 1 + len(blocks) + sum(b.has_oracle for b in blocks)
    width = min(18.0, max(6.0, 0.55 * len(labels) * n_series * len(view.metrics) + 2.0))
    fig = _figure(width, 4.6)
    axes = fig.subplots(1, len(view.metrics), squeeze=False)[0]
    bar = 0.8 / n_series
    kind_word = "oracle" if view.oracle_table else "reproduced"
    for ax, metric in zip(axes, view.metrics):
        xs = range(len(labels))
        published = [r.published.get(metric) for r in variant_rows] + [r.published.get(metric)
                                                                      for r in view.cited]
        offset0 = -0.4 + bar / 2
        _bars(ax, [x + offset0 for x in xs], published, bar, label="published (paper)",
              color=PUBLISHED, edgecolor="black", linewidth=0.5)
        i_cmp = i_nc = 0
        s = 0
        errors_labelled = False
        for block in blocks:
            s += 1
            style = _series_style(block, i_cmp, i_nc)
            i_cmp, i_nc = i_cmp + block.comparable, i_nc + (not block.comparable)
            tag = "" if block.comparable else " — not comparable"
            pos = [x + offset0 + s * bar for x in range(len(variant_rows))]
            measured = [r.reproduced[metric] for r in block.rows]
            _bars(ax, pos, [m.percent if m.status == OK else None for m in measured], bar,
                  label=f"{kind_word}: {block.dataset}/{block.scale}{tag}",
                  tops=[max(m.percent, m.hi) if m.status == OK and m.has_interval else None for m in measured],
                  **style)
            for x, m in zip(pos, measured):
                if m.status != OK:
                    ax.text(x, 1.0, m.status, rotation=90, ha="center", va="bottom", fontsize=6.5,
                            color="#555555")
            # The 95 % interval over seeds and images (asymmetric), where the records give one.
            ex = [(x, m) for x, m in zip(pos, measured) if m.status == OK and m.has_interval]
            if ex:
                ax.errorbar([x for x, _ in ex], [m.percent for _, m in ex],
                            yerr=[[max(0.0, m.percent - m.lo) for _, m in ex],
                                  [max(0.0, m.hi - m.percent) for _, m in ex]],
                            fmt="none", ecolor="black", elinewidth=0.9, capsize=2.5, zorder=4,
                            label=None if errors_labelled else "95 % interval (seeds × images)")
                errors_labelled = True
            if block.has_oracle:
                # The oracle bound of the same variant, beside the reproduced bar.
                s += 1
                bounds = [r.oracle.get(metric) for r in block.rows]
                bpos = [x + offset0 + s * bar for x in range(len(variant_rows))]
                _bars(ax, bpos, [m.percent if m is not None and m.status == OK else None for m in bounds],
                      bar, label=f"oracle bound: {block.dataset}/{block.scale}{tag}", fill=False,
                      edgecolor=style["color"] if block.comparable else "#555555", linestyle="--",
                      linewidth=0.9)
                for x, m in zip(bpos, bounds):
                    if m is None or m.status != OK:
                        ax.text(x, 1.0, "no bound", rotation=90, ha="center", va="bottom", fontsize=6.5,
                                color="#555555")
        ax.set_xticks(list(xs), labels, rotation=30 if max(map(len, labels)) > 8 else 0,
                      ha="right" if max(map(len, labels)) > 8 else "center", fontsize=8)
        ax.set_ylim(0, 108)            # headroom for the value labels over a bar near 100
        ax.set_yticks(range(0, 101, 20))
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(axis="y", color="#e4e7ec", linewidth=0.6)
        ax.set_axisbelow(True)
    # Below the axes, so it never hides a bar.
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncols=min(3, len(names)), fontsize=7,
               frameon=False)
    not_run = "" if blocks else " — not run yet"
    title = f"{view.method} {view.table.name}: {view.table.caption}{not_run}"
    fig.suptitle(textwrap.fill(title, width=int(width * 11)), fontsize=10)
    return fig


def _series_text(value) -> str:
    return "" if value is None else str(value)


def _sweep_lines(view: TableView, rows, coords: dict, metric: str, published: bool = False):
    """``(lines, references)`` of one block's ``rows`` (or, with ``published``, of the paper's figures):
    lines: series value -> [(x, value, Measured | None)] sorted by x; references: [(row, value, Measured | None)]
    for the columns whose x is null. Figures that are not :data:`OK` (not run, ...) are left out."""
    lines: dict = {}
    references = []
    for row in rows:
        if row.cited or row.variant not in coords:
            continue
        x, series = coords[row.variant]
        if published:
            m, value = None, row.published.get(metric)
        else:
            m = row.reproduced.get(metric)
            value = m.percent if m is not None and m.status == OK else None
        if value is None:
            continue
        if x is None:
            references.append((row, value, m))
        else:
            lines.setdefault(series, []).append((float(x), value, m))
    for points in lines.values():
        points.sort(key=lambda p: p[0])
    return lines, references


def sweep_figure(view: TableView):
    """A table that is a sweep: one panel per plotted metric, the metric (%) against ``plot.x``; one line per
    ``plot.series`` value and (dataset, scale) block, each point with its 95 % interval as an error bar where
    the records give one; each column whose x is null a dashed horizontal line (its interval a light band),
    labelled with the column's label. Blocks not comparable to the paper say so in the title (and, when
    there are several blocks, in the legend)."""
    plot = view.table.plot
    blocks = [b for b in view.blocks if not b.empty]
    multi = len(blocks) > 1
    # Series in column order, so colours follow the table.
    order: list = []
    for coords in view.sweep.values():
        for variant in view.table.columns:
            if variant in coords and coords[variant][0] is not None and coords[variant][1] not in order:
                order.append(coords[variant][1])
    colour = {v: SERIES[i % len(SERIES)] for i, v in enumerate(order)}
    paper_coords = view.sweep.get("paper") or next(iter(view.sweep.values()), {})
    xs_all = sorted({float(x) for coords in view.sweep.values() for x, _ in coords.values() if x is not None})
    fig = _figure(min(18.0, max(6.4, 4.8 * len(plot.metrics) + 1.0)), 4.8)
    axes = fig.subplots(1, len(plot.metrics), squeeze=False)[0]
    for i_ax, (ax, metric) in enumerate(zip(axes, plot.metrics)):
        interval_labelled = i_ax > 0             # the legend is taken from the first panel only
        n_ref = 0
        for i_block, block in enumerate(blocks):
            tag = (f" · {block.dataset}/{block.scale}" + ("" if block.comparable else " — not comparable")
                   if multi else "")
            marker = MARKERS[i_block % len(MARKERS)]
            lines, references = _sweep_lines(view, block.rows, view.sweep.get(block.scale, {}), metric)
            for series in order:
                points = lines.get(series, [])
                ax.plot([x for x, _, _ in points], [v for _, v, _ in points], marker=marker, markersize=4,
                        linewidth=1.4, color=colour[series], label=f"{_series_text(series)}{tag}", zorder=3)
                ex = [(x, v, m) for x, v, m in points if m is not None and m.has_interval]
                if ex:
                    ax.errorbar([x for x, _, _ in ex], [v for _, v, _ in ex],
                                yerr=[[max(0.0, v - m.lo) for _, v, m in ex], [max(0.0, m.hi - v) for _, v, m in ex]],
                                fmt="none", ecolor=colour[series], elinewidth=0.9, capsize=2.5, zorder=4,
                                label=None if interval_labelled else INTERVAL_LABEL)
                    interval_labelled = True
            for row, value, m in references:
                ref = REFERENCE[n_ref % len(REFERENCE)]
                n_ref += 1
                ax.axhline(value, linestyle="--", linewidth=1.2, color=ref, label=f"{row.label}{tag}", zorder=2)
                if m is not None and m.has_interval:
                    ax.axhspan(m.lo, m.hi, color=ref, alpha=0.12, linewidth=0, zorder=1)
        # What the paper printed, where it printed numbers: dotted, hollow markers.
        lines, references = _sweep_lines(view, view.blocks[0].rows, paper_coords, metric, published=True)
        for series in order:
            points = lines.get(series, [])
            if points:
                ax.plot([x for x, _, _ in points], [v for _, v, _ in points], linestyle=":", marker="o",
                        markersize=4, markerfacecolor="none", color=PUBLISHED,
                        label=f"published (paper): {_series_text(series)}", zorder=3)
        for row, value, _ in references:
            ax.axhline(value, linestyle=":", linewidth=1.2, color=PUBLISHED, label=f"published (paper): {row.label}")
        if 0 < len(xs_all) <= 12:
            ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all], fontsize=8)
        ax.set_xlabel(plot.x)
        ax.set_ylabel(f"{metric} (%)")
        ax.grid(color="#e4e7ec", linewidth=0.6)
        ax.set_axisbelow(True)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(names)), fontsize=7,
                   frameon=False, title=plot.series, title_fontsize=7)
    not_run = "" if blocks else " — not run yet"
    title = textwrap.fill(f"{view.method} {view.table.name}: {view.table.caption}{not_run}", width=90)
    banners = [f"{b.dataset}/{b.scale}: {b.banner}" for b in blocks if b.banner]
    fig.suptitle("\n".join([title, *banners]), fontsize=10)
    return fig


def _bars(ax, xs, values, width, tops=None, **style):
    """Bars at ``xs`` for the non-None ``values`` (percent), each labelled with its value: over the bar,
    or over ``tops[i]`` where given (the top of an error bar)."""
    tops = tops or [None] * len(values)
    triples = [(x, v, t) for x, v, t in zip(xs, values, tops) if v is not None]
    if not triples:
        # Keep the legend entry: an empty series still says what would be there.
        ax.bar([], [], width, **style)
        return
    px, pv, pt = zip(*triples)
    container = ax.bar(px, pv, width, **style)
    plain = [f"{v:.1f}" if t is None else "" for v, t in zip(pv, pt)]
    ax.bar_label(container, labels=plain, fontsize=6.5, padding=1)
    for x, v, t in zip(px, pv, pt):
        if t is not None:
            ax.annotate(f"{v:.1f}", (x, t), xytext=(0, 2), textcoords="offset points", ha="center",
                        va="bottom", fontsize=6.5)


def speed_figure(points: list[SpeedPoint]):
    """Accuracy (percent) against milliseconds per image; None when there is no point."""
    if not points:
        return None
    fig = _figure(6.4, 4.4)
    ax = fig.subplots()
    groups: dict[tuple[str, str, bool], list[SpeedPoint]] = {}
    for p in points:
        groups.setdefault((p.dataset, p.scale, p.comparable), []).append(p)
    for i, ((dataset, scale, comparable), pts) in enumerate(sorted(groups.items())):
        color = COMPARABLE[i % len(COMPARABLE)] if comparable else NOT_COMPARABLE[i % len(NOT_COMPARABLE)]
        ax.scatter([p.ms_per_image for p in pts], [p.accuracy for p in pts], s=40,
                   facecolors=color if comparable else "none", edgecolors=color if comparable else "#555555",
                   label=f"{dataset}/{scale}" + ("" if comparable else " — not comparable"))
        for p in pts:
            ax.annotate(p.label, (p.ms_per_image, p.accuracy), textcoords="offset points",
                        xytext=(4, 3), fontsize=7)
    ms = [p.ms_per_image for p in points]
    if max(ms) / min(ms) > 10:
        ax.set_xscale("log")
    ax.set_xlabel("time per image (ms, lower is faster)")
    ax.set_ylabel(f"{points[0].metric} (%)")
    ax.grid(color="#e4e7ec", linewidth=0.6)
    ax.legend(fontsize=7)
    ax.set_title(f"{points[0].method}: speed vs accuracy", fontsize=10)
    return fig


def curve_figure(curves: list[dict], title: str):
    """Learning curves: AP (%) against optimiser steps (left) and CPU-minutes (right), one line per (curve,
    variant). ``curves``: the JSON documents ``bench curve --out`` writes (``label`` and ``rows``); None if empty."""
    lines = [(f"{c['label']} {variant}", [r for r in c["rows"] if r["variant"] == variant])
             for c in curves for variant in dict.fromkeys(r["variant"] for r in c["rows"])]
    if not lines:
        return None
    fig = _figure(9.6, 3.8)
    axes = fig.subplots(1, 2, sharey=True)
    for label, rows in lines:
        for ax, x in zip(axes, ("step", "cpu_minutes")):
            ax.plot([r[x] for r in rows], [100 * r["AP"] for r in rows], marker="o", markersize=3, label=label)
    axes[0].set_xlabel("optimiser steps")
    axes[1].set_xlabel("CPU-minutes (training wall time x compute threads)")
    axes[0].set_ylabel("AP (%)")
    for ax in axes:
        ax.grid(color="#e4e7ec", linewidth=0.6)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def crowd_figure(doc: dict):
    """Model ms per image (left) and per person (right) against persons per image, one line per (method, weights)
    of a ``bench crowd --out`` document; the y axes logarithmic when the times span more than 10x. None when the
    document has no row."""
    lines: dict[tuple, list[dict]] = {}
    for r in doc.get("rows") or ():
        lines.setdefault((r["method"], r["view"], r.get("weights", "")), []).append(r)
    if not lines:
        return None
    fig = _figure(9.6, 3.8)
    axes = fig.subplots(1, 2, sharex=True)
    for i, ((method, view, weights), rows) in enumerate(lines.items()):
        rows = sorted(rows, key=lambda r: r["persons_per_image"])
        style = {"color": SERIES[i % len(SERIES)], "marker": MARKERS[i % len(MARKERS)], "markersize": 4,
                 "linestyle": "-" if view == "top-down" else "--"}
        label = f"{method} ({view}{'' if weights in ('', 'random-init') else ', trained'})"
        xs = [r["persons_per_image"] for r in rows]
        axes[0].plot(xs, [r["model_ms_per_image"] for r in rows], label=label, **style)
        per = [(x, r["model_ms_per_person"]) for x, r in zip(xs, rows) if r.get("model_ms_per_person")]
        axes[1].plot([x for x, _ in per], [v for _, v in per], label=label, **style)
    for ax, key, name in ((axes[0], "model_ms_per_image", "model ms per image"),
                          (axes[1], "model_ms_per_person", "model ms per person")):
        values = [r[key] for rows in lines.values() for r in rows if r.get(key)]
        if values and max(values) / min(values) > 10:
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            plain = FuncFormatter(lambda v, _: f"{v:g}")       # 40, not 4 x 10^1
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel("persons per image")
        ax.set_ylabel(name)
        ax.grid(color="#e4e7ec", linewidth=0.6)
    xs = sorted({r["persons_per_image"] for rows in lines.values() for r in rows})
    if xs and min(xs) > 0 and max(xs) / min(xs) >= 8:
        for ax in axes:
            ax.set_xscale("log", base=2)
            ax.set_xticks(xs, [f"{x:g}" for x in xs])
    axes[0].legend(fontsize=7)
    threads = doc.get("threads")
    fig.suptitle(f"model time against persons per image ({doc.get('device', '?')}"
                 + (f", {threads} thread{'s' * (threads != 1)}" if threads else "") + ")", fontsize=10)
    return fig


def crowd_caption(doc: dict) -> str:
    """What a ``bench crowd`` figure ran on, and what its figures may be compared with (plain text)."""
    device = doc.get("device", "?")
    threads = doc.get("threads")
    hw = doc.get("hardware_summary") or "unknown hardware"
    methods = ", ".join(dict.fromkeys(f"{r['method']} at {r.get('scale') or '?'} ({r.get('input')} input)"
                                      for r in doc.get("rows") or ()))
    text = (f"Model forward time only (eval mode, inference_mode, batch {doc.get('batch', '?')}, median of "
            f"{doc.get('repeat', '?')} passes) on {doc.get('images', '?')} synthetic images per count; {methods}. "
            f"Hardware: {hw}; device {device}"
            + (f", {threads} compute thread{'s' * (threads != 1)}" if threads else "")
            + f", torch {doc.get('torch', '?')}. ")
    if device == "cpu":
        text += ("CPU figures at a reduced scale are not comparable to a paper's GPU figures: read the shape "
                 "(top-down grows with the crowd, bottom-up hardly), not the milliseconds.")
    else:
        text += "Figures from other hardware or scales are not comparable to these."
    return text


def save_figure(fig, stem: Path) -> list[Path]:
    """Write ``<stem>.png`` and ``<stem>.svg`` atomically; the same figure gives the same bytes."""
    import matplotlib

    stem = Path(stem)
    out = []
    # Fixed SVG ids and no timestamps, so re-rendering unchanged results changes no file.
    with matplotlib.rc_context({"svg.hashsalt": "poseharness", "svg.fonttype": "path"}):
        for suffix, meta in ((".png", {"Software": None}), (".svg", {"Date": None, "Creator": None})):
            target = stem.with_suffix(suffix)
            with atomic_path(target) as tmp:
                fig.savefig(tmp, format=suffix[1:], dpi=130, metadata=meta)
            out.append(target)
    return out

