# The results store: `poseharness results collect` folds every record (the `predict` and `oracle` jobs write
# one per scored variant) into results/results.parquet and .csv. One collect job per table target, after the
# jobs whose figures the table shows; its declared output is what collect printed (rows, keys, bad files).
# Several collect jobs may run in one invocation: each folds the whole store and writes the table atomically,
# and every report job reads it after its own collect, so the last report written shows every figure.

for _method, _table in TABLES:

    rule:
        name:
            f"collect-{_method}-{_table}"
        localrule: True
        input:
            table_inputs_of(_method, _table),
        output:
            LAYOUT.collected(_method, _table),
        log:
            f"{LOGS}/collect/{_method}-{_table}.log",
        shell:
            "poseharness results collect > {output:q} 2> {log:q}"
