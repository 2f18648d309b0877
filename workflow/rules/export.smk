rule export_batch:
    """One batch's release files (a file per HATS pixel), after its conservation check."""
    input:
        unpack(export_batch_inputs),
    output:
        batch=directory(PATHS["export_batch"]),
        ids=temp(PATHS["export_ids"]),
    log:
        "logs/export_batch/{batch}.log",
    benchmark:
        "logs/benchmarks/export_batch/{batch}.tsv"
    resources:
        **rule_resources(CFG, "export_batch"),
    params:
        config=config_params("release", "export", "zgrid", "columns"),
    run:
        logged(
            log[0],
            export.run_batch,
            current_layout(),
            wildcards.batch,
            ALGOS,
            CFG,
            input.partition,
            {a: input[f"est_{a}"] for a in ALGOS},
            output.batch,
            output.ids,
            n_buckets(),
        )


rule export_dedup:
    """Object ids seen in more than one batch, for one hash bucket of the ids."""
    input:
        dedup_inputs,
    output:
        PATHS["export_dedup"],
    log:
        "logs/export_dedup/{bucket}.log",
    benchmark:
        "logs/benchmarks/export_dedup/{bucket}.tsv"
    resources:
        **rule_resources(CFG, "export_dedup"),
    run:
        logged(log[0], export.run_dedup, list(input), int(wildcards.bucket), output[0], CFG)


rule export:
    """The release: HATS catalog metadata, manifest, README (reads only the reports)."""
    input:
        unpack(export_inputs),
    output:
        directory(RELEASE_DIR),
    log:
        "logs/export.log",
    benchmark:
        "logs/benchmarks/export.tsv"
    resources:
        **rule_resources(CFG, "export"),
    run:
        logged(
            log[0],
            export.run_release,
            current_layout(),
            ALGOS,
            CFG,
            list(input.batches),
            list(input.dedup),
            dict(zip(ALGOS, input.sidecars)),
            output[0],
            input.get("requirements"),
            expand(PATHS["export_ids"], batch=current_layout().batch_ids()),
        )
