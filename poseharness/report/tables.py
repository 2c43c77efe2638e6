"""The paper tables as data: which reproduced figures stand beside which published numbers.

Input is the collected results table (``results.parquet``, one row per (kind, dataset, split, method,
variant, scale, seed, subset)) and the method specs; output is one :class:`TableView` per (method, paper table),
which the Markdown, HTML and plot renderers only lay out. Every decision about what may be compared
with the paper is taken here, once:

- A table of kind ``trained`` shows ``trained`` records, a table of kind ``oracle`` shows ``oracle``
  records, of the table's split, for every dataset of the table's family: the paper's own dataset
  (``coco``) and its stand-ins (``synthetic-coco``), each (dataset, scale) as its own :class:`Block`.
  A dataset's family is the annotation ``format`` named in its manifest, so a new stand-in needs no
  edit here.
- A block is comparable to the paper only when every record in it says ``comparable_to_paper``
  (real data at the paper's scale, :func:`poseharness.store.comparable_to_paper`) and its dataset is
  the paper's own (not a real subset standing in for it); only then does it get a difference column.
- Several seeds of one key are averaged; each seed's provenance is kept for the footnotes. Each
  figure carries its 95 % interval over seeds and images where the records allow one
  (:mod:`poseharness.report.claims`), and a trained figure its oracle bound (the ``oracle`` record of
  the same variant, dataset, split and scale) and the share of that bound it reaches.
- The paper's claims about a table (``claims:`` in method.yaml) get a verdict per block, and each block
  the rank agreement (Kendall's τ) of its figures with the published ones. These are about the block's
  own figures, so they are shown on synthetic / tiny blocks too, labelled as such.
- Only records of the **full split** (``subset == 'full'``) reach a table, its bounds, claims or the speed
  plot: a ``first-N-images`` record (a ``--limit N`` quick look) is a figure of a few images, not of the
  split, so it never stands in a table, even when no full record of its key exists (the cell is then
  "not run"); :func:`left_out` counts such rows so they do not vanish silently.
- A variant with no record is "not run"; a number is never invented.

Units: records hold metrics as fractions in [0, 1] (COCO's -1 = "no ground truth in this range"); the
view holds percentages, as papers print them.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..errors import HarnessError
from ..methods import MethodSpec, TableSpec, config_path
from .claims import (NO_INTERVAL, Bootstrap, ClaimResult, RankAgreement, block_claim, column_interval,
                     rank_agreement)

PAPER_SCALE = "paper"
# Cell states: a figure, or why there is none.
OK = "ok"
NOT_RUN = "not run"                 # no record for this key
NOT_MEASURED = "not measured"       # records exist but lack this metric
NO_GT = "no ground truth"           # COCO's -1: no ground truth in this area range
NO_BOUND = "no bound"               # a trained figure with no oracle record of its variant
NO_INTERVAL_TEXT = NO_INTERVAL      # a figure whose records give no interval (older records)
_DEFAULT = object()                 # build_view(bootstrap=...): the real bootstrap module
SPEED_METRICS = ("ms_per_image", "fps")
FULL_SUBSET = "full"                # results.parquet ``subset`` of a whole-split record


def full_split(df):
    """The rows of ``df`` scored on the whole split (``subset == 'full'``); all rows when the table has no
    ``subset`` column (collected before it existed)."""
    if "subset" not in df.columns:
        return df
    return df[df["subset"].fillna(FULL_SUBSET) == FULL_SUBSET]


@functools.lru_cache(maxsize=None)
def dataset_family(dataset: str) -> str | None:
    """The paper dataset a dataset stands for (``'coco'`` for ``coco`` and ``synthetic-coco``).

    Read from the manifest's annotation ``format``; None when the dataset has no manifest, so its
    records cannot be placed in any paper table (the report lists them as left out).
    """
    from ..data.manifest import load_manifest

    try:
        return load_manifest(dataset).format
    except HarnessError:
        return None


def format_percent(value: float | None) -> str:
    """``64.4`` -> ``'64.4'``: one decimal, as papers print."""
    return "" if value is None else f"{value:.1f}"


def format_difference(value: float | None) -> str:
    """``-0.04`` -> ``'+0.0'``, ``1.25`` -> ``'+1.2'``: signed, one decimal, no negative zero."""
    if value is None:
        return ""
    return f"{round(value, 1) + 0.0:+.1f}"


@dataclass(frozen=True)
class Provenance:
    """Where one record's figures came from. ``number`` is its footnote number within the block."""

    number: int
    kind: str
    variant: str
    seed: int
    commit: str
    dirty: bool | None
    created: str
    hardware: str
    config_hash: str
    record: str

    def text(self) -> str:
        """One line: variant, seed, commit (+ dirty), date, hardware, config hash, record file."""
        state = {True: " (dirty)", False: "", None: " (code state unknown)"}[self.dirty]
        date = self.created[:19].replace("T", " ") + " UTC"
        return (f"{self.kind} {self.variant}, seed {self.seed}: commit {self.commit[:12]}{state}, "
                f"{date}, {self.hardware}, config {self.config_hash[:12]}, record {self.record}")


