"""``poseharness report``: paper tables from results.parquet, with what may be compared and what not.

The store is built from real :class:`RunRecord`s (``RunRecord.new`` + ``write_record``) and folded by
the real ``collect``; the report is read back by parsing its HTML, so the assertions are about what a
reader (or a browser) sees: which figure stands beside which published one, where a difference is
shown, and which links and resources the pages hold.
"""
from __future__ import annotations

import html
import re
import struct
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from poseharness.cli import main
from poseharness.errors import HarnessError
from poseharness.report import build_report
from poseharness.report.tables import format_difference
from poseharness.store import RunRecord, collect, write_record

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PROV = {"code": {"commit": COMMIT, "dirty": True, "describe": "0123456-dirty"},
        "versions": {"python": "3.11", "torch": "2", "numpy": "1.26", "pycocotools": "2.0",
                     "xtcocotools": "1.14"},
        "hardware": {"cpu": "Test CPU", "cores": 2}}
BANNER = "synthetic data / tiny scale — not comparable to the paper"
PRED = {"path": "predictions.json", "sha256": "0" * 64}


def _record(root: Path, kind: str, dataset: str, scale: str, variant: str, metrics: dict,
            seed: int = 0, split: str = "val", dataset_kind: str | None = None,
            intervals: dict | None = None, matches: str | None = None) -> RunRecord:
    record = RunRecord.new(
        kind=kind, dataset=dataset, split=split, method="gog", variant=variant, scale=scale,
        seed=seed, metrics=metrics, config={"variant": variant, "scale": scale, "seed": seed},
        dataset_kind=dataset_kind or ("synthetic" if dataset.startswith("synthetic") else "real"),
        predictions=None if kind == "speed" else PRED, prov=PROV, timings={"evaluate": 0.5},
        intervals=intervals, matches=matches)
    write_record(record, root)
    return record


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """A store with trained + oracle figures on synthetic-coco (tiny), trained figures on real coco at
    the paper's scale, a speed record and a row of a dataset no manifest knows; collected and reported."""
    base = tmp_path_factory.mktemp("report")
    results = base / "results"
    # synthetic-coco, tiny: 'ours' at two seeds (12.34 and 13.34 -> mean 12.84), 'qnt' at one.
    _record(results, "trained", "synthetic-coco", "tiny", "ours", {"AP": 0.1234, "AP50": 0.3}, seed=0)
    _record(results, "trained", "synthetic-coco", "tiny", "ours", {"AP": 0.1334, "AP50": 0.3}, seed=1)
    # A record that carries its own 95 % interval over images (one seed): 4.1 - 7.3.
    _record(results, "trained", "synthetic-coco", "tiny", "qnt", {"AP": 0.0567},
            intervals={"AP": [0.0412, 0.0733]})
    _record(results, "oracle", "synthetic-coco", "tiny", "ours", {"AP": 0.921})
    _record(results, "oracle", "synthetic-coco", "tiny", "limbs44", {"AP": 0.9312})
    _record(results, "speed", "synthetic-coco", "tiny", "ours", {"ms_per_image": 120.0})
    # real coco at the paper's scale: 63.91 vs 64.4 -> -0.5; 55.12 vs 54.5 -> +0.6.
    _record(results, "trained", "coco", "paper", "ours", {"AP": 0.6391})
    _record(results, "trained", "coco", "paper", "dark", {"AP": 0.5512})
    # Real data at a reduced scale is not comparable either.
    _record(results, "trained", "coco", "tiny", "ours", {"AP": 0.2049})
    _record(results, "trained", "mystery", "paper", "ours", {"AP": 0.5}, dataset_kind="real")
    collect(results)
    out = base / "reports"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    return {"results": results, "out": out}


