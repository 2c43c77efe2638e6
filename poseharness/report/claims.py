"""The paper's claims, tested on the reproduced figures: a verdict per claim, and rank agreement.

A table in ``method.yaml`` lists the comparisons the paper draws from it (:class:`~poseharness.methods.Claim`):
``better``/``worse`` (variant a beats variant b) or ``same`` (a and b within ``margin`` points). Each is
tested with the paired bootstrap interval ``(lo, hi)`` of ``a - b`` over images and seeds
(:func:`poseharness.eval.bootstrap.paired_seeds_difference`):

==============  ===========================  ==========================================
claim           reproduced                   contradicted
==============  ===========================  ==========================================
better / worse  ``lo > 0``                   ``hi < 0``
same (margin m) ``-m <= lo`` and ``hi <= m`` ``lo > m`` or ``hi < -m`` (wholly outside)
==============  ===========================  ==========================================

and **unresolved** otherwise (:func:`verdict`, a pure function of the claim and ``(diff, lo, hi)``). The
rank agreement between the reproduced and the published figures of a table is Kendall's τ over the
columns that have both (:func:`rank_agreement`).

Units: the bootstrap works in the records' units (fractions in [0, 1]); everything here and in the
report is in percent (AP points), so margins are read as written in method.yaml.

The intervals need the per-image matches of each scored run (``matches`` column of results.parquet,
a ``.matches.npz`` beside the predictions file). :class:`Bootstrap` loads them (cached) and holds the
interval functions, so tests can pass fakes; records without a matches file get a figure with no
interval, and a claim on them the status ``no interval``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import HarnessError
from ..methods import Claim

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
UNRESOLVED = "unresolved"
NOT_RUN = "not run"            # a variant of the claim has no figure in this block
NO_INTERVAL = "no interval"    # both have figures, but no paired interval could be computed
VERDICTS = (REPRODUCED, CONTRADICTED, UNRESOLVED)
UNIT = 100.0                   # records' fractions -> percent
LEVEL = 0.95


#: The smallest difference a "better" claim's interval must clear, in percentage points: half the last digit the
#: tables print (one decimal). An interval that reads "+0.0 – +0.0" does not exclude 0 at the precision of the
#: paper's tables or of ours (it happened: PoseDet's Table 4 at the tiny CPU scale, both AP near 0, had an interval
#: of about +0.00001 – +0.00004 and read "reproduced").
RESOLUTION = 0.05


def verdict(claim: Claim, diff: float | None, lo: float | None, hi: float | None) -> str:
    """The verdict on ``claim`` from the interval ``(lo, hi)`` of ``a - b`` (same units as the margin).

    A "better" claim is reproduced when ``lo >= RESOLUTION``, contradicted when ``hi <= -RESOLUTION``.
    ``diff`` (the point estimate) decides nothing: the interval does. Returns :data:`REPRODUCED`,
    :data:`CONTRADICTED` or :data:`UNRESOLVED`; :data:`NOT_RUN` without a difference and
    :data:`NO_INTERVAL` with a difference but no interval.
    """
    if lo is None or hi is None:
        return NOT_RUN if diff is None else NO_INTERVAL
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise ValueError(f"not an interval: ({lo}, {hi})")
    if claim.kind == "better":
        if lo >= RESOLUTION:
            return REPRODUCED
        if hi <= -RESOLUTION:
            return CONTRADICTED
        return UNRESOLVED
    if claim.kind == "same":
        m = float(claim.margin)
        if -m <= lo and hi <= m:
            return REPRODUCED
        if lo > m or hi < -m:
            return CONTRADICTED
        return UNRESOLVED
    raise ValueError(f"unknown claim kind {claim.kind!r}")


@dataclass(frozen=True)
class ClaimResult:
    """One claim tested on one block's figures; differences ``a - b`` in percentage points."""

    claim: Claim
    status: str                          # a verdict, NOT_RUN or NO_INTERVAL
    diff: float | None = None            # reproduced a - b
    lo: float | None = None
    hi: float | None = None
    published: float | None = None       # published a - b (None when the paper gives one side only)
    seeds: tuple[int, ...] = ()          # the seeds paired
    note: str = ""                       # why there is no verdict, when there is none

    @property
    def decided(self) -> bool:
        return self.status in (REPRODUCED, CONTRADICTED)


