rule partition_batch:
    """Input catalog rows -> skinny AB-magnitude chunks (one row group per chunk)."""
    input:
        batch_inputs,
    output:
        f"{RESULTS}/partition/{{batch}}.parquet",
    log:
        "logs/partition_batch/{batch}.log",
    params:
        config=config_params(*PARTITION_KEYS),
    resources:
        mem_mb=lambda wc, attempt: 2000 * attempt,
        runtime=lambda wc, attempt: 30 * attempt,
    run:
        logged(log[0], partition.run_batch, LAYOUT, wildcards.batch, CFG, output[0])