class Page(HTMLParser):
    """Cells (with their section's attributes), banners, headings and every URL-bearing attribute."""

    def __init__(self, text: str):
        super().__init__()
        self.cells: list[dict] = []
        self.sections: list[dict] = []
        self.urls: list[tuple[str, str, str]] = []     # (tag, attribute, value)
        self.styles: list[str] = []
        self._cell: dict | None = None
        self._section: dict | None = None
        self._banner = False
        self._in_value = False
        self._in_style = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for name in ("href", "src", "srcset", "data", "poster", "action"):
            if name in a:
                self.urls.append((tag, name, a[name]))
        if tag == "style":
            self._in_style = True
        if tag == "section":
            self._section = {"attrs": a, "banner": "", "th": []}
            self.sections.append(self._section)
        if tag in ("td", "th"):
            self._cell = {"tag": tag, "attrs": a, "text": "", "value": None, "section": self._section}
        if tag == "span" and a.get("class") == "value" and self._cell is not None:
            self._in_value = True
            self._cell["value"] = ""
        if tag == "p" and "banner" in a.get("class", "").split():
            self._banner = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._cell["text"] = self._cell["text"].strip()
            if tag == "td":
                self.cells.append(self._cell)
            elif self._section is not None:
                self._section["th"].append(self._cell["text"])
            self._cell = None
        if tag == "p":
            self._banner = False
        if tag == "span":
            self._in_value = False
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
            if self._in_value:
                self._cell["value"] += data
        if self._banner and self._section is not None:
            self._section["banner"] += data
        if self._in_style:
            self.styles.append(data)

    def section(self, where: str) -> dict:
        """The block of ``'dataset/scale'``."""
        [s] = [s for s in self.sections
               if f"{s['attrs'].get('data-dataset')}/{s['attrs'].get('data-scale')}" == where]
        return s

    def cell(self, where: str, part: str, variant: str, metric: str = "AP") -> dict:
        section = self.section(where)
        found = [c for c in self.cells
                 if c["section"] is section
                 and part in c["attrs"].get("class", "").split()
                 and c["attrs"].get("data-variant") == variant and c["attrs"].get("data-metric") == metric]
        assert len(found) == 1, (where, part, variant, found)
        return found[0]

    def value(self, where: str, part: str, variant: str, metric: str = "AP") -> str:
        """The figure as shown (without footnote marks)."""
        cell = self.cell(where, part, variant, metric)
        return cell["text"] if cell["value"] is None else cell["value"]


def _page(out: Path, name: str) -> Page:
    return Page((out / "gog" / f"{name}.html").read_text(encoding="utf-8"))


def test_real_paper_scale_figures_stand_beside_published_with_difference(report):
    page = _page(report["out"], "table2")
    coco = page.section("coco/paper")
    assert "comparable" in coco["attrs"]["class"].split() and coco["banner"] == ""
    assert "difference" in coco["th"]
    assert page.value("coco/paper", "reproduced", "ours") == "63.9"
    assert page.value("coco/paper", "published", "ours") == "64.4"
    assert page.value("coco/paper", "difference", "ours") == "-0.5"
    assert page.value("coco/paper", "reproduced", "dark") == "55.1"
    assert page.value("coco/paper", "published", "dark") == "54.5"
    assert page.value("coco/paper", "difference", "dark") == "+0.6"
    # Never a number for what did not run, and no difference either.
    assert page.value("coco/paper", "reproduced", "qnt_ro") == "not run"
    assert page.value("coco/paper", "published", "qnt_ro") == "62.8"
    assert page.value("coco/paper", "difference", "qnt_ro") == ""
    # No oracle records on coco: every bound says so, and there is no share of it.
    assert "oracle bound" in coco["th"] and "share of bound" in coco["th"]
    assert page.value("coco/paper", "oracle", "ours") == "no bound"
    assert page.cell("coco/paper", "oracle", "ours")["attrs"]["data-status"] == "no bound"
    assert page.value("coco/paper", "share", "ours") == "—"
    # Records without matches files (older records): the figure, no interval, and why.
    interval = page.cell("coco/paper", "interval", "ours")
    assert interval["value"] == "no interval" and interval["attrs"]["data-status"] == "no interval"
    assert "no matches file" in interval["attrs"]["title"]
    assert page.value("coco/paper", "seeds", "ours") == "1"
    assert page.value("coco/paper", "interval", "qnt_ro") == "" and page.value("coco/paper", "share", "qnt_ro") == ""


