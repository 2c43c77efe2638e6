"""``poseharness report``: paper tables from results.parquet, with what may be compared and what not.

The store is built from real :class:`RunRecord`s (``RunRecord.new`` + ``write_record``) and folded by
the real ``collect``; the report is read back by parsing its HTML, so the assertions are about what a
reader (or a browser) sees: which figure stands beside which published one, where a difference is
shown, and which links and resources the pages hold.
"""
from __future__ import annotations

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
            seed: int = 0, split: str = "val", dataset_kind: str | None = None) -> RunRecord:
    record = RunRecord.new(
        kind=kind, dataset=dataset, split=split, method="gog", variant=variant, scale=scale,
        seed=seed, metrics=metrics, config={"variant": variant, "scale": scale, "seed": seed},
        dataset_kind=dataset_kind or ("synthetic" if dataset.startswith("synthetic") else "real"),
        predictions=None if kind == "speed" else PRED, prov=PROV, timings={"evaluate": 0.5})
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
    _record(results, "trained", "synthetic-coco", "tiny", "qnt", {"AP": 0.0567})
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
    # No oracle records on coco: no oracle column in that block.
    assert not [c for c in page.cells if c["section"] is coco and "oracle" in c["attrs"].get("class", "")]


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
    assert page.value("synthetic-coco/tiny", "oracle", "qnt") == "not run"
    # The paper's dataset first, at the paper's scale first; real data at tiny scale is not comparable.
    assert [(s["attrs"]["data-dataset"], s["attrs"]["data-scale"]) for s in page.sections] == [
        ("coco", "paper"), ("coco", "tiny"), ("synthetic-coco", "tiny")]
    assert page.section("coco/tiny")["banner"] == "tiny scale — not comparable to the paper"
    assert "difference" not in page.section("coco/tiny")["th"]
    assert page.value("coco/tiny", "reproduced", "ours") == "20.5"

    md = (report["out"] / "gog" / "table2.md").read_text(encoding="utf-8")
    coco_md = md.split("## Reproduced on coco, split val, scale paper")[1].split("## ")[0]
    synthetic_md = md.split("## Reproduced on synthetic-coco")[1]
    assert BANNER in synthetic_md and BANNER not in coco_md
    assert "| AP reproduced | AP published | AP difference |" in coco_md
    assert "| Ours | 63.9 [" in coco_md and "| 64.4 | -0.5 |" in coco_md
    assert "| AP reproduced | AP published | AP oracle bound |" in synthetic_md
    assert "AP difference" not in synthetic_md
    assert "| DARK | not run | 54.5 |" in synthetic_md


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
    assert "| PersonLab, ResNet-101 (cited) | cited | 61.2 |" in md
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
