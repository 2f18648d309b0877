"""Forecast of a whole run: every job's duration from measured costs, then the jobs laid
out on the cores the way Snakemake's scheduler does (greedy, each job holding its
threads), giving wall time per stage and in total.

The one model of the project's time forecasts: the release plan (``pzpipe.planning.plan``), the
benchmark's 40e9 column and the rehearsal (benchmarks/rehearsal.py, which checks it
against measured runs) all call :func:`forecast`.

Costs come from ``resources/throughput.yaml``:

* ``algorithms.<name>.obj_per_s_core``: objects per second per core of the reference
  machine with every core busy (the benchmark's 2-worker figure), the estimate step as
  the pipeline runs it (read, estimate, point estimates, compression, write);
  ``train_s``: training on the default sample; ``load_s``: a worker's start (model
  loading);
* ``stages``: what the rest of the pipeline costs per object or per job, measured by the
  rehearsal (``job_overhead_s``: Snakemake starting a job - a new process that re-parses
  the workflow - plus the job's own set-up; ``partition_us``; ``export_batch_us`` and
  ``export_batch_us_per_algo``; ``dedup_ns_per_id``; ``export_s``; ``validate_s``;
  ``prepare_data_s``);
* ``sites.<site>``: ``core_speed`` (one CPU of the site relative to a reference core),
  ``cores``, ``tail_factor``.

Calibration of a site: Apollo's ``core_speed`` 0.324 = LIneA's production FlexZBoost,
274 objects/s per Apollo slot (3.1e9 objects on 728 slots in 4 h 19 min), divided by
RAIL's own FlexZBoost with its file I/O on one reference core (846 objects/s, measured
on the reference machine with RAIL 2.0's FlexZBoostEstimator, training sample of the
DC2 example): the same code on both machines. benchmarks/results/rehearsal.md checks the
model against whole runs on the reference machine (core_speed 1).
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import logging
from pathlib import Path

import yaml

log = logging.getLogger(__name__)
# Package data (a symlink to resources/throughput.yaml in a clone), found by installs too
THROUGHPUT_FILE = Path(__file__).resolve().parents[1] / "data" / "throughput.yaml"

# a worker's start (s per reference core) for a throughput entry without ``load_s``
DEFAULT_LOAD_S = 1.0

STAGE_ORDER = ("prepare_data", "train", "partition_batch", "validate_estimate", "estimate_batch",
               "validate", "export_batch", "export_dedup", "export")


@dataclass
class Job:
    rule: str
    key: str
    seconds: float
    threads: int = 1
    deps: list = field(default_factory=list)     # keys of jobs that must finish first


# --------------------------------------------------------------------------
# throughput file
# --------------------------------------------------------------------------
def load_throughput(path: str | Path | Mapping | None = None) -> dict:
    """Read ``resources/throughput.yaml`` (or return a given mapping)."""
    if isinstance(path, Mapping):
        return dict(path)
    p = Path(path) if path else THROUGHPUT_FILE
    with open(p) as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or "algorithms" not in data:
        raise ValueError(f"{p}: no 'algorithms' mapping")
    return data


_WARNED: set = set()


def algo_entry(throughput: Mapping, algo: str) -> Mapping:
    """The throughput entry of an estimator; an estimator without one gets the file's
    ``unmeasured`` entry (a stated, deliberately pessimistic cost: see the file) with one
    warning, until ``make bench`` measures it."""
    algos = throughput.get("algorithms", {}) or {}
    if algo in algos:
        return algos[algo]
    if "unmeasured" in throughput:
        if algo not in _WARNED:
            _WARNED.add(algo)
            log.warning("no throughput figure for estimator '%s' in the throughput file: "
                        "sizing and forecasts use its 'unmeasured' entry (%s obj/s/core, "
                        "%s MB per worker); run `make bench` to measure it", algo,
                        throughput["unmeasured"].get("obj_per_s_core"),
                        throughput["unmeasured"].get("mem_mb_per_worker"))
        return throughput["unmeasured"]
    known = ", ".join(sorted(algos))
    raise KeyError(f"no throughput figure for algorithm {algo!r} and no 'unmeasured' entry "
                   f"in the throughput file (known: {known})")


def site_entry(throughput: Mapping, site: str | None) -> Mapping:
    sites = throughput.get("sites", {}) or {}
    if site is None:
        return {"core_speed": 1.0}
    if site not in sites:
        raise KeyError(f"no site {site!r} in throughput file (known: {', '.join(sites)})")
    return sites[site]


def _algo(tp: Mapping, algo: str) -> Mapping:
    return algo_entry(tp, algo)


def _stage(tp: Mapping, key: str, default: float) -> float:
    return float((tp.get("stages") or {}).get(key, default))



def estimate_job_seconds(chunk_rows: Sequence[int], rate: float, workers: int,
                         load_s: float = 0.0) -> float:
    """Seconds of one estimate_batch job: ``workers`` processes each load the model, then
    take the next chunk as they finish one (ProcessPoolExecutor.map)."""
    workers = max(1, min(int(workers), len(chunk_rows)))
    free = [load_s] * workers
    heapq.heapify(free)
    for n in chunk_rows:
        t = heapq.heappop(free)
        heapq.heappush(free, t + n / rate)
    return max(free) if chunk_rows else 0.0


def batch_seconds(algo: str, chunks_per_batch: int, threads: int, *, chunk_rows: int,
                  throughput: Mapping | str | Path | None = None, site: str | None = None
                  ) -> float:
    """Wall seconds of one estimate_batch job of ``chunks_per_batch`` full chunks with
    ``threads`` workers on ``site``: :func:`estimate_job_seconds` with the estimator's
    rate and model-loading time, both converted by the site's ``core_speed``. The Slurm
    runtime request (pzpipe.planning.resources) and the planner's per-job hours use this."""
    tp = load_throughput(throughput)
    e = algo_entry(tp, algo)
    speed = float(site_entry(tp, site).get("core_speed", 1.0))
    return estimate_job_seconds([int(chunk_rows)] * int(chunks_per_batch),
                                float(e["obj_per_s_core"]) * speed, threads,
                                float(e.get("load_s", DEFAULT_LOAD_S)) / speed)


