"""HTML pages of the report: one per paper table, and ``index.html`` linking them.

Pages are self-contained so they open from the file system with no server and no network: the CSS is
inline, figures are referenced by relative path, and the only absolute URLs are ``<a href>`` links
to the papers. Every cell carries machine-readable ``class`` / ``data-*`` attributes (variant, metric,
status, value) so a browser test can read the figures from the DOM.
"""
from __future__ import annotations

from html import escape
from typing import Iterable

from .claims import VERDICTS
from .tables import (CLAIMS_RULE, NO_BOUND, NO_INTERVAL_TEXT, NOT_RUN, OK, Block, Measured, Row, TableView,
                     block_columns, claim_label, column_heading, format_difference, format_interval,
                     format_share, paper_setting, published_text, seeds_text)

CSS = """
:root { --fg: #1d2330; --muted: #667085; --line: #d0d5dd; --bg-head: #f2f4f7;
        --warn-bg: #fff4d6; --warn-line: #e0a800; --ok: #067647; --bad: #b42318; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial, sans-serif;
       color: var(--fg); margin: 2rem auto; max-width: 72rem; padding: 0 1.5rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
h3 { font-size: 1.05rem; margin: 1.6rem 0 .4rem; }
a { color: #175cd3; } .muted, .notes, footer, .footnotes { color: var(--muted); }
nav { margin-bottom: 1rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid var(--line); padding: .3rem .6rem; }
thead th { background: var(--bg-head); font-weight: 600; }
td { text-align: right; } tbody th { text-align: left; font-weight: 500; }
td.reproduced span.value, td.oracle span.value { font-weight: 600; }
td[data-status="not run"] span.value, td[data-status="not measured"] span.value,
td[data-status="no ground truth"] span.value, td[data-status="no bound"] span.value,
td.interval[data-status="no interval"] { font-weight: 400; color: var(--muted); font-style: italic; }
td.interval, td.share, td.seeds { color: #344054; }
.claims table td, .claims table th { font-size: .92em; }
.claims td.says { text-align: left; max-width: 30rem; color: var(--muted); }
.claims th.claim { text-align: left; }
td.verdict[data-verdict="reproduced"] { color: var(--ok); font-weight: 600; }
td.verdict[data-verdict="contradicted"] { color: var(--bad); font-weight: 600; }
td.verdict[data-verdict="unresolved"], td.verdict[data-verdict="not run"],
td.verdict[data-verdict="no interval"] { color: var(--muted); }
.claims-note { font-weight: 600; color: #7a5a00; }
td.difference.pos { color: var(--ok); } td.difference.neg { color: var(--bad); }
tr.cited th, tr.cited td { color: var(--muted); background: #fafafa; }
section.not-comparable td.reproduced, section.not-comparable td.oracle { color: #8a8f98; background: #f6f6f6; }
.banner { background: var(--warn-bg); border-left: 4px solid var(--warn-line); padding: .5rem .8rem;
          font-weight: 600; margin: .4rem 0; }
.banner.empty { background: #f2f4f7; border-color: var(--line); font-weight: 400; }
sup { font-size: .7em; margin-left: .15em; } sup a { text-decoration: none; }
.footnotes { font-size: .85em; } .footnotes li { margin: .15rem 0; word-break: break-all; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid var(--line); }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(21rem, 1fr)); gap: 1rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .8rem 1rem; }
.card img { width: 100%; border: 1px solid var(--line); margin-top: .4rem; }
.card ul { padding-left: 1.1rem; margin: .3rem 0; } .tag { font-size: .8em; padding: 0 .35em;
  border-radius: 3px; border: 1px solid var(--line); } .tag.nc { background: var(--warn-bg); }
.tag.cmp { background: #dcfae6; }
"""


def _page(title: str, body: str) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


def _paper_link(view_title: str, url: str | None, venue: str) -> str:
    name = escape(view_title)
    link = f'<a href="{escape(url)}">{name}</a>' if url else name
    return link + (f", {escape(venue)}" if venue else "")


def _where(block: Block) -> str:
    return f"{block.dataset} {block.split}, scale {block.scale}"