def test_synthetic_tiny_block_has_banner_and_no_difference(report):
    page = _page(report["out"], "table2")
    synthetic = page.section("synthetic-coco/tiny")
    assert synthetic["banner"] == BANNER
    assert "not-comparable" in synthetic["attrs"]["class"].split()
    assert "difference" not in synthetic["th"]
    assert not [c for c in page.cells if c["section"] is synthetic
                and "difference" in c["attrs"].get("class", "").split()]
    # Published figures are still shown beside the reproduced ones; two seeds are averaged.
    assert page.value("synthetic-coco/tiny", "reproduced", "ours") == "12.8"
    assert "mean of 2 seeds" in page.cell("synthetic-coco/tiny", "reproduced", "ours")["attrs"]["title"]
    assert page.value("synthetic-coco/tiny", "published", "ours") == "64.4"
    assert page.value("synthetic-coco/tiny", "reproduced", "qnt") == "5.7"
    assert page.value("synthetic-coco/tiny", "reproduced", "dark") == "not run"
    # The oracle bound of the same representation on the same dataset and scale.
    assert page.value("synthetic-coco/tiny", "oracle", "ours") == "92.1"
    assert page.value("synthetic-coco/tiny", "oracle", "qnt") == "no bound"
    # The share of the bound reached: 12.84 / 92.1.
    assert page.value("synthetic-coco/tiny", "share", "ours") == "13.9 %"
    assert page.value("synthetic-coco/tiny", "share", "qnt") == "—"
    # Seeds averaged, and the interval a record carries (qnt) or the lack of one (ours: old records).
    assert page.value("synthetic-coco/tiny", "seeds", "ours") == "2"
    assert page.value("synthetic-coco/tiny", "interval", "qnt") == "4.1 – 7.3"
    assert page.cell("synthetic-coco/tiny", "interval", "qnt")["attrs"]["data-lo"] == "4.1200"
    assert page.value("synthetic-coco/tiny", "interval", "ours") == "no interval"
    # The paper's dataset first, at the paper's scale first; real data at tiny scale is not comparable.
    assert [(s["attrs"]["data-dataset"], s["attrs"]["data-scale"]) for s in page.sections] == [
        ("coco", "paper"), ("coco", "tiny"), ("synthetic-coco", "tiny")]
    assert page.section("coco/tiny")["banner"] == "tiny scale — not comparable to the paper"
    assert "difference" not in page.section("coco/tiny")["th"]
    assert page.value("coco/tiny", "reproduced", "ours") == "20.5"

    md = (report["out"] / "gog" / "table2.md").read_text(encoding="utf-8")
    coco_md = md.split("## Reproduced on coco, split val, scale paper")[1].split("\n## ")[0]
    synthetic_md = md.split("## Reproduced on synthetic-coco")[1]
    assert BANNER in synthetic_md and BANNER not in coco_md
    assert ("| Variant | AP reproduced | AP 95 % interval | AP seeds | AP published | AP difference | "
            "AP oracle bound | AP share of bound |") in coco_md
    assert "| Ours | 63.9 [" in coco_md and "| 64.4 | -0.5 | no bound | — |" in coco_md
    assert "no interval (older record: no matches file) | 1 | 64.4" in coco_md
    assert ("| Variant | AP reproduced | AP 95 % interval | AP seeds | AP published | AP oracle bound | "
            "AP share of bound |") in synthetic_md
    assert "AP difference" not in synthetic_md
    assert "| DARK | not run |  |  | 54.5 | no bound |  |" in synthetic_md
    assert "| qnt | 5.7 [1] | 4.1 – 7.3 | 1 | 56.2 | no bound | — |" in synthetic_md
    assert "| 2 | 64.4 | 92.1 [4] | 13.9 % |" in synthetic_md
    # The claims are tested on every block; on synthetic data they say whose figures they are about.
    assert "### The paper's claims on these figures" in coco_md and "### The paper's claims" in synthetic_md
    assert ("From synthetic data / tiny scale: these verdicts and τ are about this run's own figures"
            in synthetic_md) and "From " not in coco_md
    assert "| Ours > DARK, AP |" in coco_md and "| +9.9 | +8.8 | — | no interval (" in coco_md
    assert "| Ours > qnt, AP |" in synthetic_md and "| +8.2 | +7.2 | — | no interval (" in synthetic_md
    assert "Kendall's τ (AP) = +1.00 over 2 columns" in coco_md


