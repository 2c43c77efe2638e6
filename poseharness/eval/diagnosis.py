"""Error diagnosis of multi-person keypoint results: which errors cost how much AP.

After Ronchi & Perona, "Benchmarking and Error Diagnosis in Multi-Instance Pose Estimation", ICCV 2017 [P],
and its public code matteorr/coco-analyze [R: FILE] (facts only; the code here is written anew, vectorised).
Everything is measured against the protocol's own official library (``protocols.py``): pycocotools for coco,
xtcocotools for crowdpose and ochuman. Their ``COCOeval.evaluate`` matches detections to persons (its
``evalImgs`` ``dtMatches`` / ``gtMatches``) and their ``accumulate`` makes every AP; this module decides only
what is corrected between two such evaluations. Sources in brackets: [R: file] coco-analyze, [P] the paper,
[D] a choice made here.

1. Keypoint errors of every detection that the library matches to a person at OKS 0.1 [R: pycocotools/
   cocoanalyze.py ``Params.oksLocThrs``]. For each labelled keypoint (v > 0) of that person, the keypoint
   similarity ks = exp(-d² / (2 · s² · k²)) (d in px, k = 2σ the protocol's sigma of that keypoint type,
   s² the protocol's OKS scale of the person: COCO ``area``, CrowdPose 0.53·w·h, OCHuman ``area``) is taken
   against every person of the image and against every person's left/right-mirrored keypoints (the schema's
   ``flip_index``); the best one decides [R: cocoanalyze.py ``_find_kpt_errors``]:

   - good:      best ks > 0.85 on the matched person's own keypoint
   - jitter:    0.5 <= best ks <= 0.85 on the matched person's own keypoint (coco-analyze writes ``< 0.85``,
                leaving ks = 0.85 exactly in no category; it is jitter here [D])
   - inversion: best ks >= 0.5 on the matched person's mirrored keypoint (its left/right counterpart)
   - swap:      best ks >= 0.5 on a keypoint (own or mirrored) of ANOTHER person of the image
   - miss:      best ks < 0.5

   Ties go to the first of: own keypoint, another person's, own mirrored, another's mirrored [R: row order of
   ``kpts_oks_mat``]. The thresholds 0.5 and 0.85 are ``Params.jitterKsThrs`` [R].
   A detection matched to a person without keypoints is not diagnosed [R: skipped when ``num_keypoints`` is 0;
   here the count as the dataset defines it, ``KeypointSchema.count_labelled``: CrowdPose counts only its 12
   limb joints]. One matched to a person the protocol ignores otherwise (e.g. a crowd region with keypoints)
   is diagnosed and corrected, as coco-analyze does [R].

2. Instance errors (the detections the library evaluates: the best 20 of each image [R: run_analysis.py]):

   - background false positives: detections matched to no person at every OKS threshold 0.50:0.95
     [R: analysisAPI/backgroundFalsePosErrors.py]; ``counts_per_oks`` gives them threshold by threshold
   - false negatives: persons (not ignored by the protocol) matched by no detection at every threshold
     [R: analysisAPI/backgroundFalseNegErrors.py; coco-analyze also counts ignored persons, here not [D]]
   - scoring errors: persons for which, among the still-unused detections with OKS >= 0.5 to them, the
     best-scored one is not the best-OKS one; persons taken by decreasing best OKS, the best-OKS detection used
     up, an image stopped at its first person with no such detection [R: analysisAPI/scoringErrors.py]
   - misordered images: images whose score order differs from the order of coco-analyze's optimal scores
     (of the original keypoints) [R: analysisAPI/scoringErrors.py]; optimal scores compared at 1e-9 [D]

3. AP after correcting each error type in turn, CUMULATIVELY, as coco-analyze's figures and ``summarize()``
   do [R: cocoanalyze.py ``_summarize_kpt_errors`` (corrections accumulate on the same detections),
   ``_summarize_score_errors``, ``_summarize_bckgd_errors``; COCOanalyze_demo.ipynb: "progressive correction"],
   in coco-analyze's order miss, swap, inversion, jitter [R: ``Params.err_types``], then:

   - score: every detection rescored with coco-analyze's optimal score, on the fully corrected keypoints: its
     best OKS with a person of its image the protocol does not ignore (0 when none), then a soft-NMS over the
     image: repeatedly the best-scored remaining detection is kept and every other remaining one is multiplied
     by exp(-oks² / 0.5), oks between two detections computed with all K keypoints and the mean of their
     keypoint-extent areas [R: cocoanalyze.py ``find_score_errors``, ``_soft_nms``]
   - background_fp: at each OKS threshold, the detections then unmatched are ignored [R: ``_summarize_bckgd_errors``]
   - false_negative: then, at each threshold (rising), the persons unmatched there (and at the lower
     thresholds) are ignored [R: same]. After this stage AP is 1 wherever a person is matched.

   A corrected keypoint is put on the person's keypoint shifted along x by sqrt(-ln(t) · 2 · s² · σ²):
   t = 0.85 for jitter, 0.5 for miss, the best ks found for inversion and swap [R: ``_find_kpt_errors``,
   ``dist_to_oks_high/low/max``]. coco-analyze's formula uses σ² where the OKS uses (2σ)², so the corrected
   keypoint's ks is t^(1/4) (jitter 0.960, miss 0.841), not t; reproduced as is [R].
   The AP figures are the library's ``accumulate`` for the area range 'all' (the library's own [0, 1e10];
   coco-analyze uses [32², 1e10] [D]) at maxDets 20: AP (mean over OKS 0.50:0.95), AP50, AP75, each the
   mean of the precision array over its entries > −1, as ``summarize`` computes them (−1 = no person).

Corrected keypoints and scores are written into the library's own detection objects and re-evaluated; their
``area`` (used only for the 'medium' and 'large' ranges) is left as loaded, as coco-analyze does. Only what a
correction changes is evaluated again [D]: a keypoint correction recomputes the OKS matrices of the images
whose detections moved (``oks.pair_oks``, equal bit for bit to the library's ``computeOks``, in its row and
column order) and runs the library's ``evaluateImg`` on those images only; the rescoring only reorders the
rows of every OKS matrix. The library's ``accumulate`` then scores all images. Tested equal, figure for figure,
to the library's full ``evaluate`` after every correction; ``poseharness bench diagnose`` times it.

Checked once against coco-analyze itself (its ``COCOanalyze`` with the area range set to [0, 1e10], fed the
best 20 detections per image as its run_analysis.py does), on a 1000-image COCO-format file with noisy
predictions: the keypoint category counts are equal and every stage's AP, AP50 and AP75 agree to 1e-16;
on a 300-image file the background false positives per threshold, the scoring errors and the misordered
images are equal too.
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
from pathlib import Path

import numpy as np

from ..data.annotations import crowdpose_area
from ..errors import HarnessError
from ..schemas import KeypointSchema, get_schema
from .evaluate import _scoreable, evaluator_info, load_ground_truth
from .oks import pair_oks
from .protocols import Protocol, get_protocol
from .results import MIN_CONFIDENCE, results_and_source
from .validate import MAX_DETS, validate_results

#: OKS at which a detection counts as matched to a person for the keypoint diagnosis [R: Params.oksLocThrs].
LOCALIZATION_OKS = 0.1
#: ks thresholds: below the first a keypoint is a miss, above the second good [R: Params.jitterKsThrs].
KS_THRESHOLDS = (0.5, 0.85)
#: The keypoint error types, in coco-analyze's order of correction [R: Params.err_types].
KEYPOINT_ERRORS = ("miss", "swap", "inversion", "jitter")
#: Per-keypoint categories; a category's code is its index here (−1 = not labelled, not diagnosed).
CATEGORIES = ("good", "jitter", "inversion", "swap", "miss")
GOOD, JITTER, INVERSION, SWAP, MISS = range(5)
#: Instance corrections after the keypoint ones [R: cocoanalyze.py summarize].
INSTANCE_ERRORS = ("score", "background_fp", "false_negative")
#: OKS a detection needs to a person to be considered in the scoring-error count [R: scoringErrors.py].
SCORE_MATCH_OKS = 0.5
#: Soft-NMS decay exp(-oks² / SOFT_NMS_WIDTH) of the optimal rescoring [R: cocoanalyze.py _soft_nms].
SOFT_NMS_WIDTH = 0.5
#: The AP figures reported per stage: name -> OKS threshold (None = mean over 0.50:0.95).
AP_FIGURES = {"AP": None, "AP50": 0.5, "AP75": 0.75}
_CHUNK = 1 << 21   # elements per temporary array in the chunked computations


def diagnose(
    results: list[dict] | str | os.PathLike,
    gt_path: str | os.PathLike,
    protocol: str,
    *,
    schema: KeypointSchema | str | None = None,
    order: tuple[str, ...] = KEYPOINT_ERRORS,
    results_name: str | None = None,
) -> dict:
    """Diagnose the errors of ``results`` against the annotation file ``gt_path`` under ``protocol``.

    results:      a results list or the path of a results JSON file (as ``evaluate`` takes)
    gt_path:      the annotation file (path)
    protocol:     ``coco``, ``crowdpose`` or ``ochuman`` (``protocols.py``)
    schema:       the keypoint schema (or its name) whose ``flip_index`` defines inversions; default the
                  protocol's; must have the protocol's K (the sigmas are always the protocol's)
    order:        the order in which the keypoint errors are corrected, a permutation of KEYPOINT_ERRORS
    results_name: what to call the results in error messages (default: the path, or ``<results>``)

    Returns a JSON-serialisable dict (counts are ints, AP figures fractions in [0, 1], −1 = no person):

    - ``protocol``, ``evaluator`` (``evaluator_info``), ``settings`` (the thresholds used, ``order``,
      ``stages``, ``cumulative``: True)
    - ``counts``: ``images``, ``detections`` (evaluated: best 20 per image), ``persons`` (not ignored),
      ``matched_detections`` (diagnosed at OKS 0.1), ``keypoints`` (labelled keypoints of their persons),
      ``good``, ``jitter``, ``inversion``, ``swap``, ``miss`` (keypoints), ``background_fp``,
      ``false_negatives``, ``scoring_errors``, ``misordered_images``
    - ``counts_per_keypoint``: {keypoint name: {category: count}} for the five categories
    - ``counts_per_oks``: {``oks``: [0.5, ..., 0.95], ``background_fp``: [...], ``false_negatives``: [...]}
      (unmatched detections / persons of the original results at each threshold)
    - ``ap``: {stage: {``AP``, ``AP50``, ``AP75``}} for the stages ``original``, then ``order``, then
      ``score``, ``background_fp``, ``false_negative``, each with all the corrections before it
    - ``gain``: {stage: {figure: ap[stage] − ap[previous stage]}} (None where either is −1)

    Raises HarnessError for bad input (the evaluator's checks: file, record and problem named).
    """
    order = tuple(order)
    if sorted(order) != sorted(KEYPOINT_ERRORS):
        raise HarnessError(f"order must be a permutation of {', '.join(KEYPOINT_ERRORS)}; got {order!r}")
    with contextlib.redirect_stdout(io.StringIO()):
        return _diagnosis(results, gt_path, protocol, schema, results_name).run(order)


def localize(
    results: list[dict] | str | os.PathLike,
    gt_path: str | os.PathLike,
    protocol: str,
    *,
    schema: KeypointSchema | str | None = None,
) -> dict:
    """The per-detection facts behind :func:`diagnose`'s keypoint counts (for drawing them, e.g. the report's
    gallery): the same validation, the same detections (the best 20 per image), the library's own matching at
    OKS 0.1 (its ``evaluateImg``) and :func:`keypoint_errors` of every detection matched to a person with keypoints.

    Returns {``records``: the N evaluated records (results order), ``gt_id``: (N,) int64 the annotation id of the
    matched person (−1: none, or a person without keypoints), ``oks``: (N,) float OKS to it (0 when none),
    ``category``: (N, K) int8 index into CATEGORIES (−1: not labelled or not diagnosed)}.
    """
    with contextlib.redirect_stdout(io.StringIO()):
        d = _diagnosis(results, gt_path, protocol, schema, None)
        d.lib.evaluate(lambda ids: d._oks_matrices(ids, d.dt_xy))
        pair_dt, pair_gt, category, _ = d.localize()
    N, K = d.dt_xy.shape[:2]
    gt_id, found, cat = np.full(N, -1, np.int64), np.zeros(N), np.full((N, K), -1, np.int8)
    gt_id[pair_dt], cat[pair_dt] = d.gt_ids[pair_gt], category
    found[pair_dt] = pair_oks(d.dt_xy[pair_dt], d.gt_kp[pair_gt], d.gt_scale[pair_gt], d.sigmas, d.gt_box[pair_gt])
    return {"records": d.records, "gt_id": gt_id, "oks": found, "category": cat}


def _diagnosis(results, gt_path, protocol: str, schema, results_name: str | None) -> "_Diagnosis":
    """The checked inputs of :func:`diagnose` and :func:`localize`: the results validated as the evaluator does,
    the best ``MAX_DETS`` per image kept, the annotation file of one category; the library loaded on them."""
    proto = get_protocol(protocol)
    schema = _schema(schema, proto)
    records, source = results_and_source(results, results_name)
    gt_data = load_ground_truth(gt_path, proto)
    if len(gt_data["categories"]) != 1:
        raise HarnessError(f"{gt_path}: the diagnosis handles one category, the file has "
                           f"{len(gt_data['categories'])}")
    clean = validate_results(records, schema_or_K=proto.schema, gt_image_ids=[im["id"] for im in gt_data["images"]],
                             source=source, category_ids=[c["id"] for c in gt_data["categories"]])
    return _Diagnosis(proto, schema, Path(gt_path), gt_data, _best_per_image(clean, MAX_DETS))


# --------------------------------------------------------------------------------------------------------------
# The official library, driven

class _Official:
    """The protocol's ``COCOeval`` on the kept detections, restricted to the area range 'all' (the only one
    reported; the other ranges would triple the work without changing it)."""

    def __init__(self, proto: Protocol, gt_path: Path, gt_data: dict, records: list[dict]):
        if proto.library == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval

            gt = COCO()
            gt.dataset = gt_data
            gt.createIndex()
            if records:
                dt = gt.loadRes(records)
            else:   # pycocotools' loadRes crashes on [] (as in evaluate.py)
                dt = COCO()
                dt.dataset = {"images": list(gt_data["images"]), "annotations": [],
                              "categories": copy.deepcopy(gt_data["categories"])}
                dt.createIndex()
            ev = COCOeval(gt, dt, proto.iou_type)
            ev.params.kpt_oks_sigmas = proto.schema.sigmas_array
            self.unmatched = lambda m: np.asarray(m) == 0          # how each library's accumulate reads them
        else:
            from xtcocotools.coco import COCO
            from xtcocotools.cocoeval import COCOeval

            gt = COCO(str(gt_path), ann_data=gt_data)
            dt = gt.loadRes([_scoreable(r) for r in records])
            ev = COCOeval(gt, dt, proto.iou_type, sigmas=proto.schema.sigmas_array, use_area=proto.use_area)
            ev.params.useSegm = None
            self.unmatched = lambda m: np.asarray(m) < 0
        p = ev.params
        a = list(p.areaRngLbl).index("all")
        p.areaRng, p.areaRngLbl = [p.areaRng[a]], ["all"]
        self.ev = ev
        self.anns = [dt.anns[i + 1] for i in range(len(records))]   # loadRes numbers results 1..N in order
        self.iou_thrs = np.asarray(p.iouThrs, dtype=np.float64)

    def evaluate(self, oks_matrices=None) -> np.ndarray:
        """``evaluate`` + ``accumulate``; returns the precision (T, R) for area 'all', maxDets 20.
        ``oks_matrices(image_ids)``, when given, stands in for the library's ``computeOks`` (one call for all
        images, each matrix in the library's row and column order, or [] as the library gives for an image
        without detections or persons); everything else is the library's ``evaluate``."""
        p = self.ev.params
        self.cat, self.area, self.max_det = p.catIds[0], p.areaRng[0], p.maxDets[-1]
        if oks_matrices is None:
            self.ev.evaluate()
        else:
            computed = {}

            def compute_oks(image_id, category_id):
                if not computed:      # the first call comes after the library's _prepare: all at once
                    ids = list(np.unique(p.imgIds))
                    computed.update(zip(ids, oks_matrices(ids)))
                return computed[image_id]

            self.ev.computeOks = compute_oks
            try:
                self.ev.evaluate()
            finally:
                del self.ev.computeOks
        p = self.ev.params
        self.position = {img: i for i, img in enumerate(p.imgIds)}      # evalImgs: one category, one area range
        return self.accumulate()

    def detections(self, image_id) -> list[dict]:
        """The detections of one image in the order of the rows of its OKS matrix (``computeOks``'s: by
        decreasing score, stable, the best ``maxDets``)."""
        dts = self.ev._dts[image_id, self.cat]
        order = np.argsort([-d["score"] for d in dts], kind="mergesort")[:self.max_det]
        return [dts[i] for i in order]

    def persons(self, image_id) -> list[dict]:
        """The persons of one image in the order of the columns of its OKS matrix."""
        return self.ev._gts[image_id, self.cat]

    def rematch(self, image_ids, ious: list[np.ndarray] | None = None) -> None:
        """The library's ``evaluateImg`` again on ``image_ids``, after their OKS matrices became ``ious``
        (None: unchanged)."""
        for k, img in enumerate(image_ids):
            if ious is not None:
                self.ev.ious[img, self.cat] = ious[k]
            self.ev.evalImgs[self.position[img]] = self.ev.evaluateImg(img, self.cat, self.area, self.max_det)

    def accumulate(self) -> np.ndarray:
        self.ev.accumulate()
        return np.array(self.ev.eval["precision"][:, :, 0, 0, -1])

    def images(self) -> list[dict]:
        return [e for e in self.ev.evalImgs if e is not None]

    def match_at(self, threshold: float) -> list[dict]:
        """The library's ``evaluateImg`` at one other OKS threshold, on the OKS of the last ``evaluate``."""
        p = self.ev.params
        saved = p.iouThrs
        p.iouThrs = np.array([threshold])
        try:
            found = [self.ev.evaluateImg(i, c, p.areaRng[0], p.maxDets[-1]) for c in p.catIds for i in p.imgIds]
        finally:
            p.iouThrs = saved
        return [e for e in found if e is not None]

    def set_keypoints(self, rows: np.ndarray, xy: np.ndarray, conf: np.ndarray) -> None:
        """Detections ``rows`` get keypoints ``xy`` (n, K, 2) with confidences ``conf`` (n, K)."""
        flat = np.concatenate([xy, conf[..., None]], axis=2).reshape(len(rows), -1).tolist()
        for r, kp in zip(rows.tolist(), flat):
            self.anns[r]["keypoints"] = kp

    def set_scores(self, scores: np.ndarray) -> None:
        for ann, s in zip(self.anns, scores.tolist()):
            ann["score"] = s


