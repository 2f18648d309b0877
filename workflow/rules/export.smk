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
        from pzpipe import export
        from pzpipe.runlog import job_log

        with job_log(log[0], "export"):
            export.run(
                LAYOUT,
                {b: f"{RESULTS}/partition/{b}.parquet" for b in BATCHES},
                {a: {b: f"{RESULTS}/estimates/{a}/{b}.parquet" for b in BATCHES} for a in ALGOS},
                {a: f"{RESULTS}/models/{a}/model.pkl" for a in ALGOS},
                CFG,
                output[0],
            )
