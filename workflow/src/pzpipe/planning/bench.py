"""Benchmarks: pipeline vs bare RAIL on the same data, in the same run.

    python -m pzpipe.planning.bench [--algos a,b,...] [--rows N] [--repeats 3] [--out benchmarks/results]
                           [--merge] [--note TEXT]

Prints and writes (markdown + JSON):
1. throughput (objects/s per core) of the pipeline's estimate step (read partition ->
   estimate -> point estimates -> compress -> write) vs bare RAIL ``estimate`` on the
   same objects, as a ratio; 1 and 2 workers; one BLAS/OpenMP thread per worker;
   ``--repeats`` interleaved timings of each, medians (this VM varies by +-10-25%);
2. peak RSS of one worker estimating a chunk of ``--mem-rows`` objects (default 130,000);
3. stored PDF bytes/object and worst CDF error per algorithm;
4. for estimators whose module asks for it (``Algorithm.bench``): the pipeline with RAIL's
   own estimator (fast path off), and bare RAIL's runtime with magnitudes rounded to 4
   decimals vs not (interleaved repeats) with how far the point estimates move;
5. forecast wall time for a 40e9-object release on Apollo (2,032 slots).
Models come from ``results/models`` (run the pipeline first).
``--merge`` keeps the rows of the other estimators already in ``bench.json`` (to re-run
some estimators only); ``--note`` is stored with each row written (e.g. "shared machine").
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

from pzpipe.run.config import REPO_ROOT, deep_update, load_config  # noqa: E402

APOLLO_SLOTS = 2032
REFERENCE_MEM_MB_SLOT = 2140 * 1.048576  # 2,140 MiB per slot
REFERENCE_PDF_BYTES = (2400, 2800)      # 301 float64 values + overhead, per object
RELEASE_OBJECTS = 40e9


@functools.lru_cache(maxsize=1)
def _objects_per_worker() -> float:
    """Objects one worker estimates per estimate_batch job in the planner's 40e9 release
    (default estimators, its chunks_per_batch and threads)."""
    from pzpipe import algorithms
    from pzpipe.planning import plan

    p = plan.plan(objects=RELEASE_OBJECTS, algorithms=list(algorithms.default_names()))
    return p["objects_per_batch"] / max(1, p["threads"])


def _apollo_hours(obj_per_s_core: float, load_s: float | None = None) -> float:
    """The planner's 40e9 wall hours on Apollo (``load_s`` None: the planner's default
    for a throughput entry without ``load_s``)."""
    from pzpipe.planning import forecast, plan

    site = plan.load_throughput()["sites"]["apollo"]
    return forecast.release_wall_hours(RELEASE_OBJECTS, obj_per_s_core, site,
                                       load_s=forecast.DEFAULT_LOAD_S if load_s is None else load_s,
                                       objects_per_worker=_objects_per_worker())


def planner_rate(row: dict) -> float:
    """The obj/s/core the planner uses from a bench row: the steady 2-worker rate (a
    worker's start subtracted) where the row has one, else the 2-worker rate with it."""
    return row.get("pipeline_2w_steady_obj_s_per_core", row["pipeline_2w_obj_s_per_core"])


# objects per chunk of the start-up run (one chunk per worker): a worker's start is the
# time of a run of 2 such chunks (pool, model loading, a few objects, the write)
START_ROWS = 16


def _sample(cfg, n, seed=0):
    """n objects from the DC2 validation sample (replicated with new ids if n > 20,449)."""
    from pzpipe.stages.samples import read_sample

    d = read_sample(cfg, cfg["validation"])
    d.pop("redshift")
    return resample(d, n, seed)


def _write_partition(d, path, chunk_rows):
    """The sample as a partition file, written by the partition stage's writer."""
    import pyarrow as pa

    from pzpipe.stages.partition import sample_chunks, write_partition

    schema = pa.table({k: v[:0] for k, v in d.items()}).schema
    write_partition(path, schema, sample_chunks(d, schema, chunk_rows), {"batch": "b000000"})


def bare_rail(algo_name, model, cfg, d):
    """Bare RAIL: make_stage + estimate on a dict of numpy arrays, in memory."""
    from rail.core.data import DataStore

    from pzpipe import algorithms

    DataStore.allow_overwrite = True
    algo = algorithms.get(algo_name)
    _, est = algo.classes()
    params = algorithms.stage_params(algo, cfg, "estimate")
    params.pop("chunk_size", None)     # RAIL's default (in memory RAIL makes one call anyway)
    stage = est.make_stage(name=f"bare_{algo_name}_{time.time_ns()}", model=model,
                           output_mode="return", **params)
    # warm-up call (model loading, imports, caches) outside the timing: conservative
    # for the ratios, since the pipeline's timings include loading the model per worker
    stage.estimate({k: v[:50].copy() for k, v in d.items() if k != "flags"})
    data = {k: v.copy() for k, v in d.items() if k != "flags"}
    if algo.seed_global_rng:
        algorithms.seed_everything(1)
    t0 = time.perf_counter()
    stage.estimate(data)
    return time.perf_counter() - t0


def pipeline(algo_name, model, cfg, part, out, workers, fast=True):
    """Time of the pipeline's estimate step; ``fast=False``: with RAIL's own estimator."""
    from pzpipe.stages import estimate

    c = cfg if fast else deep_update(cfg, {"algorithms": {algo_name: {"fast": False}}})
    t0 = time.perf_counter()
    estimate.run_batch(algo_name, part, model, c, out, workers=workers)
    return time.perf_counter() - t0


def _mem_child(algo_name, model, cfg_path, rows):
    """Peak RSS (MB) of one worker estimating one chunk of ``rows`` objects."""
    code = f"""
import resource, sys, json, numpy as np
from pzpipe.run.config import load_config
from pzpipe.planning.bench import _sample
from pzpipe import algorithms
from pzpipe.stages.estimate import estimate_table
def hwm():
    # VmHWM: peak RSS of this process image (ru_maxrss would include the parent's
    # peak, which Linux carries over fork+exec)
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM:'):
            return int(line.split()[1])
cfg = load_config({str(cfg_path)!r})
d = _sample(cfg, {rows})
flags = d.pop('flags')
base = hwm()
r = algorithms.Runner(algorithms.get({algo_name!r}), {model!r}, cfg)
t = estimate_table(r, d, flags, 0, cfg['estimate']['pdf_bits'], cfg['estimate']['subchunk_rows'])
print(json.dumps(dict(peak_mb=hwm()/1024, base_mb=base/1024, rows=t.num_rows)))
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        return {"error": r.stderr[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _pdf_stats(algo_name, model, cfg, d):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pzpipe import algorithms
    from pzpipe.release import pdfstore

    r = algorithms.Runner(algorithms.get(algo_name), model, cfg)
    pdf, _ = r.estimate({k: v for k, v in d.items() if k != "flags"})
    z = r.zgrid
    arr = pdfstore.encode(pdf, z, bits=cfg["estimate"]["pdf_bits"])
    with tempfile.TemporaryDirectory() as td:
        p = os.path.join(td, "p.parquet")
        pq.write_table(pa.table({"pdf": arr}), p, compression="zstd")
        col_bytes = pq.ParquetFile(p).metadata.row_group(0).column(0).total_compressed_size
    dec = pdfstore.decode(arr, z)
    from pzpipe.release.pointest import normalise

    norm, bad = normalise(pdf, z)
    err = pdfstore.max_cdf_error(norm[~bad], dec[~bad], z)
    return {"bytes_per_object": col_bytes / len(pdf), "max_cdf_error": float(err.max()),
            "float64_bytes_per_object": 8 * pdf.shape[1]}


def rounding_ab(algo_name, model, cfg, d, repeats=3):
    """Bare RAIL on magnitudes rounded to 4 decimals vs raw: interleaved
    repeats (ABBA...), median times; and how much the point estimates move."""
    from pzpipe import algorithms
    from pzpipe.release.pointest import point_estimates

    d4 = {k: (np.round(v, 4).astype(v.dtype) if k.startswith("mag") else v) for k, v in d.items()}
    times = {"raw": [], "round4": []}
    for i in range(repeats):
        order = (("raw", d), ("round4", d4)) if i % 2 == 0 else (("round4", d4), ("raw", d))
        for key, data in order:
            times[key].append(bare_rail(algo_name, model, cfg, data))
    m = min(len(d["object_id"]), 5000)
    r = algorithms.Runner(algorithms.get(algo_name), model, cfg, name="rounding")
    pe = {}
    for key, data in (("raw", d), ("round4", d4)):
        pdf, _ = r.estimate({k: v[:m] for k, v in data.items() if k != "flags"})
        pe[key] = point_estimates(pdf, r.zgrid)[0]
    dz = np.abs(pe["round4"]["z_median"] - pe["raw"]["z_median"])
    dmode = pe["round4"]["z_mode"] != pe["raw"]["z_mode"]
    return {"rounding4_speedup": float(np.median(times["raw"]) / np.median(times["round4"])),
            "rounding4_times_raw_s": times["raw"], "rounding4_times_round4_s": times["round4"],
            "rounding4_max_abs_dz_median": float(dz.max()),
            "rounding4_frac_mode_changed": float(dmode.mean())}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--algos", default=None,
                    help="comma-separated estimators (default: those of the default run)")
    ap.add_argument("--rows", type=int, default=None, help="objects per algorithm (default per algo)")
    ap.add_argument("--chunk-rows", type=int, default=None)
    ap.add_argument("--mem-rows", type=int, default=130000)
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--repeats", type=int, default=3,
                    help="timings per algorithm (bare RAIL, 1 and 2 workers, interleaved); medians")
    ap.add_argument("--rounding-repeats", type=int, default=3,
                    help="interleaved timings of bare RAIL on rounded vs raw magnitudes")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other estimators' rows of an existing bench.json")
    ap.add_argument("--note", default=None, help="stored with each row (e.g. 'shared machine')")
    ap.add_argument("--models", default="results/models")
    ap.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results"))
    ap.add_argument("--no-update-throughput", dest="update_throughput", action="store_false",
                    help="do not write the measured figures into resources/throughput.yaml")
    args = ap.parse_args(argv)
    cfg_path = REPO_ROOT / "config" / "config.yaml"
    cfg = load_config(cfg_path)
    from pzpipe import algorithms

    algos = args.algos.split(",") if args.algos else list(algorithms.default_names())
    command = " ".join(["python -m pzpipe.planning.bench", *(argv or sys.argv[1:])])
    results = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
               "command": command + "   (make bench)", "algos": {}}
    os.makedirs(args.out, exist_ok=True)
    kept = {}
    if args.merge and os.path.exists(os.path.join(args.out, "bench.json")):
        with open(os.path.join(args.out, "bench.json")) as f:
            old = json.load(f)
        kept = {a: _migrate(r, old.get("command")) for a, r in old.get("algos", {}).items()
                if a not in algos}
        results["algos"].update(kept)
    with tempfile.TemporaryDirectory() as td:
        for a in algos:
            model = os.path.join(args.models, a, "model.pkl")
            if not os.path.exists(model):
                print(f"[{a}] no model at {model}: run the pipeline first (make run)", file=sys.stderr)
                continue
            spec = algorithms.get(a).bench
            n = args.rows or spec.get("rows", 20000)
            d = _sample(cfg, n)
            chunk = args.chunk_rows or max(1, n // 4)
            part = os.path.join(td, f"{a}.parquet")
            _write_partition(d, part, chunk)
            n0 = 2 * START_ROWS
            start_part = os.path.join(td, f"{a}_start.parquet")
            _write_partition({k: v[:n0] for k, v in d.items()}, start_part, START_ROWS)
            res = {"objects": n, "chunk_rows": chunk, "command": command}
            if args.note:
                res["note"] = args.note
            # repeats interleaved (bare, 1 worker, 2 workers, bare, ...): medians, so
            # that a slow moment of a shared machine does not decide a ratio. Each pipeline
            # timing has a twin on 2 chunks of START_ROWS objects: a worker's start.
            times = {"bare": [], "1w": [], "2w": [], "start_1w": [], "start_2w": []}
            # warm-up outside the timings, as for bare RAIL: compiled kernels (numba's
            # cache is rebuilt when a source file is newer than it) and imports
            pipeline(a, model, cfg, start_part, os.path.join(td, f"{a}_warm.parquet"), 1)
            for _ in range(args.repeats):
                times["bare"].append(bare_rail(a, model, cfg, d))
                for w in (1, 2):
                    times[f"start_{w}w"].append(pipeline(
                        a, model, cfg, start_part, os.path.join(td, f"{a}_s{w}.parquet"), w))
                    times[f"{w}w"].append(
                        pipeline(a, model, cfg, part, os.path.join(td, f"{a}_out{w}.parquet"), w))
            res["times_s"] = times
            res["bare_rail_obj_s"] = n / float(np.median(times["bare"]))
            for w in (1, 2):
                t = float(np.median(times[f"{w}w"]))
                t0 = float(np.median(times[f"start_{w}w"]))
                res[f"pipeline_{w}w_obj_s"] = n / t
                res[f"pipeline_{w}w_obj_s_per_core"] = n / t / w
                res[f"start_{w}w_s"] = t0
                # steady rate: the start taken out, as a production job (millions of
                # objects per worker) sees it; not when the start is most of the timing
                if t - t0 > 0.2 * t:
                    res[f"pipeline_{w}w_steady_obj_s"] = (n - n0) / (t - t0)
                    res[f"pipeline_{w}w_steady_obj_s_per_core"] = (n - n0) / (t - t0) / w
                else:
                    print(f"[{a}] {w} worker(s): the start ({t0:.2f} s) is most of the timing "
                          f"({t:.2f} s): no steady rate; raise --rows", file=sys.stderr)
            if "pipeline_2w_steady_obj_s" in res:
                res["load_s"] = res["start_2w_s"]   # one worker's start, both starting at once
            res["ratio_1w"] = res["pipeline_1w_obj_s"] / res["bare_rail_obj_s"]
            res["ratio_2w_per_core"] = res["pipeline_2w_obj_s_per_core"] / res["bare_rail_obj_s"]
            res["scaling_1_to_2"] = res["pipeline_2w_obj_s"] / res["pipeline_1w_obj_s"]
            for w, key in ((1, "ratio_1w_steady"), (2, "ratio_2w_per_core_steady")):
                if f"pipeline_{w}w_steady_obj_s_per_core" in res:
                    res[key] = res[f"pipeline_{w}w_steady_obj_s_per_core"] / res["bare_rail_obj_s"]
            if spec.get("rail_pipeline"):
                t = pipeline(a, model, cfg, part, os.path.join(td, f"{a}_rail.parquet"), 1,
                             fast=False)
                res["pipeline_rail_1w_obj_s"] = n / t
                res["fast_speedup_vs_bare_rail"] = res["pipeline_1w_obj_s"] / res["bare_rail_obj_s"]
            res.update(_pdf_stats(a, model, cfg, {k: v[:min(n, 5000)] for k, v in d.items()}))
            if spec.get("rounding"):
                res.update(rounding_ab(a, model, cfg, d, repeats=args.rounding_repeats))
            if not args.skip_memory:
                res["memory"] = _mem_child(a, model, cfg_path, args.mem_rows)
            # the one forecast model (pzpipe.planning.forecast, resources/throughput.yaml's apollo
            # site: core_speed, cores, tail_factor), as `python -m pzpipe.planning.plan` uses it
            res["forecast_40e9_apollo_hours"] = _apollo_hours(planner_rate(res), res.get("load_s"))
            results["algos"][a] = res
            with open(os.path.join(args.out, "bench.json"), "w") as f:   # partial results
                json.dump(results, f, indent=2)
            print(f"[{a}] " + json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                          for k, v in res.items()}), flush=True)
    if args.update_throughput:
        update_throughput(results, REPO_ROOT / "resources" / "throughput.yaml")
    report = to_markdown(results)
    print(report)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(results, f, indent=2)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(report)
    return results


def update_throughput(results: dict, path) -> None:
    """Write measured obj/s/core (pipeline, 2 workers: every core busy, as in a run;
    ``planner_rate``), a worker's start (``load_s``, where measured) and peak RSS into
    throughput.yaml, keeping its comments (line edits inside each algorithm's block)."""
    import re

    text = Path(path).read_text()
    for algo, r in results["algos"].items():
        m = re.search(rf"^  {algo}:\n((?:    .*\n|\s*#.*\n)*)", text, flags=re.M)
        if not m:
            continue
        block = m.group(1)
        new = re.sub(r"(obj_per_s_core:\s*)[0-9.]+", lambda g: f"{g.group(1)}{planner_rate(r):.0f}",
                     block)
        if "load_s" in r:
            if re.search(r"^    load_s:", new, flags=re.M):
                new = re.sub(r"(^    load_s:\s*)[0-9.]+", lambda g: f"{g.group(1)}{r['load_s']:.2f}",
                             new, flags=re.M)
            else:
                new = re.sub(r"(^    obj_per_s_core:.*\n)",
                             lambda g: g.group(1) + f"    load_s: {r['load_s']:.2f}\n", new,
                             count=1, flags=re.M)
        mem = r.get("memory", {})
        if "peak_mb" in mem and mem.get("rows", 0) >= 130000:
            new = re.sub(r"(mem_mb_per_worker:\s*)[0-9.]+", lambda g: f"{g.group(1)}{mem['peak_mb']:.0f}", new)
        new = re.sub(r"(measured:\s*)\w+", r"\1true", new)
        text = text[:m.start(1)] + new + text[m.end(1):]
    text = re.sub(r"^source: >-\n(?:  .*\n)+",
                  "source: >-\n  measured by `python -m pzpipe.planning.bench` (benchmarks/results/bench.md):\n"
                  "  pipeline estimate step, 2 workers on 2 cores (per core), one BLAS thread,\n"
                  "  DC2 validation objects.\n",
                  text, count=1, flags=re.M)
    Path(path).write_text(text)


def _migrate(row: dict, command: str | None) -> dict:
    """A row kept from an earlier bench.json: key names of older versions, its command."""
    import re

    out = {}
    for k, v in row.items():
        k = re.sub(r"^pipeline_rail_\w+_1w_obj_s$", "pipeline_rail_1w_obj_s", k)
        k = re.sub(r"^fast_\w+_speedup_vs_bare_rail$", "fast_speedup_vs_bare_rail", k)
        out[k] = v
    out.setdefault("command", command)
    if isinstance(out.get("command"), str):      # the module's name before the house plan
        out["command"] = re.sub(r"-m pzpipe\.bench\b", "-m pzpipe.planning.bench",
                                out["command"])
    return out


def to_markdown(results) -> str:
    from pzpipe import algorithms

    reps = max((len(r.get("times_s", {}).get("bare", [])) for r in results["algos"].values()),
               default=1)
    commands = list(dict.fromkeys(r.get("command") or results["command"]
                                  for r in results["algos"].values())) or [results["command"]]
    lines = [f"# Benchmark ({results['machine']['cpus']} cores, Python {results['machine']['python']})",
             "", "Command" + ("s" if len(commands) > 1 else "") + ": "
             + "; ".join(f"`{c}`" for c in commands), "",
             f"Throughputs are medians of {reps} interleaved timings (bare RAIL, pipeline with 1 "
             "and 2 workers) on the same objects; one BLAS/OpenMP thread per worker; ratios "
             "are pipeline / bare RAIL per core (bare RAIL's timing leaves out its model "
             "loading). Rows with a \"start\" figure: each pipeline timing has a twin on 2 "
             f"chunks of {START_ROWS} objects (pool, each worker's model loading, the write), "
             "and the rates and ratios are steady ones, that start taken out, as a production "
             "job (millions of objects per worker) sees them; the planner charges the start "
             "(`load_s`) once per worker per job. Rows without it (measured before) include "
             "the start in their rates. \"40e9 on Apollo\" is the planner's forecast "
             "(pzpipe.planning.forecast.release_wall_hours, as `python -m pzpipe.planning.plan --objects 40e9` "
             "prints it): the 2-worker per-core rate, Apollo's core_speed, cores and tail "
             "factor from resources/throughput.yaml; \"reference\" is LIneA's own forecast "
             "for its production code.", "",
             "| algo | objects | bare RAIL obj/s | pipeline 1w obj/s | ratio 1w | 2w obj/s/core | "
             "ratio 2w/core | 1->2 scaling | start s (2w) | peak RSS MB (rows) | PDF B/obj | "
             "max CDF err | 40e9 on Apollo (h) | reference (h) |",
             "|" + "---|" * 14]
    extra = []
    for a, r in results["algos"].items():
        spec = algorithms.REGISTRY[a].bench if a in algorithms.REGISTRY else {}
        mem = r.get("memory", {})
        mem_s = f"{mem.get('peak_mb', float('nan')):.0f} ({mem.get('rows', '-')})" if mem else "-"
        steady = "pipeline_2w_steady_obj_s_per_core" in r
        one = r.get("pipeline_1w_steady_obj_s", r["pipeline_1w_obj_s"])
        two = planner_rate(r)
        bare = r["bare_rail_obj_s"]
        start = f"{r['load_s']:.2f}" if steady else "-"
        lines.append(
            f"| {a} | {r['objects']} | {bare:.0f} | {one:.0f} | {one / bare:.2f} | {two:.0f} | "
            f"{two / bare:.2f} | {2 * two / one:.2f} | {start} | {mem_s} | "
            f"{r['bytes_per_object']:.1f} | {r['max_cdf_error']:.2e} | "
            f"{_apollo_hours(two, r.get('load_s')):.1f} | {spec.get('reference_hours', '-')} |")
        if steady:
            extra.append(f"- {a}: with each worker's start inside the timings: "
                         f"{r['pipeline_1w_obj_s']:.0f} obj/s on 1 worker, "
                         f"{r['pipeline_2w_obj_s_per_core']:.0f} obj/s/core on 2 "
                         f"(start {r['start_1w_s']:.2f} s / {r['start_2w_s']:.2f} s).")
        if r.get("note"):
            extra.append(f"- {a}: {r['note']} (`{r.get('command')}`).")
        if "fast_speedup_vs_bare_rail" in r:
            extra.append(f"- {a}: pzpipe's fast path at {r['pipeline_1w_obj_s']:.0f} obj/s (1 worker, "
                         f"start included) vs bare "
                         f"RAIL {r['bare_rail_obj_s']:.0f} obj/s: x{r['fast_speedup_vs_bare_rail']:.1f}; "
                         f"the pipeline with RAIL's own estimator: "
                         f"{r['pipeline_rail_1w_obj_s']:.0f} obj/s.")
        if "rounding4_speedup" in r:
            extra.append(f"- {a} (bare RAIL) with magnitudes rounded to 4 decimals: x"
                         f"{r['rounding4_speedup']:.2f} speed vs unrounded (median of "
                         f"{len(r['rounding4_times_raw_s'])} interleaved runs each); z_median moves "
                         f"by at most {r['rounding4_max_abs_dz_median']:.2g}, z_mode changes for "
                         f"{100 * r['rounding4_frac_mode_changed']:.2f}% of objects.")
        if spec.get("reference_obj_s_slot"):
            extra.append(f"- {a} per core: {r['pipeline_1w_obj_s']:.0f} obj/s (1 worker), "
                         f"{r['pipeline_2w_obj_s_per_core']:.0f} obj/s/core (2 workers) vs the "
                         f"reference production's {spec['reference_obj_s_slot']} obj/s per slot.")
    mems = {a: r["memory"]["peak_mb"] for a, r in results["algos"].items()
            if "peak_mb" in r.get("memory", {})}
    if mems:
        worst = max(mems, key=mems.get)
        extra.append(f"- Peak RSS per worker: at most {mems[worst]:.0f} MB ({worst}) vs the "
                     f"reference's {REFERENCE_MEM_MB_SLOT:.0f} MB (2,140 MiB) per slot; goal 2,000 MB.")
    pdf = [r["bytes_per_object"] for r in results["algos"].values()]
    tib = sum(pdf) * RELEASE_OBJECTS / 2**40
    extra.append(f"- Stored PDFs: {np.mean(pdf):.1f} B/object on average over the algorithms "
                 f"(float64 on 301 points: 2,408 B; reference {REFERENCE_PDF_BYTES[0]:,}-"
                 f"{REFERENCE_PDF_BYTES[1]:,} B): {tib:.1f} TiB for all {len(pdf)} algorithms on "
                 f"40e9 objects (the reference: ~88 TiB).")
    return "\n".join(lines + [""] + extra) + "\n"


# RAIL's stage parameters for the DC2 example files that pz-rail-base ships
# (examples_data/testdata/test_dc2_*_9816.hdf5): used by the benchmarks and the tests
# that call RAIL directly on those files
DC2_BANDS = "ugrizy"
DC2_RAIL_PARAMS = dict(
    bands=[f"mag_{b}_lsst" for b in DC2_BANDS],
    err_bands=[f"mag_err_{b}_lsst" for b in DC2_BANDS],
    ref_band="mag_i_lsst", nondetect_val=99.0, zmin=0.0, zmax=3.0, nzbins=301,
    hdf5_groupname="", id_col="object_id", redshift_col="redshift",
)


def resample(d: dict[str, np.ndarray], n: int, seed: int = 0,
             id_col: str = "object_id") -> dict[str, np.ndarray]:
    """``n`` rows of ``d`` in a seeded random order, the whole sample repeated (each
    repeat in a new order) when ``n`` exceeds it, with new ids 1..n in ``id_col``."""
    m = len(d[id_col])
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.permutation(m) for _ in range(int(np.ceil(n / m)))])[:n]
    out = {k: v[idx] for k, v in d.items()}
    out[id_col] = np.arange(1, n + 1, dtype=np.int64)
    return out


if __name__ == "__main__":
    main()
