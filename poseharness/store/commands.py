"""``poseharness results collect`` and ``poseharness results show``."""
from __future__ import annotations

import argparse
import sys

from ..errors import HarnessError
from .record import FULL_SUBSET, KEY_FIELDS


def _collect(args: argparse.Namespace) -> int:
    from .collect import collect

    report = collect(args.root)
    print(report.format())
    if report.bad:
        # Loud on stderr too, so a pipeline log that only keeps stderr still shows them.
        print(f"poseharness: warning: {len(report.bad)} bad record file(s) left out of the table; "
              "see the list above", file=sys.stderr)
    return 0


def _split_list(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _show(args: argparse.Namespace) -> int:
    import pandas as pd

    from .collect import load_table, metric_columns

    df = load_table(args.root)
    for name in ("kind", "dataset", "split", "method", "variant", "scale", "subset"):
        wanted = getattr(args, name)
        if wanted is not None:
            df = df[df[name] == wanted]
    available = metric_columns(df)
    metrics = _split_list(args.metrics)
    if metrics is None:
        # Only the metrics that the selected rows actually have.
        metrics = [m for m in available if df[m].notna().any()]
    else:
        unknown = [m for m in metrics if m not in available]
        if unknown:
            raise HarnessError(f"unknown metric(s) {', '.join(unknown)}; the table has: "
                               f"{', '.join(available) or 'none'}")
    lead = [name for name in KEY_FIELDS if name != "subset"]
    columns = [*lead, *metrics, "comparable_to_paper", "subset", "commit", "created"]
    if df.empty:
        print("no rows match")
        return 0
    view = df[columns].copy()
    view["commit"] = view["commit"].str.slice(0, 10)
    view = view.rename(columns={"comparable_to_paper": "vs_paper"})
    partial = view["subset"] != FULL_SUBSET
    view.loc[partial, "vs_paper"] = False           # a quick look stands for no published figure
    view["subset"] = view["subset"].where(~partial, "*" + view["subset"])
    with pd.option_context("display.max_rows", None, "display.max_columns", None,
                           "display.width", 250, "display.float_format", "{:.4f}".format):
        print(view.to_string(index=False))
    if not view["vs_paper"].all():
        print("\nvs_paper=False: synthetic data, a reduced scale or a subset; not comparable to published numbers.")
    if partial.any():
        print(f"\n*first-N-images: {int(partial.sum())} row(s) scored only the first N images of the split "
              "(--limit, a quick look); kept beside the full split's row, never in report tables.")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    results = subparsers.add_parser(
        "results", help="the results store: collect records into a table, show it",
        description="Records live in <root>/records/ (one JSON per run); collect folds them into "
                    "<root>/results.parquet and <root>/results.csv.",
    )
    verbs = results.add_subparsers(dest="results_command", metavar="VERB", required=True)

    collect = verbs.add_parser(
        "collect", help="fold every record into results.parquet and results.csv",
        description="Fold every record into one row per (kind, dataset, split, method, variant, scale, "
                    "seed, subset); subset is 'full' or 'first-N-images' (a --limit N quick look, which never "
                    "supersedes the full split's row); the newest record of a key wins and older files stay on disk. Bad record "
                    "files are listed loudly (stdout, plus a warning on stderr) and left out of the "
                    "table, but the exit status is still 0 so one damaged file does not stop a "
                    "pipeline; check the report.",
    )
    collect.add_argument("--root", default=None,
                         help="store root (default: $POSEHARNESS_RESULTS or <project>/results)")
    collect.set_defaults(func=_collect)

    show = verbs.add_parser("show", help="print the collected table, filtered",
                            description="Print rows of results.parquet (run `collect` first).")
    for name in ("kind", "dataset", "split", "method", "variant", "scale", "subset"):
        show.add_argument(f"--{name}", default=None, help=f"only rows with this {name}")
    show.add_argument("--metrics", default=None,
                      help="comma-separated metric columns, e.g. AP,AR (default: all present)")
    show.add_argument("--root", default=None,
                      help="store root (default: $POSEHARNESS_RESULTS or <project>/results)")
    show.set_defaults(func=_show)
