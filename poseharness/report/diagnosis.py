"""The report's "why the variants differ" section: each table's error diagnoses, from ``results.parquet`` only.

A record's ``diagnosis`` (``poseharness.eval.diagnosis``, after Ronchi & Perona, ICCV 2017) reaches the results
table as the ``diag_*`` columns (``poseharness.store.collect``): the AP before any correction
(``diag_ap_original``), the AP gain of each cumulative correction stage (``diag_gain_<stage>``), the error counts
(``diag_<count>``) and the per-keypoint category counts (``diag_per_keypoint``, JSON). For each table this module
gathers them per (dataset, scale) block and variant (:func:`table_diagnoses`: the full-split rows of the table's
kind, split and columns, as the table itself uses), draws the gains as stacked horizontal bars
(:func:`diagnosis_figure`) and lays out the section in Markdown (:func:`diagnosis_markdown`) and HTML
(:func:`diagnosis_html`). Several seeds: AP and gains are their mean, counts their sum. Units: percent (AP points).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from html import escape

from ..store.collect import DIAG_PER_KEYPOINT, DIAG_STAGES
from .tables import TableView, full_split, variant_label

TITLE = "Why the variants differ: error diagnosis"
#: The keypoint categories of a per-keypoint count, in ``eval.diagnosis.CATEGORIES`` order.
CATEGORIES = ("good", "jitter", "inversion", "swap", "miss")
#: The instance counts shown beside the keypoint categories, with their column headings.
INSTANCE_COUNTS = ("background_fp", "false_negatives", "scoring_errors")
COUNT_LABELS = {"background_fp": "background FPs (n)", "false_negatives": "false negatives (n)",
                "scoring_errors": "scoring errors (n)"}
STAGE_LABELS = {"miss": "miss", "swap": "swap", "inversion": "inversion", "jitter": "jitter",
                "score": "optimal scores", "background_fp": "background FP", "false_negative": "false negatives"}
STAGE_COLORS = {"miss": "#c0392b", "swap": "#8e44ad", "inversion": "#d4a017", "jitter": "#e07b00",
                "score": "#2a9d8f", "background_fp": "#6b8e23", "false_negative": "#17becf"}
EXPLAIN = ("Each bar: the AP (%) gained by correcting, cumulatively and in this order, the keypoint errors (miss, "
           "swap, inversion, jitter), then the scores (optimal rescoring), then ignoring background false "
           "positives and false negatives (Ronchi & Perona, ICCV 2017; coco-analyze's thresholds, on the "
           "official matching). The bar's total is the AP after all corrections minus the original AP; a negative "
           "gain is drawn left of zero. Counts: keypoints of matched detections per category, instances per error.")


@dataclass(frozen=True)
class VariantDiagnosis:
    """One variant's diagnosis on one (dataset, scale): ``original`` AP and ``gains`` (stage -> AP points or
    None) in percent (mean over ``seeds``), ``counts`` (name -> count) and ``per_keypoint`` (keypoint ->
    category -> count), summed over the seeds."""

    variant: str
    label: str
    seeds: tuple[int, ...]
    original: float
    gains: dict[str, float | None]
    counts: dict[str, int]
    per_keypoint: dict[str, dict[str, int]]

    @property
    def total_gain(self) -> float:
        """AP after all corrections minus the original AP (percent)."""
        return math.fsum(g for g in self.gains.values() if g is not None)


@dataclass(frozen=True)
class BlockDiagnosis:
    """The diagnoses of one (dataset, split, scale) block of a table, in the table's column order."""

    dataset: str
    split: str
    scale: str
    variants: tuple[VariantDiagnosis, ...]

    @property
    def title(self) -> str:
        return f"{self.dataset} {self.split}, scale {self.scale}"


