rule bpz_prepare:
    """Writable copy of BPZ's template data with its AB files generated once."""
    output:
        directory(f"{RESULTS}/bpz_data"),
    log:
        "logs/bpz_prepare.log",
    params:
        config=BPZ_DATA_PARAMS,
    run:
        logged(log[0], train.prepare_bpz_data, CFG, output[0])


rule train:
    """Train one RAIL algorithm once on the training sample."""
    input:
        unpack(train_inputs),
    output:
        model=f"{RESULTS}/models/{{algo}}/model.pkl",
        sidecar=f"{RESULTS}/models/{{algo}}/model.json",
    log:
        "logs/train/{algo}.log",
    params:
        config=config_params(*PARTITION_KEYS, "training", "zgrid", algo=True),
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    run:
        logged(log[0], train.run, wildcards.algo, CFG, output.model, output.sidecar, input.training)