def _measured_cell(part: str, row: Row, metric: str, m: Measured, block: Block, anchor: str) -> str:
    """A reproduced or oracle cell: value (or why none), hover provenance, footnote links."""
    attrs = {"class": part, "data-variant": row.variant, "data-metric": metric, "data-status": m.status}
    if m.status == OK:
        attrs["data-value"] = f"{m.percent:.4f}"
    hover = []
    if not block.empty:
        hover.append(_where(block))
    if len(m.per_seed) > 1:
        hover.append(f"mean of {len(m.per_seed)} seeds: "
                     + ", ".join(f"seed {s}: {v:.2f}" for s, v in zip(m.seeds, m.per_seed)))
    if m.status == NOT_RUN:
        hover.append("no record in the results table")
    if m.status == NO_BOUND:
        hover.append("no oracle record of this variant on this dataset, split and scale")
    by_number = {p.number: p for p in block.provenance}
    hover += [by_number[n].text() for n in m.provenance]
    attrs["title"] = "\n".join(hover)
    refs = ",".join(f'<a href="#{anchor}-{n}">{n}</a>' for n in m.provenance)
    refs = f"<sup>{refs}</sup>" if refs else ""
    attr_text = " ".join(f'{k}="{escape(str(v))}"' for k, v in attrs.items())
    return f"<td {attr_text}><span class=\"value\">{escape(m.text)}</span>{refs}</td>"


def _extra_cell(part: str, row: Row, metric: str) -> str:
    """The interval, seed count or share-of-bound cell of a variant row."""
    m = row.reproduced[metric]
    attrs = {"class": part, "data-variant": row.variant, "data-metric": metric}
    if part == "interval":
        text = m.interval_text
        if m.has_interval:
            attrs.update({"data-status": OK, "data-lo": f"{m.lo:.4f}", "data-hi": f"{m.hi:.4f}",
                          "title": "95 % interval over seeds and images"})
        elif text == NO_INTERVAL_TEXT:
            attrs.update({"data-status": NO_INTERVAL_TEXT, "title": m.interval_note or "no interval"})
    elif part == "seeds":
        text = seeds_text(m)
        if text:
            attrs["data-value"] = text
            attrs["title"] = "seeds: " + ", ".join(map(str, m.seeds))
    else:
        share = row.share(metric)
        text = format_share(share) if m.status == OK else ""
        if share is not None:
            attrs["data-value"] = f"{share:.4f}"
            attrs["title"] = "reproduced / oracle bound"
        elif text:
            attrs["title"] = "no oracle bound to divide by"
    attr_text = " ".join(f'{k}="{escape(str(v))}"' for k, v in attrs.items())
    return f"<td {attr_text}><span class=\"value\">{escape(text)}</span></td>"


def _claims_html(view: TableView, block: Block) -> str:
    """The table's claims tested on this block, with their verdicts, and Kendall's τ."""
    if block.empty:
        return ""
    out = ['<div class="claims">', "<h4>The paper's claims on these figures</h4>"]
    if block.claims_label:
        out.append(f'<p class="claims-note">{escape(block.claims_label)}.</p>')
    if block.claims:
        out.append("<table><thead><tr><th>Claim</th><th>The paper says</th><th>published a − b</th>"
                   "<th>reproduced a − b</th><th>95 % interval</th><th>verdict</th></tr></thead><tbody>")
        for r in block.claims:
            c = r.claim
            name = c.describe(lambda v: claim_label(view, v))
            data = (f'data-kind="{c.kind}" data-a="{escape(c.a)}" data-b="{escape(c.b)}" '
                    f'data-metric="{escape(c.metric)}"')
            out.append(f'<tr class="claim" {data}><th class="claim">{escape(name)}, {escape(c.metric)}</th>'
                       f'<td class="says">“{escape(c.says.strip())}”</td>'
                       f'<td class="claim-published">{escape(format_difference(r.published) or "—")}</td>'
                       f'<td class="claim-diff"'
                       + ("" if r.diff is None else f' data-value="{r.diff:.4f}"')
                       + f'>{escape(format_difference(r.diff) or "—")}</td>'
                       f'<td class="claim-interval"'
                       + ("" if r.lo is None else f' data-lo="{r.lo:.4f}" data-hi="{r.hi:.4f}"')
                       + f'>{escape(format_interval(r.lo, r.hi) or "—")}</td>'
                       f'<td class="verdict" data-verdict="{escape(r.status)}"'
                       + (f' title="{escape(r.note)}"' if r.note else "")
                       + f">{escape(r.status)}"
                       + (f' <span class="muted">({escape(r.note)})</span>' if r.note and r.status not in VERDICTS
                          else "") + "</td></tr>")
        out.append("</tbody></table>")
        out.append(f'<p class="muted">{escape(CLAIMS_RULE)}</p>')
    else:
        out.append('<p class="muted">No claims listed for this table (<code>claims:</code> in method.yaml).</p>')
    if block.ranks is not None:
        tau = "" if block.ranks.tau is None else f' data-tau="{block.ranks.tau:.4f}"'
        out.append(f'<p class="ranks" data-n="{block.ranks.n}"{tau}>Rank agreement: '
                   f"{escape(block.ranks.text())}.</p>")
    out.append("</div>")
    return "\n".join(out)


