localrules:
    summary,


rule summary:
    """Progress: chunks done / failed / remaining per stage, from parquet footers and logs.

    snakemake summary   (always runs: no output; prints the table and writes logs/summary.log)
    """
    log:
        "logs/summary.log",
    run:
        logged(
            log[0],
            progress.print_summary,
            RESULTS,
            current_layout(),
            ALGOS,
            dirs={
                "partition": os.path.dirname(PATHS["partition"]),
                "estimates": os.path.dirname(os.path.dirname(PATHS["estimate"])),
                "export_batches": os.path.dirname(PATHS["export_batch"]),
            },
        )
