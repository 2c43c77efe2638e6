# The report: `poseharness report` renders every paper table (Markdown, HTML, plots) and reports/index.html
# from results/results.parquet only. One report job per table target, after that table's collect job; it
# declares the table's own pages (annotated for `snakemake --report`) and rewrites the rest of the report.
# So a page can exist before its table has run: table targets also ask for the table's collect output
# (`Layout.table_done` in poseharness/workflow.py), which only that table's own collect job writes.
# (The store and report folders reach the CLI as POSEHARNESS_RESULTS / POSEHARNESS_REPORTS, see common.smk.)
#
# `snakemake report` re-collects and re-renders whatever the store holds now (it has no outputs, so it runs
# every time it is asked for).

for _method, _table in TABLES:

    rule:
        name:
            f"report-{_method}-{_table}"
        localrule: True
        input:
            LAYOUT.collected(_method, _table),
        output:
            report(LAYOUT.report_files(_method, _table)[0], category=_method,
                   labels={"method": _method, "table": _table, "page": "HTML"}),
            report(LAYOUT.report_files(_method, _table)[1], category=_method,
                   labels={"method": _method, "table": _table, "page": "Markdown"}),
        log:
            f"{LOGS}/report/{_method}-{_table}.log",
        shell:
            "poseharness report > {log:q} 2>&1"


rule report:
    """Collect every record now in the store and render the whole report."""
    localrule: True
    shell:
        "poseharness results collect && poseharness report"