def _block_html(view: TableView, block: Block, index: int) -> str:
    anchor = f"fn-{index}"
    classes = "empty" if block.empty else ("comparable" if block.comparable else "not-comparable")
    data = "" if block.empty else (f' data-dataset="{escape(block.dataset)}" '
                                   f'data-scale="{escape(block.scale)}" data-split="{escape(block.split)}"')
    out = [f'<section class="block {classes}"{data}>',
           f"<h3>{escape(block.title())}</h3>"]
    if block.banner:
        out.append(f'<p class="banner">{escape(block.banner)}</p>')
        out.append(f'<p class="muted">The published figures are for {escape(paper_setting(view))}; '
                   "these are not, so no difference is computed.</p>")
    elif block.empty and block.rows:
        out.append(f'<p class="banner empty">No {escape(view.table.kind)} records yet: every reproduced '
                   "cell is “not run”. Run the workflow, then <code>poseharness results collect</code>.</p>")
    cols = block_columns(view, block)
    metric_span = len(cols) // len(view.metrics)
    out.append("<table>")
    out.append("<thead><tr><th rowspan=\"2\">Variant</th>"
               + "".join(f'<th colspan="{metric_span}">{escape(m)} (%)</th>' for m in view.metrics)
               + "</tr><tr>"
               + "".join(f'<th class="{p}">{escape(column_heading(view, p))}</th>' for _, p in cols)
               + "</tr></thead>")
    out.append("<tbody>")
    for row in (*block.rows, *view.cited):
        if row.cited:
            out.append(f'<tr class="cited"><th title="published figure of another method, cited by '
                       f'the paper; not reproduced">{escape(row.label)} <span class="muted">(cited)</span></th>')
        else:
            out.append(f'<tr data-variant="{escape(row.variant)}"><th>{escape(row.label)}</th>')
        for metric, part in cols:
            if part == "published":
                value = row.published.get(metric)
                attrs = f'class="published" data-metric="{escape(metric)}"'
                if not row.cited:
                    attrs += f' data-variant="{escape(row.variant)}"'
                if value is None:
                    out.append(f'<td {attrs} title="not published"><span class="value">—</span></td>')
                else:
                    out.append(f'<td {attrs} data-value="{value:.1f}" title="published in the paper '
                               f'({escape(paper_setting(view))})"><span class="value">'
                               f"{published_text(value)}</span></td>")
            elif row.cited:
                out.append(f'<td class="{part} cited">{"cited" if part == "reproduced" else ""}</td>')
            elif part == "reproduced":
                out.append(_measured_cell("reproduced", row, metric, row.reproduced[metric], block, anchor))
            elif part == "oracle":
                out.append(_measured_cell("oracle", row, metric, row.bound(metric), block, anchor))
            elif part in ("interval", "seeds", "share"):
                out.append(_extra_cell(part, row, metric))
            else:
                diff = row.difference(metric)
                sign = "" if diff is None else (" pos" if round(diff, 1) > 0 else
                                               " neg" if round(diff, 1) < 0 else "")
                out.append(f'<td class="difference{sign}" data-variant="{escape(row.variant)}" '
                           f'data-metric="{escape(metric)}" title="reproduced minus published, '
                           f'percentage points">{format_difference(diff)}</td>')
        out.append("</tr>")
    out.append("</tbody></table>")
    out.append(_claims_html(view, block))
    if block.provenance:
        out.append('<ol class="footnotes">')
        out += [f'<li id="{anchor}-{p.number}">{escape(p.text())}</li>' for p in block.provenance]
        out.append("</ol>")
    out.append("</section>")
    return "\n".join(out)


