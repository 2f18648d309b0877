"""pzpipe.stages.progress: chunks done / failed / running / remaining from outputs and logs."""

import os
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pzpipe.stages import progress as PR


def _batch_file(path, n_row_groups, rows_per_group=3):
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("object_id", pa.int64())])
    with pq.ParquetWriter(path, schema) as w:
        for g in range(n_row_groups):
            w.write_table(pa.table({"object_id": list(range(g * rows_per_group,
                                                             (g + 1) * rows_per_group))},
                                   schema=schema))


def _layout(n_batches, n_chunks, cpb):
    return {"batch_ids": [f"b{i:06d}" for i in range(n_batches)], "n_chunks": n_chunks,
            "chunks_per_batch": cpb}


def test_summary_classifies_batches(tmp_path):
    res, logs = tmp_path / "results", tmp_path / "logs"
    lay = _layout(6, 22, 4)     # batches of 4,4,4,4,4,2 chunks
    est = res / "estimates" / "fzboost"
    _batch_file(est / "b000000.parquet", 4)
    _batch_file(est / "b000005.parquet", 2)                    # last batch: 2 chunks
    _batch_file(est / "b000001.parquet", 3)                    # wrong row-group count -> bad
    elog = logs / "estimate_batch" / "fzboost"
    elog.mkdir(parents=True)
    (elog / "b000002.log").write_text("2026 INFO start\n2026 ERROR pzpipe.job: FAILED estimate\n")
    (elog / "b000003.log").write_text("2026 INFO start estimate fzboost b000003\n")  # running
    (est / "b000003.parquet.tmp-123").write_bytes(b"partial")
    # b000004: killed by Slurm; only the plugin's kept log tells
    sl = logs / "slurm" / "rule_estimate_batch" / "fzboost_b000004"
    sl.mkdir(parents=True)
    (sl / "77_1.log").write_text("slurmstepd: error: *** JOB 77 CANCELLED AT x DUE TO TIME LIMIT ***\n")
    (elog / "b000004.log").write_text("2026 INFO start\n")

    rows = PR.summary(res, lay, ["fzboost"], logs_dir=logs)
    part, fz, exp = rows
    assert exp["stage"] == "export" and exp["chunks_done"] == 0
    assert part["stage"] == "partition" and part["chunks_done"] == 0
    assert part["chunks_remaining"] == 22
    assert fz["batches_done"] == 2 and fz["chunks_done"] == 6
    assert fz["objects_done"] == 6 * 3
    assert fz["batches_bad"] == 1 and fz["bad"] == ["b000001"]
    assert fz["batches_failed"] == 2 and sorted(fz["failed"]) == ["b000002", "b000004"]
    assert fz["chunks_failed"] == 8
    assert fz["batches_running"] == 1 and fz["chunks_running"] == 4
    assert fz["chunks_remaining"] == 22 - 6
    text = PR.format_summary(rows)
    assert "fzboost" in text and "b000002" in text and "wrong row-group count" in text


def test_verify_false_trusts_existence(tmp_path):
    res = tmp_path / "results"
    _batch_file(res / "estimates" / "knn" / "b000000.parquet", 1)
    rows = PR.summary(res, _layout(1, 5, 5), logs_dir=tmp_path / "logs", verify=False,
                      include_partition=False)
    assert rows[0]["stage"] == "knn" and rows[0]["chunks_done"] == 5


def test_done_batch_logs_are_never_opened(tmp_path, monkeypatch):
    res, logs = tmp_path / "results", tmp_path / "logs"
    _batch_file(res / "partition" / "b000000.parquet", 2)
    (logs / "partition_batch").mkdir(parents=True)
    (logs / "partition_batch" / "b000000.log").write_text("FAILED earlier attempt\n")
    opened = []
    real = PR.log_failed
    monkeypatch.setattr(PR, "log_failed", lambda p, *a, **k: opened.append(p) or real(p))
    rows = PR.summary(res, _layout(1, 2, 2), [], logs_dir=logs)
    assert rows[0]["chunks_done"] == 2 and rows[0]["batches_failed"] == 0
    assert opened == []


def test_log_failed_reads_only_the_tail(tmp_path):
    p = tmp_path / "x.log"
    p.write_bytes(b"FAILED early\n" + b"x" * 100_000 + b"\nINFO done\n")
    assert not PR.log_failed(p, max_bytes=4096)
    assert PR.log_failed(p, max_bytes=200_000)
    assert not PR.log_failed(tmp_path / "missing.log")


def test_scales_to_thousands_of_batches(tmp_path):
    # 3,000 batches, none started: one listing per directory, no per-file stat.
    lay = _layout(3000, 3000 * 600, 600)
    t0 = time.perf_counter()
    rows = PR.summary(tmp_path / "results", lay, ["bpz", "fzboost", "knn", "tpz", "dnf"],
                      logs_dir=tmp_path / "logs")
    assert time.perf_counter() - t0 < 2.0
    assert all(r["chunks_remaining"] == 1_800_000 for r in rows)


def test_summary_needs_layout(tmp_path):
    with pytest.raises(ValueError):
        PR.summary(tmp_path)


def test_algorithms_default_to_existing_dirs(tmp_path):
    res = tmp_path / "results"
    (res / "estimates" / "bpz").mkdir(parents=True)
    (res / "estimates" / "tpz").mkdir(parents=True)
    rows = PR.summary(res, _layout(1, 1, 1), logs_dir=tmp_path / "logs", include_partition=False)
    assert [r["stage"] for r in rows] == ["bpz", "tpz"]
    assert os.path.isdir(res)


def test_hats_batches_of_different_sizes_and_export_dirs(tmp_path):
    """HATS batches hold whole pixels (different chunk counts); the export's per-batch
    outputs are directories."""
    from pzpipe.run.layout import Layout

    lay = Layout([("p0", 30), ("p1", 10), ("p2", 50)], 10, 3, pixels=[(5, 0), (5, 1), (5, 2)])
    assert [lay.batch_range(i) for i in range(lay.n_batches)] == [(0, 3), (3, 4), (4, 9)]
    res = tmp_path / "results"
    _batch_file(res / "estimates" / "knn" / "b000002.parquet", 5)
    (res / "export" / "batches" / "b000001").mkdir(parents=True)
    rows = PR.summary(res, lay, ["knn"], logs_dir=tmp_path / "logs")
    knn, exp = rows[1], rows[2]
    assert knn["chunks_done"] == 5 and knn["batches_done"] == 1 and knn["batches_bad"] == 0
    assert exp["chunks_done"] == 1 and exp["chunks_remaining"] == 8


def test_log_failed_knows_the_one_node_slurm_kills(tmp_path):
    """The lines the one-node Slurm of .ci/setup_slurm.sh writes into a job's log when it
    kills the job for its memory (jobacct_gather OverMemoryKill) or on scancel (copied
    from tests/test_slurm_faults.py runs)."""
    for i, line in enumerate([
            "slurmstepd-vm: error: StepId=22.0 exceeded memory limit (1258246144 > "
            "1154482176), being killed\nslurmstepd-vm: error: Exceeded job memory limit\n",
            "slurmstepd-vm: error: *** JOB 5 ON vm CANCELLED AT 2026-12-07T06:40:01 ***\n"]):
        p = tmp_path / f"{i}.log"
        p.write_text("Building DAG of jobs...\n" + line)
        assert PR.log_failed(p), line
