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
    """The photo-z catalog: HATS catalog metadata, file list, conservation (reads only the
    reports; hard-links the batches' files)."""
    input:
        unpack(export_inputs),
    output:
        directory(PATHS["export_catalog"]),
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


rule margin_batch:
    """The margin-catalog files of one batch's pixels (and of the empty sky after them)."""
    input:
        catalog=PATHS["export_catalog"],
    output:
        directory(PATHS["export_margin"]),
    log:
        "logs/margin_batch/{batch}.log",
    benchmark:
        "logs/benchmarks/margin_batch/{batch}.tsv"
    resources:
        **rule_resources(CFG, "margin_batch"),
    params:
        config=config_params("export"),
    run:
        logged(
            log[0],
            collection.run_margin_batch,
            input.catalog,
            wildcards.batch,
            CFG["export"]["margin_arcsec"],
            output[0],
        )


rule index_batch:
    """One batch's object ids with their pixel, sorted (input of the id index)."""
    input:
        PATHS["export_batch"],
    output:
        temp(PATHS["export_index_batch"]),
    log:
        "logs/index_batch/{batch}.log",
    benchmark:
        "logs/benchmarks/index_batch/{batch}.tsv"
    resources:
        **rule_resources(CFG, "index_batch"),
    run:
        logged(log[0], collection.run_index_batch, input[0], CFG["columns"]["id"], output[0])


rule index_bucket:
    """One id range of the index catalog, from every batch's sorted ids."""
    input:
        index_bucket_inputs,
    output:
        directory(PATHS["export_index"]),
    log:
        "logs/index_bucket/{bucket}.log",
    benchmark:
        "logs/benchmarks/index_bucket/{bucket}.tsv"
    resources:
        **rule_resources(CFG, "index_bucket"),
    run:
        logged(
            log[0],
            collection.run_index_bucket,
            list(input),
            int(wildcards.bucket),
            n_index_buckets(),
            CFG["columns"]["id"],
            output[0],
        )


rule release:
    """The release folder: a HATS collection (catalog, margin, id index) with its manifest,
    README, PDF spec and decoder, validation summary and estimator configurations."""
    input:
        unpack(release_inputs),
    output:
        directory(RELEASE_DIR),
    log:
        "logs/release.log",
    benchmark:
        "logs/benchmarks/release.tsv"
    resources:
        **rule_resources(CFG, "release"),
    run:
        logged(
            log[0],
            export.run_collection,
            current_layout(),
            ALGOS,
            CFG,
            input.catalog,
            list(input.margins),
            list(input.indexes),
            output[0],
            sidecars=dict(zip(ALGOS, input.sidecars)),
            models=dict(zip(ALGOS, input.models)),
            data_dirs=dict(zip(algorithms.with_data_dir(ALGOS), input.get("algo_data", []))),
            validation=dict(
                zip(
                    ["metrics.md", "metrics.csv", "requirements.md", "requirements.json"],
                    input.validation,
                )
            ),
            input_catalog=input_catalog(),
            index_batch_files=(
                expand(PATHS["export_index_batch"], batch=current_layout().batch_ids())
                if input.indexes
                else []
            ),
        )
