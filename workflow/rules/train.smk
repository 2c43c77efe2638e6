# Training: `poseharness train`. One job per trained model (method × training × dataset × scale × seed),
# whatever the number of variants that decode it.
#
# Reruns: the job's params hold the hash of the training config (defaults ⊕ scale ⊕ training, no decoder
# settings) and the data/schedule flags, so Snakemake's params trigger retrains exactly when what decides the
# weights changes; method.yaml is deliberately not an input (a decoder edit must not retrain). Only final.pt is
# declared: an interrupted job leaves last.pt in the run directory and the rerun resumes from it.


rule train:
    input:
        lambda w: prepared(w.dataset, "train"),
    output:
        CHECKPOINT,
    log:
        f"{LOGS}/train/{{method}}/{{dataset}}/{{training}}/{{scale}}-seed{{seed}}.log",
    params:
        config_hash=lambda w: training_hash(w.method, w.training, w.scale),
        data=lambda w: data_flags(w.dataset, "--data-seed"),
        steps=f"--steps {config['steps']}" if config["steps"] else "",
        launcher=train_launcher,
        run_dir=lambda w, output: os.path.dirname(output[0]),
    threads: lambda w: per_scale("train", w.scale)
    resources:
        gpu=lambda w: gpus("train", w.scale),
    shell:
        "{params.launcher} train --method {wildcards.method} --training {wildcards.training} "
        "--dataset {wildcards.dataset} --scale {wildcards.scale} --seed {wildcards.seed} {params.data} "
        "{params.steps} --out {params.run_dir} --quiet > {log} 2>&1"
