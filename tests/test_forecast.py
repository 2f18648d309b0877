"""pzpipe.planning.forecast: job durations and the greedy schedule, on hand-computed cases."""
import pytest

from pzpipe.planning.forecast import (Job, build_jobs, estimate_job_seconds, release_wall_hours,
                                      simulate, site_core_hours)


def test_estimate_job_workers_take_the_next_chunk():
    # 2 workers, 1 s to start, chunks of 1 s: worker A: 1->2->3, worker B: 1->2
    assert estimate_job_seconds([10, 10, 10], rate=10, workers=2, load_s=1) == pytest.approx(3)
    assert estimate_job_seconds([10, 40], rate=10, workers=2) == pytest.approx(4)
    assert estimate_job_seconds([10, 10], rate=10, workers=8) == pytest.approx(1)  # <= chunks


def test_greedy_schedule_with_threads_and_dependencies():
    jobs = [Job("partition_batch", "a", 2), Job("partition_batch", "b", 2),
            Job("estimate_batch", "c", 4, threads=2, deps=["a", "b"]),
            Job("train", "t", 1)]
    sim = simulate(jobs, cores=2)
    # a and t start at 0 (stage order: train first, then partition), b at 1, c at 3 -> 7
    assert sim["wall_s"] == pytest.approx(7)
    assert sim["stages"]["estimate_batch"]["start_s"] == pytest.approx(3)
    one = simulate(jobs, cores=1)            # a 2-thread job on 1 core takes the core
    assert one["wall_s"] == pytest.approx(9)


def test_build_jobs_counts_and_costs():
    tp = {"algorithms": {"x": {"obj_per_s_core": 1000, "train_s": 10, "load_s": 0}},
          "stages": {"job_overhead_s": 0, "partition_us": 10, "export_batch_us": 1,
                     "export_batch_us_per_algo": 1, "dedup_ns_per_id": 1000, "export_s": 1,
                     "validate_s": 1}}
    jobs = build_jobs([[1000, 1000], [500]], ["x"], tp, workers=2, validation_rows=100,
                      dedup_ids_per_job=1000)
    by = {j.key: j for j in jobs}
    assert by["estimate/x/b000000"].seconds == pytest.approx(1.0)   # 2 chunks, 2 workers
    assert by["partition/b000001"].seconds == pytest.approx(500 * 10e-6)
    assert by["export_batch/b000000"].seconds == pytest.approx(2000 * 2e-6)
    assert sum(j.rule == "export_dedup" for j in jobs) == 3          # 2500 ids / 1000
    sim = simulate(jobs, cores=2)
    assert sim["stages"]["estimate_batch"]["jobs"] == 2 and sim["wall_s"] > 10


def test_core_and_wall_hours_charge_each_workers_start_once_per_job():
    """A worker's start (load_s) is paid once per objects_per_worker objects, in the site's
    seconds (/ core_speed); without objects_per_worker (or load_s 0) it is left out."""
    site = {"core_speed": 0.5, "cores": 10, "tail_factor": 1.2}
    base = 1_000_000 / (100 * 0.5) / 3600
    assert site_core_hours(1_000_000, 100, site) == pytest.approx(base)
    # 1e6 objects, 300k per worker and job: 4 starts (the last worker's share is partial)
    assert site_core_hours(1_000_000, 100, site, load_s=9, objects_per_worker=300_000) == \
        pytest.approx(base + 4 * 9 / 0.5 / 3600)
    assert site_core_hours(1_000_000, 100, site, load_s=0, objects_per_worker=300_000) == \
        pytest.approx(base)
    assert release_wall_hours(1_000_000, 100, site, load_s=9, objects_per_worker=300_000) == \
        pytest.approx((base + 4 * 9 / 0.5 / 3600) / 10 * 1.2)
    assert release_wall_hours(1_000_000, 100, site, job_hours=99.0) == 99.0
