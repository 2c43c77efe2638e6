"""A table that is a sweep (``plot:`` in method.yaml) gets a line plot in the report: PoseDet's Figure 3.

A tiny store of oracle records for a few of ``figure3``'s columns (synthetic-crowdpose, tiny) is collected
and reported; the page embeds the sweep figure, and the figure has one line per NMS type, the points sorted by
threshold with their intervals, and "no NMS" as a dashed reference line. A ``plot:`` that does not resolve is
an error naming the file, the table and the key.
"""
from __future__ import annotations

import copy
import re

import pytest
import yaml

from poseharness.errors import HarnessError
from poseharness.methods import PlotSpec, load_method, parse_method
from poseharness.report import build_report
from poseharness.report.plots import INTERVAL_LABEL, save_figure, table_figure
from poseharness.report.tables import build_view
from poseharness.store import RunRecord, collect, load_table, write_record

PROV = {"code": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False, "describe": "0123456"},
        "versions": {"python": "3.11", "torch": "2", "numpy": "1.26", "pycocotools": "2.0",
                     "xtcocotools": "1.14"},
        "hardware": {"cpu": "Test CPU", "cores": 2}}
PRED = {"path": "predictions.json", "sha256": "0" * 64}
DATASET, SCALE = "synthetic-crowdpose", "tiny"
# variant -> (AP_hard, AP); the 0.5 points carry a 95 % interval (one seed: from the record).
FIGURES = {"fig3_none": (0.70, 0.80), "fig3_oks_30": (0.91, 0.95), "fig3_oks_50": (0.88, 0.93),
           "fig3_iou_30": (0.81, 0.90), "fig3_iou_50": (0.84, 0.91)}
INTERVALS = {"fig3_oks_50": {"AP_hard": [0.86, 0.90], "AP": [0.92, 0.94]},
             "fig3_iou_50": {"AP_hard": [0.82, 0.86]}}


def _store(base):
    results = base / "results"
    for variant, (ap_hard, ap) in FIGURES.items():
        write_record(RunRecord.new(
            kind="oracle", dataset=DATASET, split="val", method="posedet", variant=variant, scale=SCALE,
            seed=0, metrics={"AP_hard": ap_hard, "AP": ap}, config={"variant": variant, "scale": SCALE},
            dataset_kind="synthetic", predictions=PRED, prov=PROV, timings={"evaluate": 0.1},
            intervals=INTERVALS.get(variant)), results)
    collect(results)
    return results


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return _store(tmp_path_factory.mktemp("sweep"))


def _labelled(ax):
    return {line.get_label(): line for line in ax.get_lines() if not line.get_label().startswith("_")}


def test_figure3_declares_its_sweep():
    table = load_method("posedet").tables()["figure3"]
    assert table.plot == PlotSpec(x="decode.nms.threshold", series="decode.nms.type", metrics=("AP_hard", "AP"))
    assert set(table.plot.metrics) <= set(table.metrics)
    # Tables without plot: keep their bars.
    assert load_method("posedet").tables()["bound"].plot is None


