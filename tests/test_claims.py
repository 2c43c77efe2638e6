"""The paper's claims as data (method.yaml ``claims:``), their verdicts, and rank agreement.

Verdict rules and τ are worked by hand; the page-level code is driven through a fake bootstrap (a
``difference`` and an ``interval`` function over tiny JSON "matches" files), so these tests need
nothing from :mod:`poseharness.eval.bootstrap`. One integration test runs the real module once it exists.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from poseharness.errors import HarnessError
from poseharness.methods import Claim, load_method, parse_method
from poseharness.report.claims import (CONTRADICTED, NO_INTERVAL, NO_MATCHES, NOT_RUN, REPRODUCED,
                                       UNRESOLVED, Bootstrap, block_claim, column_interval,
                                       evaluate_claim, rank_agreement, verdict)

BETTER = Claim(kind="better", a="ours", b="qnt", metric="AP", says="ours beats qnt")
SAME = Claim(kind="same", a="ours", b="ours_ro", metric="AP", says="no gain", margin=0.5)


# --- verdict rules, by hand ------------------------------------------------------------------------------

@pytest.mark.parametrize("lo, hi, expected", [
    (0.1, 3.0, REPRODUCED),         # wholly above 0
    (0.05, 0.2, REPRODUCED),        # clears 0 by half the printed digit
    (1e-9, 0.2, UNRESOLVED),        # above 0, but reads "+0.0" at the tables' precision
    (0.04, 0.08, UNRESOLVED),
    (-0.08, -0.05, CONTRADICTED),
    (-0.2, -1e-5, UNRESOLVED),
    (-3.0, -0.1, CONTRADICTED),     # wholly below 0
    (-0.2, 0.4, UNRESOLVED),        # straddles 0
    (0.0, 2.0, UNRESOLVED),         # touching 0 is not above it
    (-2.0, 0.0, UNRESOLVED),
])
def test_better_claim_verdicts(lo, hi, expected):
    assert verdict(BETTER, (lo + hi) / 2, lo, hi) == expected


@pytest.mark.parametrize("lo, hi, expected", [
    (-0.3, 0.2, REPRODUCED),        # inside [-0.5, 0.5]
    (-0.5, 0.5, REPRODUCED),        # the margin's ends belong to it
    (0.6, 1.4, CONTRADICTED),       # wholly above +0.5
    (-2.0, -0.51, CONTRADICTED),    # wholly below -0.5
    (0.2, 0.9, UNRESOLVED),         # straddles +0.5
    (-0.8, -0.1, UNRESOLVED),       # straddles -0.5
    (-0.8, 0.8, UNRESOLVED),        # wider than the margin on both sides
])
def test_same_claim_verdicts(lo, hi, expected):
    assert verdict(SAME, (lo + hi) / 2, lo, hi) == expected


def test_verdict_without_interval_and_bad_interval():
    assert verdict(BETTER, None, None, None) == NOT_RUN
    assert verdict(BETTER, 1.2, None, None) == NO_INTERVAL
    with pytest.raises(ValueError, match="not an interval"):
        verdict(BETTER, 0.0, 1.0, -1.0)


def test_evaluate_claim_with_a_difference_function():
    calls = []

    def difference(a, b, metric="AP", n=1000, seed=0, level=0.95):
        calls.append((a, b, metric, n, seed, level))
        return 0.071, 0.052, 0.090                       # fractions, as the bootstrap returns them

    r = evaluate_claim(BETTER, ["a0", "a1"], ["b0", "b1"], difference, published=8.2, seeds=(0, 1))
    assert r.status == REPRODUCED and r.decided
    assert (round(r.diff, 6), round(r.lo, 6), round(r.hi, 6)) == (7.1, 5.2, 9.0)   # percent
    assert r.published == 8.2 and r.seeds == (0, 1)
    assert calls == [(["a0", "a1"], ["b0", "b1"], "AP", 1000, 0, 0.95)]
    # A 'same' claim read in the same units as its margin (AP points).
    r = evaluate_claim(SAME, ["a"], ["b"], lambda a, b, **k: (0.001, -0.003, 0.004))
    assert r.status == REPRODUCED
    r = evaluate_claim(SAME, ["a"], ["b"], lambda a, b, **k: (0.012, 0.007, 0.017))
    assert r.status == CONTRADICTED
    with pytest.raises(ValueError):
        evaluate_claim(BETTER, ["a"], [], lambda a, b, **k: (0, 0, 0))


# --- Kendall's tau ----------------------------------------------------------------------------------------

def test_rank_agreement_worked_by_hand():
    # Published order dark < qnt < ours_bilinear < ours; reproduced swaps qnt and dark.
    # Pairs (6): (dark, qnt) discordant, the other five concordant -> tau = (5 - 1) / 6 = 2/3.
    pairs = {"dark": (6.0, 54.5), "qnt": (5.0, 56.2), "ours_bilinear": (11.0, 62.3), "ours": (13.0, 64.4),
             "qnt_ro": (None, 62.8), "ours_ro": (12.0, None)}
    r = rank_agreement(pairs, "AP")
    assert r.n == 4 and r.columns == ("dark", "qnt", "ours_bilinear", "ours")
    assert math.isclose(r.tau, 2 / 3)
    assert "+0.67 over 4 columns" in r.text()
    # Reversed order: tau = -1; one column: undefined.
    assert rank_agreement({"a": (1.0, 3.0), "b": (2.0, 2.0), "c": (3.0, 1.0)}, "AP").tau == pytest.approx(-1.0)
    one = rank_agreement({"a": (1.0, 3.0), "b": (2.0, None)}, "AP")
    assert one.tau is None and one.n == 1 and "not defined" in one.text()
    tied = rank_agreement({"a": (1.0, 3.0), "b": (1.0, 2.0)}, "AP")
    assert tied.tau is None and tied.n == 2


# --- claims in method.yaml --------------------------------------------------------------------------------

def test_claims_are_parsed_from_method_yaml():
    t2 = load_method("gog").tables()["table2"]
    described = [c.describe() for c in t2.claims]
    assert described == ["ours > qnt", "ours > dark", "qnt_ro > qnt", "ours > ours_bilinear",
                         "ours ≈ ours_ro (±0.5)"]
    assert all(c.metric == "AP" and c.says for c in t2.claims)
    assert t2.claims[-1].kind == "same" and t2.claims[-1].margin == 0.5
    sp = load_method("simple_pose").tables()["table1"]
    pairs = {(c.a, c.b) for c in sp.claims}
    assert {("imhn3_fl2", "imhn3"), ("imhn3_fl2", "imhn3_fl2_noms"), ("imhn3_fl2", "imhn3_fl2_nose"),
            ("imhn3_fl2", "imhn3_fl2_kponly"), ("imhn3_fl2", "imhn3_fl2_mst"), ("imhn4", "imhn3"),
            ("imhn3", "imhn3_paf")} <= pairs
    for spec in (load_method("gog"), load_method("simple_pose")):
        for table in spec.tables().values():
            for c in table.claims:
                assert {c.a, c.b} <= set(table.columns) and c.metric in table.metrics


def _gog_with_claims(tmp_path: Path, claims: list) -> tuple[dict, Path]:
    raw = yaml.safe_load(load_method("gog").source.read_text())
    raw["tables"]["table2"]["claims"] = claims
    d = tmp_path / "gog"
    d.mkdir(exist_ok=True)
    return raw, d / "method.yaml"


@pytest.mark.parametrize("claims, message", [
    ([{"better": "ours", "worse": "limbs44", "says": "x"}],
     r"method\.yaml: field tables\.table2\.claims\[0\]\.worse: variant 'limbs44' is not a column of table table2"),
    ([{"better": "ours", "worse": "qnt", "says": "x"}, {"same": ["ours", "nope"], "margin": 0.5, "says": "y"}],
     r"method\.yaml: field tables\.table2\.claims\[1\]\.same: variant 'nope' is not a column of table table2"),
    ([{"better": "ours", "worse": "qnt", "metric": "AR", "says": "x"}],
     r"tables\.table2\.claims\[0\]\.metric: 'AR' is not a metric of table table2"),
    ([{"better": "ours", "says": "x"}], r"tables\.table2\.claims\[0\]: .*missing 'worse'"),
    ([{"same": ["ours", "ours_ro"], "says": "x"}], r"tables\.table2\.claims\[0\]: a 'same' claim needs 'margin'"),
    ([{"same": ["ours", "ours_ro"], "better": "ours", "margin": 1, "says": "x"}],
     r"claims\[0\]: a 'same' claim takes no 'better'"),
    ([{"better": "ours", "worse": "qnt", "margin": 1, "says": "x"}], r"claims\[0\]\.margin: only a 'same' claim"),
    ([{"better": "ours", "worse": "ours", "says": "x"}], r"claims\[0\]: better and worse are both 'ours'"),
])
def test_bad_claims_are_refused_naming_file_table_and_claim(tmp_path, claims, message):
    raw, source = _gog_with_claims(tmp_path, claims)
    with pytest.raises(HarnessError, match=message) as info:
        parse_method(raw, source)
    assert str(source) in str(info.value)


def test_misspelt_claim_key_is_refused(tmp_path):
    raw, source = _gog_with_claims(tmp_path, [{"better": "ours", "wrose": "qnt", "says": "x"}])
    with pytest.raises(HarnessError) as info:
        parse_method(raw, source)
    text = str(info.value)
    assert str(source) in text and "tables.table2.claims.0" in text and "'wrose'" in text
    # A claim without the paper's words is refused too.
    raw, source = _gog_with_claims(tmp_path, [{"better": "ours", "worse": "qnt"}])
    with pytest.raises(HarnessError, match=r"tables\.table2\.claims\.0: 'says' is a required property"):
        parse_method(raw, source)


# --- the page-level code: intervals and claims from the matches files of a block's rows -------------------

def _fake_bootstrap() -> Bootstrap:
    """Runs are {"AP": x} files; a column's interval is mean ± 1 point, a difference's ± 2 points."""

    def interval(runs, metric="AP", n=1000, seed=0, level=0.95):
        mean = sum(r[metric] for r in runs) / len(runs)
        return {"mean": mean, "std": 0.0, "lo": mean - 0.01, "hi": mean + 0.01}

    def difference(a, b, metric="AP", n=1000, seed=0, level=0.95):
        d = sum(r[metric] for r in a) / len(a) - sum(r[metric] for r in b) / len(b)
        return d, d - 0.02, d + 0.02

    return Bootstrap(load=lambda p: json.loads(Path(p).read_text()), interval=interval, difference=difference)


def _rows(tmp_path: Path, spec: dict):
    """A results-table slice: spec variant -> [(seed, AP, has a matches file)]."""
    import pandas as pd

    rows = []
    for variant, runs in spec.items():
        for seed, ap, with_matches in runs:
            path = None
            if with_matches:
                path = f"predictions/{variant}-seed{seed}.matches.npz"
                (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / path).write_text(json.dumps({"AP": ap}))
            rows.append({"variant": variant, "seed": seed, "AP": ap, "matches": path})
    return pd.DataFrame(rows)


def test_block_claims_and_column_intervals_from_matches(tmp_path):
    boot = _fake_bootstrap()
    here = _rows(tmp_path, {"ours": [(0, 0.13, True), (1, 0.14, True)], "qnt": [(0, 0.05, True), (1, 0.06, True)],
                            "ours_ro": [(0, 0.134, True), (1, 0.135, True)], "dark": [(0, 0.20, True)],
                            "ours_bilinear": [(0, 0.12, False)]})
    means = {"ours": 13.5, "qnt": 5.5, "ours_ro": 13.45, "dark": 20.0, "ours_bilinear": 12.0, "qnt_ro": None}
    lo, hi, note = column_interval(here[here["variant"] == "ours"], "AP", tmp_path, boot)
    assert (round(lo, 6), round(hi, 6), note) == (12.5, 14.5, "")
    lo, hi, note = column_interval(here[here["variant"] == "ours_bilinear"], "AP", tmp_path, boot)
    assert lo is None and hi is None and note == NO_MATCHES

    def run(claim):
        return block_claim(claim, here, tmp_path, boot, means=means, published=None)

    r = run(BETTER)                                         # 13.5 - 5.5 = 8.0, [6.0, 10.0]
    assert r.status == REPRODUCED and (round(r.lo, 6), round(r.hi, 6)) == (6.0, 10.0) and r.seeds == (0, 1)
    r = run(Claim(kind="better", a="ours", b="dark", metric="AP", says="x"))   # seed 0 only: -7 +- 2
    assert r.status == CONTRADICTED and r.seeds == (0,) and round(r.diff, 6) == -7.0
    r = run(SAME)                                          # 0.05 +- 2 straddles +-0.5
    assert r.status == UNRESOLVED
    r = run(Claim(kind="better", a="qnt_ro", b="qnt", metric="AP", says="x"))
    assert r.status == NOT_RUN and "qnt_ro" in r.note
    r = run(Claim(kind="better", a="ours", b="ours_bilinear", metric="AP", says="x"))
    assert r.status == NO_INTERVAL and round(r.diff, 6) == 1.5 and r.note == NO_MATCHES
    # No bootstrap module at all: figures, no intervals, and said so.
    r = block_claim(BETTER, here, tmp_path, None, means=means, published=None)
    assert r.status == NO_INTERVAL and "not available" in r.note


def test_a_record_interval_is_used_for_one_seed(tmp_path):
    import pandas as pd

    rows = pd.DataFrame([{"variant": "ours", "seed": 0, "AP": 0.1, "AP_lo": 0.08, "AP_hi": 0.125, "matches": None}])
    lo, hi, note = column_interval(rows, "AP", tmp_path, None)
    assert (round(lo, 6), round(hi, 6), note) == (8.0, 12.5, "")


def test_real_bootstrap_integration(tmp_path):
    """poseharness.eval.bootstrap behind the verdicts: real matches of two results files on a real sample
    annotation file; the better one (less noise, no missing person) must come out ahead."""
    pytest.importorskip("poseharness.eval.bootstrap")
    import pandas as pd

    from poseharness.bench.evaluate import perturbed_predictions
    from poseharness.eval import evaluate
    from poseharness.eval.bootstrap import matches_path
    from shared_data import COCO_GT as gt_path

    gt = json.loads(gt_path.read_text())
    rows = []
    for variant, seed, kw in (("ours", 0, {"jitter": 0.01, "missing": 0.0}),
                              ("ours", 1, {"jitter": 0.015, "missing": 0.0}),
                              ("qnt", 0, {"jitter": 0.2, "missing": 0.4}),
                              ("qnt", 1, {"jitter": 0.25, "missing": 0.4})):
        records = perturbed_predictions(gt, 17, seed=seed, false_positives=0.0, duplicates=0.0, **kw)
        pred = tmp_path / "predictions" / f"{variant}-seed{seed}.json"
        pred.parent.mkdir(exist_ok=True)
        pred.write_text(json.dumps(records))
        metrics, found = evaluate(pred, gt_path, "coco", matches=True)
        found.save(matches_path(pred))
        rows.append({"variant": variant, "seed": seed, "AP": metrics["AP"],
                     "matches": str(matches_path(pred).relative_to(tmp_path))})   # relative to the store
    here = pd.DataFrame(rows)
    boot = Bootstrap.default()
    assert boot is not None
    means = {v: 100 * here.loc[here["variant"] == v, "AP"].mean() for v in ("ours", "qnt")}
    assert means["ours"] > means["qnt"]
    for variant in ("ours", "qnt"):
        lo, hi, note = column_interval(here[here["variant"] == variant], "AP", tmp_path, boot)
        assert note == "" and 0 <= lo <= means[variant] <= hi <= 100
    r = block_claim(BETTER, here, tmp_path, boot, means=means, published=8.2)
    assert r.seeds == (0, 1) and r.published == 8.2
    assert r.diff == pytest.approx(means["ours"] - means["qnt"])          # a - b, in AP points
    assert r.lo <= r.diff <= r.hi and r.status == verdict(BETTER, r.diff, r.lo, r.hi)
    assert r.status == REPRODUCED                  # about 90 points apart: decided at seed 0
    # The same pair read the other way round is the mirror image.
    flipped = block_claim(Claim(kind="better", a="qnt", b="ours", metric="AP", says="x"), here, tmp_path, boot,
                          means=means, published=None)
    assert flipped.diff == pytest.approx(-r.diff) and flipped.lo == pytest.approx(-r.hi)