def _mean(values: list[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return math.fsum(finite) / len(finite) if finite else None


def _variant(method, variant: str, rows) -> VariantDiagnosis | None:
    """The diagnosis of one variant's (seed) rows; None when no row carries one."""
    rows = rows[rows["diag_ap_original"].notna()]
    if rows.empty:
        return None
    gains = {s: _mean([100.0 * v for v in rows[f"diag_gain_{s}"]]) if f"diag_gain_{s}" in rows else None
             for s in DIAG_STAGES}
    counts = {c: int(rows[f"diag_{c}"].fillna(0).sum()) for c in (*CATEGORIES, *INSTANCE_COUNTS)
              if f"diag_{c}" in rows}
    per_keypoint: dict[str, dict[str, int]] = {}
    for text in rows[DIAG_PER_KEYPOINT].dropna():
        for name, cats in json.loads(text).items():
            into = per_keypoint.setdefault(name, dict.fromkeys(CATEGORIES, 0))
            for cat in CATEGORIES:
                into[cat] += int(cats.get(cat, 0))
    return VariantDiagnosis(variant=variant, label=variant_label(method, variant),
                            seeds=tuple(int(s) for s in rows["seed"]),
                            original=_mean([100.0 * v for v in rows["diag_ap_original"]]),
                            gains=gains, counts=counts, per_keypoint=per_keypoint)


def table_diagnoses(view: TableView, method, df) -> list[BlockDiagnosis]:
    """The diagnoses of ``view``'s blocks from the collected results ``df``: the full-split rows of the table's
    kind, split, method and columns on each block's dataset and scale. [] when none carries a diagnosis (e.g. a
    table collected before the ``diag_*`` columns existed)."""
    if "diag_ap_original" not in df.columns or DIAG_PER_KEYPOINT not in df.columns:
        return []
    df = full_split(df)
    table = view.table
    mine = df[(df["method"] == view.method) & (df["split"] == table.split) & (df["kind"] == table.kind)]
    out = []
    for block in view.blocks:
        if block.empty:
            continue
        here = mine[(mine["dataset"] == block.dataset) & (mine["scale"] == block.scale)]
        found = [_variant(method, v, here[here["variant"] == v]) for v in table.columns]
        found = tuple(d for d in found if d is not None)
        if found:
            out.append(BlockDiagnosis(dataset=block.dataset, split=block.split, scale=block.scale, variants=found))
    return out


# ---------------------------------------------------------------------------------------------------------
# Figure

def diagnosis_figure(blocks: list[BlockDiagnosis], title: str):
    """Stacked horizontal bars of the AP gain (percent) of each correction stage, one bar per variant, one
    subplot per block; positive gains stack right of 0, negative ones left. Each bar is labelled with the
    original AP and the AP after all corrections. None when ``blocks`` is empty."""
    if not blocks:
        return None
    from .plots import _figure

    height = 1.2 + sum(0.42 * len(b.variants) + 0.6 for b in blocks)
    fig = _figure(8.4, height)
    axes = fig.subplots(len(blocks), 1, squeeze=False,
                        height_ratios=[max(len(b.variants), 1) for b in blocks])[:, 0]
    for ax, block in zip(axes, blocks):
        _gain_bars(ax, block)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=4, fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=10)
    return fig


def _gain_bars(ax, block: BlockDiagnosis) -> None:
    ys = list(range(len(block.variants)))
    right = [0.0] * len(ys)
    left = [0.0] * len(ys)
    for stage in DIAG_STAGES:
        widths = [d.gains.get(stage) or 0.0 for d in block.variants]
        starts = [r if w >= 0 else l for w, r, l in zip(widths, right, left)]
        ax.barh(ys, widths, left=starts, height=0.6, color=STAGE_COLORS[stage], edgecolor="white",
                linewidth=0.5, label=STAGE_LABELS[stage])
        right = [r + max(w, 0.0) for w, r in zip(widths, right)]
        left = [lo + min(w, 0.0) for w, lo in zip(widths, left)]
    for y, d, r in zip(ys, block.variants, right):
        ax.annotate(f"AP {d.original:.1f} → {d.original + d.total_gain:.1f}", (r, y), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7)
    ax.set_yticks(ys, [d.label for d in block.variants], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0, color="#555555", linewidth=0.8)
    ax.set_xlim(min(min(left), 0.0) - 1, max(max(right), 1.0) * 1.25 + 1)
    ax.set_xlabel("AP gain by correction (AP points, %)", fontsize=8)
    ax.set_title(block.title, fontsize=9)
    ax.grid(axis="x", color="#e4e7ec", linewidth=0.6)


# ---------------------------------------------------------------------------------------------------------
# Markdown and HTML

def _gain_text(value: float | None) -> str:
    return "—" if value is None else f"{value:+.1f}"


def diagnosis_markdown(blocks: list[BlockDiagnosis], figure: str | None, galleries: dict | None = None) -> str:
    """The section in Markdown: the figure, a gain table per block, each variant's per-keypoint counts, and the
    links to its gallery page where ``galleries`` ({(dataset, scale, variant): page}) has one."""
    galleries = galleries or {}
    if not blocks:
        return ""
    out = ["", f"## {TITLE}", "", EXPLAIN, ""]
    if figure:
        out += [f"![AP gain per correction]({figure}.svg)", ""]
    for block in blocks:
        out += [f"### {block.title}", ""]
        head = ["Variant", "seeds", "AP", *(STAGE_LABELS[s] for s in DIAG_STAGES), "AP corrected",
                *(COUNT_LABELS[c] for c in INSTANCE_COUNTS)]
        out += ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        for d in block.variants:
            cells = [d.label, str(len(d.seeds)), f"{d.original:.1f}",        # a count, as the main table's
                     *(_gain_text(d.gains.get(s)) for s in DIAG_STAGES), f"{d.original + d.total_gain:.1f}",
                     *(str(d.counts.get(c, "—")) for c in INSTANCE_COUNTS)]
            out.append("| " + " | ".join(cells) + " |")
        links = [f"[{d.label}]({galleries[(block.dataset, block.scale, d.variant)]})" for d in block.variants
                 if (block.dataset, block.scale, d.variant) in galleries]
        if links:
            out += ["", "Images with the largest errors: " + ", ".join(links) + "."]
        for d in block.variants:
            out += ["", f"Per keypoint, {d.label} (keypoints of matched detections):", ""]
            out += ["| keypoint | " + " | ".join(CATEGORIES) + " |", "|---" + "|---:" * len(CATEGORIES) + "|"]
            out += [f"| {name} | " + " | ".join(str(cats[c]) for c in CATEGORIES) + " |"
                    for name, cats in d.per_keypoint.items()]
            out.append("| all | " + " | ".join(str(d.counts.get(c, "—")) for c in CATEGORIES) + " |")
    return "\n".join(out) + "\n"


def _keypoint_table(d: VariantDiagnosis) -> str:
    rows = [f'<tr><th>{escape(name)}</th>' + "".join(
        f'<td data-category="{c}">{cats[c]}</td>' for c in CATEGORIES) + "</tr>"
        for name, cats in d.per_keypoint.items()]
    rows.append("<tr><th>all</th>" + "".join(f'<td data-category="{c}">{d.counts.get(c, "—")}</td>'
                                           for c in CATEGORIES) + "</tr>")
    return (f'<details class="per-keypoint" data-variant="{escape(d.variant)}"><summary>Per keypoint: '
            f"{escape(d.label)}</summary><table><thead><tr><th>keypoint</th>"
            + "".join(f"<th>{c}</th>" for c in CATEGORIES) + "</tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></details>")


def diagnosis_html(blocks: list[BlockDiagnosis], figure: str | None, galleries: dict | None = None) -> str:
    """The section as HTML (a ``<section class="diagnosis">``): figure, gain tables with ``data-*`` attributes
    (variant, stage, value in AP points), and each variant's per-keypoint counts in a ``<details>``.
    ``galleries``: {(dataset, scale, variant): gallery page} (``report.gallery``), linked from the variant's row."""
    galleries = galleries or {}
    if not blocks:
        return ""
    out = ['<section class="diagnosis">', f"<h2>{escape(TITLE)}</h2>", f'<p class="muted">{escape(EXPLAIN)}</p>']
    if figure:
        out.append(f'<figure class="diagnosis-figure"><img src="{escape(figure)}.svg" alt="AP gain per '
                   f'correction stage for every variant"><figcaption class="muted">AP gain per cumulative '
                   f'correction · <a href="{escape(figure)}.png">PNG</a> · <a href="{escape(figure)}.svg">SVG</a>'
                   "</figcaption></figure>")
    for block in blocks:
        out.append(f'<h3>{escape(block.title)}</h3><table class="diagnosis-gains" '
                   f'data-dataset="{escape(block.dataset)}" data-scale="{escape(block.scale)}"><thead><tr>'
                   "<th>Variant</th><th>AP</th>" + "".join(f"<th>{escape(STAGE_LABELS[s])}</th>" for s in DIAG_STAGES)
                   + "<th>AP corrected</th>" + "".join(f"<th>{escape(COUNT_LABELS[c])}</th>" for c in INSTANCE_COUNTS)
                   + "</tr></thead><tbody>")
        for d in block.variants:
            cells = [f'<td class="original" data-value="{d.original:.4f}">{d.original:.1f}</td>']
            cells += [f'<td class="gain" data-stage="{s}" data-value="'
                      f'{"" if d.gains.get(s) is None else format(d.gains[s], ".4f")}">{_gain_text(d.gains.get(s))}'
                      "</td>" for s in DIAG_STAGES]
            cells.append(f'<td class="corrected">{d.original + d.total_gain:.1f}</td>')
            cells += [f'<td class="count" data-count="{c}">{d.counts.get(c, "—")}</td>' for c in INSTANCE_COUNTS]
            page = galleries.get((block.dataset, block.scale, d.variant))
            link = f' <a class="gallery" href="{escape(page)}">gallery</a>' if page else ""
            out.append(f'<tr data-variant="{escape(d.variant)}"><th>{escape(d.label)}{link}</th>'
                       f'{"".join(cells)}</tr>')
        out.append("</tbody></table>")
        out += [_keypoint_table(d) for d in block.variants]
    out.append("</section>")
    return "\n".join(out)
