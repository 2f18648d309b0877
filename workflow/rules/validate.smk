rule validate_estimate:
    """Estimate the held-out validation sample with the release code path."""
    input:
        unpack(model_inputs),
        sample=validation_file(),
    output:
        f"{RESULTS}/validation/estimates/{{algo}}.parquet",
    log:
        "logs/validate_estimate/{algo}.log",
    params:
        config=config_params(*PARTITION_KEYS, "validation", "zgrid", "estimate", algo=True),
    threads: CFG["estimate"]["workers"]
    resources:
        mem_mb=lambda wc, threads, attempt: (2000 * threads + 2000) * attempt,
    run:
        logged(log[0], validate.estimate_validation, wildcards.algo, input.model, CFG, output[0], input.sample, threads)


rule validate:
    """Metrics table and plots for all algorithms."""
    input:
        expand(f"{RESULTS}/validation/estimates/{{algo}}.parquet", algo=ALGOS),
    output:
        csv=report(f"{RESULTS}/validation/metrics.csv", caption="../report/metrics.rst",
                   category="Validation"),
        md=f"{RESULTS}/validation/metrics.md",
        scatter=report(VALIDATION_PLOTS["scatter"], caption="../report/scatter.rst",
                       category="Validation"),
        pit=report(VALIDATION_PLOTS["pit"], caption="../report/pit.rst", category="Validation"),
        nz=report(VALIDATION_PLOTS["nz"], caption="../report/nz.rst", category="Validation"),
    log:
        "logs/validate.log",
    params:
        config=config_params("validate", "validation", "release"),
    run:
        logged(log[0], validate.run_rule, ALGOS, input, CFG, output)
