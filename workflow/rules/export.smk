rule export:
    """The release catalog + manifest; fails unless every input object is accounted for."""
    input:
        partitions=expand(f"{RESULTS}/partition/{{batch}}.parquet", batch=BATCHES),
        estimates=expand(f"{RESULTS}/estimates/{{algo}}/{{batch}}.parquet", algo=ALGOS,
                         batch=BATCHES),
        models=expand(f"{RESULTS}/models/{{algo}}/model.pkl", algo=ALGOS),
    output:
        directory(RELEASE_DIR),
    log:
        "logs/export.log",
    run:
        logged(log[0], export.run_release, LAYOUT, ALGOS, CFG, output[0], RESULTS)