def table_page(view: TableView, *, figure: str | None, markdown: str, generated: str,
               source: str = "results/results.parquet", diagnosis: str = "") -> str:
    """The HTML page of one table; ``figure`` is the stem (no suffix) of its plot beside the page, ``source`` the
    results table it was rendered from, ``diagnosis`` the HTML of its error-diagnosis section (``report.diagnosis``;
    '' when its records carry none), placed after the table's figure."""
    t = view.table
    body = ['<nav><a href="../index.html">← all tables</a></nav>',
            f"<h1>{escape(view.method)} — {escape(t.name)}</h1>",
            f'<p class="caption"><strong>{escape(t.caption)}</strong></p>',
            f"<p>Paper: {_paper_link(view.method_title, view.paper_url, view.paper_venue)}. "
            f"Published figures are for {escape(paper_setting(view))}; values in %, one decimal, "
            f"as the paper prints them. Kind of reproduced figure: <code>{escape(t.kind)}</code>"
            + (" (decode(encode(ground truth)): the representation's upper bound)."
               if view.oracle_table else " (a trained model's predictions).") + "</p>"]
    if t.notes:
        body.append(f'<p class="notes">Notes: {escape(t.notes.strip())}</p>')
    body += [_block_html(view, block, i) for i, block in enumerate(view.blocks)]
    body.append('<p class="muted">“not run”: no record in the results table for that cell. '
                "“cited”: a published figure of another method, not reproduced here. "
                "“95 % interval”: over seeds and images (“no interval”: the records lack what it needs; "
                "older records have no matches file). “oracle bound”: the same variant decoded from "
                "ground truth on the same dataset, split and scale (“no bound”: no such record); "
                "“share of bound”: reproduced / bound. "
                "Hover a figure for its provenance (commit, date, hardware, seed, config hash).</p>")
    links = [f'<a href="{escape(markdown)}">Markdown</a>']
    if figure and t.plot is not None:
        # A sweep: the figure is the curve (plots.sweep_figure), as the paper draws it.
        plot = t.plot
        per = f", one line per <code>{escape(plot.series)}</code>" if plot.series else ""
        body.append(f'<figure class="sweep" data-x="{escape(plot.x)}" data-series="{escape(plot.series or "")}" '
                    f'data-metrics="{escape(" ".join(plot.metrics))}"><img src="{escape(figure)}.svg" '
                    f'alt="{escape(t.name)}: {escape(", ".join(plot.metrics))} against {escape(plot.x)}">'
                    f'<figcaption class="muted">Reproduced {escape(", ".join(plot.metrics))} (%) against '
                    f"<code>{escape(plot.x)}</code>{per} and dataset/scale; dashed: the columns with no "
                    f"<code>{escape(plot.x)}</code> (reference lines); error bars: 95 % interval over seeds and "
                    "images, where the records give one; dotted: published, where the paper prints numbers."
                    "</figcaption></figure>")
        links += [f'<a href="{escape(figure)}.png">PNG</a>', f'<a href="{escape(figure)}.svg">SVG</a>']
    elif figure:
        body.append(f'<figure><img src="{escape(figure)}.svg" alt="{escape(t.name)}: reproduced vs '
                    f'published"><figcaption class="muted">Reproduced (per dataset and scale) vs '
                    f"published.</figcaption></figure>")
        links += [f'<a href="{escape(figure)}.png">PNG</a>', f'<a href="{escape(figure)}.svg">SVG</a>']
    if diagnosis:
        body.append(diagnosis)
    body.append(f"<footer>Also as: {' · '.join(links)}. Generated {escape(generated)} from "
                f"{escape(source)}.</footer>")
    return _page(f"{view.method} {t.name} — {t.caption}", "\n".join(body))


def _block_summary(view: TableView, block: Block) -> str:
    if block.empty:
        return f'<li class="muted">{"not run" if block.rows else "published figures only"}</li>'
    run, total = block.run_count()
    tag = ('<span class="tag cmp">comparable</span>' if block.comparable
           else '<span class="tag nc">not comparable</span>')
    return (f"<li>{escape(block.dataset)} / {escape(block.scale)}: {run} of {total} "
            f"variant{'s' * (total != 1)} run {tag}</li>")


