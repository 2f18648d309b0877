rule prepare_data:
    """Data directory an estimator declares (pzpipe.algorithms: Algorithm.data_dir), built
    once before its training and estimate jobs (e.g. template files and flux tables)."""
    output:
        directory(PATHS["algo_data"]),
    log:
        "logs/prepare_data/{algo}.log",
    benchmark:
        "logs/benchmarks/prepare_data/{algo}.tsv"
    resources:
        **rule_resources(CFG, "prepare_data"),
    params:
        config=config_params("zgrid", algo=True),
    run:
        logged(log[0], train.prepare_data, wildcards.algo, CFG, output[0])


rule train:
    """Train one RAIL algorithm once on the training sample."""
    input:
        unpack(train_inputs),
    output:
        model=PATHS["model"],
        sidecar=PATHS["sidecar"],
    log:
        "logs/train/{algo}.log",
    benchmark:
        "logs/benchmarks/train/{algo}.tsv"
    resources:
        **rule_resources(CFG, "train"),
    params:
        config=config_params(*PARTITION_KEYS, "training", "zgrid", algo=True),
    run:
        logged(
            log[0],
            train.run,
            wildcards.algo,
            CFG,
            output.model,
            output.sidecar,
            input.training,
            input.get("algo_data"),
        )