def evaluate_claim(claim: Claim, a_runs: list, b_runs: list, difference: Callable[..., tuple], *,
                   published: float | None = None, seeds: Iterable[int] = (), n: int = 1000,
                   seed: int = 0, level: float = LEVEL) -> ClaimResult:
    """Test ``claim`` on the paired runs (one per seed, same order) of its two variants.

    ``difference(a_runs, b_runs, metric=, n=, seed=, level=) -> (a - b, lo, hi)`` in the records' units
    (fractions), e.g. ``Bootstrap.default().difference`` (the paired bootstrap over seeds and images).
    """
    if not a_runs or len(a_runs) != len(b_runs):
        raise ValueError("a claim needs the same number (>= 1) of paired runs on both sides")
    diff, lo, hi = difference(a_runs, b_runs, metric=claim.metric, n=n, seed=seed, level=level)
    diff, lo, hi = UNIT * float(diff), UNIT * float(lo), UNIT * float(hi)
    return ClaimResult(claim=claim, status=verdict(claim, diff, lo, hi), diff=diff, lo=lo, hi=hi,
                       published=published, seeds=tuple(seeds))


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's τ between reproduced and published figures over the ``n`` columns that have both."""

    metric: str
    tau: float | None                    # None when undefined (n < 2, or one side all ties)
    n: int
    columns: tuple[str, ...] = ()
    pvalue: float | None = None

    def text(self) -> str:
        cols = f"{self.n} column{'s' * (self.n != 1)}"
        if self.tau is None:
            why = "fewer than 2 columns" if self.n < 2 else "all figures tied on one side"
            return f"Kendall's τ ({self.metric}): not defined ({why}; {cols} with both figures)"
        return f"Kendall's τ ({self.metric}) = {self.tau:+.2f} over {cols} with a reproduced and a published figure"


def rank_agreement(pairs: Mapping[str, tuple[float | None, float | None]], metric: str) -> RankAgreement:
    """τ over the columns whose ``(reproduced, published)`` are both given (:func:`scipy.stats.kendalltau`)."""
    both = [(c, float(r), float(p)) for c, (r, p) in pairs.items() if r is not None and p is not None]
    columns = tuple(c for c, _, _ in both)
    if len(both) < 2:
        return RankAgreement(metric=metric, tau=None, n=len(both), columns=columns)
    from scipy.stats import kendalltau

    result = kendalltau([r for _, r, _ in both], [p for _, _, p in both])
    tau, pvalue = float(result.statistic), float(result.pvalue)
    if not math.isfinite(tau):
        return RankAgreement(metric=metric, tau=None, n=len(both), columns=columns)
    return RankAgreement(metric=metric, tau=tau, n=len(both), columns=columns,
                         pvalue=pvalue if math.isfinite(pvalue) else None)


# --- loading the matches of a column's seeds ------------------------------------------------------------

@dataclass
class Bootstrap:
    """How the report gets its intervals: ``load(path) -> run``, ``interval(runs, metric=, ...) -> dict``
    with ``lo``/``hi``, ``difference(a_runs, b_runs, metric=, ...) -> (a - b, lo, hi)`` (records' units).

    :meth:`default` binds :mod:`poseharness.eval.bootstrap`; tests pass fakes. Loaded runs are cached by
    path for the life of the object (one report).
    """

    load: Callable[[Path], Any]
    interval: Callable[..., Mapping[str, float]]
    difference: Callable[..., tuple]
    n: int = 1000
    seed: int = 0
    level: float = LEVEL
    _cache: dict = field(default_factory=dict, repr=False)

    @classmethod
    def default(cls) -> "Bootstrap | None":
        """The real bootstrap, or None when :mod:`poseharness.eval.bootstrap` is not importable."""
        try:
            from ..eval.bootstrap import Matches, paired_seeds_difference, seeds_interval
        except ImportError:
            return None

        def a_minus_b(a: list, b: list, **kw) -> tuple:
            # paired_seeds_difference(x, y) is y - x (mean over y's seeds minus x's): swap to get a - b.
            return paired_seeds_difference(b, a, **kw)

        return cls(load=Matches.load, interval=seeds_interval, difference=a_minus_b)

    def runs(self, paths: Iterable[Path]) -> list:
        out = []
        for p in paths:
            key = str(p)
            if key not in self._cache:
                self._cache[key] = self.load(p)
            out.append(self._cache[key])
        return out

    def column_interval(self, runs: list, metric: str) -> tuple[float, float]:
        """``(lo, hi)`` in percent of one column's seeds (:func:`seeds_interval`)."""
        r = self.interval(runs, metric=metric, n=self.n, seed=self.seed, level=self.level)
        lo, hi = float(r["lo"]), float(r["hi"])
        if lo < 0 or hi < 0:          # the bootstrap's -1: no resample had ground truth in range
            raise ValueError(f"no resample has ground truth for {metric}")
        return UNIT * lo, UNIT * hi


UNAVAILABLE = "poseharness.eval.bootstrap is not available"
NO_MATCHES = "older record: no matches file"


def resolve(path: str, root: Path | None) -> Path:
    """A ``matches`` (or ``predictions``) path of the results table as a file here.

    Absolute paths stand; a relative one is looked for under the store root, the project beside it and
    the working directory, in that order (the first that exists; else the first candidate).
    """
    p = Path(path)
    if p.is_absolute():
        return p
    candidates = ([root / p, root.parent / p] if root is not None else []) + [Path(os.getcwd()) / p]
    for c in candidates:
        if c.is_file():
            return c
    return candidates[0]