@dataclass(frozen=True)
class Measured:
    """A reproduced figure: the mean over seeds of one metric of one variant, in percent.

    ``percent`` is None unless ``status`` is :data:`OK`; ``per_seed`` holds each seed's value (percent)
    and ``provenance`` the footnote numbers of the records it came from. ``lo`` / ``hi``: its 95 %
    interval over seeds and images (percent), None with ``interval_note`` saying why.
    """

    status: str
    percent: float | None = None
    per_seed: tuple[float, ...] = ()
    seeds: tuple[int, ...] = ()
    provenance: tuple[int, ...] = ()
    lo: float | None = None
    hi: float | None = None
    interval_note: str = ""

    @property
    def text(self) -> str:
        return format_percent(self.percent) if self.status == OK else self.status

    @property
    def has_interval(self) -> bool:
        return self.lo is not None and self.hi is not None

    @property
    def interval_text(self) -> str:
        """``'11.5 – 14.1'``, ``'no interval'``, or ``''`` when there is no figure."""
        if self.status != OK:
            return ""
        return f"{format_percent(self.lo)} – {format_percent(self.hi)}" if self.has_interval \
            else NO_INTERVAL_TEXT

    @property
    def rounded(self) -> float | None:
        """The value as printed (one decimal); differences are taken from it so a reader can check them."""
        return None if self.percent is None else float(format_percent(self.percent))


@dataclass(frozen=True)
class Row:
    """One line of a paper table: a reproducible variant, or a cited row (published figure only)."""

    label: str
    variant: str | None                       # None for a cited row
    published: dict[str, float | None]        # metric -> percent as printed in the paper
    reproduced: dict[str, Measured] = field(default_factory=dict)
    oracle: dict[str, Measured] = field(default_factory=dict)

    @property
    def cited(self) -> bool:
        return self.variant is None

    def difference(self, metric: str) -> float | None:
        """Reproduced minus published, in percentage points (None when either is missing)."""
        measured, published = self.reproduced.get(metric), self.published.get(metric)
        if measured is None or measured.rounded is None or published is None:
            return None
        return measured.rounded - published

    def bound(self, metric: str) -> Measured:
        """The oracle bound of this row's variant (:data:`NO_BOUND` status when there is no record)."""
        return self.oracle.get(metric) or Measured(NO_BOUND)

    def share(self, metric: str) -> float | None:
        """Reproduced / oracle bound, in percent of the bound (None unless both are figures)."""
        m, b = self.reproduced.get(metric), self.oracle.get(metric)
        if m is None or b is None or m.status != OK or b.status != OK or not b.percent:
            return None
        return 100.0 * m.percent / b.percent


