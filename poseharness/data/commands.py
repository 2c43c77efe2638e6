"""``poseharness data list | prepare | path | show``."""
from __future__ import annotations

import argparse
import os

from .manifest import load_manifest, manifest_names


def _add_size_seed(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", help="synthetic sets: a size from the manifest's `sizes` (default: its default_size)")
    p.add_argument("--seed", type=int, help="synthetic sets: generator seed (default: the manifest's)")


def register(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="list, prepare and inspect datasets")
    verbs = data.add_subparsers(dest="data_command", metavar="VERB", required=True)

    p = verbs.add_parser("list", help="the datasets this checkout knows (datasets/*.yaml)")
    p.set_defaults(func=cmd_list)

    p = verbs.add_parser("prepare", help="download and verify a real dataset, or generate a synthetic one; "
                                         "a set prepared before is verified (sizes and digests) and repaired")
    p.add_argument("name")
    _add_size_seed(p)
    p.add_argument("--jobs", type=int, default=None, help="parallel image writers (default: all cores)")
    p.add_argument("--split", action="append", dest="splits",
                   help="real sets: prepare only the files these splits need (repeatable; default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_prepare)

    p = verbs.add_parser("path", help="print the annotation file of a split")
    p.add_argument("name")
    p.add_argument("--split", required=True)
    _add_size_seed(p)
    p.add_argument("--images", action="store_true", help="print the image folder instead")
    p.set_defaults(func=cmd_path)

    p = verbs.add_parser("show", help="draw a few images with their skeletons into a PNG")
    p.add_argument("name")
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--count", type=int, default=6)
    _add_size_seed(p)
    p.set_defaults(func=cmd_show)


def cmd_list(args: argparse.Namespace) -> int:
    rows = [("name", "kind", "keypoints", "protocol", "splits", "prepared")]
    for name in manifest_names():
        m = load_manifest(name)
        root = m.root()
        prepared = "yes" if (root / ".prepared.json").exists() else "-"   # unverified here: `prepare` checks
        if not m.synthetic:
            prepared = "yes" if all(m.annotation_path(s).exists() for s in m.splits) else (
                "partly" if any(m.annotation_path(s).exists() for s in m.splits) else "-")
        rows.append((m.name, m.kind, f"{m.schema.name}", m.protocol, ",".join(m.splits), prepared))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    m = load_manifest(args.name)
    progress = not args.quiet
    if m.synthetic:
        from . import synthetic

        summary = synthetic.generate(m, size=args.size, seed=args.seed, jobs=args.jobs or os.cpu_count(),
                                     progress=progress)
        print(synthetic.format_summary(summary))
    else:
        from . import download

        summary = download.prepare_real(m, splits=args.splits, progress=progress)
        print(download.format_summary(summary))
    return 0


def cmd_path(args: argparse.Namespace) -> int:
    m = load_manifest(args.name)
    path = m.image_dir(args.split, args.size, args.seed) if args.images else m.annotation_path(
        args.split, args.size, args.seed)
    print(path)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .show import show

    m = load_manifest(args.name)
    out = show(m, args.split, args.out, size=args.size, seed=args.seed, count=args.count)
    print(f"wrote {out}")
    return 0