def matches_paths(rows, root: Path | None) -> tuple[list[Path] | None, str]:
    """The matches files of ``rows`` (one per seed, in row order), or ``(None, why not)``."""
    import pandas as pd

    if "matches" not in rows.columns:
        return None, NO_MATCHES
    values = list(rows["matches"])
    if any(v is None or (not isinstance(v, str) and pd.isna(v)) or v == "" for v in values):
        return None, NO_MATCHES
    paths = [resolve(str(v), root) for v in values]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        return None, f"matches file not found: {missing[0]}"
    return paths, ""


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def column_interval(rows, metric: str, root: Path | None,
                    bootstrap: Bootstrap | None) -> tuple[float | None, float | None, str]:
    """``(lo, hi, note)`` in percent: the 95 % interval of one column's figure over seeds and images.

    One seed whose record carries ``<metric>_lo`` / ``<metric>_hi`` uses them; otherwise the seeds'
    matches files go through ``bootstrap.interval``. ``note`` says why there is none.
    """
    lo_col, hi_col = f"{metric}_lo", f"{metric}_hi"
    if len(rows) == 1 and lo_col in rows.columns and hi_col in rows.columns:
        lo, hi = rows[lo_col].iloc[0], rows[hi_col].iloc[0]
        if _finite(lo) and _finite(hi) and float(lo) >= 0:
            return UNIT * float(lo), UNIT * float(hi), ""
    paths, why = matches_paths(rows, root)
    if paths is None:
        return None, None, why
    if bootstrap is None:
        return None, None, UNAVAILABLE
    try:
        lo, hi = bootstrap.column_interval(bootstrap.runs(paths), metric)
    except (HarnessError, KeyError, ValueError, OSError) as exc:
        return None, None, f"bootstrap failed: {exc}"
    return lo, hi, ""


def block_claim(claim: Claim, here, root: Path | None, bootstrap: Bootstrap | None, *,
                means: Mapping[str, float | None], published: float | None) -> ClaimResult:
    """Test ``claim`` on one block: ``here`` holds the block's records (all variants, all seeds),
    ``means`` each variant's reproduced figure (percent, None when it has none)."""
    a_mean, b_mean = means.get(claim.a), means.get(claim.b)
    if a_mean is None or b_mean is None:
        missing = [v for v, m in ((claim.a, a_mean), (claim.b, b_mean)) if m is None]
        return ClaimResult(claim=claim, status=NOT_RUN, published=published,
                           note=f"no {claim.metric} figure for {' and '.join(missing)}")
    point = a_mean - b_mean

    def usable(variant):
        rows = here[here["variant"] == variant]
        if claim.metric in rows.columns:
            rows = rows[rows[claim.metric].notna() & (rows[claim.metric] >= 0)]
        return rows

    a_rows, b_rows = usable(claim.a), usable(claim.b)
    seeds = sorted(set(int(s) for s in a_rows["seed"]) & set(int(s) for s in b_rows["seed"]))
    if not seeds:
        return ClaimResult(claim=claim, status=NO_INTERVAL, diff=point, published=published,
                           note="no seed was run for both variants")
    a_rows = a_rows.set_index(a_rows["seed"].astype(int)).loc[seeds]
    b_rows = b_rows.set_index(b_rows["seed"].astype(int)).loc[seeds]
    a_paths, why_a = matches_paths(a_rows, root)
    b_paths, why_b = matches_paths(b_rows, root)
    if a_paths is None or b_paths is None:
        return ClaimResult(claim=claim, status=NO_INTERVAL, diff=point, published=published,
                           seeds=tuple(seeds), note=why_a or why_b)
    if bootstrap is None:
        return ClaimResult(claim=claim, status=NO_INTERVAL, diff=point, published=published,
                           seeds=tuple(seeds), note=UNAVAILABLE)
    try:
        return evaluate_claim(claim, bootstrap.runs(a_paths), bootstrap.runs(b_paths), bootstrap.difference,
                              published=published, seeds=seeds, n=bootstrap.n, seed=bootstrap.seed,
                              level=bootstrap.level)
    except (HarnessError, KeyError, ValueError, OSError) as exc:
        return ClaimResult(claim=claim, status=NO_INTERVAL, diff=point, published=published,
                           seeds=tuple(seeds), note=f"bootstrap failed: {exc}")


def claims_summary(results: Iterable[ClaimResult]) -> str:
    """``'1 reproduced, 2 unresolved, 2 not run'``: how many claims ended in each state."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    order = (*VERDICTS, NO_INTERVAL, NOT_RUN)
    return ", ".join(f"{counts[s]} {s}" for s in order if s in counts)


def verdict_rule(claim: Claim) -> str:
    """The rule of :func:`verdict` for this claim, in words."""
    if claim.kind == "better":
        return ("reproduced if the interval lies above 0 (from +0.05 points), contradicted if below (to -0.05), "
                "else unresolved")
    m = f"{claim.margin:g}"
    return (f"reproduced if the interval lies inside ±{m}, contradicted if wholly outside it, "
            "else unresolved")