def format_share(value: float | None) -> str:
    """``13.94`` -> ``'13.9 %'`` (of the bound); ``'—'`` when there is no share."""
    return "—" if value is None else f"{value:.1f} %"


def format_interval(lo: float | None, hi: float | None) -> str:
    """A difference's interval, signed: ``'+5.2 – +9.0'``."""
    if lo is None or hi is None:
        return ""
    return f"{format_difference(lo)} – {format_difference(hi)}"


@dataclass(frozen=True)
class Block:
    """The table reproduced on one (dataset, split, scale); ``dataset`` None when nothing ran.

    ``family`` is the paper's dataset (``coco``); ``dataset`` is it or one of its stand-ins.
    """

    family: str
    dataset: str | None
    split: str
    scale: str | None
    dataset_kind: str | None                  # real | synthetic
    comparable: bool
    rows: tuple[Row, ...]
    provenance: tuple[Provenance, ...]
    has_oracle: bool                          # a trained table with oracle bounds for this block
    seeds: tuple[int, ...]
    claims: tuple[ClaimResult, ...] = ()      # the table's claims tested on this block's figures
    ranks: RankAgreement | None = None        # reproduced vs published, first metric

    @property
    def claims_label(self) -> str:
        """What the verdicts and τ are about: '' on a comparable block, else which data made them."""
        if self.empty or self.comparable:
            return ""
        return (f"From {self.banner.split(' — ')[0]}: these verdicts and τ are about this run's own figures, "
                "not a test of the paper's")

    @property
    def empty(self) -> bool:
        return self.dataset is None

    @property
    def banner(self) -> str:
        """Why this block's figures must not be read against the paper's ('' when they may)."""
        if self.empty or self.comparable:
            return ""
        reasons = []
        if self.dataset_kind == "synthetic":
            reasons.append("synthetic data")
        elif self.dataset != self.family:
            reasons.append(f"{self.dataset} is not {self.family}")
        if self.scale != PAPER_SCALE:
            reasons.append(f"{self.scale} scale")
        return " / ".join(reasons or ["not the paper's setting"]) + " — not comparable to the paper"

    def title(self) -> str:
        family = self.family
        if self.empty and not self.rows:
            return f"Published figures only: no column of this table is reproduced ({family} {self.split})"
        if self.empty:
            return f"Not run: no records for {family} (split {self.split}) in the results table"
        stand_in = "" if self.dataset == family else f" ({self.dataset_kind} stand-in for {family})"
        seeds = ", ".join(map(str, self.seeds))
        return (f"Reproduced on {self.dataset}{stand_in}, split {self.split}, scale {self.scale}, "
                f"seed{'s' * (len(self.seeds) != 1)} {seeds}")

    def run_count(self) -> tuple[int, int]:
        """(variants with at least one figure, variants in the table)."""
        variant_rows = [r for r in self.rows if not r.cited]
        run = sum(any(m.status != NOT_RUN for m in r.reproduced.values()) for r in variant_rows)
        return run, len(variant_rows)


@dataclass(frozen=True)
class TableView:
    """Everything a renderer needs for one paper table of one method."""

    method: str
    method_title: str
    paper_url: str | None
    paper_venue: str
    table: TableSpec
    blocks: tuple[Block, ...]
    cited: tuple[Row, ...]
    # A plotted table (``plot:``): scale -> variant -> (x, series value) from the columns' configs.
    sweep: dict[str, dict[str, tuple[Any, Any]]] = field(default_factory=dict)

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.table.metrics

    @property
    def oracle_table(self) -> bool:
        return self.table.kind == "oracle"


@dataclass(frozen=True)
class SpeedPoint:
    """One variant's speed (ms per image) against its trained accuracy (percent) on one dataset/scale."""

    method: str
    variant: str
    label: str
    dataset: str
    scale: str
    comparable: bool
    ms_per_image: float
    accuracy: float
    metric: str