class _Matched:
    """One evaluation's matching (``evalImgs``), as arrays over T thresholds, N detections, G persons.

    dt_gt:      (T, N) int64, index of the person each detection matched (−1 none)
    dt_ignored: (T, N) bool, ``dtIgnore``
    gt_matched: (T, G) bool
    gt_ignored: (G,) bool, ``gtIgnore`` (persons of no evaluated image keep False)
    evaluated:  (N,) bool, the detection is in ``evalImgs``
    """

    def __init__(self, images: list[dict], lib: _Official, gt_ids: np.ndarray, n_dt: int, T: int):
        sorter = np.argsort(gt_ids, kind="stable")

        def gt_index(ids):
            ids = np.asarray(ids, dtype=np.int64)
            return sorter[np.searchsorted(gt_ids, ids, sorter=sorter)] if ids.size else ids

        G = len(gt_ids)
        self.dt_gt = np.full((T, n_dt), -1, np.int64)
        self.dt_ignored = np.zeros((T, n_dt), bool)
        self.gt_matched = np.zeros((T, G), bool)
        self.gt_ignored = np.zeros(G, bool)
        self.evaluated = np.zeros(n_dt, bool)
        parts = [(np.asarray(e["dtIds"], np.int64) - 1, np.asarray(e["dtMatches"]).reshape(T, -1),
                  np.asarray(e["dtIgnore"], bool).reshape(T, -1), np.asarray(e["gtIds"], np.int64),
                  np.asarray(e["gtMatches"]).reshape(T, -1), np.asarray(e["gtIgnore"]).astype(bool))
                 for e in images]
        if not parts:
            return
        d, dtm, dti, g, gtm, gti = (np.concatenate(x, axis=-1) for x in zip(*parts))
        hit = ~lib.unmatched(dtm)
        found = np.full(dtm.shape, -1, np.int64)
        found[hit] = gt_index(dtm[hit])
        self.dt_gt[:, d] = found
        self.dt_ignored[:, d] = dti
        self.evaluated[d] = True
        g = gt_index(g)
        self.gt_matched[:, g] = ~lib.unmatched(gtm)
        self.gt_ignored[g] = gti


