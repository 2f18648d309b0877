rule estimate_batch:
    """Photo-z PDFs and point estimates for every chunk of one batch."""
    input:
        unpack(model_inputs),
        partition=PATHS["partition"],
    output:
        PATHS["estimate"],
    log:
        "logs/estimate_batch/{algo}/{batch}.log",
    benchmark:
        "logs/benchmarks/estimate_batch/{algo}/{batch}.tsv"
    threads: CFG["estimate"]["workers"]
    resources:
        **rule_resources(CFG, "estimate_batch"),
    params:
        config=config_params("zgrid", "estimate", algo=True),
    run:
        logged(
            log[0],
            estimate.run_batch,
            wildcards.algo,
            input.partition,
            input.model,
            CFG,
            output[0],
            threads,
            input.get("algo_data"),
        )