def sweep_coordinates(method: MethodSpec, table: TableSpec, scale: str) -> dict[str, tuple[Any, Any]]:
    """variant -> (x, series value) of a plotted table's columns at ``scale`` ({} when the table has no
    ``plot:``); the paths were checked to resolve when method.yaml was loaded."""
    plot = table.plot
    if plot is None:
        return {}
    out = {}
    for variant in table.columns:
        cfg = method.variant_config(variant, scale)
        out[variant] = (config_path(cfg, plot.x), None if plot.series is None else config_path(cfg, plot.series))
    return out


def variant_label(method: MethodSpec, variant: str) -> str:
    return str(method.variants.get(variant, {}).get("label", variant))


def _measure(rows, metric: str, numbers: dict[tuple, int], *, root=None, bootstrap=None,
             interval: bool = False) -> Measured:
    """Mean of ``metric`` over the (seed) rows of one key; ``numbers`` maps row keys to footnotes.

    With ``interval``, also its 95 % interval (:func:`~poseharness.report.claims.column_interval`)."""
    if rows.empty:
        return Measured(NOT_RUN)
    values = rows[metric] if metric in rows.columns else None
    if values is None or values.isna().all():
        return Measured(NOT_MEASURED, seeds=tuple(int(s) for s in rows["seed"]),
                        provenance=tuple(numbers[_row_key(r)] for _, r in rows.iterrows()))
    present = rows[values.notna()]
    raw = [float(v) for v in values[values.notna()]]
    seeds = tuple(int(s) for s in present["seed"])
    prov = tuple(numbers[_row_key(r)] for _, r in present.iterrows())
    if any(v < 0 for v in raw):
        return Measured(NO_GT, seeds=seeds, provenance=prov)
    per_seed = tuple(100.0 * v for v in raw)
    lo = hi = None
    note = ""
    if interval:
        lo, hi, note = column_interval(present, metric, root, bootstrap)
    return Measured(OK, percent=math.fsum(per_seed) / len(per_seed), per_seed=per_seed, seeds=seeds,
                    provenance=prov, lo=lo, hi=hi, interval_note=note)


def _row_key(row) -> tuple:
    return (row["kind"], row["variant"], int(row["seed"]))


def _provenance(rows) -> tuple[list[Provenance], dict[tuple, int]]:
    """Footnotes for ``rows`` (numbered from 1 in their order) and the row key -> number map."""
    import pandas as pd

    out: list[Provenance] = []
    numbers: dict[tuple, int] = {}
    for _, r in rows.iterrows():
        number = len(out) + 1
        dirty = r["dirty"]
        out.append(Provenance(
            number=number, kind=str(r["kind"]), variant=str(r["variant"]), seed=int(r["seed"]),
            commit=str(r["commit"]), dirty=None if pd.isna(dirty) else bool(dirty),
            created=str(r["created"]), hardware=str(r["hardware"]), config_hash=str(r["config_hash"]),
            record=str(r["record"])))
        numbers[_row_key(r)] = number
    return out, numbers


def _scale_order(scale: str) -> tuple:
    return (scale != PAPER_SCALE, scale)


def _published(table: TableSpec, values: dict[str, float | None] | None) -> dict[str, float | None]:
    values = values or {}
    return {m: (None if values.get(m) is None else float(values[m])) for m in table.metrics}