# --------------------------------------------------------------------------------------------------------------
# The diagnosis

class _Diagnosis:
    def __init__(self, proto: Protocol, schema: KeypointSchema, gt_path: Path, gt_data: dict, records: list[dict]):
        self.proto, self.schema = proto, schema
        K = proto.num_keypoints
        self.sigmas = proto.schema.sigmas_array
        image_ids = np.array(sorted({im["id"] for im in gt_data["images"]}), dtype=np.int64)
        self.n_images = len(image_ids)
        category = gt_data["categories"][0]["id"]
        anns = [a for a in gt_data["annotations"] if a["category_id"] == category]
        G = len(anns)
        self.gt_ids = np.array([a["id"] for a in anns], dtype=np.int64)
        self.gt_kp = np.array([a["keypoints"] for a in anns], dtype=np.float64).reshape(G, K, 3)
        self.gt_box = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(G, 4)
        self.gt_scale = (np.array([a["area"] for a in anns], dtype=np.float64) if proto.use_area
                         else crowdpose_area(self.gt_box))                  # [R: computeOks of each library]
        self.gt_image = np.searchsorted(image_ids, np.array([a["image_id"] for a in anns], dtype=np.int64))
        self._gt_sorter = np.argsort(self.gt_ids, kind="stable")
        self.image_ids = image_ids
        N = len(records)
        kp = np.array([r["keypoints"] for r in records], dtype=np.float64).reshape(N, K, 3)
        self.dt_xy, self.dt_conf = kp[:, :, :2], kp[:, :, 2]
        if proto.library == "xtcocotools":          # the confidences the library holds (see evaluate._scoreable)
            self.dt_conf = np.where((self.dt_conf > 0).any(axis=1, keepdims=True), self.dt_conf, MIN_CONFIDENCE)
        self.dt_score = np.array([r["score"] for r in records], dtype=np.float64)
        self.dt_image = np.searchsorted(image_ids, np.array([r["image_id"] for r in records], dtype=np.int64))
        self.records = records                          # the evaluated ones, as given
        self.lib = _Official(proto, gt_path, gt_data, records)

    def matched(self, images: list[dict], T: int) -> _Matched:
        return _Matched(images, self.lib, self.gt_ids, len(self.dt_score), T)

    def run(self, order: tuple[str, ...]) -> dict:
        lib, thr = self.lib, self.lib.iou_thrs
        T = len(thr)
        precision = {"original": lib.evaluate(lambda ids: self._oks_matrices(ids, self.dt_xy))}
        original = self.matched(lib.images(), T)
        pair_dt, pair_gt, category, corrected = self.localize()

        # Cumulative keypoint corrections, each re-evaluated by the library (skipped when nothing changes).
        xy = self.dt_xy.copy()
        stage = "original"
        for err in order:
            fix = category == CATEGORIES.index(err)                      # (P, K)
            rows = np.flatnonzero(fix.any(axis=1))
            if rows.size:
                sub = xy[pair_dt[rows]]
                sub[fix[rows]] = corrected[rows][fix[rows]]
                xy[pair_dt[rows]] = sub
                lib.set_keypoints(pair_dt[rows], sub, self.dt_conf[pair_dt[rows]])
                precision[err] = self._reevaluate(pair_dt[rows], xy)
            else:
                precision[err] = precision[stage]
            stage = err

        # Optimal rescoring on the corrected keypoints.
        keep_gt = ~original.gt_ignored
        rec_members = _members(self.dt_image, self.n_images)
        opt = optimal_scores(xy, rec_members, self._max_oks(xy, keep_gt), self.sigmas)
        precision["score"] = self._rescore(opt)

        # Background false positives, then false negatives, ignored threshold by threshold.
        images = lib.images()
        for e in images:
            e["dtIgnore"] = np.logical_or(e["dtIgnore"], lib.unmatched(e["dtMatches"]))
        precision["background_fp"] = lib.accumulate()
        rows = []
        for t in range(T):       # rising thresholds; the ignore flags pile up, as coco-analyze sets them
            for e in images:
                e["gtIgnore"] = np.where(lib.unmatched(e["gtMatches"][t]), 1, e["gtIgnore"])
            rows.append(lib.accumulate()[t])
        precision["false_negative"] = np.stack(rows)

        stages = ("original", *order, *INSTANCE_ERRORS)
        ap = {s: _ap_figures(precision[s], thr) for s in stages}
        gain = {s: {f: (None if min(ap[s][f], ap[p][f]) < 0 else ap[s][f] - ap[p][f]) for f in AP_FIGURES}
                for p, s in zip(stages, stages[1:])}
        return {
            "protocol": self.proto.name,
            "evaluator": evaluator_info(self.proto.name),
            "settings": {"max_dets": MAX_DETS, "localization_oks": LOCALIZATION_OKS,
                         "ks_thresholds": list(KS_THRESHOLDS), "score_match_oks": SCORE_MATCH_OKS,
                         "soft_nms_width": SOFT_NMS_WIDTH, "order": list(order), "stages": list(stages),
                         "cumulative": True},
            **self._counts(original, category, pair_gt, keep_gt),
            "ap": ap,
            "gain": gain,
        }

    def localize(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """After the first evaluation: the detections the library matches at OKS 0.1 to a person with keypoints
        (``num_keypoints`` > 0, as the dataset counts them), ignored by the protocol or not [R: _find_kpt_errors],
        and their keypoint errors. Returns (pair_dt (P,), pair_gt (P,), category (P, K), corrected (P, K, 2))."""
        local = self.matched(self.lib.match_at(LOCALIZATION_OKS), 1)     # reuses the OKS just computed
        with_keypoints = self.proto.schema.count_labelled(self.gt_kp) > 0
        matched = np.flatnonzero(local.dt_gt[0] >= 0)
        pair_dt = matched[with_keypoints[local.dt_gt[0, matched]]]
        pair_gt = local.dt_gt[0, pair_dt]
        category, _, corrected = keypoint_errors(self.dt_xy[pair_dt], self.gt_kp, self.gt_scale, self.gt_image,
                                                 pair_gt, self.sigmas, self.schema.flip_index)
        return pair_dt, pair_gt, category, corrected

    def _reevaluate(self, rows: np.ndarray, xy: np.ndarray) -> np.ndarray:
        """The precision after the detections ``rows`` moved to ``xy[rows]``: only their images are evaluated
        again, each with its OKS matrix recomputed (:func:`oks.pair_oks`, equal bit for bit to the library's
        ``computeOks``, tested) in the library's row and column order, then the library's ``evaluateImg``; the
        library's ``accumulate`` over all images. Equal to a full ``evaluate`` + ``accumulate`` (tested)."""
        lib = self.lib
        images = [img for img in np.unique(self.image_ids[self.dt_image[rows]]).tolist() if lib.persons(img)]
        lib.rematch(images, self._oks_matrices(images, xy))
        return lib.accumulate()

    def _oks_matrices(self, image_ids: list, xy: np.ndarray) -> list:
        """Per image, the OKS of its detections (keypoints ``xy`` (N, K, 2)) with its persons, in the library's
        row and column order: ``computeOks``'s result, bit for bit (:func:`oks.pair_oks`, tested); [] for an
        image without detections or persons, as the library returns. All images' pairs in one computation."""
        lib = self.lib
        dt_rows = [np.array([d["id"] - 1 for d in lib.detections(img)], np.int64) for img in image_ids]
        gt_rows = [self._gt_index([g["id"] for g in lib.persons(img)]) for img in image_ids]
        d = np.concatenate([np.repeat(a, len(b)) for a, b in zip(dt_rows, gt_rows)] + [np.zeros(0, np.int64)])
        g = np.concatenate([np.tile(b, len(a)) for a, b in zip(dt_rows, gt_rows)] + [np.zeros(0, np.int64)])
        values = pair_oks(xy[d], self.gt_kp[g], self.gt_scale[g], self.sigmas, self.gt_box[g])
        ends = np.cumsum([len(a) * len(b) for a, b in zip(dt_rows, gt_rows)])
        return [v.reshape(len(a), len(b)) if len(v) else [] for v, a, b in
                zip(np.split(values, ends[:-1]), dt_rows, gt_rows)]

    def _rescore(self, scores: np.ndarray) -> np.ndarray:
        """The precision after every detection's score became ``scores``: the OKS matrices are only reordered
        (their rows follow the scores), then the library's ``evaluateImg`` on every image with detections."""
        lib = self.lib
        images = [img for img in self.image_ids.tolist() if lib.ev._dts[img, lib.cat]]
        before = [np.array([d["id"] for d in lib.detections(img)]) for img in images]
        lib.set_scores(scores)
        ious = []
        for img, old in zip(images, before):
            matrix = lib.ev.ious[img, lib.cat]
            if len(matrix):
                new = np.array([d["id"] for d in lib.detections(img)])
                matrix = matrix[np.argsort(old)[np.searchsorted(old, new, sorter=np.argsort(old))]]
            ious.append(matrix)
        lib.rematch(images, ious)
        return lib.accumulate()

    def _gt_index(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return self._gt_sorter[np.searchsorted(self.gt_ids, ids, sorter=self._gt_sorter)]

    def _max_oks(self, xy: np.ndarray, keep_gt: np.ndarray) -> np.ndarray:
        """(N,) each detection's best OKS with a kept person of its image; 0 when there is none."""
        members = _members(self.dt_image, self.n_images)
        table = self._oks_table(xy, members, keep_gt)
        best = np.zeros(len(xy))
        found = np.nan_to_num(table, nan=-np.inf).max(axis=2, initial=-np.inf)
        has = (members >= 0) & np.isfinite(found)
        best[members[has]] = found[has]
        return best

    def _oks_table(self, xy: np.ndarray, dt_members: np.ndarray, keep_gt: np.ndarray) -> np.ndarray:
        """(I, Wd, Wg) OKS of each image's detections (``dt_members``) with its kept persons, NaN padded.
        The project's one OKS (``oks.pair_oks``, equal to the library's computeOks), all pairs at once."""
        kept = np.flatnonzero(keep_gt)
        gt_members = _members(self.gt_image[kept], self.n_images)
        gt_members = np.where(gt_members >= 0, kept[np.maximum(gt_members, 0)], -1)
        table = np.full(dt_members.shape + gt_members.shape[1:], np.nan)
        valid = (dt_members[:, :, None] >= 0) & (gt_members[:, None, :] >= 0)
        i, a, b = np.nonzero(valid)
        d, g = dt_members[i, a], gt_members[i, b]
        table[valid] = pair_oks(xy[d], self.gt_kp[g], self.gt_scale[g], self.sigmas, self.gt_box[g])
        return table

    def _counts(self, original: _Matched, category: np.ndarray, pair_gt: np.ndarray, keep_gt: np.ndarray) -> dict:
        labelled = category >= 0
        per_type = np.stack([(category == c).sum(axis=0) for c in range(len(CATEGORIES))])    # (5, K)
        unmatched_dt = (original.dt_gt < 0) & original.evaluated[None]                       # (T, N)
        unmatched_gt = ~original.gt_matched & keep_gt[None]                                   # (T, G)
        # Scoring errors and misordered images, on the original keypoints and scores.
        by_score = _members(self.dt_image, self.n_images, key=-self.dt_score)
        n_errors = scoring_errors(self._oks_table(self.dt_xy, by_score, keep_gt))
        records = _members(self.dt_image, self.n_images)
        opt = optimal_scores(self.dt_xy, records, self._max_oks(self.dt_xy, keep_gt), self.sigmas)
        n_misordered = _misordered(records, self.dt_score, opt)
        return {
            "counts": {
                "images": self.n_images,
                "detections": int(original.evaluated.sum()),
                "persons": int(keep_gt.sum()),
                "matched_detections": int(len(pair_gt)),
                "keypoints": int(labelled.sum()),
                **{name: int(per_type[c].sum()) for c, name in enumerate(CATEGORIES)},
                "background_fp": int(unmatched_dt.all(axis=0).sum()),
                "false_negatives": int(unmatched_gt.all(axis=0).sum()),
                "scoring_errors": n_errors,
                "misordered_images": n_misordered,
            },
            "counts_per_keypoint": {name: {cat: int(per_type[c, k]) for c, cat in enumerate(CATEGORIES)}
                                    for k, name in enumerate(self.schema.keypoints)},
            "counts_per_oks": {"oks": [round(float(t), 2) for t in self.lib.iou_thrs],
                               "background_fp": unmatched_dt.sum(axis=1).tolist(),
                               "false_negatives": unmatched_gt.sum(axis=1).tolist()},
        }


# --------------------------------------------------------------------------------------------------------------
# The numerical core, array in, array out

def keypoint_errors(dt_xy, gt_keypoints, gt_scale, gt_image, pair_gt, sigmas, flip_index):
    """Keypoint error categories of P detections, each matched to one person [R: cocoanalyze.py _find_kpt_errors].

    dt_xy:        (P, K, 2) float, px — the detections' keypoints (pair p: detection p)
    gt_keypoints: (G, K, 3) float — every person of the data set: x, y (px), visibility v (v > 0 labelled)
    gt_scale:     (G,) float, px² — each person's OKS scale s² (the protocol's: area, or 0.53·w·h)
    gt_image:     (G,) int — each person's image (persons of the same image are compared)
    pair_gt:      (P,) int — the person each detection is matched to
    sigmas:       (K,) float — per-type σ (ks uses k = 2σ)
    flip_index:   (K,) int — the left/right counterpart of each keypoint type (``KeypointSchema.flip_index``)

    Returns (category, ks, corrected):
    category:  (P, K) int8 — index into CATEGORIES; −1 where the matched person's keypoint is not labelled
    ks:        (P, K) float — the best keypoint similarity found (0 where none is labelled)
    corrected: (P, K, 2) float, px — where coco-analyze moves the keypoint to correct its error
               (the matched person's keypoint + (sqrt(-ln t · 2 · s² · σ²), 0); t as in the module doc);
               the detection's own keypoint for good and unlabelled ones
    """
    dt_xy = np.asarray(dt_xy, dtype=np.float64)
    gt_keypoints = np.asarray(gt_keypoints, dtype=np.float64)
    gt_scale = np.asarray(gt_scale, dtype=np.float64)
    sigmas = np.asarray(sigmas, dtype=np.float64)
    flip = np.asarray(flip_index)
    pair_gt = np.asarray(pair_gt, dtype=np.int64)
    gt_image = np.asarray(gt_image, dtype=np.int64)
    P, K = dt_xy.shape[:2]
    if P == 0:
        return np.zeros((0, K), np.int8), np.zeros((0, K)), np.zeros((0, K, 2))
    # Candidates of each pair: the persons of its image, the matched one first (W of them, −1 padded).
    members = _members(gt_image, int(gt_image.max()) + 1)
    rank = np.empty(len(gt_image), np.int64)
    rank[members[members >= 0]] = np.nonzero(members >= 0)[1]
    cand = members[gt_image[pair_gt]]
    rows = np.arange(P)
    cand[rows, rank[pair_gt]] = cand[rows, 0]
    cand[rows, 0] = pair_gt
    W = cand.shape[1]
    variances = (2.0 * sigmas) ** 2
    ks = np.empty((P, K))
    best = np.empty((P, K), np.int64)
    step = max(1, _CHUNK // (2 * W * K))
    for s in range(0, P, step):
        c = cand[s:s + step]
        g = gt_keypoints[np.maximum(c, 0)]                                   # (p, W, K, 3)
        g = np.concatenate([g, g[:, :, flip]], axis=1)                      # (p, 2W, K, 3): own, then mirrored
        scale = np.tile(gt_scale[np.maximum(c, 0)], 2)[:, :, None]          # (p, 2W, 1)
        labelled = (g[..., 2] > 0) & np.tile(c >= 0, 2)[:, :, None]
        d2 = ((dt_xy[s:s + step, None] - g[..., :2]) ** 2).sum(axis=-1)
        k = np.where(labelled, np.exp(-d2 / variances / (scale + np.spacing(1)) / 2), -1.0)
        best[s:s + step] = k.argmax(axis=1)                                  # first maximum: tie order above
        ks[s:s + step] = np.maximum(k.max(axis=1), 0.0)
    lo, hi = KS_THRESHOLDS
    labelled = gt_keypoints[pair_gt, :, 2] > 0
    own, mirrored = best == 0, best == W
    category = np.full((P, K), -1, np.int8)
    category[labelled & (ks < lo)] = MISS
    found = labelled & (ks >= lo)
    category[found & own & (ks > hi)] = GOOD
    category[found & own & (ks <= hi)] = JITTER
    category[found & mirrored] = INVERSION
    category[found & ~own & ~mirrored] = SWAP
    # Target ks of the correction (before coco-analyze's σ² vs (2σ)² mismatch): see the module doc.
    t = np.where(category == JITTER, hi, np.where(category == MISS, lo, ks))
    t = t + np.spacing(1) * (t == 0) - np.spacing(1) * (t == 1)
    shift = np.sqrt(-np.log(t) * 2 * gt_scale[pair_gt, None] * sigmas ** 2)
    target = gt_keypoints[pair_gt, :, :2] + np.stack([shift, np.zeros_like(shift)], axis=-1)
    error = category > GOOD
    corrected = np.where(error[..., None], target, dt_xy)
    return category, ks, corrected


def optimal_scores(dt_xy, members, max_oks, sigmas) -> np.ndarray:
    """coco-analyze's optimal scores [R: cocoanalyze.py find_score_errors, _soft_nms].

    dt_xy:   (N, K, 2) float, px — every detection's keypoints (all K count, whatever their confidence)
    members: (I, W) int — each image's detections in results order, −1 padded (``_members``)
    max_oks: (N,) float — each detection's best OKS with a person of its image (the starting score)
    sigmas:  (K,) float
    Returns (N,) float: per image, repeatedly the best-scored remaining detection keeps its score and every
    other remaining one is multiplied by exp(-oks² / 0.5), oks between the two with the mean of their
    keypoint-extent areas as s². Ties keep the previous order (a stable sort, as coco-analyze's ``list.sort``).
    """
    dt_xy = np.asarray(dt_xy, dtype=np.float64)
    max_oks = np.asarray(max_oks, dtype=np.float64)
    out = max_oks.copy()
    I, W = members.shape
    if I == 0 or W == 0 or len(dt_xy) == 0:
        return out
    valid = members >= 0
    xy = dt_xy[np.maximum(members, 0)]                                      # (I, W, K, 2)
    extent = xy.max(axis=2) - xy.min(axis=2)
    area = extent[..., 0] * extent[..., 1]                                  # (I, W)
    variances = (2.0 * np.asarray(sigmas, dtype=np.float64)) ** 2
    K = xy.shape[2]
    pair = np.empty((I, W, W))
    step = max(1, _CHUNK // (W * W * K))
    for s in range(0, I, step):
        a = xy[s:s + step]
        d2 = ((a[:, :, None] - a[:, None]) ** 2).sum(axis=-1)               # (i, W, W, K)
        mean_area = 0.5 * (area[s:s + step, :, None] + area[s:s + step, None, :])
        e = d2 / variances / (mean_area[..., None] + np.spacing(1)) / 2
        pair[s:s + step] = np.exp(-e).sum(axis=-1) / K
    decay = np.exp(-pair ** 2 / SOFT_NMS_WIDTH)
    score = np.where(valid, max_oks[np.maximum(members, 0)], 0.0)
    alive = valid.copy()
    seq = np.broadcast_to(np.arange(W), (I, W)).copy()                      # the current list order
    rows = np.arange(I)
    final = np.zeros((I, W))
    for _ in range(W):
        key = np.where(alive, -score, np.inf)[rows[:, None], seq]
        seq = np.take_along_axis(seq, np.argsort(key, axis=1, kind="stable"), axis=1)
        pick = seq[:, 0]
        has = alive[rows, pick]
        final[rows[has], pick[has]] = score[rows[has], pick[has]]
        alive[rows, pick] = False
        score = np.where(alive & has[:, None], score * decay[rows, pick], score)
    out[members[valid]] = final[valid]
    return out


def scoring_errors(table, min_oks: float = SCORE_MATCH_OKS) -> int:
    """coco-analyze's count of scoring errors [R: analysisAPI/scoringErrors.py].

    table: (I, Wd, Wg) float — OKS of each image's detections, in decreasing score order (stable), with its
           persons (the ones the protocol counts); NaN where there is no detection or person
    Per image, persons by decreasing best OKS (stable): among the detections not yet used with OKS >= min_oks,
    the best-OKS one (first in score order on ties) is used; an error when there were several and the
    best-scored of them is not it. An image stops at its first person with no such detection.
    Returns the number of errors.
    """
    o = np.nan_to_num(np.asarray(table, dtype=np.float64), nan=-1.0)
    I, Wd, Wg = o.shape
    if I == 0 or Wd == 0 or Wg == 0:
        return 0
    rank = np.argsort(-o.max(axis=1), axis=1, kind="stable")                # persons by best OKS
    o = np.take_along_axis(o, rank[:, None, :], axis=2)
    used = np.zeros((I, Wd), bool)
    active = np.ones(I, bool)
    errors = 0
    for g in range(Wg):
        col = o[:, :, g]
        available = (col >= min_oks) & ~used
        n = available.sum(axis=1)
        active &= n > 0
        pick = np.argmax(np.where(available, col, -np.inf), axis=1)
        first = np.argmax(available, axis=1)                                # the best-scored available one
        errors += int(np.count_nonzero(active & (n > 1) & (pick != first)))
        used[np.flatnonzero(active), pick[active]] = True
    return errors


# --------------------------------------------------------------------------------------------------------------
# Helpers

def _members(group: np.ndarray, n_groups: int, key: np.ndarray | None = None) -> np.ndarray:
    """(n_groups, W) int64: the indices of each group's elements (in index order, or by increasing ``key``,
    stable), −1 after them; W = the largest group (at least 1)."""
    group = np.asarray(group, dtype=np.int64)
    order = np.arange(len(group)) if key is None else np.argsort(key, kind="mergesort")
    order = order[np.argsort(group[order], kind="stable")]
    counts = np.bincount(group, minlength=n_groups)
    out = np.full((n_groups, max(int(counts.max(initial=0)), 1)), -1, np.int64)
    start = np.cumsum(counts) - counts
    g = group[order]
    out[g, np.arange(len(order)) - start[g]] = order
    return out


def _misordered(members: np.ndarray, score: np.ndarray, opt: np.ndarray) -> int:
    """Images (with detections) whose order by score differs from the order by ``opt`` (stable sorts).
    ``opt`` is compared at 1e-9 [D]: soft-NMS decays of 1 − 1e-16 between far-apart persons are float noise,
    and would otherwise reorder perfect detections."""
    valid = members >= 0
    if not valid.any():
        return 0
    idx = np.maximum(members, 0)
    a = np.argsort(np.where(valid, -score[idx], np.inf), axis=1, kind="stable")
    b = np.argsort(np.where(valid, -np.round(opt[idx], 9), np.inf), axis=1, kind="stable")
    return int(np.count_nonzero((a != b).any(axis=1) & valid[:, 0]))


def _best_per_image(records: list[dict], max_dets: int) -> list[dict]:
    """The ``max_dets`` best-scored records of each image, in their original order: the ones the library
    evaluates (its stable sort by score), as coco-analyze keeps them [R: run_analysis.py]."""
    if not records:
        return []
    image = np.array([r["image_id"] for r in records], dtype=np.int64)
    score = np.array([r["score"] for r in records], dtype=np.float64)
    order = np.argsort(-score, kind="mergesort")
    order = order[np.argsort(image[order], kind="stable")]                # by image, then score (stable)
    _, first, counts = np.unique(image[order], return_index=True, return_counts=True)
    rank = np.arange(len(order)) - np.repeat(first, counts)
    keep = np.sort(order[rank < max_dets])
    return [records[i] for i in keep.tolist()]


def _ap_figures(precision: np.ndarray, iou_thrs: np.ndarray) -> dict[str, float]:
    """AP, AP50, AP75 from a precision array (T, R), as the library's ``summarize`` computes them."""
    figures = {}
    for name, thr in AP_FIGURES.items():
        p = precision if thr is None else precision[np.where(thr == iou_thrs)[0]]
        figures[name] = float(np.mean(p[p > -1])) if np.any(p > -1) else -1.0
    return figures


def _schema(schema: KeypointSchema | str | None, proto: Protocol) -> KeypointSchema:
    if schema is None:
        return proto.schema
    if isinstance(schema, str):
        schema = get_schema(schema)
    if schema.num_keypoints != proto.num_keypoints:
        raise HarnessError(f"schema {schema.name!r} has {schema.num_keypoints} keypoints; the {proto.name} "
                           f"protocol has {proto.num_keypoints}")
    return schema


def format_diagnosis(diag: dict) -> str:
    """The diagnosis as readable tables: AP after each cumulative correction, then the error counts."""
    lines = [f"{'correction':<16}{'AP':>8}{'AP50':>8}{'AP75':>8}{'gain AP':>9}"]
    for stage, figures in diag["ap"].items():
        gain = diag["gain"].get(stage, {}).get("AP")
        gain_text = "" if stage == "original" else ("     n/a" if gain is None else f"{gain:+8.4f}")
        label = stage if stage == "original" else "+ " + stage
        lines.append((f"{label:<16}" + "".join(f"{figures[f]:8.4f}" for f in AP_FIGURES) + f" {gain_text}").rstrip())
    c = diag["counts"]
    total = max(c["keypoints"], 1)
    lines += ["", f"keypoints of {c['matched_detections']} matched detections: {c['keypoints']}"]
    lines += [f"  {cat:<10}{c[cat]:>8}  {100 * c[cat] / total:5.1f} %" for cat in CATEGORIES]
    lines += ["", f"detections {c['detections']}, persons {c['persons']}, images {c['images']}",
              f"  background false positives {c['background_fp']:>7}",
              f"  false negatives            {c['false_negatives']:>7}",
              f"  scoring errors             {c['scoring_errors']:>7}",
              f"  misordered images          {c['misordered_images']:>7}"]
    names = list(diag["counts_per_keypoint"])
    width = max(len("keypoint"), *(len(n) for n in names))
    lines += ["", f"{'keypoint':<{width}}" + "".join(f"{cat:>10}" for cat in CATEGORIES)]
    lines += [f"{n:<{width}}" + "".join(f"{diag['counts_per_keypoint'][n][cat]:>10}" for cat in CATEGORIES)
              for n in names]
    return "\n".join(lines)
