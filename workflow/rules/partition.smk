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
        from pzpipe import partition
        from pzpipe.runlog import job_log

        with job_log(log[0], f"partition {wildcards.batch}"):
            partition.run_batch(LAYOUT, wildcards.batch, CFG, output[0])
