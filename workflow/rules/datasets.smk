# Datasets: `poseharness data prepare`. One rule per dataset the configured tables run on (named
# prepare-<dataset>[-<split>]), generated from the manifests, so outputs are the manifest's own file paths.
#
# A synthetic set is generated whole (every split, one seed) and says so with its stamp, written last.
# A real set is downloaded and verified split by split (evaluation splits before `train`, whose archives are
# the big ones). Its splits run one after another: they share archives (COCO's annotations zip), and the
# downloader resumes and skips finished files, so the second split finds the shared ones in place.

for _name in USED_DATASETS:
    if manifest(_name).synthetic:
        _size, _seed = harness(wf.data_size, config, _name), wf.data_seed(config, _name)

        rule:
            name:
                f"prepare-{_name}"
            output:
                prepared(_name, next(iter(manifest(_name).splits))),      # the stamp, the same for every split
                harness(wf.synthetic_files, config, _name),
            log:
                f"{LOGS}/prepare/{_name}/{_size}-seed{_seed}.log",
            threads: config["threads"]["prepare"]
            params:
                name=_name,
                data=data_flags(_name),
                # What decides the generated files besides size name and seed: a manifest edit of the counts or the
                # generator settings re-runs this job (Snakemake's params trigger), which regenerates the set.
                settings=harness(wf.generator_hash, config, _name),
            shell:
                "poseharness data prepare {params.name} {params.data} --jobs {threads} --quiet > {log:q} 2>&1"

    else:
        _before = []
        for _split in wf.splits_needed(config, SPECS, _name):

            rule:
                name:
                    f"prepare-{_name}-{_split}"
                # Downloads: on a cluster they run where snakemake runs (the login node has the network).
                localrule: True
                input:
                    list(_before),
                output:
                    prepared(_name, _split),
                log:
                    f"{LOGS}/prepare/{_name}/{_split}.log",
                params:
                    name=_name,
                    split=_split,
                shell:
                    "poseharness data prepare {params.name} --split {params.split} --quiet > {log:q} 2>&1"

            _before = [prepared(_name, _split)]
