# Timing benchmarks: `poseharness bench evaluate | oracle | train` and the benches methods declare, each
# writing its rows as JSON under results/bench/ (annotated for `snakemake --report`). Not part of any table
# target; `bench-all` runs one of each for the selected methods on the configured COCO stand-in, and the
# benches they declare. Timings are only worth keeping from a machine doing nothing else: run bench-all alone
# (config `threads.bench` sets each bench's threads).

rule bench_evaluate:
    input:
        lambda w: prepared(w.dataset, w.split),
    output:
        report(f"{BENCH}/evaluate/{{dataset}}/{{split}}.json", category="bench", labels={"bench": "evaluate"}),
    log:
        f"{LOGS}/bench/evaluate/{{dataset}}/{{split}}.log",
    params:
        data=lambda w: data_flags(w.dataset),
    threads: config["threads"]["bench"]
    shell:
        "poseharness bench evaluate --dataset {wildcards.dataset} --split {wildcards.split} {params.data} "
        "--out {output:q} > {log:q} 2>&1"


# Benches of a method's own code, declared in its method.yaml (`benches:`): `poseharness bench <name>`, which
# takes no method argument; one rule each (bench_<name>) for the benches the selected methods declare.
for _bench in BENCHES:

    rule:
        name:
            f"bench_{_bench}"
        output:
            report(f"{BENCH}/{_bench}.json", category="bench", labels={"bench": _bench}),
        log:
            f"{LOGS}/bench/{_bench}.log",
        params:
            bench=_bench,
        threads: config["threads"]["bench"]
        shell:
            "poseharness bench {params.bench} --threads {threads} --out {output:q} > {log:q} 2>&1"


rule bench_oracle:
    input:
        lambda w: prepared(w.dataset, "val"),
    output:
        report(f"{BENCH}/oracle/{{dataset}}/{{method}}/{{variant}}/{{scale}}.json", category="bench",
               labels={"bench": "oracle", "method": "{method}", "variant": "{variant}"}),
    log:
        f"{LOGS}/bench/oracle/{{dataset}}/{{method}}/{{variant}}/{{scale}}.log",
    params:
        data=lambda w: data_flags(w.dataset),
    threads: config["threads"]["bench"]
    shell:
        "poseharness bench oracle --method {wildcards.method} --dataset {wildcards.dataset} "
        "--variant {wildcards.variant} --scale {wildcards.scale} {params.data} --threads {threads} --quiet "
        "--out {output:q} > {log:q} 2>&1"


rule bench_train:
    input:
        lambda w: prepared(w.dataset, "train"),
    output:
        report(f"{BENCH}/train/{{dataset}}/{{method}}/{{training}}/{{scale}}.json", category="bench",
               labels={"bench": "train", "method": "{method}", "training": "{training}"}),
    log:
        f"{LOGS}/bench/train/{{dataset}}/{{method}}/{{training}}/{{scale}}.log",
    params:
        data=lambda w: data_flags(w.dataset, "--data-seed"),
    threads: config["threads"]["bench"]
    resources:
        gpu=lambda w: 1 if w.scale == "paper" else 0,
    shell:
        "poseharness bench train --method {wildcards.method} --training {wildcards.training} "
        "--dataset {wildcards.dataset} --scale {wildcards.scale} {params.data} --out {output:q} > {log:q} 2>&1"


rule:
    name:
        "bench-all"
    localrule: True
    input:
        bench_targets,