def site_core_hours(objects: float, obj_per_s_core: float, site: Mapping,
                    load_s: float = 0.0, objects_per_worker: float = 0.0) -> float:
    """Core-hours of ``site`` to estimate ``objects`` at ``obj_per_s_core`` objects/s per
    reference core (the site's ``core_speed`` converts reference cores to its CPUs), plus
    each worker's start (``load_s`` reference seconds, once per ``objects_per_worker``
    objects: one estimate_batch job's objects / its workers) when both are given."""
    speed = float(site.get("core_speed", 1.0))
    hours = objects / (float(obj_per_s_core) * speed) / 3600.0
    if load_s and objects_per_worker:
        hours += math.ceil(objects / float(objects_per_worker)) * float(load_s) / speed / 3600.0
    return hours


def release_wall_hours(objects: float, obj_per_s_core: float, site: Mapping,
                       cores: int | None = None, job_hours: float = 0.0,
                       load_s: float = 0.0, objects_per_worker: float = 0.0) -> float:
    """Wall hours of one estimator over a release on ``site``: its core-hours
    (:func:`site_core_hours`, workers' starts included when ``load_s`` and
    ``objects_per_worker`` are given) spread over the site's cores (when jobs outnumber
    cores, the scheduler's greedy layout of :func:`simulate` tends to this), times the
    site's ``tail_factor``; never less than one job (``job_hours``). The planner's table
    and the benchmark's 40e9 column use this."""
    cores = int(cores or site.get("cores", 1))
    wall = site_core_hours(objects, obj_per_s_core, site, load_s, objects_per_worker) \
        / max(1, cores) * float(site.get("tail_factor", 1.0))
    return max(wall, job_hours)