def build_view(method: MethodSpec, table: TableSpec, df, *, dataset: str | None = None,
               scale: str | None = None, root=None, bootstrap: Any = _DEFAULT) -> TableView:
    """The :class:`TableView` of ``table`` from the collected results ``df`` (a pandas DataFrame).

    Only full-split rows (:func:`full_split`) are used: a ``first-N-images`` quick look is never tabled.
    ``dataset`` / ``scale`` keep only blocks of that dataset / scale. ``root``: the results store the
    table came from (relative ``matches`` paths are read against it); ``bootstrap``: a
    :class:`~poseharness.report.claims.Bootstrap` (default: the real one, when importable; None: no
    intervals from matches files).
    """
    import pandas as pd

    if bootstrap is _DEFAULT:
        bootstrap = Bootstrap.default()

    columns = list(table.columns)
    df = full_split(df)
    mine = df[(df["method"] == method.name) & (df["split"] == table.split)
              & df["variant"].isin(columns)]
    family_ok = mine["dataset"].map(lambda d: dataset_family(d) == table.dataset).astype(bool)
    mine = mine[family_ok]
    if dataset is not None:
        mine = mine[mine["dataset"] == dataset]
    if scale is not None:
        mine = mine[mine["scale"] == scale]
    shown = mine[mine["kind"] == table.kind]
    oracle = mine[mine["kind"] == "oracle"] if table.kind == "trained" else mine.iloc[0:0]

    blocks = []
    keys = sorted({(d, s) for d, s in zip(shown["dataset"], shown["scale"])},
                  key=lambda ds: (ds[0] != table.dataset, dataset_kind_of(shown, ds[0]) != "real",
                                  ds[0], _scale_order(ds[1])))
    for ds_name, sc in keys:
        here = shown[(shown["dataset"] == ds_name) & (shown["scale"] == sc)]
        bound = oracle[(oracle["dataset"] == ds_name) & (oracle["scale"] == sc)]
        both = pd.concat([here, bound])
        order = {v: i for i, v in enumerate(columns)}
        both = both.assign(_o=both["variant"].map(order), _k=(both["kind"] != table.kind)) \
            .sort_values(["_o", "_k", "seed"]).drop(columns=["_o", "_k"])
        provenance, numbers = _provenance(both)
        rows = []
        for variant in columns:
            mv = here[here["variant"] == variant]
            ov = bound[bound["variant"] == variant]
            rows.append(Row(
                label=variant_label(method, variant), variant=variant,
                published=_published(table, table.paper.get(variant)),
                reproduced={m: _measure(mv, m, numbers, root=root, bootstrap=bootstrap, interval=True)
                            for m in table.metrics},
                oracle={m: _measure(ov, m, numbers) for m in table.metrics if not ov.empty},
            ))
        claims, ranks = _block_claims(table, here, rows, root, bootstrap)
        blocks.append(Block(
            family=table.dataset, dataset=ds_name, split=table.split, scale=sc,
            dataset_kind=dataset_kind_of(here, ds_name),
            # The record's label (real data, paper scale) and the paper's own dataset, not a subset.
            comparable=bool(here["comparable_to_paper"].all()) and ds_name == table.dataset,
            rows=tuple(rows), provenance=tuple(provenance), has_oracle=not bound.empty,
            seeds=tuple(sorted({int(s) for s in here["seed"]})), claims=claims, ranks=ranks))
    if not blocks:
        rows = tuple(Row(label=variant_label(method, v), variant=v,
                         published=_published(table, table.paper.get(v)),
                         reproduced={m: Measured(NOT_RUN) for m in table.metrics}) for v in columns)
        blocks.append(Block(family=table.dataset, dataset=None, split=table.split, scale=None, dataset_kind=None,
                            comparable=False, rows=rows, provenance=(), has_oracle=False, seeds=()))

    cited = tuple(Row(label=label, variant=None, published=_published(table, values))
                  for label, values in table.cited.items())
    paper = method.raw.get("paper", {})
    sweep = {}
    if table.plot is not None:
        # Each block at its own scale; the published figures at the paper's.
        for sc in [b.scale for b in blocks if b.scale is not None] + [PAPER_SCALE]:
            if sc in method.scales and sc not in sweep:
                sweep[sc] = sweep_coordinates(method, table, sc)
    return TableView(method=method.name, method_title=str(paper.get("title", method.name)),
                     paper_url=paper.get("url"), paper_venue=str(paper.get("venue", "")),
                     table=table, blocks=tuple(blocks), cited=cited, sweep=sweep)


