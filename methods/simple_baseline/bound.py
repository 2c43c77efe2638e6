"""What a top-down crop cannot see, and the oracle table, on any dataset (the real CrowdPose val annotations: no
images needed).

    POSEHARNESS_DATA=... python methods/simple_baseline/bound.py --dataset crowdpose --split val --scale paper

prints the share of labelled joints that fall outside their person's crop (box centre, aspect fixed to the scale's
input, × 1.25: the window of :func:`poseharness.data.augment.top_down_box`), per keypoint and over all; then runs the
oracle for the ``oracle`` table's variants (records written to ``$POSEHARNESS_RESULTS``) and prints AP and AP
easy / medium / hard of each.
"""
from __future__ import annotations

import argparse

import numpy as np

from poseharness.config import input_sizes, variant_config
from poseharness.contract import resolve_manifest, resolve_method
from poseharness.data.augment import affine_points, inside, top_down_affine
from poseharness.data.loader import load_samples
from poseharness.views import ground_truth_boxes


def outside_share(manifest, split: str, input_size, *, size: str | None = None, limit: int | None = None) -> dict:
    """Labelled joints (v > 0) of the annotated persons (not crowd, ``num_keypoints`` > 0: the persons that get a
    ground-truth-box crop) that fall outside their own crop of ``input_size`` ((W, H) or an int).

    Returns ``joints`` (labelled), ``outside``, ``share`` = outside / joints; ``persons`` and
    ``persons_outside`` (with at least one joint outside) and their ``person_share``; ``per_keypoint``: keypoint
    name -> share of its labelled joints outside."""
    names = manifest.schema.keypoints
    labelled = np.zeros(len(names), np.int64)
    out = np.zeros(len(names), np.int64)
    persons = persons_out = 0
    samples = load_samples(manifest, split, size, images=False)
    n = len(samples) if limit is None else min(limit, len(samples))
    for i in range(n):
        s = samples[i]
        boxes, _, idx = ground_truth_boxes(s)
        for box, p in zip(boxes, idx):
            kp = s.keypoints[p]
            lab = kp[:, 2] > 0
            miss = lab & ~inside(affine_points(kp[:, :2], top_down_affine(box, input_size)), input_size)
            labelled += lab
            out += miss
            persons += 1
            persons_out += int(miss.any())
    return {"joints": int(labelled.sum()), "outside": int(out.sum()), "share": float(out.sum() / max(labelled.sum(), 1)),
            "persons": persons, "persons_outside": persons_out, "person_share": float(persons_out / max(persons, 1)),
            "per_keypoint": {k: float(o / max(l, 1)) for k, o, l in zip(names, out, labelled)}}


def main(argv=None) -> None:
    from poseharness.oracle import run_oracle

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="crowdpose")
    p.add_argument("--split", default="val")
    p.add_argument("--scale", default="paper")
    p.add_argument("--size", default=None)
    p.add_argument("--table", default="oracle", help="the oracle table whose variants to run ('' for none)")
    args = p.parse_args(argv)
    spec = resolve_method("simple_baseline")
    manifest = resolve_manifest(args.dataset)
    side = input_sizes(variant_config(spec, "argmax", args.scale, manifest, size=args.size))[1]
    b = outside_share(manifest, args.split, side, size=args.size)
    print(f"labelled joints outside their 1.25x crop ({manifest.name}/{args.split}, input {side}): "
          f"{b['outside']} of {b['joints']} = {100 * b['share']:.2f} %; persons with one or more: "
          f"{b['persons_outside']} of {b['persons']} = {100 * b['person_share']:.2f} %")
    print("  per keypoint: " + ", ".join(f"{k} {100 * v:.2f}" for k, v in b["per_keypoint"].items()))
    if args.table:
        t = spec.tables()[args.table]
        rows = run_oracle(spec, manifest, args.split, list(t.columns), scale=args.scale, size=args.size,
                          progress=False)
        print(f"{args.table}: {t.caption}")
        for r in rows:
            m = r["metrics"]
            print(f"  {r['variant']:16s} AP {100 * m['AP']:5.1f}  AP_easy {100 * m.get('AP_easy', -1):5.1f}  "
                  f"AP_medium {100 * m.get('AP_medium', -1):5.1f}  AP_hard {100 * m.get('AP_hard', -1):5.1f}  "
                  f"poses {r['persons']}")


if __name__ == "__main__":
    main()
