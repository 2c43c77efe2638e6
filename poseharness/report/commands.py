"""``poseharness report``: render the paper tables, plots and index.html from results.parquet."""
from __future__ import annotations

import argparse


def _report(args: argparse.Namespace) -> int:
    from . import build_report

    result = build_report(args.results, args.out, method=args.method, dataset=args.dataset,
                          scale=args.scale)
    print(result.format())
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "report", help="render every paper table (Markdown, HTML, plots) and reports/index.html",
        description="Reads only <results>/results.parquet (run `poseharness results collect` first): "
                    "for each method's paper tables, the reproduced figure beside the published one, "
                    "with the difference only where the figure is comparable (real data at the "
                    "paper's scale), the oracle bound of the same representation, and provenance. "
                    "Writes <out>/<method>/<table>.{md,html,png,svg} and <out>/index.html.")
    p.add_argument("--results", default=None,
                   help="results store root holding results.parquet "
                        "(default: $POSEHARNESS_RESULTS or <project>/results)")
    p.add_argument("--out", default=None,
                   help="where the report goes (default: $POSEHARNESS_REPORTS or <project>/reports)")
    p.add_argument("--method", default=None, help="only this method")
    p.add_argument("--dataset", default=None, help="only figures on this dataset")
    p.add_argument("--scale", default=None, help="only figures at this scale")
    p.set_defaults(func=_report)
