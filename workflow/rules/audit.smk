rule audit:
    """Check a finished release: manifest checksums, object conservation, models, a seeded
    sample of chunks recomputed bit for bit, package versions (docs/reliability.md).
    Fails (after writing the report, kept in logs/audit.report.md) if any check fails."""
    input:
        unpack(audit_inputs),
    output:
        md=PATHS["audit_md"],
        json=PATHS["audit_json"],
    log:
        log="logs/audit.log",
        report="logs/audit.report.md",
    benchmark:
        "logs/benchmarks/audit.tsv"
    resources:
        **rule_resources(CFG, "audit"),
    params:
        audit=CFG.get("audit", {}),
    run:
        logged(
            log.log,
            audit.run_release,
            PATHS,
            current_layout().batch_ids(),
            CFG,
            output.md,
            output.json,
            log.report,
        )
