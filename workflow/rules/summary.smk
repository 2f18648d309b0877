localrules:
    summary,


rule summary:
    """Progress: chunks done / failed / remaining per stage, from parquet footers and logs.

    snakemake summary   (always runs: no output; prints the table and writes logs/summary.log)
    """
    log:
        "logs/summary.log",
    run:
        from pzpipe import progress
        from pzpipe.runlog import job_log

        with job_log(log[0], "summary") as jl:
            rows = progress.summary(RESULTS, LAYOUT, ALGOS, logs_dir="logs")
            text = progress.format_summary(rows)
            jl.info("\n%s", text)
            print(text)
