#!/usr/bin/env python
"""Release rehearsal: N synthetic objects through the whole pipeline, measured per stage,
next to the planner's forecast for exactly that input (issue #13).

    python benchmarks/rehearsal.py run --objects 1e6 --label local-1e6
    python benchmarks/rehearsal.py run --objects 1e7 --label local-1e7
    python benchmarks/rehearsal.py run --objects 1e6 --label slurm-1e6 --profile profiles/ci-slurm
    python benchmarks/rehearsal.py run --objects 1e7 --label kill-1e7 --kill estimate,export \\
        --compare local-1e7
    python benchmarks/rehearsal.py calibrate --label local-1e6   # stage costs -> throughput.yaml
    python benchmarks/rehearsal.py report                        # rehearsal.md from rehearsal.json

``run``: writes a synthetic Rubin-like HATS Object catalog (pzpipe.planning.synth: DC2 galaxies
resampled, fluxes re-drawn from their errors, deterministic from the seed) under
``--workdir``, a config overlay (the catalog, ``--algos``, ``--chunks-per-batch``), then
(1) the planner's forecast (pzpipe.planning.forecast, costs from resources/throughput.yaml),
(2) a dry run (Snakemake's planning time), (3) the run, timed, and collects per stage:
wall span, summed job time, objects/s per core, peak memory per job, files written,
bytes on disk per object, and Snakemake's own overhead (planning; per job: process
start-up and workflow parsing). With ``--kill``, the run is SIGKILLed (the whole
process group) once during each named phase and resumed (``--unlock``, same command);
``--compare LABEL`` then compares the release with that run's, byte for byte.

Results are merged into benchmarks/results/rehearsal.json under ``--label``;
``report`` writes benchmarks/results/rehearsal.md.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "src"))
RESULTS_JSON = REPO / "benchmarks" / "results" / "rehearsal.json"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
STAGES = ("prepare_data", "train", "partition_batch", "estimate_batch", "validate_estimate",
          "validate", "export_batch", "export_dedup", "export")


# ----------------------------------------------------------------------------- set-up
def make_catalog(out: Path, n: int, rows_per_pixel: int, seed: int) -> dict:
    from pzpipe.planning import synth

    t0 = time.perf_counter()
    info = synth.write_catalog(out, n, seed=seed, rows_per_pixel=rows_per_pixel)
    info["wall_s"] = time.perf_counter() - t0
    return info


def write_overlay(path: Path, catalog: Path, algos: list[str], cpb: int, label: str,
                  workers: int) -> None:
    from pzpipe.run.config import load_config

    base = load_config(REPO / "config" / "config.yaml")
    # the release name is part of the release (properties, manifest): it depends on the
    # input only, so that runs of the same input (e.g. with and without kills) compare
    over = {"release": "rehearsal-" + catalog.name.replace("+", ""),
            "inputs": {"hats": str(catalog), "files": []},
            "batch": {"chunks_per_batch": cpb},
            "estimate": {"workers": workers},
            "algorithms": {a: {"enabled": a in algos} for a in base["algorithms"]}}
    path.write_text(yaml.safe_dump(over, sort_keys=False))


def load_cfg(overlay: Path) -> dict:
    from pzpipe.run.config import deep_update, validate_config

    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    return validate_config(deep_update(raw, yaml.safe_load(overlay.read_text())))


def smk_cmd(wd: Path, overlay: Path, profile: str, *extra) -> list[str]:
    return [*SNAKEMAKE, "-s", str(REPO / "workflow" / "Snakefile"), "--directory", str(wd),
            "--profile", str(REPO / profile), *extra, "--configfile", str(overlay)]


# ----------------------------------------------------------------------------- forecast
def do_forecast(cfg: dict, algos: list[str], cores: int, throughput=None) -> dict:
    from pzpipe.planning import forecast, plan
    from pzpipe.run.layout import make_layout

    lay = make_layout(cfg)
    tp = plan.load_throughput(throughput)
    # the synthetic catalog's detect_isPrimary cut removes ~1% of the rows
    kept = 1.0 - 0.01 if cfg["partition"]["cuts"]["require_true"] else 1.0
    return forecast.forecast(lay, cfg, algos, tp, cores=cores, site="local",
                             validation_rows=20449, kept_fraction=kept)


# ----------------------------------------------------------------------------- run
def _run(cmd, log: Path, kill_when=None) -> tuple[int, float, bool]:
    """Run ``cmd`` in its own process group; SIGKILL the group when ``kill_when()``
    becomes true. Returns (exit code, seconds, killed)."""
    t0 = time.perf_counter()
    with open(log, "a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        killed = False
        while proc.poll() is None:
            time.sleep(0.5)
            if kill_when is not None and kill_when():
                os.killpg(proc.pid, signal.SIGKILL)
                killed = True
                proc.wait()
                break
    return proc.returncode, time.perf_counter() - t0, killed


def _logs(wd: Path, rule: str) -> list[Path]:
    d = wd / "logs" / rule
    if d.is_dir():
        return list(d.rglob("*.log"))
    return [p for p in [wd / "logs" / f"{rule}.log"] if p.exists()]


def _done_logs(wd: Path, rule: str) -> int:
    n = 0
    for p in _logs(wd, rule):
        try:
            if " done " in p.read_text():
                n += 1
        except OSError:
            pass
    return n


def _running_logs(wd: Path, rule: str) -> int:
    """Jobs of ``rule`` whose log has its start line and not yet its done line."""
    n = 0
    for p in _logs(wd, rule):
        try:
            text = p.read_text()
        except OSError:
            continue
        if " start " in text and " done " not in text:
            n += 1
    return n


def kill_condition(wd: Path, phase: str, n_estimate: int):
    if phase == "estimate":      # half the estimate jobs done, others running
        return lambda: _done_logs(wd, "estimate_batch") >= max(1, n_estimate // 2)
    if phase == "export":        # every estimate done, an export job running
        return lambda: (_done_logs(wd, "estimate_batch") >= n_estimate
                        and any(_running_logs(wd, r) for r in ("export_batch", "export_dedup",
                                                               "export")))
    raise ValueError(f"unknown phase {phase!r} (estimate, export)")


# ----------------------------------------------------------------------------- collect
TS = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
LOGLINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO pzpipe\.job: (start|done) (\S+)"
                     r"(?: in ([\d.]+) s \(peak_rss_mb=(\d+) child_peak_rss_mb=(\d+)\))?")


def parse_snakemake_logs(wd: Path) -> dict[str, dict]:
    """Job start/end times (s) from Snakemake's own logs, keyed by the job's log path."""
    jobs: dict[str, dict] = {}
    for f in sorted((wd / ".snakemake" / "log").glob("*.snakemake.log")):
        cur_ts = None
        pending = {}          # jobid -> job dict
        rule = None
        block = {}
        for line in f.read_text().splitlines():
            m = TS.match(line.strip())
            if m:
                cur_ts = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y").timestamp()
                continue
            s = line.strip()
            if re.match(r"^(local)?(rule|checkpoint) \w+:$", s):
                rule = s.split()[-1].rstrip(":")
                block = {"rule": rule, "start": cur_ts}
                continue
            if block and s.startswith("log: "):
                block["log"] = s[5:].split(",")[0].strip()
            elif block and s.startswith("jobid: "):
                pending[s[7:].strip()] = block
                block = {}
            m2 = re.match(r"^Finished jobid: (\d+)", s)
            if m2 and m2.group(1) in pending:
                b = pending.pop(m2.group(1))
                b["end"] = cur_ts
                if "log" in b:
                    jobs[b["log"]] = b
    return jobs


def parse_job_log(path: Path) -> dict:
    out = {}
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        m = LOGLINE.match(line)
        if not m:
            continue
        ts = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m.group(2) == "start":
            out["body_start"] = ts
        else:
            out["body_end"] = ts
            out["body_s"] = float(m.group(4))
            out["peak_rss_mb"] = int(m.group(5))
            out["child_peak_rss_mb"] = int(m.group(6))
    return out


def dir_stats(root: Path) -> tuple[int, int]:
    files = [p for p in root.rglob("*") if p.is_file()] if root.exists() else []
    return len(files), sum(p.stat().st_size for p in files)


def collect(wd: Path, cfg: dict, algos: list[str], n_objects: int, workers: int) -> dict:
    smk = parse_snakemake_logs(wd)
    per = defaultdict(list)
    for log, j in smk.items():
        info = parse_job_log(wd / log)
        j.update(info)
        per[j["rule"]].append(j)
    out_rows = json.loads((wd / "results" / "release" / "conservation.json").read_text())["objects_out"]
    stages = {}
    for rule in STAGES:
        js = [j for j in per.get(rule, []) if "body_s" in j]
        if not js:
            continue
        threads = workers if rule in ("estimate_batch", "validate_estimate") else 1
        body = sum(j["body_s"] for j in js)
        st = {"jobs": len(js), "threads_per_job": threads,
              "span_s": max(j["end"] for j in js) - min(j["start"] for j in js),
              "job_body_s_sum": body,
              "job_wall_s_sum": sum(j["end"] - j["start"] for j in js),
              "max_job_peak_rss_mb": max(j["peak_rss_mb"] for j in js),
              "max_worker_peak_rss_mb": max(j["child_peak_rss_mb"] for j in js),
              # a job's memory: its process + its worker processes at their peaks
              "max_job_total_rss_mb": max(j["peak_rss_mb"] + (threads if threads > 1 else 0)
                                          * j["child_peak_rss_mb"] for j in js)}
        objs = {"partition_batch": n_objects, "export_batch": out_rows}.get(rule)
        if rule == "estimate_batch":
            objs = out_rows * len(algos)
        if objs:
            st["objects"] = objs
            # job logs give seconds to 0.1 s: a tiny run's job can log 0.0 s (no rate then)
            if body > 0:
                st["obj_per_s_per_core"] = objs / (body * threads)
            st["us_per_object_per_core"] = 1e6 * body * threads / objs
        if rule == "train":
            st["per_algorithm"] = {Path(j["log"]).stem: {"job_body_s": j["body_s"]} for j in js}
        if rule == "estimate_batch":
            st["per_algorithm"] = {}
            for a in algos:
                ja = [j for j in js if f"/{a}/" in j["log"]]
                b = sum(j["body_s"] for j in ja)
                st["per_algorithm"][a] = {"jobs": len(ja), "job_body_s_sum": b}
                if b > 0:
                    st["per_algorithm"][a]["obj_per_s_per_core"] = out_rows / (b * threads)
        overhead = [(j["end"] - j["start"]) - j["body_s"] for j in js]
        st["job_overhead_s_median"] = sorted(overhead)[len(overhead) // 2]
        stages[rule] = st
    files = {}
    for name, sub in (("partition", "partition"), ("estimates", "estimates"),
                      ("export_batches", "export/batches"), ("release", "release"),
                      ("models", "models")):
        n, b = dir_stats(wd / "results" / sub)
        files[name] = {"files": n, "bytes": b, "bytes_per_object": b / max(1, out_rows)}
    all_jobs = [j for v in per.values() for j in v if "start" in j and "end" in j]
    first = min(j["start"] for j in all_jobs)
    # the stages whose work grows with the input (per batch or per id), in core-seconds
    # (job wall, overheads included) per object: what must not grow from 1e6 to 1e7
    scaling = {r: sum(j["end"] - j["start"] for j in per.get(r, []) if "end" in j)
               * (workers if r == "estimate_batch" else 1)
               for r in ("partition_batch", "estimate_batch", "export_batch", "export_dedup")}
    return {"stages": stages, "files": files, "objects_out": out_rows,
            "core_us_per_object_scaling_stages": 1e6 * sum(scaling.values()) / max(1, out_rows),
            "core_us_per_object_by_stage": {r: 1e6 * v / max(1, out_rows) for r, v in scaling.items()},
            "first_job_start": first, "last_job_end": max(j["end"] for j in all_jobs),
            "job_overhead_s_median_all": sorted(
                (j["end"] - j["start"]) - j["body_s"] for j in all_jobs if "body_s" in j)[
                len([j for j in all_jobs if "body_s" in j]) // 2]}


def tree_digest(root: Path) -> dict[str, str]:
    from pzpipe.run.provenance import sha256_file

    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.name != ".snakemake_timestamp":
            out[str(p.relative_to(root))] = sha256_file(p)
    return out


# ----------------------------------------------------------------------------- commands
def cmd_run(a) -> int:
    from pzpipe import algorithms

    algos = a.algos.split(",") if a.algos != "default" else list(algorithms.default_names())
    n = int(float(a.objects))
    wd = Path(a.workdir) / a.label
    if wd.exists() and not a.keep:
        shutil.rmtree(wd)
    wd.mkdir(parents=True, exist_ok=True)
    cat = Path(a.workdir) / f"catalog-{n:.0e}-s{a.seed}"
    rec = {"label": a.label, "objects": n, "algorithms": algos, "profile": a.profile,
           "workers_per_job": a.workers, "chunks_per_batch": a.chunks_per_batch,
           "host": platform.node(), "cores": os.cpu_count(),
           "date": time.strftime("%Y-%m-%d %H:%M"),
           "command": "python benchmarks/rehearsal.py " + " ".join(sys.argv[1:])}
    if not (cat / "properties").exists():
        rec["catalog"] = make_catalog(cat, n, int(float(a.rows_per_pixel)), a.seed)
    overlay = wd / "rehearsal.yaml"
    write_overlay(overlay, cat, algos, a.chunks_per_batch, a.label, a.workers)
    cfg = load_cfg(overlay)
    cores = a.cores or os.cpu_count()
    from pzpipe.planning import plan

    tp = plan.load_throughput()
    fc = do_forecast(cfg, algos, cores, tp)
    rec["forecast_bench_rates"] = fc
    rec["forecast_s_bench_rates"] = fc["wall_s"]
    if a.rates_from:
        # the estimators' objects/s per core measured by an earlier run on objects of the
        # same kind (the benchmark's figures are for the DC2 validation sample; the cost
        # per object depends on the objects): the forecast then tests the model (jobs,
        # schedule, overheads, stage costs), not how representative the benchmark is
        ref = json.loads(Path(a.results).read_text())[a.rates_from]
        rates = {al: s["obj_per_s_per_core"]
                 for al, s in ref["stages"]["estimate_batch"]["per_algorithm"].items()
                 if "obj_per_s_per_core" in s}
        missing = sorted(set(algos) - set(rates))
        if missing:
            raise SystemExit(f"--rates-from {a.rates_from}: no rate for {missing}")
        tp = json.loads(json.dumps(tp))
        for al in algos:
            tp["algorithms"][al]["obj_per_s_core"] = rates[al]
            tp["algorithms"][al]["load_s"] = 0.0   # in the measured rate (job body / objects)
        rec["rates_from"] = {"label": a.rates_from, "obj_per_s_core": rates}
        fc = do_forecast(cfg, algos, cores, tp)
    rec["forecast"] = fc
    rec["forecast_s"] = fc["wall_s"]
    # Snakemake's planning time: a dry run of the same DAG
    t0 = time.perf_counter()
    dr = subprocess.run(smk_cmd(wd, overlay, a.profile, "-n", "--quiet", "rules"),
                        capture_output=True, text=True)
    rec["snakemake_dry_run_s"] = time.perf_counter() - t0
    if dr.returncode != 0:
        print(dr.stdout[-3000:], dr.stderr[-3000:])
        return 1
    cmd = smk_cmd(wd, overlay, a.profile, "--cores", str(cores))
    log = wd / "rehearsal-snakemake.out"
    phases = [p for p in (a.kill or "").split(",") if p]
    n_est = len(algos) * __import__("pzpipe.run.layout", fromlist=["x"]).make_layout(cfg).n_batches
    total, kills = 0.0, []
    for ph in phases:
        rc, secs, killed = _run(cmd, log, kill_condition(wd, ph, n_est))
        total += secs
        kills.append({"phase": ph, "after_s": secs, "killed": killed, "rc": rc})
        subprocess.run(smk_cmd(wd, overlay, a.profile, "--unlock"), capture_output=True)
    rc, secs, _ = _run(cmd + ["--rerun-incomplete"] if phases else cmd, log)
    total += secs
    rec["measured_s"] = total
    rec["exit_code"] = rc
    if kills:
        rec["kills"] = kills
    if rc != 0:
        print(log.read_text()[-5000:])
        return rc
    rec.update(collect(wd, cfg, algos, n, a.workers))
    rec["forecast_over_measured"] = rec["forecast_s"] / rec["measured_s"]
    rec["seconds_per_object"] = rec["measured_s"] / n
    rec["max_job_peak_rss_mb"] = max(s["max_job_total_rss_mb"] for s in rec["stages"].values())
    rec["release_digest"] = tree_digest(wd / "results" / "release")
    if a.compare:
        ref = json.loads(Path(a.results).read_text())[a.compare]["release_digest"]
        diff = sorted(k for k in set(ref) | set(rec["release_digest"])
                      if ref.get(k) != rec["release_digest"].get(k))
        rec["compare"] = {"with": a.compare, "identical": not diff, "different_files": diff[:20],
                          "files": len(ref)}
    res = Path(a.results)
    data = json.loads(res.read_text()) if res.exists() else {}
    data[a.label] = rec
    res.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(json.dumps({k: rec[k] for k in ("label", "objects", "forecast_s", "measured_s",
                                          "forecast_over_measured", "max_job_peak_rss_mb")
                      if k in rec}, indent=1))
    if not a.keep_results:
        for sub in ("estimates", "partition", "export"):
            shutil.rmtree(wd / "results" / sub, ignore_errors=True)
    return 0


def cmd_calibrate(a) -> int:
    """Stage costs measured by a run -> resources/throughput.yaml ``stages``."""
    rec = json.loads(Path(a.results).read_text())[a.label]
    st = rec["stages"]
    n_alg = len(rec["algorithms"])
    path = Path(a.throughput)
    text = path.read_text()
    tp = yaml.safe_load(text)
    eb = st["export_batch"]
    stages = {
        "job_overhead_s": round(rec["job_overhead_s_median_all"], 2),
        "partition_us": round(st["partition_batch"]["us_per_object_per_core"], 3),
        # split evenly between a base and a per-estimator part (one run cannot separate them)
        "export_batch_us": round(eb["us_per_object_per_core"] / (n_alg + 1), 3),
        "export_batch_us_per_algo": round(eb["us_per_object_per_core"] / (n_alg + 1), 3),
        "dedup_ns_per_id": round(1e9 * st["export_dedup"]["job_body_s_sum"] / rec["objects_out"], 1),
        "export_s": round(st["export"]["job_body_s_sum"], 2),
        "validate_s": round(st.get("validate", {}).get("job_body_s_sum", 20), 1),
        "prepare_data_s": round(st.get("prepare_data", {}).get("job_body_s_sum", 5), 1),
        "source": f"benchmarks/rehearsal.py calibrate --label {a.label} ({rec['date']})",
    }
    tp["stages"] = stages
    text = text.split("\nstages:")[0].rstrip() + "\n" + yaml.safe_dump({"stages": stages},
                                                                       sort_keys=False)
    # each estimator's training time (the default training sample), in its block
    for al, t in st["train"].get("per_algorithm", {}).items():
        m = re.search(rf"^  {al}:\n((?:    .*\n|\s*#.*\n)*)", text, flags=re.M)
        if not m:
            continue
        block = m.group(1)
        line = f"    train_s: {t['job_body_s']:.1f}   # {stages['source']}\n"
        if re.search(r"^    train_s:.*\n", block, flags=re.M):
            block = re.sub(r"^    train_s:.*\n", line, block, flags=re.M)
        else:
            block = re.sub(r"(^    obj_per_s_core:.*\n)", lambda g: g.group(1) + line, block,
                           count=1, flags=re.M)
        text = text[:m.start(1)] + block + text[m.end(1):]
    path.write_text(text)
    print(yaml.safe_dump({"stages": stages}, sort_keys=False))
    return 0


def cmd_report(a) -> int:
    data = json.loads(Path(a.results).read_text())
    L = ["# Release rehearsal", "",
         "Synthetic Rubin-like HATS Object catalogs (pzpipe.planning.synth) through the whole pipeline "
         "on the 2-core reference machine; the forecast is pzpipe.planning.forecast's for exactly that "
         "input with the costs in resources/throughput.yaml. Commands below each table.", "",
         "Protocol: `local-1e6` is the calibration run (`rehearsal.py calibrate --label "
         "local-1e6` wrote its stage costs and training times into resources/throughput.yaml); "
         "`local-1e7` was then forecast from those and from the estimator rates measured in "
         "`local-1e6` (`--rates-from local-1e6`), before it ran: its forecast/measured is the "
         "check of the model (goal 0.8-1.25). \"Forecast with the benchmark's rates\" uses "
         "bench.md's rates (DC2 validation objects) instead: it shows how much the cost per "
         "object depends on the objects. \"Core-s per 1e6 objects (stages that scale)\": job "
         "time x cores of partition, estimate, export_batch and export_dedup per 1e6 objects "
         "(goal: within 10% from 1e6 to 1e7). `-cold` and `-first` runs are kept for what "
         "they showed (notes below).", ""]
    L += ["| run | objects | estimators | profile | forecast (rates) | measured | forecast/measured | "
          "forecast with the benchmark's rates (/measured) | "
          "s per 1e6 objects | core-s per 1e6 objects (stages that scale) | max job peak RSS | "
          "release bytes/object |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for k, r in data.items():
        if "measured_s" not in r or r.get("exit_code"):
            continue
        fb = r.get("forecast_s_bench_rates", r["forecast_s"])
        if r.get("kills"):   # the time of a run with kills is not a forecast's to match
            L.append(f"| {k} | {r['objects']:,} | {len(r['algorithms'])} | "
                     f"{Path(r['profile']).name} | - | {r['measured_s']:.0f} s (killed "
                     f"{len(r['kills'])}x, resumed) | - | - | - | "
                     f"{r.get('core_us_per_object_scaling_stages', float('nan')):.0f} | "
                     f"{r['max_job_peak_rss_mb']:,} MB | "
                     f"{r['files']['release']['bytes_per_object']:.0f} |")
            continue
        L.append(f"| {k} | {r['objects']:,} | {len(r['algorithms'])} | {Path(r['profile']).name} | "
                 f"{r['forecast_s']:.0f} s ({r.get('rates_from', {}).get('label', 'benchmark')}) | "
                 f"{r['measured_s']:.0f} s | "
                 f"{r['forecast_over_measured']:.2f} | {fb:.0f} s ({fb / r['measured_s']:.2f}) | "
                 f"{1e6 * r['seconds_per_object']:.0f} | "
                 f"{r.get('core_us_per_object_scaling_stages', float('nan')):.0f} | "
                 f"{r['max_job_peak_rss_mb']:,} MB | "
                 f"{r['files']['release']['bytes_per_object']:.0f} |")
    for k, r in data.items():
        if "stages" not in r:
            continue
        L += ["", f"## {k}", "", f"`{r['command']}` ({r['date']}, {r['cores']} cores)", ""]
        if r.get("note"):
            L += [f"Note: {r['note']}.", ""]
        if r.get("rates_from"):
            L += ["Forecast with the estimators' objects/s per core measured in "
                  f"`{r['rates_from']['label']}`: " + ", ".join(
                      f"{al} {v:,.0f}" for al, v in r["rates_from"]["obj_per_s_core"].items())
                  + " (the benchmark's figures are for the DC2 validation objects).", ""]
        L += [
              f"Snakemake: dry run (planning) {r['snakemake_dry_run_s']:.1f} s; median per-job "
              f"overhead (process start, workflow parse) {r['job_overhead_s_median_all']:.1f} s.",
              "", "| stage | jobs | span | job time (sum) | objects/s/core | max job peak RSS "
              "(process / largest worker) | forecast span |", "|---|---|---|---|---|---|---|"]
        fst = r["forecast"]["stages"]
        for rule, s in r["stages"].items():
            f = fst.get(rule, {})
            fspan = f"{f['end_s'] - f['start_s']:.0f} s" if f else "-"
            rate = f"{s['obj_per_s_per_core']:,.0f}" if "obj_per_s_per_core" in s else "-"
            L.append(f"| {rule} | {s['jobs']} | {s['span_s']:.0f} s | {s['job_body_s_sum']:.0f} s | "
                     f"{rate} | {s['max_job_total_rss_mb']:,} MB ({s['max_job_peak_rss_mb']} / "
                     f"{s['max_worker_peak_rss_mb']}) | {fspan} |")
        if "per_algorithm" in r["stages"].get("estimate_batch", {}):
            L += ["", "| estimator | estimate jobs | job time | objects/s/core |", "|---|---|---|---|"]
            for al, s in r["stages"]["estimate_batch"]["per_algorithm"].items():
                L.append(f"| {al} | {s['jobs']} | {s['job_body_s_sum']:.0f} s | "
                         + (f"{s['obj_per_s_per_core']:,.0f} |" if "obj_per_s_per_core" in s
                            else "- |"))
        L += ["", "| output | files | bytes | bytes/object |", "|---|---|---|---|"]
        for name, s in r["files"].items():
            L.append(f"| {name} | {s['files']:,} | {s['bytes']:,} | {s['bytes_per_object']:.1f} |")
        if r.get("kills"):
            L += ["", "Kills: " + "; ".join(f"SIGKILL during {x['phase']} after {x['after_s']:.0f} s"
                                           for x in r["kills"])]
        if r.get("compare"):
            c = r["compare"]
            L += ["", f"Release compared with `{c['with']}`: "
                      + ("**identical** (every file, byte for byte, "
                         f"{c['files']} files)" if c["identical"] else
                         f"**differs**: {c['different_files']}")]
    Path(a.results).with_suffix(".md").write_text("\n".join(L) + "\n")
    print("\n".join(L))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--objects", default="1e6")
    r.add_argument("--label", required=True)
    r.add_argument("--algos", default="default", help="comma list, or 'default'")
    r.add_argument("--workdir", default="results/rehearsal",
                   help="where the catalogs and run directories go (large: ~2 GB per 1e7 objects)")
    r.add_argument("--profile", default="profiles/local")
    r.add_argument("--rows-per-pixel", default="500000")
    r.add_argument("--chunks-per-batch", type=int, default=8)
    r.add_argument("--workers", type=int, default=2)
    r.add_argument("--cores", type=int, default=None)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--kill", default="", help="phases to SIGKILL once each: estimate,export")
    r.add_argument("--compare", default=None, help="label of a run to compare the release with")
    r.add_argument("--keep", action="store_true", help="reuse the run directory")
    r.add_argument("--keep-results", action="store_true", help="keep partition/estimate files")
    r.add_argument("--rates-from", default=None,
                   help="label of a run whose measured estimator rates the forecast uses")
    c = sub.add_parser("calibrate")
    c.add_argument("--label", required=True)
    c.add_argument("--throughput", default=str(REPO / "resources" / "throughput.yaml"))
    rp = sub.add_parser("report")
    for p in (r, c, rp):
        p.add_argument("--results", default=str(RESULTS_JSON),
                       help="the results file (the report goes next to it, .md)")
    a = ap.parse_args(argv)
    return {"run": cmd_run, "calibrate": cmd_calibrate, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    raise SystemExit(main())
