"""The report in a real headless browser: ``reports/index.html`` -> the Table 2 page, read from the DOM.

A store holds one ``trained`` record for each of the six Table 2 variants of gog on synthetic-coco at
scale tiny (real :class:`RunRecord`s through the helper of ``test_report``), folded by the real
``collect`` and rendered by ``poseharness report``. Chromium then opens ``index.html`` from the file
system with name resolution switched off (any network fetch fails), the Table 2 link is followed as the
index's DOM gives it, and the assertions read what the browser built: the six reproduced figures as the
report formats them, the six published ones, the dataset and scale, the "not comparable" labelling, each
figure's interval / seeds / oracle bound / share cells (these records are of the kind without matches
files or oracle records, so "no interval" and "no bound"), the paper's five claims with their verdicts and
Kendall's τ, and that nothing is fetched from the network. A screenshot proves the page and its figure
are painted.

Skipped only when no Chromium binary is on PATH (``.ci/run`` installs Debian's ``chromium``).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlparse
from urllib.request import url2pathname

import pytest

from poseharness.cli import main
from poseharness.report.html import CSS
from poseharness.report.plots import PUBLISHED as PUBLISHED_BAR_COLOUR
from poseharness.store import collect
from test_report import BANNER, Page, _record

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CALL_TIMEOUT_S = 60
# Tall enough to hold the table, the claims below it, the footnotes and the figure under them.
WINDOW = (1280, 2400)
DATASET, SCALE = "synthetic-coco", "tiny"
# Table 2's columns in the paper's order: AP of the record (fraction) and the figure the report prints
# for it (percent, one decimal), worked by hand; no value sits on a rounding boundary.
RECORDED = {"dark": (0.0421, "4.2"), "qnt": (0.0587, "5.9"), "qnt_ro": (0.1133, "11.3"),
            "ours": (0.1378, "13.8"), "ours_ro": (0.1296, "13.0"), "ours_bilinear": (0.1212, "12.1")}
# The paper's Table 2 (GOG, COCO val2017), as printed.
PUBLISHED = {"dark": "54.5", "qnt": "56.2", "qnt_ro": "62.8", "ours": "64.4", "ours_ro": "64.1",
             "ours_bilinear": "62.3"}

# A page of the test's own (never part of the report): it loads a report page in an iframe and writes,
# into its own DOM, every image's load state and every resource the page fetched. Resource Timing lists
# network fetches, failed ones included, but not file:// loads, so a self-contained page lists none.
PROBE = """<!DOCTYPE html><html><body><pre id="probe">not loaded</pre>
<iframe id="page" src="{src}" width="{width}" height="{height}"></iframe>
<script>
document.getElementById("page").addEventListener("load", function () {{
  var doc = this.contentDocument, out = document.getElementById("probe");
  if (doc === null) {{ out.textContent = "no access to the page"; return; }}
  out.textContent = JSON.stringify({{
    images: Array.from(doc.images, function (i) {{
      return {{src: i.getAttribute("src"), complete: i.complete, width: i.naturalWidth,
               height: i.naturalHeight}}; }}),
    resources: this.contentWindow.performance.getEntriesByType("resource").map(function (e) {{
      return e.name; }})
  }});
}});
</script></body></html>
"""


def _browser_binary() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """Headless Chromium, one process per call, each with its own profile under ``work``."""

    def __init__(self, binary: str, work: Path):
        self.binary = binary
        self.work = work
        self.calls = 0
        home = work / "home"
        home.mkdir(parents=True, exist_ok=True)
        # Keep Chromium's config, cache and crash dumps out of the real home directory.
        self.env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"),
                    "XDG_CACHE_HOME": str(home / ".cache")}

    def run(self, *args: str) -> str:
        """Run Chromium with ``args``; returns stdout. Fails the test on a non-zero exit or a timeout."""
        self.calls += 1
        command = [
            self.binary, "--headless", "--disable-gpu",
            "--no-sandbox",                                   # required when running as root (CI)
            f"--user-data-dir={self.work / f'profile-{self.calls}'}",
            "--no-first-run", "--disable-extensions", "--disable-background-networking",
            "--disable-component-update", "--disable-sync",
            # Every host name fails to resolve: the page must render from the file system alone.
            "--host-resolver-rules=MAP * ~NOTFOUND",
            *args,
        ]
        # Own process group, so a hung browser is ended with all its helper processes.
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=self.env, start_new_session=True)
        try:
            out, err = proc.communicate(timeout=CALL_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            pytest.fail(f"chromium did not finish within {CALL_TIMEOUT_S} s: {' '.join(command)}")
        assert proc.returncode == 0, f"chromium exited {proc.returncode}: {' '.join(command)}\n{err[-3000:]}"
        return out

    def dom(self, url: str, *extra: str) -> str:
        """The DOM after the page's load event, serialised by the browser."""
        out = self.run(*extra, "--dump-dom", url)
        assert "<html" in out, f"chromium returned no DOM for {url}"
        return out

    def screenshot(self, url: str, path: Path) -> Path:
        self.run(f"--screenshot={path}", f"--window-size={WINDOW[0]},{WINDOW[1]}", url)
        return path


