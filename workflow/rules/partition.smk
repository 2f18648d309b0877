if TO_HATS:

    checkpoint import_objects:
        """inputs.files with coordinates -> a HATS Object catalog (hats-import, dask)."""
        input:
            lambda wc: input_files(),
        output:
            directory(PATHS["objects_hats"]),
        log:
            "logs/import_objects.log",
        benchmark:
            "logs/benchmarks/import_objects.tsv"
        threads: CFG["inputs"]["to_hats"]["dask"]["threads"]
        resources:
            **rule_resources(
                CFG, "import_objects", mem_mb=CFG["inputs"]["to_hats"]["dask"]["mem_mb"]
            ),
        params:
            config=config_params("inputs", "columns"),
        run:
            logged(
                log[0],
                partition.import_objects,
                input,
                CFG,
                output[0],
                threads,
                resources.mem_mb,
            )


rule partition_batch:
    """Input catalog rows -> skinny AB-magnitude chunks (one row group per chunk)."""
    input:
        batch_inputs,
    output:
        PATHS["partition"],
    log:
        "logs/partition_batch/{batch}.log",
    benchmark:
        "logs/benchmarks/partition_batch/{batch}.tsv"
    resources:
        **rule_resources(CFG, "partition_batch"),
    params:
        config=config_params(*PARTITION_KEYS),
    run:
        logged(log[0], partition.run_batch, current_layout(), wildcards.batch, CFG, output[0])
