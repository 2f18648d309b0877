rule validate_estimate:
    """Estimate the held-out validation sample with the release code path."""
    input:
        unpack(model_inputs),
        sample=validation_file(),
    output:
        PATHS["validation_estimate"],
    log:
        "logs/validate_estimate/{algo}.log",
    benchmark:
        "logs/benchmarks/validate_estimate/{algo}.tsv"
    threads: CFG["estimate"]["workers"]
    resources:
        **rule_resources(CFG, "validate_estimate"),
    params:
        config=config_params(*PARTITION_KEYS, "validation", "zgrid", "estimate", algo=True),
        chunk_rows=CFG["validate"]["chunk_rows"],
    run:
        logged(
            log[0],
            validate.estimate_validation,
            wildcards.algo,
            input.model,
            CFG,
            output[0],
            input.sample,
            threads,
            input.get("algo_data"),
        )


rule validate:
    """Metrics with bootstrap errors (whole sample, binned), tomographic n(z), requirement
    sets and figures."""
    input:
        expand(PATHS["validation_estimate"], algo=ALGOS),
    output:
        csv=report(
            VALIDATION["csv"],
            caption="../report/metrics.rst",
            category="Validation",
            subcategory="Tables",
        ),
        md=VALIDATION["md"],
        binned_csv=report(
            VALIDATION["binned_csv"],
            caption="../report/metrics_binned.rst",
            category="Validation",
            subcategory="Tables",
        ),
        binned_md=VALIDATION["binned_md"],
        tomo_csv=report(
            VALIDATION["tomo_csv"],
            caption="../report/tomo_table.rst",
            category="Validation",
            subcategory="Tables",
        ),
        tomo_md=VALIDATION["tomo_md"],
        req_md=report(
            VALIDATION["req_md"],
            caption="../report/requirements.rst",
            category="Validation",
            subcategory="Tables",
        ),
        req_json=VALIDATION["req_json"],
        scatter_png=report(
            VALIDATION["scatter_png"],
            caption="../report/scatter.rst",
            category="Validation",
            subcategory="Whole sample",
        ),
        pit_png=report(
            VALIDATION["pit_png"],
            caption="../report/pit.rst",
            category="Validation",
            subcategory="Whole sample",
        ),
        nz_png=report(
            VALIDATION["nz_png"],
            caption="../report/nz.rst",
            category="Validation",
            subcategory="Whole sample",
        ),
        vs_mag_png=report(
            VALIDATION["vs_mag_png"],
            caption="../report/metrics_vs_mag.rst",
            category="Validation",
            subcategory="Binned metrics",
        ),
        vs_z_png=report(
            VALIDATION["vs_z_png"],
            caption="../report/metrics_vs_z.rst",
            category="Validation",
            subcategory="Binned metrics",
        ),
        comparison_png=report(
            VALIDATION["comparison_png"],
            caption="../report/comparison.rst",
            category="Validation",
            subcategory="Whole sample",
        ),
        tomo_png=report(
            VALIDATION["tomo_png"],
            caption="../report/tomo_nz.rst",
            category="Validation",
            subcategory="Tomographic n(z)",
        ),
    log:
        "logs/validate.log",
    benchmark:
        "logs/benchmarks/validate.tsv"
    resources:
        **rule_resources(CFG, "validate"),
    params:
        config=config_params("validate", "validation", "release", "zgrid", "ref_band"),
    run:
        logged(log[0], validate.run_rule, ALGOS, input, CFG, output)