def build_jobs(batches: Sequence[Sequence[int]], algos: Sequence[str], tp: Mapping, *,
               workers: int, n_pixels: int = 0, validation_rows: int = 0,
               dedup_ids_per_job: float = 1.5e8, core_speed: float = 1.0,
               data_dir_algos: Sequence[str] = ()) -> list[Job]:
    """The jobs of a run: ``batches`` = the chunk row counts of each batch (after cuts, as
    estimated), ``algos`` the enabled estimators, ``workers`` = estimate.workers."""
    ov = _stage(tp, "job_overhead_s", 3.0)
    jobs: list[Job] = []
    n_obj = sum(sum(b) for b in batches)
    for a in data_dir_algos:
        jobs.append(Job("prepare_data", f"prepare_data/{a}", ov + _stage(tp, "prepare_data_s", 5)))
    for a in algos:
        e = _algo(tp, a)
        deps = [f"prepare_data/{a}"] if a in data_dir_algos else []
        jobs.append(Job("train", f"train/{a}", ov + float(e.get("train_s", 30)) / core_speed,
                        1, deps))
        rate = float(e["obj_per_s_core"]) * core_speed
        if validation_rows:
            per = math.ceil(validation_rows / max(1, workers))
            jobs.append(Job("validate_estimate", f"validate_estimate/{a}",
                            ov + estimate_job_seconds([per] * max(1, workers), rate, workers,
                                                      float(e.get("load_s", DEFAULT_LOAD_S))),
                            workers, [f"train/{a}"]))
    if validation_rows:
        jobs.append(Job("validate", "validate", ov + _stage(tp, "validate_s", 20),
                        1, [f"validate_estimate/{a}" for a in algos]))
    part_us = _stage(tp, "partition_us", 1.0)
    exp_us = _stage(tp, "export_batch_us", 0.5) + _stage(tp, "export_batch_us_per_algo", 0.5) * len(algos)
    for i, chunks in enumerate(batches):
        b = f"b{i:06d}"
        rows = sum(chunks)
        jobs.append(Job("partition_batch", f"partition/{b}", ov + rows * part_us * 1e-6 / core_speed))
        for a in algos:
            e = _algo(tp, a)
            rate = float(e["obj_per_s_core"]) * core_speed
            deps = [f"partition/{b}", f"train/{a}"]
            jobs.append(Job("estimate_batch", f"estimate/{a}/{b}",
                            ov + estimate_job_seconds(chunks, rate, workers,
                                                      float(e.get("load_s", DEFAULT_LOAD_S))),
                            workers, deps))
        jobs.append(Job("export_batch", f"export_batch/{b}", ov + rows * exp_us * 1e-6 / core_speed,
                        1, [f"estimate/{a}/{b}" for a in algos]))
    k = max(1, math.ceil(n_obj / dedup_ids_per_job)) if n_obj else 1
    per_bucket = n_obj / k
    for j in range(k):
        jobs.append(Job("export_dedup", f"export_dedup/{j}",
                        ov + per_bucket * _stage(tp, "dedup_ns_per_id", 100) * 1e-9 / core_speed,
                        1, [f"export_batch/b{i:06d}" for i in range(len(batches))]))
    jobs.append(Job("export", "export",
                    ov + (_stage(tp, "export_s", 2) + n_pixels * _stage(tp, "export_s_per_pixel", 0.002))
                    / core_speed, 1, [f"export_dedup/{j}" for j in range(k)]))
    return jobs


