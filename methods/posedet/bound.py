"""The assignment's own bound and Figure 3 as numbers, on any crowdpose-format dataset (the real CrowdPose val
annotations: no images needed).

    POSEHARNESS_DATA=... python methods/posedet/bound.py --dataset crowdpose --split val --scale paper

prints, per stride, the persons assigned to that level and the share that lose their candidate to another
(closer) person; then runs the oracle for the ``bound`` and ``figure3`` tables' variants (records written to
``$POSEHARNESS_RESULTS``) and prints AP / AP_hard of each.
"""
from __future__ import annotations

import argparse
import numpy as np

from poseharness.config import variant_config
from poseharness.contract import method_module, method_submodule, resolve_manifest, resolve_method
from poseharness.data.augment import transform_sample
from poseharness.data.loader import load_samples
from poseharness.views import bottom_up_views


def assignment_bound(spec, manifest, split: str, scale: str, *, size=None, variant: str = "posedet",
                     limit: int | None = None) -> dict:
    """Per stride: ``persons`` assigned to that level, ``lost`` (their candidate taken by a closer person),
    ``share`` = lost / persons; plus ``all`` over the levels and ``invalid`` (annotated persons with < 3 labelled
    joints, never assigned). The view is the oracle's (whole image, long side to the scale's input)."""
    assignment = method_submodule(spec, "assignment")
    method = method_module(spec)
    cfg = variant_config(spec, variant, scale, manifest, size=size)
    strides = list(cfg["encoding"]["strides"])
    k = manifest.schema.num_keypoints
    persons = np.zeros(len(strides), int)
    lost = np.zeros(len(strides), int)
    invalid = 0
    samples = load_samples(manifest, split, size, images=False)
    n = len(samples) if limit is None else min(limit, len(samples))
    for i in range(n):
        s = samples[i]
        view = bottom_up_views(s, cfg["scale"]["input"])[0]
        seen = transform_sample(s, view.affine, view.size, counted=manifest.schema.counted)
        kp = assignment.with_extra_point(seen.keypoints, cfg["schema"])
        shapes = method.level_shapes(seen.height, seen.width, strides)
        a = assignment.assign(kp, seen.boxes, seen.annotated, k, strides, shapes, cfg["encoding"]["centroid"])
        invalid += int(seen.annotated.sum()) - len(a.persons)
        for lvl, won in zip(a.level, a.won):
            persons[lvl] += 1
            lost[lvl] += int(not won)
    out = {f"stride{s}": {"persons": int(p), "lost": int(q), "share": float(q / max(p, 1))}
           for s, p, q in zip(strides, persons, lost)}
    out["all"] = {"persons": int(persons.sum()), "lost": int(lost.sum()),
                  "share": float(lost.sum() / max(persons.sum(), 1))}
    out["invalid"] = invalid
    return out


def main(argv=None) -> None:
    from poseharness.oracle import run_oracle

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="crowdpose")
    p.add_argument("--split", default="val")
    p.add_argument("--scale", default="paper")
    p.add_argument("--size", default=None)
    p.add_argument("--tables", default="bound,figure3")
    args = p.parse_args(argv)
    spec = resolve_method("posedet")
    manifest = resolve_manifest(args.dataset)
    b = assignment_bound(spec, manifest, args.split, args.scale, size=args.size)
    print("assignment bound (persons losing their candidate), per stride:")
    for key, v in b.items():
        print(f"  {key}: {v}")
    for table in args.tables.split(","):
        t = spec.tables()[table]
        rows = run_oracle(spec, manifest, args.split, list(t.columns), scale=args.scale, size=args.size,
                          progress=False)
        print(f"{table}: {t.caption}")
        for r in rows:
            m = r["metrics"]
            print(f"  {r['variant']:16s} AP {100 * m['AP']:5.1f}  AP_hard {100 * m['AP_hard']:5.1f}  "
                  f"AP_easy {100 * m['AP_easy']:5.1f}  poses {r['persons']}")


if __name__ == "__main__":
    main()
