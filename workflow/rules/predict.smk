# Prediction + evaluation: `poseharness predict`. One job per (variant, seed): the variant's decoder on its
# training's model, scored with the dataset's protocol; it writes the results file declared here and a
# `trained` record into the store (results collect keeps the newest record of a key).
#
# Reruns: the params hold the hash of the variant's full config (its training's plus its decoder settings),
# so a decoder edit re-scores only the variants it touches; a retrained model re-scores all of its variants
# (the checkpoint is an input). The model runs here too, so at scale paper the job asks for a GPU.


rule predict:
    input:
        checkpoint=lambda w: CHECKPOINT.format(method=w.method, dataset=w.dataset, scale=w.scale, seed=w.seed,
                                               training=training_of(w.method, w.variant)),
        data=lambda w: prepared(w.dataset, w.split),
        boxes=lambda w: detection_files(w.method, [w.variant]),         # `decode.boxes: {source: file}`
    output:
        PREDICTIONS,
    log:
        f"{LOGS}/predict/{{dataset}}/{{split}}/{{method}}/{{variant}}/{{scale}}-seed{{seed}}.log",
    params:
        config_hash=variant_hash,
        workers=lambda w, threads: max(threads - 1, 0),
    threads: lambda w: per_scale("predict", w.scale)
    resources:
        gpu=lambda w: gpus("predict", w.scale),
    shell:
        "poseharness predict --checkpoint {input.checkpoint:q} --variant {wildcards.variant} "
        "--dataset {wildcards.dataset} --split {wildcards.split} --workers {params.workers} --out {output:q} "
        "--quiet > {log:q} 2>&1"