def simulate(jobs: Sequence[Job], cores: int) -> dict:
    """Greedy list scheduling on ``cores``: whenever cores are free, start the ready jobs in
    stage order (a job needs ``min(threads, cores)`` free cores). Returns the makespan and,
    per rule, the job count, the summed job seconds and the [first start, last end]."""
    cores = max(1, int(cores))
    by_key = {j.key: j for j in jobs}
    waiting = {j.key: {d for d in j.deps if d in by_key} for j in jobs}
    children = defaultdict(list)
    for j in jobs:
        for d in waiting[j.key]:
            children[d].append(j.key)
    order = {r: i for i, r in enumerate(STAGE_ORDER)}
    ready = [(order.get(j.rule, 99), n, j.key) for n, j in enumerate(jobs) if not waiting[j.key]]
    heapq.heapify(ready)
    running: list[tuple[float, str]] = []
    free, now = cores, 0.0
    spans: dict[str, list] = {}
    busy = defaultdict(float)
    counts = defaultdict(int)
    seq = len(jobs)
    while ready or running:
        started = True
        while started and ready:
            started = False
            keep = []
            while ready:
                item = heapq.heappop(ready)
                j = by_key[item[2]]
                need = min(max(1, j.threads), cores)
                if need <= free:
                    free -= need
                    heapq.heappush(running, (now + j.seconds, j.key))
                    sp = spans.setdefault(j.rule, [now, now])
                    sp[0] = min(sp[0], now)
                    busy[j.rule] += j.seconds
                    counts[j.rule] += 1
                    started = True
                else:
                    keep.append(item)
            for item in keep:
                heapq.heappush(ready, item)
            if free == 0:
                break
        if not running:
            break
        end, key = heapq.heappop(running)
        now = end
        j = by_key[key]
        free += min(max(1, j.threads), cores)
        spans[j.rule][1] = max(spans[j.rule][1], end)
        for c in children[key]:
            waiting[c].discard(key)
            if not waiting[c]:
                seq += 1
                heapq.heappush(ready, (order.get(by_key[c].rule, 99), seq, c))
    return {"wall_s": now, "stages": {r: {"jobs": counts[r], "job_seconds": busy[r],
                                          "start_s": spans[r][0], "end_s": spans[r][1]}
                                      for r in spans}}


def forecast(layout, cfg: Mapping, algos: Sequence[str], throughput: Mapping, *,
             cores: int, site: str | None = None, validation_rows: int = 0,
             kept_fraction: float = 1.0) -> dict:
    """Wall-time forecast of a run of ``layout`` (a pzpipe.run.layout.Layout) with ``cfg``.

    ``kept_fraction``: the fraction of input rows that pass the cuts (estimated). The
    partition job processes every input row; estimates and the export only kept rows."""
    from pzpipe import algorithms

    s = (throughput.get("sites") or {}).get(site or "local", {}) if site else {"core_speed": 1.0}
    speed = float(s.get("core_speed", 1.0))
    tail = float(s.get("tail_factor", 1.0))
    batches = []
    part_rows = []
    for b in range(layout.n_batches):
        chunks = [c.rows for c in layout.batch_chunks(b)]
        part_rows.append(sum(chunks))
        batches.append([max(0, round(n * kept_fraction)) for n in chunks])
    jobs = build_jobs(batches, algos, throughput, workers=int(cfg["estimate"]["workers"]),
                      n_pixels=len(layout.files) if layout.is_hats else 0,
                      validation_rows=validation_rows,
                      dedup_ids_per_job=float(cfg["export"]["dedup_ids_per_job"]),
                      core_speed=speed,
                      data_dir_algos=algorithms.with_data_dir(algos))
    # the partition reads every input row, cut or not
    ov = _stage(throughput, "job_overhead_s", 3.0)
    for j in jobs:
        if j.rule == "partition_batch":
            i = int(j.key.split("/b")[1])
            j.seconds = ov + part_rows[i] * _stage(throughput, "partition_us", 1.0) * 1e-6 / speed
    sim = simulate(jobs, cores)
    sim["wall_s"] *= tail
    sim["cores"] = cores
    sim["core_speed"] = speed
    sim["tail_factor"] = tail
    sim["jobs"] = len(jobs)
    return sim
