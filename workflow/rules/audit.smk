AUDIT_OUTPUTS = [f"{RESULTS}/audit/report.md", f"{RESULTS}/audit/report.json"]


def audit_inputs(wildcards):
    out = {
        "release": RELEASE_DIR,
        "partitions": expand(f"{RESULTS}/partition/{{batch}}.parquet", batch=BATCHES),
        "models": expand(f"{RESULTS}/models/{{algo}}/model.pkl", algo=ALGOS),
        "sidecars": expand(f"{RESULTS}/models/{{algo}}/model.json", algo=ALGOS),
    }
    if "bpz" in ALGOS:
        out["bpz_data"] = f"{RESULTS}/bpz_data"     # BPZ re-estimation needs its AB files
    return out


rule audit:
    """Check a finished release: manifest checksums, object conservation, models, a seeded
    sample of chunks recomputed bit for bit, package versions (docs/reliability.md)."""
    input:
        unpack(audit_inputs),
    output:
        md=AUDIT_OUTPUTS[0],
        json=AUDIT_OUTPUTS[1],
    log:
        log="logs/audit.log",
        report="logs/audit.report.md",
    params:
        sample_chunks=CFG.get("audit", {}).get("sample_chunks", 2),
        seed=CFG.get("audit", {}).get("seed", 0),
        max_rows=CFG.get("audit", {}).get("max_rows"),
    resources:
        mem_mb=lambda wc, attempt: 4000 * attempt,
        runtime=lambda wc, attempt: 120 * attempt,
    run:
        from pzpipe import audit
        from pzpipe.runlog import job_log

        with job_log(log.log, "audit"):
            audit.run(
                input.release,
                {b: f"{RESULTS}/partition/{b}.parquet" for b in BATCHES},
                {a: f"{RESULTS}/models/{a}/model.pkl" for a in ALGOS},
                output.md,
                output.json,
                current_cfg=CFG,
                sample_chunks=params.sample_chunks,
                seed=params.seed,
                max_rows=params.max_rows,
                report_copy=log.report,
            )