class Links(HTMLParser):
    """Every ``<a href>`` with its text and the ``id`` of the ``<h2>`` (method) it sits under."""

    def __init__(self, text: str):
        super().__init__()
        self.links: list[dict] = []
        self._method: str | None = None
        self._open: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "h2":
            self._method = a.get("id")
        if tag == "a" and "href" in a:
            self._open.append({"href": a["href"], "text": "", "method": self._method})

    def handle_endtag(self, tag):
        if tag == "a" and self._open:
            link = self._open.pop()
            link["text"] = link["text"].strip()
            self.links.append(link)

    def handle_data(self, data):
        for link in self._open:
            link["text"] += data


class Texts(HTMLParser):
    """The text of every element of the given tags, in document order."""

    def __init__(self, text: str, tags: tuple[str, ...]):
        super().__init__()
        self.tags = tags
        self.found: list[tuple[str, str]] = []
        self._open: list[list[str]] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag in self.tags:
            self._open.append([tag, ""])

    def handle_endtag(self, tag):
        if tag in self.tags and self._open:
            name, text = self._open.pop()
            self.found.append((name, " ".join(text.split())))

    def handle_data(self, data):
        for item in self._open:
            item[1] += data

    def of(self, tag: str) -> list[str]:
        return [text for name, text in self.found if name == tag]


