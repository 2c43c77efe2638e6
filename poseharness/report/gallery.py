"""Per-record gallery pages: the images with the largest errors, the prediction drawn over the ground truth.

For a record whose ``diagnosis`` names its ``sources`` (the annotation file and image folder of the split, written
by ``pipeline.finish``), :func:`worst_images` takes the diagnosis's own per-detection facts
(``eval.diagnosis.localize``: the best 20 detections per image, each paired with the person the official
library's matching gives it at OKS 0.1, every keypoint good / jitter / inversion / swap / miss), so a picture
shows exactly what the table counts. An image's error
weight: its miss + swap + inversion keypoints plus the labelled keypoints of its persons with no detection; the
``count`` heaviest are drawn (:func:`draw_image`, over the split's image when the file exists, else a blank
canvas of its size): ground truth as hollow grey circles and skeleton, predicted keypoints filled in their
category's colour, each detection's OKS to its person written beside it, unpaired detections as grey crosses.
:func:`gallery_page` lays them out as one self-contained HTML page.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

CATEGORY_COLORS = {"good": "#2ca02c", "jitter": "#e07b00", "inversion": "#d4a017", "swap": "#8e44ad",
                   "miss": "#c0392b"}
CATEGORIES = tuple(CATEGORY_COLORS)


@dataclass
class ImageErrors:
    """One image's pairing: ``gt`` (G, K, 3), ``dt`` (D, K, 3) best first, ``pair`` (D,) person index or -1,
    ``oks`` (D,) to the paired person (0 if none), ``category`` (D, K) index into CATEGORIES (-1: not labelled or
    not paired), ``weight`` the error weight, ``file`` the image file name, ``size`` (width, height)."""

    image_id: int
    file: str
    size: tuple[int, int]
    gt: np.ndarray
    dt: np.ndarray
    pair: np.ndarray
    oks: np.ndarray
    category: np.ndarray
    weight: int

    def counts(self) -> dict[str, int]:
        return {c: int((self.category == i).sum()) for i, c in enumerate(CATEGORIES)}


def _image_errors(image: dict, anns: list[dict], dets: list[int], found: dict, K: int) -> ImageErrors:
    """One image's errors from :func:`eval.diagnosis.localize`'s ``found``: ``anns`` its persons (not crowd
    regions), ``dets`` the rows of ``found`` that are its detections."""
    gt = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(-1, K, 3)
    rows = sorted(dets, key=lambda r: -found["records"][r]["score"])          # best first (stable)
    dt = np.array([found["records"][r]["keypoints"] for r in rows], dtype=np.float64).reshape(-1, K, 3)
    index = {a["id"]: g for g, a in enumerate(anns)}
    pair = np.array([index.get(int(found["gt_id"][r]), -1) for r in rows], dtype=np.int64)
    category = found["category"][rows] if rows else np.zeros((0, K), np.int8)
    best = np.where(pair >= 0, found["oks"][rows], 0.0) if rows else np.zeros(0)
    labelled = (gt[:, :, 2] > 0).sum(axis=1)
    missed = sum(int(labelled[g]) for g in range(len(gt)) if g not in set(pair.tolist()))
    weight = int(np.isin(category, [CATEGORIES.index(c) for c in ("miss", "swap", "inversion")]).sum()) + missed
    return ImageErrors(int(image["id"]), str(image.get("file_name", "")),
                       (int(image.get("width", 640)), int(image.get("height", 480))), gt, dt, pair, best,
                       category, weight)


def worst_images(predictions: str | Path, annotations: str | Path, protocol: str, schema: str | None,
                 count: int = 6) -> list[ImageErrors]:
    """The ``count`` images of ``annotations`` with the largest error weight under ``predictions`` (a results
    JSON file), heaviest first (ties: lower image id); images with no error are left out."""
    from ..eval.diagnosis import localize
    from ..eval.protocols import get_protocol

    proto = get_protocol(protocol)
    found = localize(predictions, annotations, protocol, schema=schema)
    gt = json.loads(Path(annotations).read_text())
    anns: dict[int, list] = {}
    for a in gt["annotations"]:
        if not a.get("iscrowd", 0):
            anns.setdefault(a["image_id"], []).append(a)
    dets: dict[int, list] = {}
    for r, record in enumerate(found["records"]):
        dets.setdefault(record["image_id"], []).append(r)
    errors = [_image_errors(im, anns.get(im["id"], []), dets.get(im["id"], []), found, proto.num_keypoints)
              for im in gt["images"]]
    errors = [e for e in errors if e.weight > 0]
    return sorted(errors, key=lambda e: (-e.weight, e.image_id))[:count]


def draw_image(errors: ImageErrors, image_dir: str | Path | None, skeleton, title: str):
    """The figure of one image: its picture (when ``image_dir``/file exists) or a blank canvas, ground truth
    hollow grey, the prediction's keypoints in their category's colour, OKS beside each paired detection."""
    from .plots import _figure

    w, h = errors.size
    fig = _figure(6.0, 6.0 * h / max(w, 1))
    ax = fig.subplots()
    path = Path(image_dir) / errors.file if image_dir and errors.file else None
    if path is not None and path.is_file():
        from matplotlib.image import imread

        ax.imshow(imread(path), extent=(0, w, h, 0))
    else:
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((0, 0), w, h, color="#f2f4f7"))
    for person in errors.gt:
        on = person[:, 2] > 0
        for a, b in skeleton:
            if on[a] and on[b]:
                ax.plot(person[[a, b], 0], person[[a, b], 1], color="#9aa0a6", linewidth=1)
        ax.scatter(person[on, 0], person[on, 1], s=22, facecolors="none", edgecolors="#555555", linewidths=1)
    for d, pose in enumerate(errors.dt):
        given = pose[:, 2] > 0                        # joints the prediction gives (0: none, often at 0, 0)
        if errors.pair[d] < 0:
            ax.scatter(pose[given, 0], pose[given, 1], s=14, marker="x", color="#8d9096", linewidths=0.8)
            continue
        for i, cat in enumerate(CATEGORIES):
            sel = errors.category[d] == i
            ax.scatter(pose[sel, 0], pose[sel, 1], s=16, color=CATEGORY_COLORS[cat], zorder=3)
        placed = pose[errors.category[d] >= 0] if (errors.category[d] >= 0).any() else pose
        x, y = placed[:, 0].max(), placed[:, 1].min()         # the label beside the person, not at a (0, 0) joint
        ax.annotate(f"OKS {errors.oks[d]:.2f}", (x, y), xytext=(4, 0), textcoords="offset points", fontsize=7,
                    bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.8, "linewidth": 0})
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_aspect("equal")
    ax.set_axis_off()
    ax.set_title(title, fontsize=8)
    return fig


def _save_png(fig, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (no SVG: a picture-backed SVG would carry the image again)."""
    from ..io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, metadata={"Software": None})
    return path


