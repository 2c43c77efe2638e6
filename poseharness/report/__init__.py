"""The report: every method's paper tables, reproduced beside published, from ``results.parquet`` only.

:func:`build_report` reads the collected results table (never record files, never re-evaluates), builds
one :class:`~poseharness.report.tables.TableView` per (method, paper table) and writes, atomically::

    <out>/<method>/<table>.md      Markdown table(s): figures with their 95 % intervals, oracle bounds and the
                                   share of the bound; the paper's claims with verdicts; Kendall's τ;
                                   provenance as numbered notes
    <out>/<method>/<table>.html    the same as a page; provenance on hover and as footnotes
    <out>/<method>/<table>.png|svg reproduced (with error bars) vs published bars, oracle bounds beside
    <out>/<method>/<table>-diagnosis.png|svg  when the table's records carry error diagnoses: the AP gain of
                                   each correction stage per variant (``report.diagnosis``; the .md and .html
                                   pages then hold the section "Why the variants differ: error diagnosis")
    <out>/<method>/<table>-<dataset>-<scale>-<variant>-gallery.html (+ gallery/*.png)  per diagnosed variant
                                   whose predictions and split are on disk: its images with the largest errors
    <out>/<method>/speed.png|svg   speed vs accuracy (only once speed records exist)
    <out>/<method>/curves.png|svg  learning curves, from ``<results>/curves/<method>/*.json`` (``bench curve``)
    <out>/bench/crowd.png|svg      model time against persons per image, from ``<results>/bench/crowd.json``
                                   (``bench crowd``, the workflow's ``bench_crowd`` rule), when it exists
    <out>/index.html               links everything; opens from the file system, no network
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .. import paths
from ..errors import HarnessError
from ..io import write_text_atomic
from ..methods import MethodSpec, load_method, method_names
from .claims import claims_summary
from .tables import TableView, build_views, left_out, speed_points, to_markdown

__all__ = ["ReportResult", "build_report"]


@dataclass
class ReportResult:
    """What :func:`build_report` wrote: ``index`` and every other file, plus the views rendered."""

    out: Path
    index: Path
    files: list[Path] = field(default_factory=list)
    views: list[TableView] = field(default_factory=list)
    left_out: list[tuple[str, int]] = field(default_factory=list)

    def format(self) -> str:
        lines = [f"report: {self.index}"]
        for view in self.views:
            states = []
            for block in view.blocks:
                if block.empty:
                    states.append("not run" if block.rows else "published figures only")
                else:
                    run, total = block.run_count()
                    states.append(f"{block.dataset}/{block.scale} {run}/{total}"
                                  + ("" if block.comparable else " (not comparable)")
                                  + (f" [claims: {claims_summary(block.claims)}]" if block.claims else ""))
            lines.append(f"  {view.method}/{view.table.name}: {'; '.join(states)}")
        for reason, count in self.left_out:
            lines.append(f"  not shown: {reason} ({count} row{'s' * (count != 1)})")
        lines.append(f"  {len(self.files)} files written under {self.out}")
        return "\n".join(lines)


def _methods(method: str | None) -> list[MethodSpec]:
    if method is not None:
        return [load_method(method)]
    return [load_method(name) for name in method_names()]


def learning_curves(store: Path, method: str) -> list[dict]:
    """The learning curves ``bench curve`` wrote for ``method`` (``<store>/curves/<method>/*.json``), by name."""
    from ..io import read_json

    return [read_json(path, "learning curve") for path in sorted((store / "curves" / method).glob("*.json"))]


def crowd_bench(store: Path) -> dict | None:
    """The ``bench crowd`` document the workflow writes (``<store>/bench/crowd.json``), or None."""
    from ..io import read_json

    path = store / "bench" / "crowd.json"
    return read_json(path, "crowd bench") if path.is_file() else None


def build_report(results: str | os.PathLike | None = None, out: str | os.PathLike | None = None, *,
                 method: str | None = None, dataset: str | None = None,
                 scale: str | None = None) -> ReportResult:
    """Render the report from ``<results>/results.parquet`` into ``out`` (default: the reports dir).

    ``method`` / ``dataset`` / ``scale`` restrict what is rendered. Raises :class:`HarnessError` when
    the results table is missing (run ``poseharness results collect``).
    """
    from ..store import load_table
    from ..store.store import store_root
    from .diagnosis import diagnosis_figure, diagnosis_html, diagnosis_markdown, table_diagnoses
    from .gallery import write_galleries
    from .html import index_page, table_page
    from .plots import crowd_caption, crowd_figure, curve_figure, save_figure, speed_figure, table_figure

    source = store_root(results) / "results.parquet"
    if not source.is_file():
        raise HarnessError(f"{source}: no results table; run `poseharness results collect` "
                           "first (the report reads only results.parquet)")
    df = load_table(store_root(results))
    out = Path(out) if out is not None else paths.reports_dir()
    methods = _methods(method)

    shown = df
    if method is not None:
        shown = shown[shown["method"] == method]
    if dataset is not None:
        shown = shown[shown["dataset"] == dataset]
    if scale is not None:
        shown = shown[shown["scale"] == scale]
    filters = "".join(f", {name} = {value}" for name, value in
                      (("method", method), ("dataset", dataset), ("scale", scale)) if value is not None)

    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    result = ReportResult(out=out, index=out / "index.html")
    result.views = build_views(shown, methods, dataset=dataset, scale=scale, root=store_root(results))
    result.left_out = left_out(shown, methods)
    entries = []
    specs = {spec.name: spec for spec in methods}
    for view in result.views:
        folder = out / view.method
        stem = folder / view.table.name
        diagnoses = table_diagnoses(view, specs[view.method], shown)
        diag_figure = diagnosis_figure(diagnoses, f"{view.method} {view.table.name}: AP gain per correction")
        diag_stem = f"{stem.name}-diagnosis" if diag_figure is not None else None
        galleries = {}
        if diag_figure is not None:
            result.files += save_figure(diag_figure, folder / diag_stem)
            galleries, written = write_galleries(view, diagnoses, shown, store_root(results), folder)
            result.files += written
        md = to_markdown(view) + diagnosis_markdown(diagnoses, diag_stem, galleries)
        result.files.append(write_text_atomic(stem.with_suffix(".md"), md))
        figure = table_figure(view)
        if figure is not None:
            result.files += save_figure(figure, stem)
        result.files.append(write_text_atomic(stem.with_suffix(".html"), table_page(
            view, figure=stem.name if figure is not None else None,
            markdown=f"{stem.name}.md", generated=generated, source=str(source),
            diagnosis=diagnosis_html(diagnoses, diag_stem, galleries))))
        rel = f"{view.method}/{view.table.name}"
        entries.append({"view": view, "html": f"{rel}.html", "md": f"{rel}.md",
                        "png": f"{rel}.png" if figure is not None else None,
                        "svg": f"{rel}.svg" if figure is not None else None})
    speed = {}
    for spec in methods:
        figure = speed_figure(speed_points(shown, spec, dataset=dataset, scale=scale))
        if figure is not None:
            result.files += save_figure(figure, out / spec.name / "speed")
            speed[spec.name] = f"{spec.name}/speed"
    curves = {}
    for spec in methods:
        figure = curve_figure(learning_curves(store_root(results), spec.name), f"{spec.name}: learning curves")
        if figure is not None:
            result.files += save_figure(figure, out / spec.name / "curves")
            curves[spec.name] = f"{spec.name}/curves"
    crowd = None
    doc = crowd_bench(store_root(results))
    figure = crowd_figure(doc) if doc is not None else None
    if figure is not None:
        result.files += save_figure(figure, out / "bench" / "crowd")
        crowd = ("bench/crowd", crowd_caption(doc))
    result.files.append(write_text_atomic(result.index, index_page(
        entries, speed=speed, curves=curves, crowd=crowd, left_out=result.left_out, source=str(source),
        rows=len(shown), generated=generated, filters=filters)))
    return result