def test_oracle_table_and_provenance(report):
    page = _page(report["out"], "oracle")
    assert page.section("synthetic-coco/tiny")["banner"] == BANNER
    assert page.value("synthetic-coco/tiny", "reproduced", "limbs44") == "93.1"
    assert page.value("synthetic-coco/tiny", "published", "limbs44") == "91.0"
    assert page.value("synthetic-coco/tiny", "published", "r1") == "—"          # not published
    assert page.value("synthetic-coco/tiny", "reproduced", "r1") == "not run"
    title = page.cell("synthetic-coco/tiny", "reproduced", "limbs44")["attrs"]["title"]
    assert COMMIT[:12] in title and "(dirty)" in title and "Test CPU" in title and "seed 0" in title
    assert re.search(r"config [0-9a-f]{12}", title) and re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d", title)
    text = (report["out"] / "gog" / "oracle.html").read_text(encoding="utf-8")
    assert '<ol class="footnotes">' in text and "records/oracle/synthetic-coco/val/gog/limbs44" in text


def test_cited_rows_and_published_only_table(report):
    page = _page(report["out"], "table1")
    cited = [c for c in page.cells if "cited" in c["attrs"].get("class", "").split()]
    assert cited and all(c["text"] in ("cited", "") for c in cited)
    md = (report["out"] / "gog" / "table1.md").read_text(encoding="utf-8")
    assert "| PersonLab, ResNet-101 (cited) | cited |  |  | 61.2 |" in md
    t3 = (report["out"] / "gog" / "table3.md").read_text(encoding="utf-8")
    assert "Published figures only" in t3
    assert "| Bottom-up HRNet-W32 (cited) | cited | 64.1 | cited | 57.4 | cited | 73.9 |" in t3


def test_files_links_and_no_remote_resources(report):
    out = report["out"]
    for name in ("table1", "table2", "table3", "oracle", "speed"):
        png, svg = out / "gog" / f"{name}.png", out / "gog" / f"{name}.svg"
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200
        assert ET.parse(svg).getroot().tag.endswith("svg")
    pages = [out / "index.html", *sorted((out / "gog").glob("*.html"))]
    assert len(pages) == 5
    index = Page((out / "index.html").read_text(encoding="utf-8"))
    linked = {v for _, _, v in index.urls}
    for name in ("table1", "table2", "table3", "oracle"):
        assert {f"gog/{name}.html", f"gog/{name}.md", f"gog/{name}.png", f"gog/{name}.svg"} <= linked
    assert "gog/speed.svg" in linked
    for path in pages:
        page = Page(path.read_text(encoding="utf-8"))
        for tag, attr, value in page.urls:
            url = urlparse(value)
            if url.scheme in ("http", "https"):
                # A link a person may follow (the paper) is fine; nothing may be loaded from the net.
                assert tag == "a" and attr == "href", (path, tag, value)
                continue
            assert url.scheme == "" and not value.startswith("//"), (path, value)
            if url.path:
                assert (path.parent / unquote(url.path)).is_file(), (path, value)
        assert "url(" not in "".join(page.styles) and "@import" not in "".join(page.styles)
        assert not [u for u in page.urls if u[0] in ("script", "link", "iframe")]
    # A row no table can show is listed, not silently dropped.
    assert "mystery" in (out / "index.html").read_text(encoding="utf-8")