def _block_claims(table: TableSpec, here, rows: list[Row], root, bootstrap
                  ) -> tuple[tuple[ClaimResult, ...], RankAgreement]:
    """The table's claims tested on one block's records, and τ of its first metric."""
    by_variant = {r.variant: r for r in rows}

    def mean(variant: str, metric: str) -> float | None:
        m = by_variant[variant].reproduced.get(metric)
        return m.percent if m is not None and m.status == OK else None

    results = []
    for claim in table.claims:
        pa, pb = (by_variant[v].published.get(claim.metric) for v in claim.variants)
        results.append(block_claim(
            claim, here, root, bootstrap, means={v: mean(v, claim.metric) for v in claim.variants},
            published=None if pa is None or pb is None else pa - pb))
    metric = table.metrics[0]
    ranks = rank_agreement({r.variant: (mean(r.variant, metric), r.published.get(metric)) for r in rows},
                           metric)
    return tuple(results), ranks


def dataset_kind_of(rows, dataset: str) -> str | None:
    kinds = set(rows.loc[rows["dataset"] == dataset, "dataset_kind"])
    return kinds.pop() if len(kinds) == 1 else None


def build_views(df, methods: Iterable[MethodSpec], *, dataset: str | None = None,
                scale: str | None = None, root=None, bootstrap: Any = _DEFAULT) -> list[TableView]:
    """Every table of every method, in method then table-spec order (arguments as :func:`build_view`)."""
    if bootstrap is _DEFAULT:
        bootstrap = Bootstrap.default()     # one, so a matches file is loaded once per report
    return [build_view(m, t, df, dataset=dataset, scale=scale, root=root, bootstrap=bootstrap)
            for m in methods for t in m.tables().values()]


def left_out(df, methods: Iterable[MethodSpec]) -> list[tuple[str, int]]:
    """Rows of ``df`` that no table shows, as ``(reason, row count)``: so nothing vanishes silently."""
    methods = {m.name: m for m in methods}
    tables = {name: list(m.tables().values()) for name, m in methods.items()}
    reasons: dict[str, int] = {}
    for _, r in df.iterrows():
        spec = methods.get(r["method"])
        subset = r["subset"] if "subset" in df.columns else FULL_SUBSET
        if isinstance(subset, str) and subset != FULL_SUBSET:
            reason = (f"{subset} records (--limit quick looks): only full-split records are tabled")
        elif spec is None:
            reason = f"method {r['method']!r}: not rendered (no method.yaml, or filtered out)"
        elif r["kind"] == "speed":
            continue                        # speed rows feed the speed plot, not a table
        elif dataset_family(r["dataset"]) is None:
            reason = f"dataset {r['dataset']!r}: no manifest says which paper dataset it stands for"
        elif not any(t.kind == r["kind"] and t.split == r["split"] and r["variant"] in t.columns
                     and t.dataset == dataset_family(r["dataset"]) for t in tables[spec.name]):
            reason = (f"{r['method']} {r['kind']} {r['variant']} on {r['dataset']} {r['split']}: "
                      "no paper table of this method has that column, kind, dataset and split")
        else:
            continue
        reasons[reason] = reasons.get(reason, 0) + 1
    return sorted(reasons.items())


