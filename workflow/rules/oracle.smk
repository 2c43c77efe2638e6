# The oracle: `poseharness oracle`. One job per (method, training, dataset, scale): ground truth encoded as
# that training encodes it, decoded by each of its variants, evaluated; one `oracle` record per variant, and
# the summary declared here (a row of metrics per variant). No network, no GPU.
# Oracle tables ask for it at `oracle_scale`. Trained tables ask for it too, for each training their columns
# decode, at the table's own `scale`, dataset and split: the bound of each reproduced figure's representation
# at the same input size (one cheap job per training, shared with an oracle table at the same scale).
#
# Reruns: the params hold the hash of every variant's config, so an encoding or decoder edit re-runs the jobs
# of the trainings it touches (so does a model edit: the hash is of the whole config the records carry).


rule oracle:
    input:
        data=lambda w: prepared(w.dataset, w.split),
        boxes=lambda w: detection_files(w.method, oracle_variants(w)),   # `decode.boxes: {source: file}`
    output:
        ORACLE,
    log:
        f"{LOGS}/oracle/{{dataset}}/{{split}}/{{method}}/{{training}}/{{scale}}-seed{{seed}}.log",
    params:
        config_hash=oracle_hash,
        variants=lambda w: " ".join(f"--variant {v}" for v in oracle_variants(w)),
        data=lambda w: data_flags(w.dataset, seed=int(w.seed)),
    threads: config["threads"]["oracle"]
    shell:
        "poseharness oracle --method {wildcards.method} --dataset {wildcards.dataset} --split {wildcards.split} "
        "--scale {wildcards.scale} {params.variants} {params.data} --threads {threads} --summary {output:q} --quiet "
        "> {log:q} 2>&1"
