"""pzpipe.planning.plan: release planning arithmetic and Slurm resource functions."""

import json
import math
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from pzpipe.planning import plan as P

TP = {
    "reference_chunk_rows": 130_000,
    "algorithms": {
        "fast": {"obj_per_s_core": 1000.0, "mem_mb_per_worker": 1500},
        "slow": {"obj_per_s_core": 100.0, "mem_mb_per_worker": 3000, "measured": True},
        "bpz": {"obj_per_s_core": 2000.0, "mem_mb_per_worker": 1600},
    },
    "sites": {
        "apollo": {"core_speed": 0.5, "tail_factor": 1.0},
        "sdumont": {"core_speed": 1.0},
    },
}


def test_repo_throughput_file_loads_and_covers_default_algorithms():
    tp = P.load_throughput()
    for algo in P.ALGORITHMS:
        e = tp["algorithms"][algo]
        assert e["obj_per_s_core"] > 0 and e["mem_mb_per_worker"] > 0
    assert {"apollo", "sdumont"} <= set(tp["sites"])
    assert tp["source"]


def _rows(lay):
    return [n for _, n in lay.files]


def test_chunks_never_span_files():
    # the plan counts chunks with the workflow's own layout (pzpipe.run.layout.Layout)
    lay = P.input_layout(objects=1_000_000, rows_per_file=300_000)
    assert _rows(lay) == [300_000] * 3 + [100_000]
    # 3 full files x ceil(300k/130k)=3 chunks + 1 chunk for the 100k remainder
    assert P.count_input(objects=1_000_000, rows_per_file=300_000, chunk_rows=130_000) \
        == (4, 10, 1_000_000)
    assert P.count_input(descriptor=[130_000, 130_001, 5], chunk_rows=130_000) == (3, 4, 260_006)
    assert P.count_input(objects=260_000, chunk_rows=130_000) == (1, 2, 260_000)


