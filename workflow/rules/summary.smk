localrules:
    summary,


rule summary:
    """Progress: chunks done / failed / remaining per stage, from parquet footers and logs.

    snakemake summary   (always runs: no output; prints the table and writes logs/summary.log)
    """
    log:
        "logs/summary.log",
    run:
        logged(log[0], progress.print_summary, RESULTS, current_layout(), ALGOS)