def test_sweep_figure_lines_reference_and_intervals(store):
    posedet = load_method("posedet")
    view = build_view(posedet, posedet.tables()["figure3"], load_table(store), root=store, bootstrap=None)
    assert view.sweep[SCALE]["fig3_oks_30"] == (0.3, "oks") and view.sweep[SCALE]["fig3_none"] == (None, "none")
    fig = table_figure(view)
    axes = fig.get_axes()
    assert [ax.get_ylabel() for ax in axes] == ["AP_hard (%)", "AP (%)"]
    for ax, index in zip(axes, (0, 1)):
        lines = _labelled(ax)
        # One line per NMS type and the no-NMS column as a reference line; nothing else.
        assert set(lines) == {"oks", "iou", "no NMS"}
        oks, iou, ref = lines["oks"], lines["iou"], lines["no NMS"]
        assert list(oks.get_xdata()) == [0.3, 0.5] and list(iou.get_xdata()) == [0.3, 0.5]
        expected = [100 * FIGURES[v][index] for v in ("fig3_oks_30", "fig3_oks_50")]
        assert list(oks.get_ydata()) == pytest.approx(expected)
        assert list(iou.get_ydata()) == pytest.approx([100 * FIGURES[v][index]
                                                      for v in ("fig3_iou_30", "fig3_iou_50")])
        assert ref.get_linestyle() == "--"
        assert list(ref.get_ydata()) == pytest.approx([100 * FIGURES["fig3_none"][index]] * 2)
        assert ax.get_xlabel() == "decode.nms.threshold"
    # Error bars where the records give an interval: AP_hard of oks 0.5 and iou 0.5, AP of oks 0.5 only.
    caps = [len([c for c in ax.collections if c.get_segments()]) for ax in axes]
    assert caps == [2, 1]
    legend = fig.legends[0]
    names = [t.get_text() for t in legend.get_texts()]
    assert INTERVAL_LABEL in names and {"oks", "iou", "no NMS"} <= set(names)
    # The synthetic / tiny label the other figures carry.
    title = fig._suptitle.get_text()
    assert "synthetic-crowdpose/tiny: synthetic data / tiny scale — not comparable to the paper" in title


def test_report_page_embeds_the_sweep(store, tmp_path):
    out = tmp_path / "reports"
    build_report(store, out, method="posedet")
    page = (out / "posedet" / "figure3.html").read_text(encoding="utf-8")
    figure = re.search(r'<figure class="sweep"([^>]*)><img src="figure3\.svg"', page)
    assert figure and 'data-x="decode.nms.threshold"' in figure.group(1)
    assert 'data-series="decode.nms.type"' in figure.group(1)
    assert (out / "posedet" / "figure3.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (out / "posedet" / "figure3.svg").read_text(encoding="utf-8")
    assert "no NMS" in svg and "decode.nms.threshold" in svg          # text is kept as comments
    # A table with no plot: still bars, and no sweep figure on its page.
    bound = (out / "posedet" / "bound.html").read_text(encoding="utf-8")
    assert 'class="sweep"' not in bound


def test_sweep_figure_is_reproducible(store, tmp_path):
    posedet = load_method("posedet")
    view = build_view(posedet, posedet.tables()["figure3"], load_table(store), root=store, bootstrap=None)
    a = save_figure(table_figure(view), tmp_path / "a" / "figure3")
    b = save_figure(table_figure(view), tmp_path / "b" / "figure3")
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def _with_plot(plot):
    spec = load_method("posedet")
    raw = copy.deepcopy(yaml.safe_load(spec.source.read_text()))
    raw["tables"]["figure3"]["plot"] = plot
    return raw, spec.source


@pytest.mark.parametrize("plot, key, says", [
    ({"x": "decode.nms.thresh", "series": "decode.nms.type"}, "x", r"no key 'thresh' in decode\.nms"),
    ({"x": "decode.nms.threshold", "series": "decode.nmss.type"}, "series", r"no key 'nmss' in decode"),
    ({"x": "decode.nms.threshold.value"}, "x", r"decode\.nms\.threshold is"),
    ({"x": "decode.nms.type"}, "x", r"x must be a number"),
    ({"x": "decode.nms.threshold", "metrics": ["AP", "AP50"]}, r"metrics\[1\]", r"'AP50' is not a metric"),
])
def test_bad_plot_is_an_error_naming_file_table_key(plot, key, says):
    raw, source = _with_plot(plot)
    with pytest.raises(HarnessError) as info:
        parse_method(raw, source)
    message = str(info.value)
    assert str(source) in message
    assert re.search(rf"field tables\.figure3\.plot\.{key}(?![\w.\[])", message), message
    assert re.search(says, message), message


def test_bad_plot_form_is_a_schema_error():
    raw, source = _with_plot({"x": "decode.nms.threshold", "colour": "red"})
    with pytest.raises(HarnessError, match=r"method\.yaml: invalid method spec\n.*field tables\.figure3\.plot"):
        parse_method(raw, source)
    raw, source = _with_plot({"series": "decode.nms.type"})
    with pytest.raises(HarnessError, match=r"field tables\.figure3\.plot: 'x' is a required property"):
        parse_method(raw, source)