def test_descriptor_forms(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("path,nrows\na.parquet,200000\nb.parquet,10\n")
    assert P.count_input(descriptor=str(csv), chunk_rows=130_000) == (2, 3, 200_010)
    assert _rows(P.input_layout(descriptor={"n_objects": 10, "rows_per_file": 4})) == [4, 4, 2]
    assert _rows(P.input_layout(descriptor=[1, 2])) == [1, 2]
    with pytest.raises(ValueError):
        P.input_layout()


def test_plan_job_counts_and_submissions():
    p = P.plan(13_000_000, chunks_per_batch=10, algorithms=["fast", "slow"], throughput=TP,
               array_limit=4)
    assert p["chunks"] == 100 and p["batches"] == 10
    assert p["jobs"]["partition_batch"] == 10
    assert p["jobs"]["estimate_batch"] == 20
    assert p["jobs"]["train"] == 2
    assert p["jobs"]["prepare_data"] == 0
    assert p["total_jobs"] == sum(p["jobs"].values())
    s = p["slurm_submissions"]
    assert s["no_array"] == p["total_jobs"] - 1
    assert p["jobs"]["validate_estimate"] == 2
    assert p["jobs"]["export_batch"] == 10 and p["jobs"]["export_dedup"] == 1
    # arrays of <= 4 tasks: partition 3, estimate 5, train 1, validate_estimate 1,
    # validate/export/release 3, export_batch 3, export_dedup 1
    assert s["array_best"] == 3 + 5 + 1 + 1 + 3 + 3 + 1
    assert s["array_best"] <= s["array_worst"] <= s["no_array"]
    # files without coordinates: no margin, no index
    assert p["jobs"]["margin_batch"] == p["jobs"]["index_batch"] == p["jobs"]["index_bucket"] == 0


def test_plan_hats_collection_jobs():
    """HATS inputs: the collection's margin and index jobs, one per batch (+ one index
    bucket per dedup bucket), counted in the DAG size and in the collection's cost."""
    p = P.plan(13_000_000, rows_per_file=1_300_000, chunks_per_batch=10,
               algorithms=["fast", "slow"], throughput=TP, hats=True)
    j = p["jobs"]
    assert j["margin_batch"] == j["index_batch"] == p["batches"] > 0
    assert j["index_bucket"] == j["export_dedup"] and j["release"] == 1
    assert p["total_jobs"] == sum(j.values())
    c = p["collection"]
    assert c["margin_bytes"] > 0 and c["index_bytes"] == pytest.approx(13e6 * P.INDEX_BYTES_PER_OBJECT)
    assert c["core_hours"] > 0


def test_plan_core_hours_wall_and_storage():
    n = 1_300_000
    p = P.plan(n, chunks_per_batch=2, algorithms=["fast", "slow"], throughput=TP,
               cores_apollo=10, cores_sdumont=20, threads=1)
    fast = p["per_algorithm"]["fast"]
    assert fast["core_hours_reference"] == pytest.approx(n / 1000 / 3600)
    # estimating, plus each worker's start (load_s absent: 1 s per reference core) once
    # per job: 5 jobs of 2 chunks on one thread
    assert fast["apollo"]["core_hours"] == pytest.approx(n / 500 / 3600 + 5 * 2 / 3600)
    assert fast["sdumont"]["core_hours"] == pytest.approx(n / 1000 / 3600 + 5 * 1 / 3600)
    # 2 chunks per batch on one thread at 500 obj/s, after loading the model (1 s per
    # reference core, 2 s on apollo)
    assert fast["apollo"]["job_hours"] == pytest.approx((2 + 2 * 130_000 / 500) / 3600)
    assert fast["apollo"]["wall_hours"] >= fast["apollo"]["core_hours"] / 10
    assert p["per_algorithm"]["slow"]["measured"] is True
    assert fast["bytes_per_object"] == 8 + 6 * 4 + 4 + 40
    assert fast["bytes_per_object_float64_pdf"] == 8 + 6 * 4 + 4 + 301 * 8
    assert fast["storage_bytes"] == n * fast["bytes_per_object"]
    assert p["totals"]["storage_bytes"] == sum(
        e["storage_bytes"] for e in p["per_algorithm"].values())


@pytest.mark.parametrize("objects,rpf", [(40e9, 130_000), (20e9, 130_000), (40e9, 1e6), (3e9, 7e5)])
def test_auto_chunks_per_batch_targets(objects, rpf):
    p = P.plan(objects, rows_per_file=rpf)
    assert p["total_jobs"] <= 3000
    assert p["slurm_submissions"]["no_array"] < 0.01 * p["chunks"]


def test_auto_chunks_per_batch_meets_job_target_for_40e9():
    t0 = time.perf_counter()
    p = P.plan(40e9, rows_per_file=1e6)
    assert time.perf_counter() - t0 < 1.0
    assert p["chunks"] == 40_000 * 8  # ceil(1e6 / 130k) = 8 chunks per file
    assert p["total_jobs"] <= 3000
    # one fewer batch per chunk would break the target: cpb is the smallest that fits
    smaller = P.plan(40e9, rows_per_file=1e6, chunks_per_batch=p["chunks_per_batch"] - 1)
    assert smaller["total_jobs"] > 3000
    assert p["slurm_submissions"]["no_array"] / p["chunks"] < 0.01
    text = P.format_plan(p)
    for word in ("estimate_batch", "core-h Apollo", "wall SDumont", "Storage", "float64"):
        assert word in text


def test_warning_when_job_exceeds_partition_limit():
    p = P.plan(13_000_000, chunks_per_batch=100, algorithms=["slow"], throughput=TP,
               threads=1, job_limit_hours=1.0)
    assert any("slow on apollo" in w for w in p["warnings"])
    assert "Warnings:" in P.format_plan(p)


def test_runtime_and_memory_grow_with_attempt():
    r1 = P.estimate_runtime_min("slow", 4, threads=2, attempt=1, throughput=TP, site="apollo",
                                chunk_rows=130_000, margin=1.0, overhead_min=0)
    # 2 rounds of 130k objects at 50 obj/s (100 x core_speed 0.5), after each worker's
    # model load (load_s absent: 1 s per reference core -> 2 s on apollo)
    assert r1 == math.ceil((2 + 2 * 130_000 / 50) / 60)
    r2 = P.estimate_runtime_min("slow", 4, threads=2, attempt=2, throughput=TP, site="apollo",
                                chunk_rows=130_000, margin=1.0, overhead_min=0)
    assert r2 > r1
    m1 = P.estimate_mem_mb("slow", threads=4, attempt=1, throughput=TP, chunk_rows=130_000)
    m3 = P.estimate_mem_mb("slow", threads=4, attempt=3, throughput=TP, chunk_rows=130_000)
    assert m1 == P.SIZING["base_mem_mb"] + 4 * 3000
    assert m3 > m1
    assert P.estimate_mem_mb("slow", 4, 9, throughput=TP, max_mb=20000, chunk_rows=130_000) == 20000


def test_one_time_model_for_slurm_runtimes_and_the_planner():
    """The Slurm runtime request, the planner's per-job hours and the forecast's
    estimate job are the same number (pzpipe.planning.forecast)."""
    from pzpipe.planning import forecast

    tp = {**TP, "algorithms": {"slow": {**TP["algorithms"]["slow"], "load_s": 30.0}}}
    sec = forecast.batch_seconds("slow", 5, 2, chunk_rows=100_000, throughput=tp, site="apollo")
    assert sec == forecast.estimate_job_seconds([100_000] * 5, 50.0, 2, 60.0)
    rt = P.estimate_runtime_min("slow", 5, 2, throughput=tp, site="apollo", chunk_rows=100_000,
                                margin=1.0, overhead_min=0.0)
    assert rt == math.ceil(sec / 60)
    p = P.plan(5 * 100_000, chunk_rows=100_000, chunks_per_batch=5, algorithms=["slow"],
               throughput=tp, threads=2)
    assert p["per_algorithm"]["slow"]["apollo"]["job_hours"] == pytest.approx(sec / 3600)


def test_unmeasured_estimator_gets_the_stated_fallback(caplog):
    tp = {**TP, "unmeasured": {"obj_per_s_core": 7.0, "mem_mb_per_worker": 2000}}
    from pzpipe.planning import forecast

    with caplog.at_level("WARNING"):
        e = forecast.algo_entry(tp, "toy-unlisted")
    assert e["obj_per_s_core"] == 7.0
    assert "toy-unlisted" in caplog.text and "unmeasured" in caplog.text
    with pytest.raises(KeyError, match="no throughput figure"):
        forecast.algo_entry(TP, "toy-unlisted")
    assert "unmeasured" in P.load_throughput()      # the repo's file states one


def test_pick_partition():
    parts = [{"name": "cpu", "max_runtime_min": 720}, {"name": "cpu_small", "max_runtime_min": 180},
             {"name": "cpu_long", "max_runtime_min": 43200, "account": "x"}]
    assert P.pick_partition(parts, 10)["name"] == "cpu_small"
    assert P.pick_partition(parts, 181)["name"] == "cpu"
    assert P.pick_partition(parts, 5000)["name"] == "cpu_long"
    assert P.pick_partition(parts, 1e9)["name"] == "cpu_long"


def test_rule_resources_callables(tmp_path):
    tp_file = tmp_path / "tp.yaml"
    tp_file.write_text(json.dumps(TP))  # JSON is YAML
    cfg = {
        "partition": {"chunk_rows": 130_000},
        "batch": {"chunks_per_batch": 4},
        "sizing": {
            "throughput_file": str(tp_file), "site": "apollo",
            "partitions": [{"name": "cpu_small", "max_runtime_min": 180, "account": "acc_s"},
                           {"name": "cpu_long", "max_runtime_min": 43200, "account": "acc_l"}],
        },
    }
    res = P.rule_resources(cfg, "estimate_batch")
    wc = SimpleNamespace(algo="fast")
    assert res["slurm_partition"](wc, 4, 1) == "cpu_small"
    assert res["slurm_account"](wc, 4, 1) == "acc_s"
    assert res["runtime"](wc, 4, 2) > res["runtime"](wc, 4, 1)
    assert res["mem_mb"](wc, 4, 2) > res["mem_mb"](wc, 4, 1)
    slow = SimpleNamespace(algo="slow")
    assert res["slurm_partition"](slow, 1, 1) == "cpu_long"
    other = P.rule_resources(cfg, "partition_batch")
    assert set(other) == {"mem_mb", "runtime"}
    assert other["mem_mb"](None, 2) == 2 * other["mem_mb"](None, 1)


def test_cli_runs_fast():
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "pzpipe.planning.plan", "--objects", "40e9"],
                         capture_output=True, text=True, check=True)
    assert time.perf_counter() - t0 < 30
    assert "Snakemake jobs per rule" in out.stdout and "core-h" in out.stdout
    js = subprocess.run([sys.executable, "-m", "pzpipe.planning.plan", "--objects", "20e9", "--json"],
                        capture_output=True, text=True, check=True)
    assert json.loads(js.stdout)["objects"] == 20_000_000_000
