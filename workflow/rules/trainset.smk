# Training-set maker (docs/trainset.md): spec-z catalogs + photometry -> train/test.
#   specz_compile -> specz_dedup ----------------------\
#   (photometry_hats, only when the photometry is not HATS) -> trainset_crossmatch -> trainset_split
# Each rule runs one entry point of pzpipe.trainset (run_compile, run_dedup, run_import,
# run_crossmatch, run_split) through `logged`. The Snakefile includes this file after
# rules/common.smk; when `trainset.enabled`, `rule all` asks for TRAINSET_OUTPUTS and
# the train/validate rules read TRAINSET_DIR/train.parquet / test.parquet instead of
# `training.file` / `validation.file` (common.smk: training_file, validation_file).

TS = trainset.settings(CFG)
TRAINSET_DIR = PATHS["trainset"]
TS_THREADS = TS["dask"]["threads"]
TS_MEM_MB = TS["dask"]["mem_mb"]
# Decided at parse time from the path alone (cheap: looks for a *.properties file).
TS_PHOT = TS["photometry"]["path"]
TS_PHOT_IS_HATS = bool(TS_PHOT) and trainset.is_hats(resolve_path(TS_PHOT))
TS_PHOT_HATS = resolve_path(TS_PHOT) if TS_PHOT_IS_HATS else PATHS["trainset_photometry_hats"]
TS_SPLIT_HATS = (
    [directory(PATHS["trainset_train_hats"]), directory(PATHS["trainset_test_hats"])]
    if TS["split"]["write_hats"]
    else []
)
TRAINSET_OUTPUTS = [
    PATHS[f"trainset_{k}"] for k in ("train", "test", "summary", "plot", "provenance")
]
# Hash of the trainset sub-sections each rule depends on (declared as a param so that
# Snakemake reruns the rule, and what follows, when they change).
TS_PARAMS = {
    k: config_hash({s: TS[s] for s in keys})[:16]
    for k, keys in {
        "specz_compile": ("specz",),
        "specz_dedup": ("specz", "dedup"),
        "photometry_hats": ("photometry",),
        "trainset_crossmatch": ("specz", "dedup", "photometry", "crossmatch"),
        "trainset_split": ("specz", "dedup", "photometry", "crossmatch", "split"),
    }.items()
}


rule specz_compile:
    """Spec-z catalogs -> one homogenised table; bad rows counted by reason."""
    input:
        [resolve_path(c["path"]) for c in TS["specz"]["catalogs"]],
    output:
        table=PATHS["trainset_compiled"],
        report=PATHS["trainset_compiled_report"],
    log:
        "logs/trainset/specz_compile.log",
    benchmark:
        "logs/benchmarks/trainset/specz_compile.tsv"
    resources:
        **rule_resources(CFG, "specz_compile"),
    params:
        config=TS_PARAMS["specz_compile"],
    run:
        logged(log[0], trainset.run_compile, TS, output)


rule specz_dedup:
    """Self-crossmatch of the compilation; one row kept per group of duplicates."""
    input:
        rules.specz_compile.output.table,
    output:
        table=PATHS["trainset_dedup"],
        report=PATHS["trainset_dedup_report"],
    log:
        "logs/trainset/specz_dedup.log",
    benchmark:
        "logs/benchmarks/trainset/specz_dedup.tsv"
    resources:
        **rule_resources(CFG, "specz_dedup"),
    params:
        config=TS_PARAMS["specz_dedup"],
    run:
        logged(log[0], trainset.run_dedup, TS, input, output)


if not TS_PHOT_IS_HATS:

    rule photometry_hats:
        """Parquet photometry -> HATS collection (catalog + margin cache), hats-import."""
        input:
            lambda wc: trainset.photometry_files(TS) if TS_PHOT else [],
        output:
            directory(TS_PHOT_HATS),
        log:
            "logs/trainset/photometry_hats.log",
        benchmark:
            "logs/benchmarks/trainset/photometry_hats.tsv"
        threads: TS_THREADS
        resources:
            **rule_resources(CFG, "photometry_hats", mem_mb=TS_MEM_MB),
        params:
            config=TS_PARAMS["photometry_hats"],
        run:
            logged(log[0], trainset.run_import, TS, input, output, threads, resources.mem_mb)


rule trainset_crossmatch:
    """LSDB crossmatch spec-z x photometry (1", nearest, right margin required)."""
    input:
        specz=rules.specz_dedup.output.table,
        photometry=TS_PHOT_HATS,
    output:
        table=PATHS["trainset_matched"],
        report=PATHS["trainset_matched_report"],
    log:
        "logs/trainset/trainset_crossmatch.log",
    benchmark:
        "logs/benchmarks/trainset/trainset_crossmatch.tsv"
    threads: TS_THREADS
    resources:
        **rule_resources(CFG, "trainset_crossmatch", mem_mb=TS_MEM_MB),
    params:
        config=TS_PARAMS["trainset_crossmatch"],
    run:
        logged(log[0], trainset.run_crossmatch, TS, input, output, threads, resources.mem_mb)


rule trainset_split:
    """Seeded train/test split -> parquet + HATS, summary, plot, provenance."""
    input:
        rules.trainset_crossmatch.output.table,
    output:
        *TS_SPLIT_HATS,
        train=PATHS["trainset_train"],
        test=PATHS["trainset_test"],
        summary=PATHS["trainset_summary"],
        plot=PATHS["trainset_plot"],
        provenance=PATHS["trainset_provenance"],
    log:
        "logs/trainset/trainset_split.log",
    benchmark:
        "logs/benchmarks/trainset/trainset_split.tsv"
    threads: min(TS_THREADS, 2)
    resources:
        **rule_resources(CFG, "trainset_split"),
    params:
        config=TS_PARAMS["trainset_split"],
    run:
        logged(log[0], trainset.run_split, TS, input, TRAINSET_DIR, threads, resources.mem_mb)