def _file_path(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(url2pathname(parsed.path))


def _probe(chromium: Chromium, page_url: str, work: Path) -> dict:
    """Load ``page_url`` in the probe page; returns its images' load states and fetched resources."""
    probe = work / f"probe-{chromium.calls + 1}.html"
    probe.write_text(PROBE.format(src=page_url, width=WINDOW[0], height=WINDOW[1]), encoding="utf-8")
    # The probe reads its iframe's document: file:// pages are otherwise each their own origin.
    dom = chromium.dom(probe.as_uri(), "--allow-file-access-from-files")
    [text] = Texts(dom, ("pre",)).of("pre")
    assert text.startswith("{"), f"probe of {page_url}: {text}"
    return json.loads(text)


@pytest.fixture(scope="module")
def chromium(tmp_path_factory) -> Chromium:
    binary = _browser_binary()
    if binary is None:
        pytest.skip(f"no headless browser on PATH (looked for {', '.join(BROWSERS)}); "
                    "install Debian's `chromium` (`.ci/run` does when it can)")
    return Chromium(binary, tmp_path_factory.mktemp("chromium"))


@pytest.fixture(scope="module")
def rendered(chromium, tmp_path_factory) -> dict:
    """The report of six Table 2 records, opened in Chromium: index DOM, followed link, Table 2 DOM."""
    base = tmp_path_factory.mktemp("browser-report")
    results, out = base / "results", base / "reports"
    for variant, (ap, _) in RECORDED.items():
        _record(results, "trained", DATASET, SCALE, variant, {"AP": ap})
    collect(results)
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0

    index_url = (out / "index.html").as_uri()
    index_dom = chromium.dom(index_url)
    # Follow the link as the browser's DOM gives it: gog's card titled "table2".
    [link] = [link for link in Links(index_dom).links
              if link["method"] == "gog" and link["text"] == "table2" and link["href"].endswith(".html")]
    table_url = urljoin(index_url, link["href"])
    table_dom = chromium.dom(table_url)
    return {"out": out, "base": base, "index_url": index_url, "index_dom": index_dom, "link": link,
            "table_url": table_url, "table_dom": table_dom, "work": chromium.work}


def test_index_links_the_table2_page(rendered):
    path = _file_path(rendered["table_url"])
    assert path == rendered["out"] / "gog" / "table2.html" and path.is_file()
    index = Texts(rendered["index_dom"], ("h1", "li"))
    assert index.of("h1") == ["poseharness report"]
    # The card says what ran, and that it is not comparable with the paper.
    assert f"{DATASET} / {SCALE}: 6 of 6 variants run not comparable" in index.of("li")


def test_table2_dom_has_six_reproduced_and_six_published_figures(rendered):
    page = Page(rendered["table_dom"])
    where = f"{DATASET}/{SCALE}"
    assert [(s["attrs"].get("data-dataset"), s["attrs"].get("data-scale")) for s in page.sections] == [
        (DATASET, SCALE)]
    reproduced = [c for c in page.cells if "reproduced" in c["attrs"].get("class", "").split()]
    published = [c for c in page.cells if "published" in c["attrs"].get("class", "").split()
                 and c["attrs"].get("data-variant")]           # cited rows carry no variant
    # Six of each, one per variant, in the paper's column order.
    assert [c["attrs"]["data-variant"] for c in reproduced] == list(RECORDED)
    assert [c["attrs"]["data-variant"] for c in published] == list(RECORDED)
    for variant, (ap, shown) in RECORDED.items():
        cell = page.cell(where, "reproduced", variant)
        assert cell["attrs"]["data-status"] == "ok"
        assert page.value(where, "reproduced", variant) == shown
        assert cell["attrs"]["data-value"] == f"{100 * ap:.4f}"
        assert page.value(where, "published", variant) == PUBLISHED[variant]
        assert page.cell(where, "published", variant)["attrs"]["data-value"] == PUBLISHED[variant]


def test_table2_dom_has_intervals_bounds_and_claims(rendered):
    page = Page(rendered["table_dom"])
    where = f"{DATASET}/{SCALE}"
    for variant in RECORDED:
        # Records without a matches file: the figure stands without an interval, and the page says so.
        interval = page.cell(where, "interval", variant)
        assert interval["value"] == "no interval" and interval["attrs"]["data-status"] == "no interval"
        assert page.value(where, "seeds", variant) == "1"
        assert page.value(where, "oracle", variant) == "no bound"
        assert page.value(where, "share", variant) == "—"
    dom = rendered["table_dom"]
    claims = re.findall(r'<tr class="claim" data-kind="(\w+)" data-a="(\w+)" data-b="(\w+)"[^>]*>(.*?)</tr>',
                        dom, flags=re.S)
    assert [(k, a, b) for k, a, b, _ in claims] == [
        ("better", "ours", "qnt"), ("better", "ours", "dark"), ("better", "qnt_ro", "qnt"),
        ("better", "ours", "ours_bilinear"), ("same", "ours", "ours_ro")]
    for _, _, _, row in claims:
        assert 'data-verdict="no interval"' in row
    # ours - qnt = 13.78 - 5.87 = 7.91 points, as printed.
    assert 'class="claim-diff" data-value="7.9100">+7.9<' in claims[0][3]
    # One discordant pair of 15 (ours_bilinear 12.1 vs qnt_ro 11.3, published 62.3 vs 62.8): 13 / 15.
    assert re.search(r'<p class="ranks" data-n="6" data-tau="0.8667">', dom)
    texts = Texts(dom, ("h4", "p"))
    assert "The paper's claims on these figures" in texts.of("h4")
    assert any(t.startswith("From synthetic data / tiny scale: these verdicts and τ are about this run's own")
               for t in texts.of("p"))


def test_table2_dom_states_dataset_scale_and_not_comparable(rendered):
    page = Page(rendered["table_dom"])
    section = page.section(f"{DATASET}/{SCALE}")
    texts = Texts(rendered["table_dom"], ("h1", "h3", "p"))
    assert texts.of("h1") == ["gog — table2"]
    assert texts.of("h3") == [f"Reproduced on {DATASET} (synthetic stand-in for coco), split val, "
                              f"scale {SCALE}, seed 0"]
    assert section["banner"] == BANNER
    assert "not-comparable" in section["attrs"]["class"].split()
    assert ("The published figures are for coco val at the paper's scale; these are not, so no "
            "difference is computed.") in texts.of("p")
    # Not comparable: no difference column, no difference cell.
    assert "difference" not in section["th"]
    assert not [c for c in page.cells if "difference" in c["attrs"].get("class", "").split()]


def test_pages_are_self_contained_in_the_browser(rendered, chromium):
    probes = {}
    for name, url, dom in (("index", rendered["index_url"], rendered["index_dom"]),
                           ("table2", rendered["table_url"], rendered["table_dom"])):
        page = Page(dom)
        for tag, attr, value in page.urls:
            target = urlparse(urljoin(url, value))
            if target.scheme in ("http", "https"):
                # Only a link a reader may follow (the paper); nothing is loaded from the network.
                assert (tag, attr) == ("a", "href"), (name, tag, value)
                continue
            assert target.scheme == "file", (name, value)
            assert _file_path(urljoin(url, value)).is_file(), (name, value)
        assert not [u for u in page.urls if u[0] in ("script", "link", "iframe", "object", "embed")]
        assert "url(" not in "".join(page.styles) and "@import" not in "".join(page.styles)
        # In the browser, with no name resolution: every image decodes from the file system and
        # no resource was fetched from anywhere else.
        probes[name] = probe = _probe(chromium, url, rendered["work"])
        assert probe["images"], name
        for image in probe["images"]:
            assert image["complete"] and image["width"] > 0 and image["height"] > 0, (name, image)
        assert probe["resources"] == [], (name, probe["resources"])
    assert [image["src"] for image in probes["table2"]["images"]] == ["table2.svg"]


def test_screenshot_of_table2_is_painted(rendered, chromium):
    from PIL import Image

    path = chromium.screenshot(rendered["table_url"], rendered["base"] / "table2.png")
    assert path.is_file() and path.stat().st_size > 20_000
    with Image.open(path) as image:
        assert image.size == WINDOW
        colours = {colour: count for count, colour in image.convert("RGB").getcolors(maxcolors=1 << 22)}
    assert len(colours) > 100                                  # text, table, plot: not a blank page
    white = colours.get((255, 255, 255), 0)
    assert white < 0.97 * WINDOW[0] * WINDOW[1]

    def rgb(hex_colour: str) -> tuple[int, int, int]:
        return tuple(int(hex_colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))

    # The not-comparable banner's fill (inline CSS) and the published bars of the figure are painted.
    banner = rgb(re.search(r"--warn-bg:\s*(#[0-9a-fA-F]{6})", CSS).group(1))
    assert colours.get(banner, 0) > 5_000, banner
    assert colours.get(rgb(PUBLISHED_BAR_COLOUR), 0) > 5_000, PUBLISHED_BAR_COLOUR