def test_filters_missing_parquet_and_difference_format(report, tmp_path):
    result = build_report(report["results"], tmp_path / "coco-only", dataset="coco")
    page = _page(tmp_path / "coco-only", "table2")
    assert [s["attrs"]["data-dataset"] for s in page.sections] == ["coco", "coco"]
    assert not (tmp_path / "coco-only" / "gog" / "speed.png").exists()   # speed was on synthetic-coco
    assert "no <code>speed</code> records" in result.index.read_text(encoding="utf-8")
    # With no record for the table's kind at all, every reproduced cell says so.
    page = _page(tmp_path / "coco-only", "oracle")
    assert {c["text"] for c in page.cells if "reproduced" in c["attrs"].get("class", "")} == {"not run"}

    with pytest.raises(HarnessError, match="poseharness results collect"):
        build_report(tmp_path / "empty-store", tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()

    assert format_difference(-0.04) == "+0.0"     # no negative zero
    assert format_difference(63.9 - 64.4) == "-0.5"
    assert format_difference(None) == ""


# --- intervals, oracle bounds, shares and the paper's claims ------------------------------------------------

def _claims_store(base: Path, matches_for) -> Path:
    """Table 2 on synthetic-coco (tiny): AP per (variant, seed), matches files written by ``matches_for``,
    oracle bounds for ours and qnt. ours_bilinear is an older record without a matches file."""
    results = base / "results"
    runs = {"ours": [(0, 0.13), (1, 0.14)], "qnt": [(0, 0.05), (1, 0.06)], "ours_ro": [(0, 0.133), (1, 0.135)],
            "dark": [(0, 0.20)], "ours_bilinear": [(0, 0.12)]}
    for variant, seeds in runs.items():
        for seed, ap in seeds:
            matches = None if variant == "ours_bilinear" else matches_for(results, variant, seed, ap)
            _record(results, "trained", "synthetic-coco", "tiny", variant, {"AP": ap}, seed=seed, matches=matches)
    _record(results, "oracle", "synthetic-coco", "tiny", "ours", {"AP": 0.90})
    _record(results, "oracle", "synthetic-coco", "tiny", "qnt", {"AP": 0.55})
    collect(results)
    return results


def test_page_shows_intervals_bounds_shares_and_verdicts(tmp_path):
    """A collected store whose records name (fake) matches files, rendered through a fake bootstrap: a
    column's interval is its mean ± 1 point, a claim's difference interval ± 2 points (test_claims)."""
    import json

    from poseharness.methods import load_method
    from poseharness.report.html import table_page
    from poseharness.report.plots import save_figure, table_figure
    from poseharness.report.tables import build_view, to_markdown
    from poseharness.store import load_table
    from test_claims import _fake_bootstrap

    def fake_matches(results, variant, seed, ap):
        rel = f"predictions/trained/{variant}/tiny-seed{seed}.matches.npz"       # relative to the store
        (results / rel).parent.mkdir(parents=True, exist_ok=True)
        (results / rel).write_text(json.dumps({"AP": ap}))
        return rel

    results = _claims_store(tmp_path, fake_matches)
    gog = load_method("gog")
    view = build_view(gog, gog.tables()["table2"], load_table(results), root=results,
                      bootstrap=_fake_bootstrap())
    md = to_markdown(view)
    text = table_page(view, figure=None, markdown="table2.md", generated="test")
    page = Page(text)
    where = "synthetic-coco/tiny"
    # ours: (13 + 14) / 2 = 13.5, interval 12.5 - 14.5 over 2 seeds; bound 90.0, share 13.5 / 90 = 15 %.
    assert page.value(where, "reproduced", "ours") == "13.5"
    assert page.value(where, "interval", "ours") == "12.5 – 14.5"
    assert page.value(where, "seeds", "ours") == "2"
    assert page.value(where, "oracle", "ours") == "90.0" and page.value(where, "share", "ours") == "15.0 %"
    assert page.value(where, "share", "qnt") == "10.0 %"                        # 5.5 / 55
    assert page.value(where, "oracle", "dark") == "no bound" and page.value(where, "share", "dark") == "—"
    assert page.value(where, "interval", "ours_bilinear") == "no interval"
    assert page.value(where, "reproduced", "ours_bilinear") == "12.0"
    assert page.value(where, "published", "ours") == "64.4"
    assert page.section(where)["banner"] == BANNER                              # still never comparable
    # The verdicts, as a reader of the page finds them.
    verdicts = dict(((a, b), v) for a, b, v in re.findall(
        r'<tr class="claim" data-kind="\w+" data-a="(\w+)" data-b="(\w+)".*?data-verdict="([^"]+)"', text))
    assert verdicts == {("ours", "qnt"): "reproduced",             # 8.0, [6.0, 10.0]
                        ("ours", "dark"): "contradicted",          # seed 0 only: 13 - 20 = -7, [-9, -5]
                        ("qnt_ro", "qnt"): "not run",
                        ("ours", "ours_bilinear"): "no interval",  # an older record: no matches file
                        ("ours", "ours_ro"): "unresolved"}         # 0.1, [-1.9, 2.1] vs ±0.5
    assert ("From synthetic data / tiny scale: these verdicts and τ are about this run's own figures"
            in html.unescape(text))
    # τ over the 5 columns with both figures: dark is last in the paper and first here (4 discordant
    # pairs), the other 4 keep the paper's order (6 concordant): (6 - 4) / 10.
    assert 'data-n="5" data-tau="0.2000"' in text
    assert "| Ours > qnt, AP |" in md and "| +8.2 | +8.0 | +6.0 – +10.0 | **reproduced** |" in md
    assert "| Ours > DARK, AP |" in md and "| +9.9 | -7.0 | -9.0 – -5.0 | **contradicted** |" in md
    assert "| +0.3 | +0.1 | -1.9 – +2.1 | unresolved |" in md
    assert "| Ours | 13.5 [" in md and "| 12.5 – 14.5 | 2 | 64.4 | 90.0 [" in md and "| 15.0 % |" in md
    assert "Kendall's τ (AP) = +0.20 over 5 columns" in md
    # The plot draws the error bars and the bounds.
    files = save_figure(table_figure(view), tmp_path / "plot" / "table2")
    assert [f.suffix for f in files] == [".png", ".svg"] and all(f.stat().st_size > 0 for f in files)
    svg = files[1].read_text()
    assert "95 % interval" in svg or "95" in svg


def test_report_with_real_matches(tmp_path):
    """End to end: records whose matches files come from the real evaluator on a sample annotation file,
    collected, and reported by `poseharness report` with the real bootstrap."""
    pytest.importorskip("poseharness.eval.bootstrap")
    import json

    from poseharness.bench.evaluate import perturbed_predictions
    from poseharness.eval import evaluate
    from poseharness.eval.bootstrap import matches_path
    from shared_data import COCO_GT as gt_path

    gt = json.loads(gt_path.read_text())
    noise = {"ours": 0.01, "qnt": 0.3, "ours_ro": 0.012, "dark": 0.3, "ours_bilinear": 0.3}

    def real_matches(results, variant, seed, ap):
        pred = results / "predictions" / f"{variant}-seed{seed}.json"
        pred.parent.mkdir(parents=True, exist_ok=True)
        pred.write_text(json.dumps(perturbed_predictions(
            gt, 17, seed=seed, jitter=noise[variant], missing=0.0 if noise[variant] < 0.1 else 0.4,
            false_positives=0.0, duplicates=0.0)))
        _, found = evaluate(pred, gt_path, "coco", matches=True)
        return str(found.save(matches_path(pred)).relative_to(results))

    results = _claims_store(tmp_path, real_matches)
    out = tmp_path / "reports"
    assert main(["report", "--results", str(results), "--out", str(out), "--method", "gog"]) == 0
    text = (out / "gog" / "table2.html").read_text(encoding="utf-8")
    page = Page(text)
    where = "synthetic-coco/tiny"
    interval = page.cell(where, "interval", "ours")
    assert interval["attrs"]["data-status"] == "ok"
    assert float(interval["attrs"]["data-lo"]) <= float(interval["attrs"]["data-hi"])
    assert page.value(where, "interval", "ours_bilinear") == "no interval"
    verdicts = dict(((a, b), v) for a, b, v in re.findall(
        r'<tr class="claim" data-kind="\w+" data-a="(\w+)" data-b="(\w+)".*?data-verdict="([^"]+)"', text))
    # The figures in the record are the fake APs, the intervals come from the real matches: only the
    # verdict's form is checked here; its rules are test_claims'.
    assert verdicts[("ours", "qnt")] in ("reproduced", "contradicted", "unresolved")
    assert verdicts[("qnt_ro", "qnt")] == "not run" and verdicts[("ours", "ours_bilinear")] == "no interval"
    assert (out / "gog" / "table2.png").is_file()
