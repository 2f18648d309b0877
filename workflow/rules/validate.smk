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
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
    run:
        from pzpipe import validate
        from pzpipe.runlog import job_log

        with job_log(log[0], f"validate_estimate {wildcards.algo}"):
            validate.estimate_validation(wildcards.algo, input.model, CFG, output[0], input.sample)


rule validate:
    """Metrics table and plots for all algorithms."""
    input:
        expand(f"{RESULTS}/validation/estimates/{{algo}}.parquet", algo=ALGOS),
    output:
        csv=f"{RESULTS}/validation/metrics.csv",
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
        from pzpipe import validate
        from pzpipe.runlog import job_log

        with job_log(log[0], "validate"):
            files = {a: f"{RESULTS}/validation/estimates/{a}.parquet" for a in ALGOS}
            validate.run(files, CFG, output.csv, output.md,
                         {"scatter": output.scatter, "pit": output.pit, "nz": output.nz})