def gallery_page(title: str, back: str, items: list[tuple[ImageErrors, str]], note: str) -> str:
    """The HTML page: a legend, then each (image errors, png file name) as a card with its counts."""
    from .html import _page

    legend = " ".join(f'<span class="tag" style="border-color:{c};color:{c}">● {n}</span>'
                      for n, c in CATEGORY_COLORS.items())
    cards = []
    for e, png in items:
        counts = ", ".join(f"{n} {v}" for n, v in e.counts().items())
        cards.append(f'<div class="card gallery-item" data-image-id="{e.image_id}" data-weight="{e.weight}">'
                     f"<strong>image {e.image_id}</strong> {escape(e.file)}<br>"
                     f'<span class="muted">error weight {e.weight}; keypoints: {escape(counts)}</span>'
                     f'<img src="{escape(png)}" alt="image {e.image_id}: prediction over ground truth"></div>')
    body = [f'<nav><a href="{escape(back)}">← the table</a></nav>', f"<h1>{escape(title)}</h1>",
            f'<p class="muted">{escape(note)}</p>', f"<p>Keypoint categories: {legend}; ground truth: hollow grey "
            "circles and skeleton; unpaired detections: grey crosses; OKS of each detection to its person.</p>",
            '<div class="cards">' + "".join(cards) + "</div>" if cards else "<p>No image with errors.</p>"]
    return _page(title, "\n".join(body))


def write_galleries(view, blocks, df, root: Path, folder: Path, count: int = 6) -> tuple[dict, list[Path]]:
    """A gallery page for each (block, variant) of ``blocks`` (``report.diagnosis.BlockDiagnosis``) whose record
    (its first seed's, read from ``root``/``record``) names its sources and whose files are on disk; a record
    that cannot be read, or files that do not parse, give no gallery (the report is not stopped for one).
    Returns ({(dataset, scale, variant): page file name}, files written under ``folder``)."""
    from ..errors import HarnessError
    from .tables import full_split

    df = full_split(df)
    pages, files = {}, []
    for block in blocks:
        for d in block.variants:
            rows = df[(df["method"] == view.method) & (df["kind"] == view.table.kind) & (df["split"] == block.split)
                      & (df["dataset"] == block.dataset) & (df["scale"] == block.scale) & (df["variant"] == d.variant)
                      & df["diag_ap_original"].notna()].sort_values("seed")
            if rows.empty:
                continue
            try:
                page = _one_gallery(view, block, d, rows.iloc[0], root, folder, count, files)
            except (HarnessError, OSError, ValueError, KeyError):
                page = None
            if page is not None:
                pages[(block.dataset, block.scale, d.variant)] = page
    return pages, files


def _one_gallery(view, block, d, row, root: Path, folder: Path, count: int, files: list) -> str | None:
    """Write the gallery of one variant from its record ``row`` (a results-table row); its page's file name, or
    None when the record names no sources or they are not on disk. Written files are appended to ``files``."""
    from ..eval.protocols import get_protocol
    from ..io import write_text_atomic
    from ..schemas import get_schema
    from ..store.store import read_record

    record = read_record(Path(root) / row["record"])
    src = (record.diagnosis or {}).get("sources") or {}
    pred = (record.predictions or {}).get("path")
    if not src.get("annotations") or not pred or not Path(src["annotations"]).is_file() or not Path(pred).is_file():
        return None
    protocol = record.diagnosis["protocol"]
    schema = get_schema(src["schema"]) if src.get("schema") else get_protocol(protocol).schema
    worst = worst_images(pred, src["annotations"], protocol, schema.name, count)
    stem = f"{view.table.name}-{block.dataset}-{block.scale}-{d.variant}-gallery"
    items = []
    for e in worst:
        fig = draw_image(e, src.get("images"), schema.skeleton(), f"{d.label}: image {e.image_id} (error weight "
                                                                  f"{e.weight})")
        name = f"{stem}-{e.image_id}"
        files.append(_save_png(fig, folder / "gallery" / f"{name}.png"))
        items.append((e, f"gallery/{name}.png"))
    note = (f"{view.method} {view.table.name}, {d.label}, {block.dataset} {block.split} scale {block.scale}, "
            f"seed {int(row['seed'])}: the {len(items)} images with the most miss / swap / inversion keypoints and "
            "missed persons (each detection paired with its person by the official matching at OKS 0.1, as the "
            "diagnosis counts them).")
    files.append(write_text_atomic(folder / f"{stem}.html", gallery_page(
        f"{view.method} {view.table.name}: {d.label} — largest errors", f"{view.table.name}.html", items, note)))
    return f"{stem}.html"