def speed_points(df, method: MethodSpec, *, dataset: str | None = None,
                 scale: str | None = None, metric: str = "AP") -> list[SpeedPoint]:
    """Speed records of ``method`` joined with trained accuracy on the same (variant, dataset, split, scale).

    Speed is read from ``ms_per_image``, or ``fps`` (ms = 1000 / fps); seeds are averaged. A speed
    record with no matching trained accuracy is not plotted (there is no accuracy to place it at). Only
    full-split rows (:func:`full_split`) are used.
    """
    df = full_split(df)
    rows = df[df["method"] == method.name]
    if dataset is not None:
        rows = rows[rows["dataset"] == dataset]
    if scale is not None:
        rows = rows[rows["scale"] == scale]
    speed = rows[rows["kind"] == "speed"]
    trained = rows[rows["kind"] == "trained"]
    if speed.empty or trained.empty or metric not in trained.columns:
        return []
    points = []
    for (variant, ds_name, split, sc), group in speed.groupby(["variant", "dataset", "split", "scale"]):
        ms = []
        for _, r in group.iterrows():
            if "ms_per_image" in group.columns and _finite_positive(r["ms_per_image"]):
                ms.append(float(r["ms_per_image"]))
            elif "fps" in group.columns and _finite_positive(r["fps"]):
                ms.append(1000.0 / float(r["fps"]))
        acc = trained[(trained["variant"] == variant) & (trained["dataset"] == ds_name)
                      & (trained["split"] == split) & (trained["scale"] == sc)]
        values = [float(v) for v in acc[metric] if _finite(v) and v >= 0]
        if not ms or not values:
            continue
        points.append(SpeedPoint(
            method=method.name, variant=variant, label=variant_label(method, variant), dataset=ds_name,
            scale=sc, comparable=bool(acc["comparable_to_paper"].all()),
            ms_per_image=math.fsum(ms) / len(ms), accuracy=100.0 * math.fsum(values) / len(values),
            metric=metric))
    return points


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _finite_positive(value: Any) -> bool:
    return _finite(value) and float(value) > 0


# --- Markdown ---------------------------------------------------------------------------------------

