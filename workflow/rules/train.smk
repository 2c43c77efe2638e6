# Training: `poseharness train`. One job per trained model (method × training × dataset × scale × seed),
# whatever the number of variants that decode it.
#
# Reruns: the job's params hold the hash of the training config (defaults ⊕ scale ⊕ training, no decoder
# settings) and the data/schedule flags, so Snakemake's params trigger retrains exactly when what decides the
# weights changes; method.yaml is deliberately not an input (a decoder edit must not retrain). Only final.pt is
# declared: an interrupted job leaves last.pt in the run directory and the rerun resumes from it. A training
# whose method.yaml entry says `init: {from: T}` starts from T's final.pt (same dataset, scale, seed): an input.

import shlex


rule train:
    input:
        data=lambda w: prepared(w.dataset, "train"),
        init=init_source,
    output:
        CHECKPOINT,
    log:
        f"{LOGS}/train/{{method}}/{{dataset}}/{{training}}/{{scale}}-seed{{seed}}.log",
    params:
        config_hash=training_hash,
        data=lambda w: data_flags(w.dataset, "--data-seed"),
        steps=f"--steps {config['steps']}" if config["steps"] else "",
        launcher=train_launcher,
        run_dir=lambda w, output: os.path.dirname(output[0]),
        # Quoted here, not with `:q` in the command: the flag and its path are one params value.
        init=lambda w, input: f"--init-checkpoint {shlex.quote(str(input.init))}" if input.init else "",
    threads: lambda w: per_scale("train", w.scale)
    resources:
        gpu=lambda w: gpus("train", w.scale),
    shell:
        "{params.launcher} train --method {wildcards.method} --training {wildcards.training} "
        "--dataset {wildcards.dataset} --scale {wildcards.scale} --seed {wildcards.seed} {params.data} "
        "{params.steps} {params.init} --out {params.run_dir:q} --quiet > {log:q} 2>&1"