def _curves_html(method: str, stem: str) -> str:
    return (f"<h3>Learning curves</h3><figure><img src=\"{escape(stem)}.svg\" "
            f'alt="{escape(method)} learning curves"><figcaption class="muted">AP of kept snapshots '
            "against optimiser steps and CPU-minutes (<code>poseharness bench curve</code>) · "
            f'<a href="{escape(stem)}.png">PNG</a> · <a href="{escape(stem)}.svg">SVG</a>'
            "</figcaption></figure>")


def _crowd_html(stem: str, caption: str) -> str:
    return ('<h2 id="bench-crowd">Model time against persons per image</h2>'
            f'<figure><img src="{escape(stem)}.svg" alt="model time per image and per person against persons per '
            f'image"><figcaption class="muted">Top-down methods run the model once per person crop, bottom-up '
            f"ones once per image (<code>poseharness bench crowd</code>). {escape(caption)} · "
            f'<a href="{escape(stem)}.png">PNG</a> · <a href="{escape(stem)}.svg">SVG</a>'
            "</figcaption></figure>")


def index_page(entries: list[dict], *, speed: dict[str, str], left_out: Iterable[tuple[str, int]],
               source: str, rows: int, generated: str, filters: str, curves: dict[str, str] | None = None,
               crowd: tuple[str, str] | None = None) -> str:
    """``index.html``. ``entries``: dicts with view, html, md, png, svg (paths relative to the index);
    ``speed`` / ``curves``: method -> relative plot stem; ``crowd``: (relative plot stem, caption) of the
    ``bench crowd`` figure; ``left_out``: (reason, row count)."""
    body = ["<h1>poseharness report</h1>",
            f'<p class="muted">Rendered from <code>{escape(source)}</code> ({rows} row'
            f"{'s' * (rows != 1)}{filters}) on {escape(generated)}. Only real data at the paper's "
            "scale is set beside the published figures with a difference; synthetic or reduced-scale "
            "figures test the pipeline and are marked <span class=\"tag nc\">not comparable</span>.</p>"]
    by_method: dict[str, list[dict]] = {}
    for entry in entries:
        by_method.setdefault(entry["view"].method, []).append(entry)
    for method, items in by_method.items():
        v0 = items[0]["view"]
        body.append(f'<h2 id="{escape(method)}">{escape(method)}: '
                    f"{_paper_link(v0.method_title, v0.paper_url, v0.paper_venue)}</h2>")
        body.append('<div class="cards">')
        for e in items:
            view = e["view"]
            card = [f'<div class="card"><a href="{escape(e["html"])}"><strong>{escape(view.table.name)}'
                    f"</strong></a> — {escape(view.table.caption)}",
                    "<ul>" + "".join(_block_summary(view, b) for b in view.blocks) + "</ul>",
                    f'<span class="muted">Also: <a href="{escape(e["md"])}">Markdown</a>']
            if e.get("png"):
                card[-1] += (f' · <a href="{escape(e["png"])}">PNG</a> · '
                             f'<a href="{escape(e["svg"])}">SVG</a></span>')
                card.append(f'<a href="{escape(e["html"])}"><img src="{escape(e["png"])}" '
                            f'alt="{escape(view.table.name)} plot"></a>')
            else:
                card[-1] += "</span>"
            card.append("</div>")
            body.append("\n".join(card))
        body.append("</div>")
        if method in speed:
            stem = speed[method]
            body.append(f"<h3>Speed vs accuracy</h3><figure><img src=\"{escape(stem)}.svg\" "
                        f'alt="{escape(method)} speed vs accuracy"><figcaption class="muted">'
                        f'<a href="{escape(stem)}.png">PNG</a> · <a href="{escape(stem)}.svg">SVG</a>'
                        "</figcaption></figure>")
        else:
            body.append('<p class="muted">Speed vs accuracy: no <code>speed</code> records with a '
                        "matching trained accuracy yet.</p>")
        if method in (curves or {}):
            body.append(_curves_html(method, curves[method]))
    for method, stem in (curves or {}).items():
        if method not in by_method:
            body.append(f'<h2 id="{escape(method)}">{escape(method)}</h2>' + _curves_html(method, stem))
    if crowd is not None:
        body.append(_crowd_html(*crowd))
    left = list(left_out)
    if left:
        body.append("<h2>Rows not shown in any table</h2><ul>")
        body += [f"<li>{escape(reason)}: {count} row{'s' * (count != 1)}</li>" for reason, count in left]
        body.append("</ul>")
    return _page("poseharness report", "\n".join(body))