def _md(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_measured(measured: Measured) -> str:
    if measured.status in (NOT_RUN, NO_BOUND):
        return measured.status
    refs = f" [{','.join(map(str, measured.provenance))}]" if measured.provenance else ""
    return f"{measured.text}{refs}"


def _md_interval(measured: Measured) -> str:
    text = measured.interval_text
    return f"{text} ({_md(measured.interval_note)})" if text == NO_INTERVAL_TEXT and measured.interval_note \
        else text


def seeds_text(measured: Measured) -> str:
    """How many seeds the figure averages ('' when there is none)."""
    return str(len(measured.per_seed)) if measured.status == OK else ""


def block_columns(view: TableView, block: Block) -> list[tuple[str, str]]:
    """The value columns of a block as ``(metric, part)``: part is reproduced | interval | seeds |
    published | difference (comparable blocks) | oracle | share (trained tables: the bound and the
    share of it reached). A block with no records has only reproduced | published."""
    if block.empty:
        parts = ["reproduced", "published"]
    else:
        parts = ["reproduced", "interval", "seeds", "published"]
        if block.comparable:
            parts.append("difference")
        if not view.oracle_table:
            parts += ["oracle", "share"]
    return [(m, p) for m in view.metrics for p in parts]


def column_heading(view: TableView, part: str) -> str:
    return {"reproduced": "reproduced (oracle)" if view.oracle_table else "reproduced",
            "interval": "95 % interval", "seeds": "seeds",
            "published": "published", "difference": "difference",
            "oracle": "oracle bound", "share": "share of bound"}[part]


def claim_label(view: TableView, variant: str) -> str:
    """A variant's label as the table's rows show it (the variant's name when it has no row)."""
    for row in view.blocks[0].rows:
        if row.variant == variant:
            return row.label
    return variant


CLAIMS_RULE = ("Interval: 95 % paired bootstrap of the difference over images and seeds. A claim "
               "“a > b” is reproduced if the interval lies above 0, contradicted if below 0, at the tables' "
               "precision (it must clear ±0.05 points); a claim "
               "“a ≈ b (±m)” is reproduced if the interval lies inside ±m AP points, contradicted if "
               "wholly outside; anything else is unresolved.")


def _md_claims(view: TableView, block: Block) -> list[str]:
    """The block's claims and τ as Markdown lines ([] when the table has no claim and no figure)."""
    if block.empty:
        return []
    out = ["", "### The paper's claims on these figures", ""]
    if block.claims_label:
        out += [f"> **{block.claims_label}.**", ""]
    if block.claims:
        out.append("| Claim | The paper says | Published a − b | Reproduced a − b | 95 % interval | Verdict |")
        out.append("|---|---|---:|---:|---:|---|")
        for r in block.claims:
            name = r.claim.describe(lambda v: claim_label(view, v))
            status = r.status + (f" ({_md(r.note)})" if r.note else "")
            out.append("| " + " | ".join([
                _md(f"{name}, {r.claim.metric}"), _md(f"“{r.claim.says.strip()}”"),
                format_difference(r.published) or "—", format_difference(r.diff) or "—",
                format_interval(r.lo, r.hi) or "—", f"**{status}**" if r.decided else status]) + " |")
        out += ["", CLAIMS_RULE]
    else:
        out.append("No claims listed for this table (`claims:` in method.yaml).")
    if block.ranks is not None:
        out += ["", f"Rank agreement: {block.ranks.text()}."]
    return out


def published_text(value: float | None) -> str:
    return "—" if value is None else format_percent(value)


def paper_setting(view: TableView) -> str:
    return f"{view.table.dataset} {view.table.split} at the paper's scale"


def to_markdown(view: TableView) -> str:
    """The table as GitHub-flavoured Markdown: one table per block, cited rows, provenance notes."""
    t = view.table
    out = [f"# {view.method} — {t.name}: {t.caption}", ""]
    paper = f"[{view.method_title}]({view.paper_url})" if view.paper_url else view.method_title
    out.append(f"Paper: {paper}{', ' + view.paper_venue if view.paper_venue else ''}. "
               f"Published figures: {paper_setting(view)}; values in %, one decimal.")
    if t.notes:
        out += ["", f"Notes: {t.notes.strip()}"]
    for block in view.blocks:
        out += ["", f"## {block.title()}", ""]
        if block.banner:
            out += [f"> **{block.banner}.** The published figures are for {paper_setting(view)}; "
                    "no difference is computed.", ""]
        elif block.empty and block.rows:
            out += [f"> No {t.kind} records yet; run the workflow, then `poseharness results collect`.", ""]
        cols = block_columns(view, block)
        out.append("| " + " | ".join(["Variant", *(f"{m} {column_heading(view, p)}" for m, p in cols)])
                   + " |")
        out.append("|---" + "|---:" * len(cols) + "|")
        for row in (*block.rows, *view.cited):
            cells = [_md(row.label if not row.cited else f"{row.label} (cited)")]
            for metric, part in cols:
                if part == "published":
                    cells.append(published_text(row.published.get(metric)))
                elif row.cited:
                    cells.append("cited" if part == "reproduced" else "")
                elif part == "reproduced":
                    cells.append(_md_measured(row.reproduced[metric]))
                elif part == "interval":
                    cells.append(_md_interval(row.reproduced[metric]))
                elif part == "seeds":
                    cells.append(seeds_text(row.reproduced[metric]))
                elif part == "difference":
                    cells.append(format_difference(row.difference(metric)))
                elif part == "oracle":
                    cells.append(_md_measured(row.bound(metric)))
                else:
                    ok = row.reproduced[metric].status == OK
                    cells.append(format_share(row.share(metric)) if ok else "")
            out.append("| " + " | ".join(cells) + " |")
        out += _md_claims(view, block)
        if block.provenance:
            out += ["", "Provenance:", ""]
            out += [f"{p.number}. {_md(p.text())}" for p in block.provenance]
    out += ["", "\"not run\": no record in the results table for that cell; \"cited\": a published "
            "figure of another method, not reproduced here; \"95 % interval\": over seeds and images; "
            "\"no interval\": the records lack what it needs (older records have no matches file); "
            "\"oracle bound\": the same variant decoded from ground truth on the same dataset, split and "
            "scale (\"no bound\": no such record); \"share of bound\": reproduced / bound."]
    return "\n".join(out) + "\n"
