"""Plan a data release before the data exists, and size Slurm jobs.

``plan(...)`` / ``python -m pzpipe.planning.plan --objects 40e9``: from a description of the input
(a number of objects, files of M rows, a CSV ``path,nrows`` or a list of row counts)
compute chunks, batches, Snakemake jobs per rule, Slurm submissions, core-hours per
algorithm, wall time on Apollo and Santos Dumont for a given core count, and output
storage. Chunks come from the workflow's own layout (``pzpipe.run.layout``); the rest is
arithmetic: it answers in well under a second for any size. The Snakemake dry run
(``snakemake -n`` with ``inputs.descriptor``) checks the same job counts against the
real DAG; see ``benchmarks/dryrun_plan.py``.

Job resources of the rules (``rule_resources``, the throughput file, ``pick_partition``)
live in ``pzpipe.planning.resources``; their names are importable from here too.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pzpipe import algorithms as _algorithms   # the registry (imports no RAIL code)
from pzpipe.planning import forecast
from pzpipe.run.layout import Layout, read_descriptor
from pzpipe.planning.forecast import THROUGHPUT_FILE, algo_entry, batch_seconds, load_throughput, site_entry
from pzpipe.planning.resources import (  # noqa: F401 - re-exported: pzpipe.planning.plan.JOBS etc.
    JOBS,
    SIZING,
    estimate_mem_mb,
    estimate_runtime_min,
    job_size,
    pick_partition,
    rule_resources,
)
from pzpipe.run.config import schema_defaults

# The planner's defaults are the workflow's (the schema is their only source)
CHUNK_ROWS = schema_defaults("partition")["chunk_rows"]
DEDUP_IDS_PER_JOB = schema_defaults("export")["dedup_ids_per_job"]
MAX_JOBS = SIZING["max_jobs"]
ARRAY_LIMIT = SIZING["array_limit"]
ALGORITHMS = _algorithms.default_names()
# Rules of the workflow with one job per release (not per batch).
SINGLE_RULES = ("validate", "export", "release")  # `summary` runs on demand, not in `all`
# plus one `prepare_data` job per algorithm that declares a data directory

# Output layout (DESIGN.md): object_id int64, six float32 point-estimate
# columns (z_mode, z_mean, z_median, z_lo68, z_hi68, z_err68), flags int32,
# compressed PDF (~40 B/object at 10 bits on 301 bins); each extra column of an
# algorithm (pzpipe.algorithms: Algorithm.extras) adds 4 bytes (float32).
ID_BYTES = 8
POINT_COLUMNS = 6
POINT_BYTES = 4
FLAGS_BYTES = 4
PDF_BYTES_COMPRESSED = 40
NBANDS = 6
# The HATS collection (pzpipe.stages.collection), measured with
# benchmarks/collection_scaling.py (benchmarks/results/collection_scaling.json): CPU time
# per object of margin_batch, index_batch + index_bucket; margin rows per release row
# (5", order-6/7 pixels: ~4 x 13" / pixel side; larger pixels give fewer); index bytes
# per object (objectId int64 sorted + Norder + Npix, zstd).
MARGIN_CPU_US_PER_OBJECT = 3.15
INDEX_CPU_US_PER_OBJECT = 1.3      # 0.87 index_batch + 0.43 index_bucket
MARGIN_ROW_FRACTION = 0.063         # the larger of 0.031 (1e6 objects) and 0.063 (4e6)
INDEX_BYTES_PER_OBJECT = 2.94


def extra_bytes(algo: str) -> int:
    """Bytes per object of the algorithm's extra columns (``Algorithm.extra_dtypes``,
    float32 otherwise)."""
    import numpy as np

    a = _algorithms.REGISTRY.get(algo)
    if a is None:
        return 0
    return sum(np.dtype(a.extra_dtypes.get(c, "float32")).itemsize for c in a.extras.values())

# Each task in a Slurm array counts against MaxSubmitJobs like a job; the plugin
# submits at most --slurm-array-limit tasks per sbatch call (ARRAY_LIMIT above).


# --------------------------------------------------------------------------
# the input: units and chunks, by the workflow's own layout (pzpipe.run.layout)
# --------------------------------------------------------------------------
def input_layout(
    objects: float | None = None,
    rows_per_file: float | None = None,
    descriptor: Any = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Layout:
    """The layout of the input described (pzpipe.run.layout.Layout, one chunk per batch).

    ``descriptor``: a dict ``{n_objects, rows_per_file}``, a CSV path (columns
    ``path,nrows`` or ``Norder,Npix,nrows``: ``pzpipe.run.layout.read_descriptor``, the same
    reader as ``inputs.descriptor``) or a sequence of row counts; without one, ``objects``
    in files of ``rows_per_file`` rows (default: one file). Chunks never span files."""
    if chunk_rows <= 0:
        raise ValueError("chunk_rows must be > 0")
    if isinstance(descriptor, (str, Path)):
        files, _ = read_descriptor(str(descriptor))
        return Layout(files, chunk_rows, 1)
    if descriptor is not None and not isinstance(descriptor, Mapping):
        if not isinstance(descriptor, Iterable):
            raise TypeError(f"unsupported descriptor {descriptor!r}")
        return Layout([(f"file_{i}", int(n)) for i, n in enumerate(descriptor)], chunk_rows, 1)
    if isinstance(descriptor, Mapping):
        objects = descriptor.get("n_objects", objects)
        rows_per_file = descriptor.get("rows_per_file", rows_per_file)
    if objects is None:
        raise ValueError("give objects or a descriptor")
    n = int(round(float(objects)))
    if n < 0:
        raise ValueError("objects must be >= 0")
    if not rows_per_file:
        return Layout([("objects", n)] if n else [], chunk_rows, 1)
    m = int(round(float(rows_per_file)))
    if m <= 0:
        raise ValueError("rows_per_file must be > 0")
    files, _ = read_descriptor({"n_objects": n, "rows_per_file": m})
    return Layout(files, chunk_rows, 1)


def count_input(objects: float | None = None, rows_per_file: float | None = None,
                descriptor: Any = None, chunk_rows: int = CHUNK_ROWS
                ) -> tuple[int, int, int]:
    """``(n_files, n_chunks, n_objects)`` of the input described (see ``input_layout``)."""
    lay = input_layout(objects, rows_per_file, descriptor, chunk_rows)
    return len(lay.files), lay.n_chunks, lay.n_objects


# --------------------------------------------------------------------------
# the plan
# --------------------------------------------------------------------------
def suggest_chunks_per_batch(n_chunks: int, n_algorithms: int, max_jobs: int = MAX_JOBS,
                             data_jobs: int = 1, n_dedup: int = 1, hats: bool = False) -> int:
    """Smallest chunks_per_batch keeping the whole DAG at or below ``max_jobs``."""
    # train + validate_estimate per algorithm, single rules, data preparation, the
    # duplicate-check jobs (and, for HATS, the index buckets) and the `all` target
    fixed = 2 * n_algorithms + len(SINGLE_RULES) + int(data_jobs) + 1 + n_dedup * (1 + hats)
    room = max(1, max_jobs - fixed)
    per_batch = 2 + n_algorithms + 2 * hats  # partition_batch, estimate_batch per algorithm,
    #                                         export_batch (+ margin_batch, index_batch)
    cpb = max(1, math.ceil(n_chunks * per_batch / room))
    while cpb < max(1, n_chunks) and math.ceil(n_chunks / cpb) * per_batch > room:
        cpb += 1                            # ceil() of the batch count can overshoot by one
    return cpb


def _fmt_hours(h: float) -> str:
    if h < 1:
        return f"{h * 60:.0f} min"
    if h < 48:
        return f"{h:.1f} h"
    return f"{h / 24:.1f} d"


def _fmt_bytes(b: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if abs(b) < 1000 or unit == "PB":
            return f"{b:.1f} {unit}" if unit != "B" else f"{b:.0f} B"
        b /= 1000.0
    return f"{b:.1f} PB"


def plan(
    objects: float | None = None,
    *,
    descriptor: Any = None,
    rows_per_file: float | None = None,
    chunk_rows: int = CHUNK_ROWS,
    chunks_per_batch: int | None = None,
    algorithms: Sequence[str] = ALGORITHMS,
    throughput: str | Path | Mapping | None = None,
    cores_apollo: int = 2032,
    cores_sdumont: int = 2400,
    threads: int = 28,
    max_jobs: int = MAX_JOBS,
    max_submission_fraction: float | None = 0.01,
    job_limit_hours: float = 12.0,
    runtime_margin: float = 2.0,
    array_limit: int = ARRAY_LIMIT,
    pdf_bytes: float = PDF_BYTES_COMPRESSED,
    nz: int = 301,
    hats: bool = False,
) -> dict:
    """Workload of a release. See the module docstring; returns a JSON-able dict.

    ``chunks_per_batch=None`` picks the smallest value that keeps the DAG at or
    below ``max_jobs`` Snakemake jobs and, when ``max_submission_fraction`` is
    set, the Slurm submissions without array jobs at or below that fraction of
    the chunk count (issue 5: < 1%). ``threads`` is the number of workers
    (cpus_per_task) of one estimate_batch job, used for per-job runtime;
    a warning is added when a job's runtime request (expected time x
    ``runtime_margin``) exceeds ``job_limit_hours`` (Apollo ``cpu``: 12 h).

    ``hats=True``: the input files are the pixels of a HATS catalog (``rows_per_file`` =
    rows per pixel); a batch holds whole pixels (pzpipe.run.layout), so it has
    ``chunks_per_batch // chunks_per_pixel`` pixels (at least one).
    """
    tp = load_throughput(throughput)
    algorithms = list(algorithms)
    n_files, n_chunks, n_obj = count_input(objects, rows_per_file, descriptor, chunk_rows)
    auto_cpb = chunks_per_batch is None
    job_target = max_jobs
    if max_submission_fraction:
        job_target = min(job_target, max(1, int(n_chunks * max_submission_fraction)))
    n_dedup = max(1, math.ceil(n_obj / DEDUP_IDS_PER_JOB)) if n_obj else 0
    n_data = len(_algorithms.with_data_dir(algorithms))
    cpb = suggest_chunks_per_batch(n_chunks, len(algorithms), job_target, n_data,
                                   n_dedup, hats) if auto_cpb else int(chunks_per_batch)
    if cpb <= 0:
        raise ValueError("chunks_per_batch must be > 0")
    n_alg = len(algorithms)

    def batches(cpb: int) -> int:
        if hats and n_files:             # whole pixels per batch
            per_pixel = max(1, math.ceil(n_chunks / n_files))
            return math.ceil(n_files / max(1, cpb // per_pixel))
        return math.ceil(n_chunks / cpb) if n_chunks else 0

    if hats and auto_cpb and n_files:    # whole-pixel batches are coarser: grow cpb to fit
        per_pixel = max(1, math.ceil(n_chunks / n_files))
        fixed = 2 * n_alg + len(SINGLE_RULES) + 1 + 2 * n_dedup + n_data
        while batches(cpb) * (4 + n_alg) + fixed > job_target and cpb < n_chunks:
            cpb += per_pixel
    n_batches = batches(cpb)

    jobs = {
        "partition_batch": n_batches,
        "prepare_data": n_data,
        "train": n_alg,
        "estimate_batch": n_batches * n_alg,
        "validate_estimate": n_alg,
        "validate": 1,
        "export_batch": n_batches,
        "export_dedup": n_dedup,
        "export": 1,
        # the HATS collection (pzpipe.stages.collection): margin and id index
        "margin_batch": n_batches if hats else 0,
        "index_batch": n_batches if hats else 0,
        "index_bucket": n_dedup if hats else 0,
        "release": 1,
        "all": 1,
    }
    total_jobs = sum(jobs.values())
    slurm_jobs = total_jobs - jobs["all"]  # `all` is a local target rule
    # Array mode: best case one sbatch per array_limit tasks of a rule (all of the
    # rule's jobs ready together); worst case estimate arrays form per finished
    # partition batch (one array of n_alg tasks each).
    arr_best = sum(math.ceil(n / array_limit) for r, n in jobs.items() if r != "all" and n)
    arr_worst = (math.ceil(jobs["partition_batch"] / array_limit) + n_batches
                 + sum(n for r, n in jobs.items() if r in SINGLE_RULES) + jobs["prepare_data"]
                 + jobs["train"]
                 + jobs["validate_estimate"])
    submissions = {
        "no_array": slurm_jobs,
        "array_best": arr_best,
        "array_worst": min(arr_worst, slurm_jobs),
    }
    sub_frac = submissions["no_array"] / n_chunks if n_chunks else 0.0

    per_algo: dict[str, dict] = {}
    sites = {"apollo": cores_apollo, "sdumont": cores_sdumont}
    for algo in algorithms:
        a = algo_entry(tp, algo)
        rate = float(a["obj_per_s_core"])
        ref_core_h = n_obj / rate / 3600.0
        entry: dict[str, Any] = {
            "obj_per_s_core": rate,
            "core_hours_reference": ref_core_h,
            "measured": bool(a.get("measured", False)),
        }
        # each worker's start (model loading), once per job: what batch_seconds charges
        load_s = float(a.get("load_s", forecast.DEFAULT_LOAD_S))
        per_worker = cpb * chunk_rows / max(1, threads)
        for site, cores in sites.items():
            s = site_entry(tp, site)
            core_h = forecast.site_core_hours(n_obj, rate, s, load_s, per_worker)
            job_h = batch_seconds(algo, cpb, threads, chunk_rows=chunk_rows, throughput=tp,
                                  site=site) / 3600.0
            slots = max(1, cores // max(1, threads))
            waves = math.ceil(n_batches / slots) if n_batches else 0
            # the one time model (pzpipe.planning.forecast), as the benchmark's 40e9 column uses it
            wall_h = forecast.release_wall_hours(n_obj, rate, s, cores,
                                                 job_h if n_batches else 0.0, load_s, per_worker)
            entry[site] = {
                "core_hours": core_h,
                "cores": cores,
                "wall_hours": wall_h,
                "job_hours": job_h,
                "waves": waves,
            }
        ebytes = ID_BYTES + POINT_COLUMNS * POINT_BYTES + FLAGS_BYTES + extra_bytes(algo)
        entry["bytes_per_object"] = ebytes + pdf_bytes
        entry["bytes_per_object_float64_pdf"] = ebytes + 8 * nz
        entry["storage_bytes"] = n_obj * (ebytes + pdf_bytes)
        entry["storage_bytes_float64_pdf"] = n_obj * (ebytes + 8 * nz)
        per_algo[algo] = entry

    warnings = []
    if total_jobs > max_jobs:
        warnings.append(f"{total_jobs:,} Snakemake jobs exceed the target {max_jobs:,}: "
                        "raise chunks_per_batch")
    if n_chunks and max_submission_fraction and \
            submissions["no_array"] / n_chunks > max_submission_fraction:
        warnings.append(f"Slurm submissions without arrays exceed {100 * max_submission_fraction:g}% "
                        "of the chunk count: raise chunks_per_batch or use array jobs")
    for algo, e in per_algo.items():
        for site in sites:
            need = e[site]["job_hours"] * runtime_margin
            if need > job_limit_hours:
                warnings.append(
                    f"{algo} on {site}: one estimate_batch job needs ~{_fmt_hours(need)} "
                    f"(x{runtime_margin:g} margin) > {job_limit_hours:g} h partition limit: "
                    f"raise threads, lower chunks_per_batch or use a long partition")

    partition_bytes = n_obj * (ID_BYTES + 2 * NBANDS * 4 + FLAGS_BYTES)
    release_bytes = sum(e["storage_bytes"] for e in per_algo.values())
    collection = {
        "margin_rows": n_obj * MARGIN_ROW_FRACTION if hats else 0,
        "margin_bytes": release_bytes * MARGIN_ROW_FRACTION if hats else 0,
        "index_bytes": n_obj * INDEX_BYTES_PER_OBJECT if hats else 0,
        "core_hours": (n_obj * (MARGIN_CPU_US_PER_OBJECT + INDEX_CPU_US_PER_OBJECT) / 3.6e9
                       if hats else 0.0),
    }
    totals = {
        "core_hours_apollo": sum(e["apollo"]["core_hours"] for e in per_algo.values()),
        "core_hours_sdumont": sum(e["sdumont"]["core_hours"] for e in per_algo.values()),
        "wall_hours_apollo": sum(e["apollo"]["wall_hours"] for e in per_algo.values()),
        "wall_hours_sdumont": sum(e["sdumont"]["wall_hours"] for e in per_algo.values()),
        "storage_bytes": sum(e["storage_bytes"] for e in per_algo.values()),
        "storage_bytes_float64_pdf": sum(e["storage_bytes_float64_pdf"] for e in per_algo.values()),
        "partition_bytes": partition_bytes,
        # one parquet per batch per stage (partition, estimates, export) + the release's
        # files (one per batch here; one per pixel for HATS inputs)
        "output_files": n_batches * (2 + n_alg) + n_batches,
        "metadata_records": slurm_jobs,
    }
    return {
        "objects": n_obj,
        "files": n_files,
        "chunk_rows": chunk_rows,
        "chunks": n_chunks,
        "chunks_per_batch": cpb,
        "chunks_per_batch_auto": auto_cpb,
        "batches": n_batches,
        "objects_per_batch": cpb * chunk_rows,
        "algorithms": algorithms,
        "threads": threads,
        "jobs": jobs,
        "collection": collection,
        "total_jobs": total_jobs,
        "max_jobs": max_jobs,
        "job_target": job_target,
        "slurm_submissions": submissions,
        "submissions_per_chunk": sub_frac,
        "array_limit": array_limit,
        "per_algorithm": per_algo,
        "totals": totals,
        "throughput_source": str(tp.get("source", "")).strip(),
        "warnings": warnings,
    }


def format_plan(p: Mapping) -> str:
    """Human-readable report of ``plan()``."""
    out = []
    w = out.append
    w(f"Release plan: {p['objects']:,} objects in {p['files']:,} files")
    w(f"  chunks of {p['chunk_rows']:,} rows: {p['chunks']:,}; "
      f"{p['chunks_per_batch']} chunks per batch"
      f"{' (chosen for <= %d jobs)' % p['job_target'] if p['chunks_per_batch_auto'] else ''}"
      f" -> {p['batches']:,} batches of <= {p['objects_per_batch']:,} objects")
    w("")
    w("Snakemake jobs per rule:")
    for r, n in p["jobs"].items():
        if n:
            w(f"  {r:<18} {n:>9,}")
    w(f"  {'total':<18} {p['total_jobs']:>9,}"
      + ("" if p["total_jobs"] <= p["max_jobs"] else f"   (above the {p['max_jobs']:,} target!)"))
    s = p["slurm_submissions"]
    w(f"Slurm submissions: {s['no_array']:,} without arrays "
      f"({100 * p['submissions_per_chunk']:.2f}% of chunks); with --slurm-array-jobs "
      f"(limit {p['array_limit']}): {s['array_best']:,} best case, {s['array_worst']:,} worst case")
    w("")
    w(f"Compute (estimate only; {p['threads']} workers per estimate_batch job):")
    hdr = (f"  {'algorithm':<10} {'obj/s/core':>10} {'core-h Apollo':>14} {'wall Apollo':>12} "
           f"{'job Apollo':>11} {'core-h SDumont':>15} {'wall SDumont':>13}")
    w(hdr)
    for algo, e in p["per_algorithm"].items():
        a, sd = e["apollo"], e["sdumont"]
        flag = "" if e["measured"] else "*"
        w(f"  {algo:<10} {e['obj_per_s_core']:>9,.0f}{flag:1} {a['core_hours']:>14,.0f} "
          f"{_fmt_hours(a['wall_hours']):>12} {_fmt_hours(a['job_hours']):>11} "
          f"{sd['core_hours']:>15,.0f} {_fmt_hours(sd['wall_hours']):>13}")
    t = p["totals"]
    first = next(iter(p["per_algorithm"].values()), None)
    if first:
        w(f"  {'total':<10} {'':>10} {t['core_hours_apollo']:>14,.0f} "
          f"{_fmt_hours(t['wall_hours_apollo']):>12} {'':>11} {t['core_hours_sdumont']:>15,.0f} "
          f"{_fmt_hours(t['wall_hours_sdumont']):>13}")
        w(f"  cores: Apollo {first['apollo']['cores']:,}, Santos Dumont {first['sdumont']['cores']:,}; "
          "wall = core-h / cores x tail factor, algorithms run one after another;")
        w("  core-h include each worker's start (load_s) once per estimate_batch job;")
        w("  * = throughput not yet measured by the project's benchmark (resources/throughput.yaml)")
    w("")
    w("Storage:")
    for algo, e in p["per_algorithm"].items():
        w(f"  {algo:<10} {_fmt_bytes(e['storage_bytes']):>10} ({e['bytes_per_object']:.0f} B/object); "
          f"float64 PDFs would be {_fmt_bytes(e['storage_bytes_float64_pdf'])} "
          f"({e['bytes_per_object_float64_pdf']:.0f} B/object)")
    w(f"  {'total':<10} {_fmt_bytes(t['storage_bytes']):>10}; float64 PDFs: "
      f"{_fmt_bytes(t['storage_bytes_float64_pdf'])}")
    w(f"  partition (skinny photometry): {_fmt_bytes(t['partition_bytes'])}")
    c = p.get("collection") or {}
    if c.get("index_bytes"):
        w(f"  HATS collection: margin catalog {_fmt_bytes(c['margin_bytes'])} "
          f"({c['margin_rows']:,.0f} rows), objectId index {_fmt_bytes(c['index_bytes'])}; "
          f"{c['core_hours']:,.0f} core-hours for the margin and index jobs")
    w(f"  files: {t['output_files']:,} parquet (partition + estimates + release), "
      f"{t['metadata_records']:,} .snakemake/metadata records")
    if p.get("warnings"):
        w("")
        w("Warnings:")
        for msg in p["warnings"]:
            w(f"  - {msg}")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pzpipe.planning.plan", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--objects", type=float, help="number of objects (e.g. 40e9)")
    src.add_argument("--descriptor", help="CSV with columns path,nrows")
    ap.add_argument("--rows-per-file", type=float, default=None,
                    help="rows per input file (synthetic descriptor); default: one file")
    ap.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS)
    ap.add_argument("--chunks-per-batch", type=int, default=None,
                    help="default: smallest value giving <= --max-jobs jobs")
    ap.add_argument("--max-jobs", type=int, default=MAX_JOBS)
    ap.add_argument("--max-submission-fraction", type=float, default=0.01,
                    help="keep Slurm submissions (no arrays) below this fraction of chunks; 0: off")
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--throughput", default=str(THROUGHPUT_FILE))
    ap.add_argument("--cores-apollo", type=int, default=2032)
    ap.add_argument("--cores-sdumont", type=int, default=2400)
    ap.add_argument("--threads", type=int, default=28, help="workers per estimate_batch job")
    ap.add_argument("--job-limit-hours", type=float, default=12.0,
                    help="time limit of the estimate partition (Apollo cpu: 12)")
    ap.add_argument("--array-limit", type=int, default=ARRAY_LIMIT)
    ap.add_argument("--pdf-bytes", type=float, default=PDF_BYTES_COMPRESSED,
                    help="compressed PDF bytes per object")
    ap.add_argument("--hats", action="store_true",
                    help="the input is a HATS catalog (--rows-per-file = rows per pixel): "
                         "batches of whole pixels, and the release's margin and index jobs")
    ap.add_argument("--json", action="store_true", help="print JSON instead of a table")
    a = ap.parse_args(argv)
    p = plan(
        a.objects, descriptor=a.descriptor, rows_per_file=a.rows_per_file,
        chunk_rows=a.chunk_rows, chunks_per_batch=a.chunks_per_batch,
        algorithms=[x.strip() for x in a.algorithms.split(",") if x.strip()],
        throughput=a.throughput, cores_apollo=a.cores_apollo, cores_sdumont=a.cores_sdumont,
        threads=a.threads, max_jobs=a.max_jobs, job_limit_hours=a.job_limit_hours,
        max_submission_fraction=a.max_submission_fraction or None, array_limit=a.array_limit,
        pdf_bytes=a.pdf_bytes, hats=a.hats,
    )
    print(json.dumps(p, indent=2) if a.json else format_plan(p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
